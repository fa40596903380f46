"""Where a job appears on Discord, and where its errors go.

A `Surface` is the interaction's own response (`InteractionSurface`, whose token lasts 15 minutes, after
which it posts through the channel and mentions the requester) or a plain channel message
(`ChannelSurface`, for replies in a thread and for jobs resumed after a restart).

Errors go to the requester alone wherever Discord allows it: ephemerally while the interaction lasts, else
by DM. The one exception is a reply in a thread: it is answered under the member's own message, where they
asked and are looking (their words are in the thread already). Only when a member's DMs are closed does an
error go to the channel, mentioning them: it is the one way left to reach them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import discord

from bot.i18n import t

log = logging.getLogger(__name__)

#: Discord's interaction tokens last 15 minutes; stop using one a little before that.
INTERACTION_TOKEN_LIFETIME = 15 * 60.0
TOKEN_SAFETY_MARGIN = 30.0
#: Discord's default upload limit for a bot, used where no guild says otherwise.
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class Surface(ABC):
    """Where one job is shown."""

    def __init__(
        self, *, locale: str, channel: discord.abc.Messageable, upload_limit: int, private_locale: str | None = None
    ) -> None:
        #: For what everyone in the channel sees; `private_locale` for what only the requester sees.
        self.locale = locale
        self.private_locale = private_locale or locale
        self.channel = channel
        self.upload_limit = upload_limit
        #: The message that shows the result, once there is one.
        self.message: discord.Message | None = None
        #: The status message's id once known, so a restart can update it.
        self.status_message_id: int | None = None

    @abstractmethod
    async def update(
        self, *, content: str, view: discord.ui.View | None = None, draft: DraftAttachment | None = None
    ) -> None:
        """Show a status line (replacing the previous one), with a new draft image if one is given."""

    @abstractmethod
    async def result(
        self, *, content: str, embed: discord.Embed, file: discord.File, view: discord.ui.View
    ) -> discord.Message:
        """Replace the status with the finished image."""

    @abstractmethod
    async def error(self, text: str) -> None:
        """Tell the requester what went wrong (privately where Discord allows)."""

    @property
    def can_thread(self) -> bool:
        """Whether the result should get its own thread (not in a thread or a DM already)."""
        return isinstance(self.channel, discord.TextChannel)


def through_user_install(interaction: discord.Interaction) -> bool:
    """Whether the member used the bot outside a server that added it: through their own install, in a
    server that hasn't added the bot, or in a DM (whichever install Discord says authorised it). Then no
    server's settings, rules or budget apply, and the bot-wide cap for such uses does."""
    outside_servers = interaction.is_user_integration() and not interaction.is_guild_integration()
    return outside_servers or interaction.guild_id is None


class InteractionSurface(Surface):
    """The deferred interaction's response; falls back to the channel once the token is about to expire."""

    def __init__(self, interaction: discord.Interaction, *, locale: str, received_at: float | None = None) -> None:
        channel = interaction.channel
        assert isinstance(channel, discord.abc.Messageable)
        super().__init__(
            locale=locale,
            private_locale=str(interaction.locale),
            channel=channel,
            upload_limit=interaction.filesize_limit,
        )
        self.interaction = interaction
        self.received_at = received_at if received_at is not None else time.monotonic()
        self.requester = interaction.user
        #: Used through the member's own install: the bot may not post in this channel, only answer here.
        self.user_install = through_user_install(interaction)

    @property
    def can_thread(self) -> bool:
        return not self.user_install and super().can_thread

    async def late_channel(self) -> discord.abc.Messageable:
        """Where to post once the token is gone: the channel, or the member's DMs where the bot isn't a member."""
        if self.user_install and self.interaction.guild_id is not None:
            return await self.requester.create_dm()
        return self.channel

    @property
    def token_fresh(self) -> bool:
        return time.monotonic() - self.received_at < INTERACTION_TOKEN_LIFETIME - TOKEN_SAFETY_MARGIN

    async def update(
        self, *, content: str, view: discord.ui.View | None = None, draft: DraftAttachment | None = None
    ) -> None:
        if self.token_fresh:
            # Fields left out of an edit stay as they are: a shown draft survives the ticking status.
            extra: dict[str, Any] = {"embed": draft.embed, "attachments": [draft.file()]} if draft else {}
            message = await self.interaction.edit_original_response(content=content, view=view, **extra)
            self.status_message_id = message.id

    async def result(
        self, *, content: str, embed: discord.Embed, file: discord.File, view: discord.ui.View
    ) -> discord.Message:
        if self.token_fresh:
            self.message = await self.interaction.edit_original_response(
                content=content or None, embed=embed, attachments=[file], view=view
            )
        else:
            late = t(self.locale, "result.late", mention=self.requester.mention)
            channel = await self.late_channel()
            self.message = await channel.send(
                content=f"{late}\n{content}".strip(),
                embed=embed,
                file=file,
                view=view,
                allowed_mentions=discord.AllowedMentions(users=[self.requester]),
            )
        return self.message

    async def error(self, text: str) -> None:
        if self.token_fresh:
            with contextlib.suppress(discord.NotFound):
                await self.interaction.delete_original_response()
            await self.interaction.followup.send(text, ephemeral=True)
            return
        # Past Discord's 15 minutes nothing can be ephemeral: the stale status goes, the error goes by DM.
        if self.status_message_id is not None:
            await _delete_message(self.channel, self.status_message_id)
        await tell_requester(self.channel, self.requester, text, self.private_locale)


