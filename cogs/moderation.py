"""Moderators at work: the buttons under the moderators' log (delete an image in its own channel, block a
member) and the Report button any member finds under a result."""

from __future__ import annotations

import discord
from discord.ext import commands

from bot.i18n import t
from bot.ui.context import Services
from bot.ui.modlog import LOG_ID, LogButton
from bot.ui.views import TextModal, bound
from cogs.settings import ServerSettings
from storage.jobs import Job, get_job

MAX_REASON = 300


class Moderation(commands.Cog):
    def __init__(
        self, bot: commands.Bot | commands.AutoShardedBot, services: Services, *, settings: ServerSettings
    ) -> None:
        self.bot = bot
        self.services = services
        #: Blocking from the log is the same as /settings block member.
        self.settings = settings
        self.buttons = bound(LogButton, LOG_ID, self.on_log_button)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(self.buttons)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(self.buttons)

    async def on_log_button(
        self, interaction: discord.Interaction, action: str, target: str, message: tuple[int, int] | None
    ) -> None:
        locale = str(interaction.locale)
        if interaction.guild_id is None:
            return
        if action == "delete":
            if not interaction.permissions.manage_messages:
                await interaction.response.send_message(t(locale, "perm.delete"), ephemeral=True)
                return
            job = await get_job(self.services.db, target)
            if job is None or job.guild_id != interaction.guild_id:
                await interaction.response.send_message(t(locale, "job.missing"), ephemeral=True)
                return
            await interaction.response.defer(ephemeral=True, thinking=True)
            try:
                if await self.delete_result(job, message, interaction):
                    self.services.modlog.deletion(job, interaction.user.id)
            except PermissionError:  # Manage Messages in the log, but not where the image is
                await interaction.followup.send(t(locale, "perm.delete"), ephemeral=True)
                return
            await interaction.followup.send(t(locale, "deleted"), ephemeral=True)
        elif action == "block":
            permissions = interaction.permissions
            if not (permissions.manage_guild or permissions.moderate_members):
                await interaction.response.send_message(t(locale, "perm.block"), ephemeral=True)
                return
            guild_id, user_id = interaction.guild_id, int(target)

            async def submitted(modal_interaction: discord.Interaction, reason: str) -> None:
                await self.settings.block_in(guild_id, modal_interaction, user_id, reason.strip() or "-")

            modal = TextModal(
                title=t(locale, "modlog.block_title"),
                label=t(locale, "modlog.block_reason"),
                on_submit=submitted,
                max_length=MAX_REASON,
            )
            await interaction.response.send_modal(modal)

    async def delete_result(self, job: Job, message: tuple[int, int] | None, interaction: discord.Interaction) -> bool:
        """The message a log entry shows (a result, a grid's preview, a copy) in its own channel, in this
        server; False if it was already gone. Raises PermissionError if the moderator may not manage messages
        there."""
        if message is None:  # an entry without one: the job's own result
            if job.result_message_id is None:
                return False
            # A first result carries its thread (same id); a reply's result sits in the thread itself.
            in_thread = job.thread_id is not None and job.thread_id != job.result_message_id
            message = (job.thread_id if in_thread else job.channel_id, job.result_message_id)  # type: ignore[assignment]
        assert message is not None
        channel = await self.services.resolve_channel(message[0])
        if not isinstance(channel, discord.abc.Messageable) or getattr(channel, "guild", None) is None:
            return False
        member = interaction.user
        if channel.guild.id != interaction.guild_id or not isinstance(member, discord.Member):
            return False
        if not channel.permissions_for(member).manage_messages:
            raise PermissionError  # answered by the caller
        try:
            await channel.get_partial_message(message[1]).delete()
        except discord.NotFound:
            return False
        return True

    async def report(self, interaction: discord.Interaction, job: Job) -> None:
        """Report: to the moderators' log with the reporter's name; the reporter is told it was sent."""
        locale = str(interaction.locale)
        assert job.guild_id is not None
        if not await self.services.modlog.has_channel(job.guild_id):
            await interaction.response.send_message(t(locale, "report.no_log"), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        sent = await self.services.modlog.report(job, interaction.user.id, interaction.message)
        await interaction.followup.send(t(locale, "report.sent" if sent else "report.not_sent"), ephemeral=True)
