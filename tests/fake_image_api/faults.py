"""Scripted misbehaviour, and the exact error bodies both API families send.

A :class:`Fault` is queued with ``FakeImageAPI.script(...)`` and consumed by the next matching request.
Error faults are written for Gemini (spec A4) but also have an OpenAI rendition (spec B), so the same
``Fault.rate_limit()`` makes ``/v1/images/generations`` answer a real OpenAI 429; ``Fault.openai_error``
answers in OpenAI's shape on every endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["gemini", "openai"]
JSON = dict[str, Any]

GEMINI_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GEMINI_SERVER_MESSAGES: dict[int, str] = {
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    502: "Bad Gateway",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
OPENAI_SERVER_MESSAGES: dict[int, str] = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout.",
}
INVALID_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
LEAKED_KEY_MESSAGE = "Your API key was reported as leaked. Please use another API key."
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BILLING_MESSAGE = (
    "Gemini API free tier is not available in your country. Please enable billing on your project in Google AI Studio."
)
RATE_LIMIT_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
    "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. "
)
MODERATION_MESSAGE = (
    "Your request was rejected as a result of our safety system. "
    "Your request may contain content that is not allowed by our safety system."
)


def rpc_type(name: str) -> str:
    return f"type.googleapis.com/google.rpc.{name}"


def gemini_error(code: int, message: str, status: str | None = None, details: list[JSON] | None = None) -> JSON:
    """``{"error": {"code", "message", "status"[, "details"]}}`` as the Gemini API sends it."""
    err: JSON = {"code": code, "message": message, "status": status or GEMINI_STATUS.get(code, "UNKNOWN")}
    if details is not None:
        err["details"] = details
    return {"error": err}


def openai_error(message: str, type_: str, param: str | None = None, code: str | None = None) -> JSON:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def invalid_key_body() -> JSON:
    return gemini_error(
        400,
        INVALID_KEY_MESSAGE,
        "INVALID_ARGUMENT",
        [
            {
                "@type": rpc_type("ErrorInfo"),
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {"@type": rpc_type("LocalizedMessage"), "locale": "en-US", "message": INVALID_KEY_MESSAGE},
        ],
    )


def openai_invalid_key_body(key: str | None) -> JSON:
    if not key:
        return openai_error(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
            "blank username) if you're accessing the API from your browser and are prompted for a "
            "username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
        )
    shown = (key[:3] + "*" * 6 + key[-4:]) if len(key) > 8 else key[:2] + "***"
    return openai_error(
        f"Incorrect API key provided: {shown}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


def not_found_message(model: str, api_version: str) -> str:
    return (
        f"models/{model} is not found for API version {api_version}, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their supported methods."
    )


def _seconds_header(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True, slots=True)
class ErrorReply:
    status: int
    body: JSON
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted behaviour. Build it with the classmethods; ``name`` says which one it is."""

    name: str
    status: int = 200
    message: str | None = None
    seconds: float = 0.0
    retry_delay: str = "2s"
    retry_after: float | None = None
    retry_after_ms: float | None = None
    per_day: bool = False
    reason: str | None = None
    text: str | None = None
    with_content: bool = False
    code: str | None = None
    type_: str | None = None
    param: str | None = None
    chunk: int = 0
    lf_only: bool = False
    after_events: int = 0

    # ---- Gemini errors (spec A4) -------------------------------------------------------------------
    @classmethod
    def rate_limit(cls, retry_delay: str = "2s", retry_after: float | None = None, per_day: bool = False) -> Fault:
        """429 RESOURCE_EXHAUSTED with QuotaFailure, Help and RetryInfo details (+ ``Retry-After`` if given)."""
        return cls("rate_limit", 429, retry_delay=retry_delay, retry_after=retry_after, per_day=per_day)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """500 INTERNAL, 502, 503 UNAVAILABLE ("The model is overloaded...") or 504 DEADLINE_EXCEEDED."""
        if status not in GEMINI_SERVER_MESSAGES:
            raise ValueError(f"server_error status must be one of {sorted(GEMINI_SERVER_MESSAGES)}")
        return cls("server_error", status)

    @classmethod
    def gemini_error(
        cls, status: int, message: str, grpc_status: str | None = None, *, retry_after: float | None = None
    ) -> Fault:
        """Any Gemini-shaped error (``{"error": {"code", "message", "status"}}``), e.g. a relay's 501 or a
        relay that repeats the key in its message; with ``Retry-After`` if given."""
        return cls("gemini_error", status, message=message, reason=grpc_status, retry_after=retry_after)

    @classmethod
    def bad_request(cls, message: str = "Request contains an invalid argument.") -> Fault:
        """400 INVALID_ARGUMENT with the given message."""
        return cls("bad_request", 400, message=message)

    @classmethod
    def invalid_key(cls) -> Fault:
        """400 INVALID_ARGUMENT "API key not valid..." with ErrorInfo reason API_KEY_INVALID."""
        return cls("invalid_key", 400)

    @classmethod
    def leaked_key(cls) -> Fault:
        """403 PERMISSION_DENIED "Your API key was reported as leaked..."."""
        return cls("leaked_key", 403)

    @classmethod
    def not_found(cls) -> Fault:
        """404 NOT_FOUND for the requested model."""
        return cls("not_found", 404)

    @classmethod
    def billing(cls) -> Fault:
        """400 FAILED_PRECONDITION (billing must be enabled)."""
        return cls("billing", 400)

    # ---- behaviour ---------------------------------------------------------------------------------
    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Answer normally after ``seconds`` more than the configured latency."""
        return cls("slow", seconds=seconds)

    @classmethod
    def hang(cls) -> Fault:
        """Never answer; the handler ends when the client goes away or the fake stops."""
        return cls("hang")

    @classmethod
    def drop(cls) -> Fault:
        """Send 200 headers (with the full Content-Length) and half the body, then shut the TCP connection
        down. On a streamed answer (``:streamGenerateContent``) it acts as
        ``drop_stream(after_events=<half the events>)``."""
        return cls("drop")

    @classmethod
    def stall(cls) -> Fault:
        """Send 200 headers (with the full Content-Length) and half the body (a streamed answer: half its
        events), then nothing more, with the connection left open; the handler ends when the client goes
        away or the fake stops. A client's per-read timeout is what ends it."""
        return cls("stall")

    # ---- streaming (spec A5) -----------------------------------------------------------------------
    @classmethod
    def split_stream(cls, chunk: int = 7, lf_only: bool = False) -> Fault:
        """A streamed answer keeps its timing but is written in ``chunk``-byte writes, so events and their
        separators split across the client's reads. Only the first and last 4 KiB of an event longer than
        8 KiB go out ``chunk`` bytes at a time, the middle of a multi-MB image event in 4 KiB writes (that
        keeps a big image at hundreds of writes, not millions). ``lf_only``: events end with ``\\n\\n``
        instead of the ``\\r\\n\\r\\n`` Google sends. Other endpoints answer normally."""
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        return cls("split_stream", chunk=chunk, lf_only=lf_only)

    @classmethod
    def drop_stream(cls, after_events: int = 1) -> Fault:
        """A streamed answer sends its 200 headers and its first ``after_events`` events on time, then the
        TCP connection is shut down mid-body. ``after_events=0`` cuts right after the headers; a count of at
        least the number of events sends them all and cuts instead of ending the body. Other endpoints
        answer normally."""
        if after_events < 0:
            raise ValueError("after_events must be >= 0")
        return cls("drop_stream", after_events=after_events)

    @classmethod
    def malformed_json(cls) -> Fault:
        """200, ``content-type: application/json``, a truncated JSON body."""
        return cls("malformed_json")

    @classmethod
    def prompt_block(cls, reason: str = "PROHIBITED_CONTENT") -> Fault:
        """200 with ``promptFeedback.blockReason`` and no candidates (OpenAI: 400 moderation_blocked)."""
        return cls("prompt_block", reason=reason)

    @classmethod
    def output_block(
        cls, finish_reason: str = "IMAGE_SAFETY", text: str | None = None, with_content: bool = False
    ) -> Fault:
        """200 with one candidate whose finishReason is ``finish_reason`` and no image. With ``text``
        the candidate holds that text part; ``with_content`` without text gives an empty ``parts`` list;
        otherwise the candidate has no ``content`` at all (OpenAI: 400 moderation_blocked)."""
        return cls("output_block", reason=finish_reason, text=text, with_content=with_content)

    @classmethod
    def text_only(cls, text: str = "I can't draw that, but here is a description instead.") -> Fault:
        """200 with only a text part, finishReason STOP (chat completions: content, no images)."""
        return cls("text_only", text=text)

    @classmethod
    def mislabelled_mime(cls) -> Fault:
        """The image says ``image/png`` but its bytes are JPEG."""
        return cls("mislabelled_mime")

    @classmethod
    def not_an_image(cls) -> Fault:
        """The image says ``image/png`` but its bytes are not an image at all."""
        return cls("not_an_image")

    @classmethod
    def markdown_image(cls) -> Fault:
        """chat.completions only: the image comes as ``![image](data:...)`` in ``message.content``."""
        return cls("markdown_image")

    # ---- OpenAI errors (spec B) --------------------------------------------------------------------
    @classmethod
    def openai_error(
        cls,
        status: int,
        code: str | None,
        message: str,
        type_: str = "invalid_request_error",
        *,
        param: str | None = None,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
    ) -> Fault:
        """Any OpenAI-shaped error, e.g. ``Fault.openai_error(400, "moderation_blocked", "...")``."""
        return cls(
            "openai_error",
            status,
            message=message,
            code=code,
            type_=type_,
            param=param,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def openai_moderation(cls) -> Fault:
        """400 ``moderation_blocked`` as gpt-image models send it."""
        return cls.openai_error(400, "moderation_blocked", MODERATION_MESSAGE, "image_generation_user_error")

    @classmethod
    def openai_invalid_key(cls) -> Fault:
        """401 ``invalid_api_key``."""
        return cls.openai_error(
            401,
            "invalid_api_key",
            "Incorrect API key provided: sk-fa******ake. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
        )

    @classmethod
    def openai_rate_limit(cls, retry_after: float | None = 1.0, retry_after_ms: float | None = None) -> Fault:
        """429 ``rate_limit_exceeded`` with optional ``retry-after`` / ``retry-after-ms`` headers."""
        return cls.openai_error(
            429,
            "rate_limit_exceeded",
            "Rate limit reached for images per minute (IPM): Limit 5, Used 5, Requested 1. "
            "Please try again in 12s. Visit https://platform.openai.com/account/rate-limits to learn more.",
            "requests",
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    # ---- rendering ---------------------------------------------------------------------------------
    @property
    def is_error(self) -> bool:
        return self.name in _ERROR_FAULTS

    def render(self, family: Family, model: str = "", api_version: str = "v1beta") -> ErrorReply:
        """The HTTP status, JSON body and headers of an error fault, in ``family``'s shape."""
        if self.name == "openai_error":
            headers: list[tuple[str, str]] = []
            if self.retry_after is not None:
                headers.append(("retry-after", _seconds_header(self.retry_after)))
            if self.retry_after_ms is not None:
                headers.append(("retry-after-ms", _seconds_header(self.retry_after_ms)))
            body = openai_error(self.message or "", self.type_ or "invalid_request_error", self.param, self.code)
            return ErrorReply(self.status, body, tuple(headers))
        if family == "openai":
            return self._render_openai(model)
        return self._render_gemini(model or "gemini-3-pro-image-preview", api_version)

    def _render_gemini(self, model: str, api_version: str) -> ErrorReply:
        name = self.name
        if name == "rate_limit":
            period = "Day" if self.per_day else "Minute"
            metric = "generate_requests_per_model_per_day" if self.per_day else "generate_requests_per_model"
            limit = "250" if self.per_day else "20"
            seconds = self.retry_delay.removesuffix("s")
            details: list[JSON] = [
                {
                    "@type": rpc_type("QuotaFailure"),
                    "violations": [
                        {
                            "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
                            "quotaId": f"GenerateRequestsPer{period}PerProjectPerModel",
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": limit,
                        }
                    ],
                },
                {
                    "@type": rpc_type("Help"),
                    "links": [
                        {
                            "description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                        }
                    ],
                },
                {"@type": rpc_type("RetryInfo"), "retryDelay": self.retry_delay},
            ]
            message = (
                f"{RATE_LIMIT_MESSAGE}\n* Quota exceeded for metric: generativelanguage.googleapis.com/"
                f"{metric}, limit: {limit}, model: {model}\nPlease retry in {seconds}s."
            )
            headers = (("retry-after", _seconds_header(self.retry_after)),) if self.retry_after is not None else ()
            return ErrorReply(429, gemini_error(429, message, "RESOURCE_EXHAUSTED", details), headers)
        if name == "server_error":
            return ErrorReply(self.status, gemini_error(self.status, GEMINI_SERVER_MESSAGES[self.status]))
        if name == "gemini_error":
            headers = (("retry-after", _seconds_header(self.retry_after)),) if self.retry_after is not None else ()
            return ErrorReply(self.status, gemini_error(self.status, self.message or "", self.reason), headers)
        if name == "bad_request":
            return ErrorReply(400, gemini_error(400, self.message or "", "INVALID_ARGUMENT"))
        if name == "invalid_key":
            return ErrorReply(400, invalid_key_body())
        if name == "leaked_key":
            return ErrorReply(403, gemini_error(403, LEAKED_KEY_MESSAGE, "PERMISSION_DENIED"))
        if name == "not_found":
            return ErrorReply(404, gemini_error(404, not_found_message(model, api_version), "NOT_FOUND"))
        if name == "billing":
            return ErrorReply(400, gemini_error(400, BILLING_MESSAGE, "FAILED_PRECONDITION"))
        raise ValueError(f"{name} is not an error fault")

    def _render_openai(self, model: str) -> ErrorReply:
        name = self.name
        if name == "rate_limit":
            headers = (("retry-after", _seconds_header(self.retry_after)),) if self.retry_after is not None else ()
            if self.per_day:
                body = openai_error(
                    "You exceeded your current quota, please check your plan and billing details. For more "
                    "information on this error, read the docs: "
                    "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                    "insufficient_quota",
                    None,
                    "insufficient_quota",
                )
                return ErrorReply(429, body, headers)
            return Fault.openai_rate_limit(retry_after=self.retry_after).render("openai")
        if name == "server_error":
            return ErrorReply(self.status, openai_error(OPENAI_SERVER_MESSAGES[self.status], "server_error"))
        if name == "bad_request":
            return ErrorReply(400, openai_error(self.message or "", "invalid_request_error"))
        if name in ("invalid_key", "leaked_key"):
            return Fault.openai_invalid_key().render("openai")
        if name == "not_found":
            body = openai_error(
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                None,
                "model_not_found",
            )
            return ErrorReply(404, body)
        if name == "billing":
            body = openai_error(
                "Billing hard limit has been reached.", "invalid_request_error", None, "billing_hard_limit_reached"
            )
            return ErrorReply(400, body)
        raise ValueError(f"{name} is not an error fault")


_ERROR_FAULTS = frozenset(
    {
        "rate_limit",
        "server_error",
        "gemini_error",
        "bad_request",
        "invalid_key",
        "leaked_key",
        "not_found",
        "billing",
        "openai_error",
    }
)