class ChannelSurface(Surface):
    """A status message in a channel or thread (a reply to the member's message when there is one)."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        locale: str,
        upload_limit: int,
        reply_to: discord.Message | discord.PartialMessage | None = None,
        status_message: discord.Message | discord.PartialMessage | None = None,
        mention: discord.abc.Snowflake | None = None,
        private_locale: str | None = None,
    ) -> None:
        super().__init__(locale=locale, channel=channel, upload_limit=upload_limit, private_locale=private_locale)
        self.reply_to = reply_to
        self.status_message = status_message
        self.status_message_id = status_message.id if status_message is not None else None
        #: Who to ping in the first status line (jobs resumed after a restart have no reply to hang on).
        self.mention = mention

    async def _send(self, content: str | None, **fields: Any) -> discord.Message:
        # Only a reply pings, and only the requester: never @everyone or roles from a prompt.
        users = [self.mention] if self.mention is not None else []
        fields["allowed_mentions"] = discord.AllowedMentions(users=users, replied_user=True)
        if self.reply_to is not None:
            fields["reference"] = self.reply_to
        return await self.channel.send(content, **{k: v for k, v in fields.items() if v is not None})

    def _prefix(self) -> str:
        return f"<@{self.mention.id}> " if self.mention is not None else ""

    async def update(
        self, *, content: str, view: discord.ui.View | None = None, draft: DraftAttachment | None = None
    ) -> None:
        if self.status_message is not None:
            extra: dict[str, Any] = {"embed": draft.embed, "attachments": [draft.file()]} if draft else {}
            try:
                await self.status_message.edit(content=self._prefix() + content, view=view, **extra)
                return
            except discord.NotFound:
                self.status_message = None  # deleted by someone: post a new one
        sent = {"embed": draft.embed, "file": draft.file()} if draft else {}
        self.status_message = await self._send(self._prefix() + content, view=view, **sent)
        self.status_message_id = self.status_message.id

    async def result(
        self, *, content: str, embed: discord.Embed, file: discord.File, view: discord.ui.View
    ) -> discord.Message:
        # A fresh message rather than an edit: members get notified of the reply, and the status goes away.
        self.message = await self._send(self._prefix() + content, embed=embed, file=file, view=view)
        await self._drop_status()
        return self.message

    async def error(self, text: str) -> None:
        if self.reply_to is not None or self.mention is None:
            await self._send(self._prefix() + text)  # under the member's message in the thread
        else:  # resumed after a restart, or an edit whose button was pressed outside the thread
            await tell_requester(self.channel, self.mention, text, self.private_locale)
        await self._drop_status()

    async def _drop_status(self) -> None:
        if self.status_message is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.status_message.delete()
            self.status_message = None


@dataclass(frozen=True)
class DraftAttachment:
    """A draft for the status message: a labelled embed showing a small JPEG."""

    embed: discord.Embed
    data: bytes
    filename: str

    def file(self) -> discord.File:
        return discord.File(fp=io.BytesIO(self.data), filename=self.filename)

    @classmethod
    def build(cls, locale: str, number: int, data: bytes) -> DraftAttachment:
        filename = f"draft-{number}.jpg"
        embed = discord.Embed(
            title=t(locale, "status.draft_title", number=number),
            description=t(locale, "status.draft_note"),
            colour=discord.Colour.light_grey(),
        )
        embed.set_image(url=f"attachment://{filename}")
        return cls(embed=embed, data=data, filename=filename)


async def tell_requester(
    channel: discord.abc.Messageable, requester: discord.abc.Snowflake, text: str, locale: str
) -> None:
    """An error for the requester alone: by DM, saying where it is from (in a DM channel, there). If their DMs
    are closed, in `channel` with a mention, since nothing else would reach them."""
    if isinstance(channel, discord.DMChannel):
        await channel.send(text)
        return
    where = channel.mention if isinstance(channel, discord.abc.GuildChannel | discord.Thread) else ""
    try:
        user = requester if isinstance(requester, discord.abc.Messageable) else await _member(channel, requester)
        if user is not None:
            await user.send(t(locale, "error.dm_intro", channel=where) + "\n" + text)
            return
    except discord.HTTPException as exc:
        log.info("could not DM member %s an error; telling them in the channel: %s", requester.id, exc)
    await channel.send(
        f"<@{requester.id}> {text}", allowed_mentions=discord.AllowedMentions(users=[discord.Object(requester.id)])
    )


async def _member(channel: discord.abc.Messageable, user: discord.abc.Snowflake) -> discord.Member | None:
    """The member behind an id, to DM them (None outside a server)."""
    guild = getattr(channel, "guild", None)
    if not isinstance(guild, discord.Guild):
        return None
    return guild.get_member(user.id) or await guild.fetch_member(user.id)


async def _delete_message(channel: discord.abc.Messageable, message_id: int) -> None:
    """Delete one of the bot's own messages by id, if it is still there."""
    if isinstance(channel, discord.TextChannel | discord.Thread | discord.DMChannel):
        with contextlib.suppress(discord.HTTPException):
            await channel.get_partial_message(message_id).delete()


async def send_dm(client: discord.Client, user_id: int, text: str) -> None:
    """A DM to a member, for news that has nowhere private to go; silent if their DMs are closed."""
    try:
        channel = await client.create_dm(discord.Object(id=user_id))
        await channel.send(text)
    except discord.HTTPException as exc:
        log.info("could not send a DM to member %s: %s", user_id, exc)
