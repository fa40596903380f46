"""The part of Discord's request validation that catches bot bugs, with Discord's error bodies."""

from __future__ import annotations

from typing import Any, NoReturn

COMPONENTS_V2 = 1 << 15


class ApiError(Exception):
    """Raised by a route; the server turns it into a JSON error reply."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}
        if errors is not None:
            self.body["errors"] = errors


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def missing_access() -> ApiError:
    return ApiError(403, 50001, "Missing Access")


def too_large() -> ApiError:
    return ApiError(413, 40005, "Request entity too large")


class FormErrors:
    """Collects field errors into Discord's nested ``{"a": {"0": {"b": {"_errors": [...]}}}}`` shape."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def add(self, path: list[str | int], code: str, message: str) -> None:
        node = self.tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: list[str | int], value: Any, limit: int) -> None:
        if value is not None and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.tree:
            raise ApiError(400, 50035, "Invalid Form Body", self.tree)

    def fail(self, path: list[str | int], code: str, message: str) -> NoReturn:
        self.add(path, code, message)
        raise ApiError(400, 50035, "Invalid Form Body", self.tree)


def _check_embeds(err: FormErrors, embeds: list[dict[str, Any]]) -> None:
    err.max_length(["embeds"], embeds, 10)
    for i, embed in enumerate(embeds[:10]):
        err.max_length(["embeds", i, "title"], embed.get("title"), 256)
        err.max_length(["embeds", i, "description"], embed.get("description"), 4096)
        err.max_length(["embeds", i, "fields"], embed.get("fields"), 25)


def _check_component(err: FormErrors, path: list[str | int], comp: dict[str, Any]) -> None:
    ctype = comp.get("type")
    if ctype == 2:  # button
        link = comp.get("style") in (5, 6)  # link and premium buttons carry no custom_id
        if not link and not comp.get("custom_id"):
            err.add([*path, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
        if comp.get("style") != 6 and not comp.get("label") and not comp.get("emoji"):
            err.add([*path], "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "Button must have a label or emoji")
        err.max_length([*path, "label"], comp.get("label"), 80)
    elif ctype in (3, 5, 6, 7, 8):  # selects
        options = comp.get("options")
        if ctype == 3 and (not options or len(options) > 25):
            err.add([*path, "options"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")
    err.max_length([*path, "custom_id"], comp.get("custom_id"), 100)


def _check_components(err: FormErrors, rows: list[dict[str, Any]], flags: int) -> None:
    if flags & COMPONENTS_V2:
        return  # layout components have their own rules; the bot does not use them
    err.max_length(["components"], rows, 5)
    for r, row in enumerate(rows[:5]):
        if row.get("type") != 1:
            err.add(["components", r, "type"], "COMPONENT_TYPE_INVALID", "The specified component type is invalid")
            continue
        children = row.get("components") or []
        if not children:
            err.add(["components", r, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        err.max_length(["components", r, "components"], children, 5)
        if any(c.get("type") != 2 for c in children) and len(children) > 1:
            err.add(["components", r, "components"], "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "Select menus fill a row")
        for c, comp in enumerate(children):
            _check_component(err, ["components", r, "components", c], comp)


def check_message(payload: dict[str, Any], *, creating: bool, n_files: int) -> None:
    """Raise ApiError for what Discord rejects in a message create/edit body."""
    err = FormErrors()
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        err.add(["content"], "BASE_TYPE_STRING", "Must be a string.")
    else:
        err.max_length(["content"], content, 2000)
    _check_embeds(err, payload.get("embeds") or [])
    _check_components(err, payload.get("components") or [], int(payload.get("flags") or 0))
    err.raise_if_any()
    empty = not (content or payload.get("embeds") or payload.get("components") or payload.get("sticker_ids"))
    if creating and empty and not n_files and not payload.get("poll"):
        raise ApiError(400, 50006, "Cannot send an empty message")


def check_modal(data: dict[str, Any]) -> None:
    err = FormErrors()
    if not data.get("title"):
        err.add(["data", "title"], "BASE_TYPE_REQUIRED", "This field is required")
    err.max_length(["data", "title"], data.get("title"), 45)
    if not data.get("custom_id"):
        err.add(["data", "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
    err.max_length(["data", "custom_id"], data.get("custom_id"), 100)
    rows = data.get("components") or []
    if not rows or len(rows) > 5:
        err.add(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    for i, component in enumerate(rows[:5]):
        if component.get("type") == LABEL:
            _check_label(err, ["data", "components", i], component)
    err.raise_if_any()


LABEL, STRING_SELECT, TEXT_INPUT = 18, 3, 4
#: What a Label may wrap (docs: components/reference#label-label-child-components).
LABEL_CHILDREN = {STRING_SELECT, TEXT_INPUT, 5, 6, 7, 8, 19, 21, 22, 23}


def _check_label(err: FormErrors, path: list[str | int], label: dict[str, Any]) -> None:
    """A Label in a modal: its text (45), description (100), and the one input it wraps."""
    if not label.get("label"):
        err.add([*path, "label"], "BASE_TYPE_REQUIRED", "This field is required")
    err.max_length([*path, "label"], label.get("label"), 45)
    err.max_length([*path, "description"], label.get("description"), 100)
    child = label.get("component") or {}
    child_path = [*path, "component"]
    if child.get("type") not in LABEL_CHILDREN:
        err.add([*child_path, "type"], "COMPONENT_TYPE_INVALID", "The specified component type is invalid")
        return
    if not child.get("custom_id"):
        err.add([*child_path, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
    err.max_length([*child_path, "custom_id"], child.get("custom_id"), 100)
    if child.get("disabled"):  # "Modals can not currently have disabled components in them."
        err.add([*child_path, "disabled"], "COMPONENT_DISABLED_IN_MODAL", "Components in modals cannot be disabled")
    if child["type"] == TEXT_INPUT:
        err.max_length([*child_path, "placeholder"], child.get("placeholder"), 100)
        if not 1 <= int(child.get("max_length") or 4000) <= 4000:
            err.add([*child_path, "max_length"], "NUMBER_TYPE_MAX", "Must be between 1 and 4000.")
    elif child["type"] == STRING_SELECT:
        options = child.get("options") or []
        if not 1 <= len(options) <= 25:
            err.add([*child_path, "options"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")
        for o, option in enumerate(options[:25]):
            err.max_length([*child_path, "options", o, "label"], option.get("label"), 100)
            err.max_length([*child_path, "options", o, "value"], option.get("value"), 100)
        err.max_length([*child_path, "placeholder"], child.get("placeholder"), 150)
        low, high = int(child.get("min_values", 1)), int(child.get("max_values", 1))
        if child.get("required", True) and low < 1:  # min_values 0 only on a select that may be left empty
            err.add([*child_path, "min_values"], "NUMBER_TYPE_MIN", "A required select takes at least one value.")
        if not 0 <= low <= high <= 25:
            err.add([*child_path, "max_values"], "NUMBER_TYPE_MAX", "Must be between min_values and 25.")


def check_choices(data: dict[str, Any]) -> None:
    err = FormErrors()
    choices = data.get("choices") or []
    err.max_length(["data", "choices"], choices, 25)
    for i, choice in enumerate(choices[:25]):
        err.max_length(["data", "choices", i, "name"], choice.get("name"), 100)
    err.raise_if_any()
