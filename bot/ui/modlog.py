"""The moderators' log: every result, refusal, deletion, report and change of settings or characters in a
server, mirrored to the channel its admins picked with /settings log-channel.

Posting is best effort and never holds up a generation: entries go out on tasks of their own, and a channel
that is gone or closed to the bot is noted once (the admin sees it in /settings) instead of raising.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import discord

from bot.i18n import money, t
from bot.media.drafts import draft_thumbnail
from bot.media.pool import run_image_work
from bot.ui.errors import clip
from storage.db import Database
from storage.guild_settings import get_guild_settings, set_log_problem
from storage.jobs import Job

log = logging.getLogger(__name__)

#: Delete names the job and the message to delete (a result, a grid's preview, a copy), Block the member.
LOG_ID = re.compile(
    r"modlog:(?P<action>delete|block):(?P<target>[A-Za-z0-9_-]{1,40})"
    r"(?::(?P<channel>[0-9]{1,20}):(?P<message>[0-9]{1,20}))?"
)
PROMPT_SHOWN = 1000
#: A member refused again by the same rule within this many seconds is counted, but not logged again: a
#: blocked member pressing buttons can't fill the moderators' log.
REFUSAL_QUIET = 600.0


def log_custom_id(action: str, target: str | int, message: tuple[int, int] | None = None) -> str:
    where = f":{message[0]}:{message[1]}" if message is not None else ""
    return f"modlog:{action}:{target}{where}"


def log_button(
    action: str, target: str, label: str, message: tuple[int, int] | None = None
) -> discord.ui.Button[discord.ui.View]:
    style = discord.ButtonStyle.danger if action == "delete" else discord.ButtonStyle.secondary
    return discord.ui.Button(style=style, label=label, custom_id=log_custom_id(action, target, message))


class LogButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=LOG_ID):
    """Delete the image (in its own channel) or block the member: buttons under log entries, for moderators."""

    #: Set on the subclass the Moderation cog registers (views.bound).
    handler: ClassVar[Callable[[discord.Interaction, str, str, tuple[int, int] | None], Awaitable[None]]]

    def __init__(self, action: str, target: str, message: tuple[int, int] | None = None) -> None:
        super().__init__(log_button(action, target, "-", message))
        self.action, self.target, self.message = action, target, message

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> LogButton:
        message = (int(match["channel"]), int(match["message"])) if match["message"] else None
        return cls(match["action"], match["target"], message)

    async def callback(self, interaction: discord.Interaction) -> None:
        await type(self).handler(interaction, self.action, self.target, self.message)


@dataclass
class Entry:
    """One log entry: a title line, fields, and what moderators can do about it."""

    title: str
    who: int
    fields: list[tuple[str, str]] = field(default_factory=list)
    #: The job whose image can be deleted from the entry, if any, and the message (channel, id) showing it.
    job_id: str | None = None
    message: tuple[int, int] | None = None
    #: Whether the entry offers to block `who`.
    block: bool = False
    thumbnail: bytes | None = None
    #: Made in an age-restricted channel: outside one, its thumbnail is hidden behind a spoiler.
    nsfw: bool = False
    colour: discord.Colour = field(default_factory=discord.Colour.dark_grey)


class ModLog:
    def __init__(self, db: Database, client: discord.Client, pinned_locales: dict[int, str]) -> None:
        self.db = db
        self.client = client
        self.pinned_locales = pinned_locales
        self._posting: set[asyncio.Future[object]] = set()
        #: (guild, member, rule) -> when a refusal was last logged.
        self._refusals_logged: dict[tuple[int, int, str], float] = {}

    def locale_for(self, guild_id: int) -> str:
        guild = self.client.get_guild(guild_id)
        return self.pinned_locales.get(guild_id) or (str(guild.preferred_locale) if guild else "en-US")

    async def has_channel(self, guild_id: int) -> bool:
        return (await get_guild_settings(self.db, guild_id)).log_channel_id is not None

    # --- what is logged ---------------------------------------------------------------------------------
    def result(
        self, job: Job, message: discord.Message, *, model: str, size: str, cost: float | None, image: bytes | None
    ) -> None:
        if job.guild_id is None:
            return
        locale = self.locale_for(job.guild_id)
        fields = [
            (t(locale, "modlog.where"), message.jump_url),
            (t(locale, "modlog.prompt"), clip(job.request.prompt, PROMPT_SHOWN)),
            (
                t(locale, "modlog.made_with"),
                f"{model} · {size}" + (f" · {money(locale, cost)}" if cost is not None else ""),
            ),
        ]
        entry = Entry(
            t(locale, "modlog.result"),
            job.user_id,
            fields,
            job_id=job.id,
            message=(message.channel.id, message.id),
            block=True,
            colour=discord.Colour.gold(),
            nsfw=isinstance(message.channel, discord.TextChannel | discord.Thread) and message.channel.is_nsfw(),
        )
        self._spawn(self._post_with_thumbnail(job.guild_id, entry, image))

    def refusal(self, guild_id: int, user_id: int, channel_id: int | None, rule: str, detail: str | None) -> None:
        now = time.monotonic()
        last = self._refusals_logged.get((guild_id, user_id, rule))
        if last is not None and now - last < REFUSAL_QUIET:
            return
        self._refusals_logged[(guild_id, user_id, rule)] = now
        locale = self.locale_for(guild_id)
        fields = [(t(locale, "modlog.rule"), t(locale, f"rule.{rule}"))]
        if detail:
            fields.append((t(locale, "modlog.detail"), clip(detail, 200)))
        if channel_id is not None:
            fields.append((t(locale, "modlog.where"), f"<#{channel_id}>"))
        entry = Entry(
            t(locale, "modlog.refused"), user_id, fields, block=rule != "blocked", colour=discord.Colour.orange()
        )
        self._spawn(self._post(guild_id, entry))

    def safety_block(self, job: Job, reason: str) -> None:
        if job.guild_id is None:
            return
        locale = self.locale_for(job.guild_id)
        fields = [
            (t(locale, "modlog.rule"), t(locale, "rule.safety", reason=reason)),
            (t(locale, "modlog.prompt"), clip(job.request.prompt, PROMPT_SHOWN)),
            (t(locale, "modlog.where"), f"<#{job.channel_id}>"),
        ]
        entry = Entry(t(locale, "modlog.refused"), job.user_id, fields, block=True, colour=discord.Colour.orange())
        self._spawn(self._post(job.guild_id, entry))

    def deletion(self, job: Job, by: int) -> None:
        if job.guild_id is None:
            return
        locale = self.locale_for(job.guild_id)
        fields = [
            (t(locale, "modlog.deleted_by"), f"<@{by}>"),
            (t(locale, "modlog.prompt"), clip(job.request.prompt, PROMPT_SHOWN)),
            (t(locale, "modlog.where"), f"<#{job.channel_id}>"),
        ]
        self._spawn(self._post(job.guild_id, Entry(t(locale, "modlog.deleted"), job.user_id, fields)))

    async def report(self, job: Job, reporter: int, message: discord.Message | None) -> bool:
        """Post a member's report now (they are told whether it arrived); False if it could not be posted."""
        assert job.guild_id is not None
        locale = self.locale_for(job.guild_id)
        fields = [(t(locale, "modlog.reported_by"), f"<@{reporter}>")]
        if message is not None:
            fields.append((t(locale, "modlog.where"), message.jump_url))
        fields.append((t(locale, "modlog.prompt"), clip(job.request.prompt, PROMPT_SHOWN)))
        entry = Entry(
            t(locale, "modlog.report"),
            job.user_id,
            fields,
            job_id=job.id,
            message=(message.channel.id, message.id) if message is not None else None,
            block=True,
            colour=discord.Colour.red(),
        )
        return await self._post(job.guild_id, entry)

    def change(self, guild_id: int, by: int, what: str, *, to_channel: int | None = None) -> None:
        """A change of settings or characters, described in the server's language by the caller. `to_channel`
        posts it to that channel instead of the current log (the log that is being moved or turned off)."""
        locale = self.locale_for(guild_id)
        entry = Entry(t(locale, "modlog.changed"), by, [(t(locale, "modlog.change"), clip(what, 1000))])
        self._spawn(self._post(guild_id, entry, to_channel=to_channel))

    async def wait_posted(self) -> None:
        """Until every entry on its way has been posted or given up (tests, shutdown)."""
        while self._posting:
            await asyncio.gather(*self._posting, return_exceptions=True)

    # --- posting ----------------------------------------------------------------------------------------
    def _spawn(self, posting: Awaitable[object]) -> None:
        task = asyncio.ensure_future(posting)
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _post_with_thumbnail(self, guild_id: int, entry: Entry, image: bytes | None) -> None:
        if image is not None and await self.has_channel(guild_id):
            try:
                entry.thumbnail = await run_image_work(draft_thumbnail, image)
            except Exception:  # the entry is still worth posting without its picture
                log.debug("could not make a log thumbnail", exc_info=True)
        await self._post(guild_id, entry)

    async def _post(self, guild_id: int, entry: Entry, *, to_channel: int | None = None) -> bool:
        """Post the entry to the guild's log channel; False if there is none or it could not be posted to."""
        channel_id = None
        try:
            settings = await get_guild_settings(self.db, guild_id)
            channel_id = to_channel or settings.log_channel_id
            if channel_id is None:
                return False
            posted = await self._send(guild_id, channel_id, entry)
            if posted and settings.log_problem is not None:
                await set_log_problem(self.db, guild_id, channel_id, None)
            return posted
        except (discord.NotFound, discord.Forbidden) as exc:
            assert channel_id is not None
            await self._note_problem(guild_id, channel_id, "gone" if isinstance(exc, discord.NotFound) else "forbidden")
        except Exception:
            log.exception("could not post to the moderators' log of guild %s", guild_id)
        return False

    async def _send(self, guild_id: int, channel_id: int, entry: Entry) -> bool:
        channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):  # a category or voice channel id
            await self._note_problem(guild_id, channel_id, "gone")
            return False
        locale = self.locale_for(guild_id)
        embed = discord.Embed(title=entry.title, colour=entry.colour)
        embed.add_field(name=t(locale, "modlog.who"), value=f"<@{entry.who}>", inline=True)
        for name, value in entry.fields:
            embed.add_field(name=name, value=value or "-", inline=False)
        # Plain buttons with the log's custom ids: the Moderation cog's registered LogButton answers them.
        view = discord.ui.View(timeout=None)
        if entry.job_id is not None:
            view.add_item(log_button("delete", entry.job_id, t(locale, "modlog.delete_button"), entry.message))
        if entry.block:
            view.add_item(log_button("block", str(entry.who), t(locale, "modlog.block_button")))
        extra: dict[str, Any] = {"view": view} if view.children else {}
        if entry.thumbnail is not None:
            hidden = entry.nsfw and not (isinstance(channel, discord.TextChannel) and channel.is_nsfw())
            filename = "SPOILER_thumbnail.jpg" if hidden else "thumbnail.jpg"
            extra["file"] = discord.File(io.BytesIO(entry.thumbnail), filename=filename)
            if not hidden:  # a spoiler shows as the attachment itself, blurred, not in the embed
                embed.set_thumbnail(url=f"attachment://{filename}")
        await channel.send(
            embed=embed,
            allowed_mentions=discord.AllowedMentions.none(),
            **extra,
        )
        return True

    async def _note_problem(self, guild_id: int, channel_id: int, problem: str) -> None:
        """Remember why the log channel can't be posted to (once), unless an admin picked another meanwhile."""
        if await set_log_problem(self.db, guild_id, channel_id, problem):
            log.warning("the moderators' log of guild %s can't be posted to (%s)", guild_id, problem)
