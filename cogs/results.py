"""The buttons under results and status messages: Reroll, Edit, re-render larger, Delete, Cancel.

They are persistent: one `DynamicItem` matches every ``job:<action>:<job id>`` custom id, so a click
works after a restart. The job comes from SQLite; nothing about it is kept in memory.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import discord
from discord.ext import commands

from bot.i18n import money, t
from bot.ui.context import Services
from bot.ui.intake import elapsed_ms, submit
from bot.ui.rules import Requester, admit, admit_character
from bot.ui.surfaces import ChannelSurface, InteractionSurface, Surface, through_user_install
from bot.ui.views import CUSTOM_ID, TextModal, bound, custom_id, larger_size
from cogs.characters import Characters
from cogs.moderation import Moderation
from storage.jobs import Job, JobRequest, get_job

#: What "re-render at a larger size" asks of the model: the same picture, more pixels.
UPSCALE_PROMPT = "Render this exact image again at a higher resolution. Change nothing: same composition, same details."
MAX_INSTRUCTION = 2000


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    #: Set on the subclass the Results cog registers (views.bound).
    handler: ClassVar[Callable[[discord.Interaction, str, str], Awaitable[None]]]

    def __init__(self, action: str, job_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id(action, job_id)))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await type(self).handler(interaction, self.action, self.job_id)


class Results(commands.Cog):
    def __init__(
        self,
        bot: commands.Bot | commands.AutoShardedBot,
        services: Services,
        *,
        characters: Characters,
        moderation: Moderation,
    ) -> None:
        self.bot = bot
        self.services = services
        #: "Add to character" belongs to the Characters cog, "Report" to Moderation.
        self.characters = characters
        self.moderation = moderation
        self.buttons = bound(JobButton, CUSTOM_ID, self.handle)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(self.buttons)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(self.buttons)

    async def handle(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        locale = str(interaction.locale)
        job = await get_job(self.services.db, job_id)
        if job is None or job.guild_id != interaction.guild_id:
            await interaction.response.send_message(t(locale, "job.missing"), ephemeral=True)
            return
        if action == "cancel":
            await self.cancel(interaction, job, locale)
        elif action == "delete":
            await self.delete(interaction, job, locale)
        elif action == "reroll":
            await self.reroll(interaction, job)
        elif action == "edit":
            await interaction.response.send_modal(self.edit_modal(job, locale))
        elif action == "addchar":
            await self.characters.offer_add(interaction, job.id)
        elif action == "report":
            await self.moderation.report(interaction, job)
        elif action == "remix":
            await interaction.response.send_modal(self.remix_modal(job, locale))
        elif action == "upscale":
            bigger = larger_size(job.request.model or self.services.default_model, job.request.size)
            if bigger is None:
                await interaction.response.send_message(t(locale, "upscale.largest"), ephemeral=True)
                return
            await self.continue_from(interaction, job, kind="upscale", prompt=UPSCALE_PROMPT, size=bigger)

    def edit_modal(self, job: Job, locale: str) -> TextModal:
        """Edit: an instruction that continues from this image."""

        async def submitted(interaction: discord.Interaction, instruction: str) -> None:
            await self.continue_from(interaction, job, kind="edit", prompt=instruction, size=job.request.size)

        return TextModal(
            title=t(locale, "modal.edit.title"),
            label=t(locale, "modal.edit.label"),
            placeholder=t(locale, "modal.edit.placeholder"),
            on_submit=submitted,
            max_length=MAX_INSTRUCTION,
        )

    def remix_modal(self, job: Job, locale: str) -> TextModal:
        """Remix: the same request with a changed prompt, as a new image."""

        async def submitted(interaction: discord.Interaction, prompt: str) -> None:
            await self.reroll(interaction, job, prompt=prompt, kind="remix")

        return TextModal(
            title=t(locale, "modal.remix.title"),
            label=t(locale, "modal.remix.label"),
            default=job.request.prompt,
            on_submit=submitted,
            max_length=4000,
        )

    async def cancel(self, interaction: discord.Interaction, job: Job, locale: str) -> None:
        if interaction.user.id != job.user_id:
            await interaction.response.send_message(t(locale, "perm.cancel"), ephemeral=True)
            return
        if await self.services.jobs.cancel(job.id):
            answer = t(locale, "cancel.done")
        elif job.speed == "relax" and await self.services.jobs.cancel_delivery(job.id):
            answer = t(locale, "cancel.relax_sent", price=money(locale, job.reserved_usd))
        else:
            answer = t(locale, "cancel.too_late")
        await interaction.response.send_message(answer, ephemeral=True)

    async def delete(self, interaction: discord.Interaction, job: Job, locale: str) -> None:
        if interaction.user.id != job.user_id and not interaction.permissions.manage_messages:
            await interaction.response.send_message(t(locale, "perm.delete"), ephemeral=True)
            return
        if interaction.message is not None:
            await interaction.message.delete()
        await interaction.response.send_message(t(locale, "deleted"), ephemeral=True)
        self.services.modlog.deletion(job, interaction.user.id)

    async def reroll(
        self, interaction: discord.Interaction, job: Job, *, prompt: str | None = None, kind: str = "reroll"
    ) -> None:
        """The same request again (with a new prompt for a remix), as a new image where the button was pressed."""
        received = time.monotonic()
        await interaction.response.defer(thinking=True)
        request = dataclasses.replace(job.request, prompt=prompt or job.request.prompt)
        surface = InteractionSurface(interaction, locale=self.services.public_locale(interaction), received_at=received)
        requester = Requester.of_interaction(interaction)
        admitted = await admit(self.services, requester, [request.prompt], surface)
        if admitted is None or not await admit_character(self.services, requester, request, surface):
            return
        new = self._new_job(interaction, kind=kind, request=request, parent=None)
        new.defer_ms = elapsed_ms(received)
        await submit(self.services, new, surface, member_daily=admitted.daily, server_speed=True)

    async def continue_from(
        self, interaction: discord.Interaction, job: Job, *, kind: str, prompt: str, size: str
    ) -> None:
        """An edit of `job`'s image, shown in its thread (or in place when there is none)."""
        received = time.monotonic()
        thread_id = job.thread_id
        if thread_id is None and interaction.message is not None and interaction.message.thread is not None:
            thread_id = interaction.message.thread.id  # clicked before the job recorded its new thread
        thread = await self.services.resolve_channel(thread_id) if thread_id else None
        in_other_thread = isinstance(thread, discord.Thread) and interaction.channel_id != thread.id
        surface: Surface
        if isinstance(thread, discord.Thread) and in_other_thread:
            await interaction.response.defer(ephemeral=True, thinking=True)
            surface = ChannelSurface(
                thread,
                locale=self.services.public_locale(interaction),
                private_locale=str(interaction.locale),
                upload_limit=interaction.filesize_limit,
                mention=interaction.user,
            )
        else:
            await interaction.response.defer(thinking=True)
            surface = InteractionSurface(
                interaction, locale=self.services.public_locale(interaction), received_at=received
            )
        # A re-render's prompt is the bot's own: only the member's words go through the ban list.
        texts = [] if kind == "upscale" else [prompt]
        # Refused in another thread: told as the answer to the click, not in the thread.
        admitted = await admit(
            self.services, Requester.of_interaction(interaction), texts, None if in_other_thread else surface
        )
        if admitted is None:
            return
        if isinstance(thread, discord.Thread) and in_other_thread:
            await interaction.edit_original_response(
                content=t(str(interaction.locale), "continue.in_thread", thread=thread.mention)
            )
        request = dataclasses.replace(job.request, prompt=prompt, size=size, reference_keys=(), input_notes=())
        new = self._new_job(interaction, kind=kind, request=request, parent=job)
        if isinstance(thread, discord.Thread):
            new.thread_id = new.channel_id = thread.id
        new.defer_ms = elapsed_ms(received)
        await submit(self.services, new, surface, member_daily=admitted.daily, server_speed=True)

    def _new_job(self, interaction: discord.Interaction, *, kind: str, request: JobRequest, parent: Job | None) -> Job:
        channel = interaction.channel
        assert channel is not None
        in_thread = isinstance(channel, discord.Thread)
        return Job(
            guild_id=interaction.guild_id,
            channel_id=parent.thread_id if parent and parent.thread_id else channel.id,
            user_id=interaction.user.id,
            kind=kind,
            locale=self.services.public_locale(interaction),
            request=request,
            parent_id=parent.id if parent else None,
            thread_id=(parent.thread_id if parent else None) or (channel.id if in_thread else None),
            user_install=through_user_install(interaction),
        )
