"""The buttons under results and status messages: Reroll, Edit, re-render larger, Delete, Cancel.

They are persistent: one `DynamicItem` matches every ``job:<action>:<job id>`` custom id, so a click
works after a restart. The job comes from SQLite; nothing about it is kept in memory.
"""

from __future__ import annotations

import re
import time
from typing import Any, Protocol, cast

import discord
from discord.ext import commands

from bot.client import BananaBot
from bot.i18n import t
from bot.intake import elapsed_ms, submit
from bot.presenter import ChannelSurface, InteractionSurface, Surface, public_locale
from bot.views import CUSTOM_ID, TextModal, custom_id, larger_size
from storage.jobs import Job, get_job

#: What "re-render at a larger size" asks of the model: the same picture, more pixels.
UPSCALE_PROMPT = "Render this exact image again at a higher resolution. Change nothing: same composition, same details."
MAX_INSTRUCTION = 2000


class CharacterAdder(Protocol):
    async def offer_add(self, interaction: discord.Interaction, job_id: str) -> None: ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
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
        cog = interaction.client.get_cog("Results")  # type: ignore[attr-defined]
        assert isinstance(cog, Results)
        await cog.handle(interaction, self.action, self.job_id)


class Results(commands.Cog):
    def __init__(self, bot: BananaBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobButton)

    async def handle(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        locale = str(interaction.locale)
        job = await get_job(self.bot.jobs.db, job_id)
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
            # The Characters cog owns characters; extensions are separate modules, so reach it via a protocol.
            characters = cast(CharacterAdder, self.bot.get_cog("Characters"))
            await characters.offer_add(interaction, job.id)
        elif action == "remix":
            await interaction.response.send_modal(self.remix_modal(job, locale))
        elif action == "upscale":
            bigger = larger_size(job.request.get("model") or self.bot.default_model, job.request.get("size", "1K"))
            if bigger is None:
                await interaction.response.send_message(t(locale, "upscale.largest"), ephemeral=True)
                return
            await self.continue_from(interaction, job, kind="upscale", prompt=UPSCALE_PROMPT, size=bigger)

    def edit_modal(self, job: Job, locale: str) -> TextModal:
        """Edit: an instruction that continues from this image."""

        async def submitted(interaction: discord.Interaction, instruction: str) -> None:
            await self.continue_from(
                interaction, job, kind="edit", prompt=instruction, size=job.request.get("size", "1K")
            )

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
            default=job.request["prompt"],
            on_submit=submitted,
            max_length=4000,
        )

    async def cancel(self, interaction: discord.Interaction, job: Job, locale: str) -> None:
        if interaction.user.id != job.user_id:
            await interaction.response.send_message(t(locale, "perm.cancel"), ephemeral=True)
            return
        cancelled = await self.bot.jobs.cancel(job.id)
        await interaction.response.send_message(
            t(locale, "cancel.done" if cancelled else "cancel.too_late"), ephemeral=True
        )

    async def delete(self, interaction: discord.Interaction, job: Job, locale: str) -> None:
        if interaction.user.id != job.user_id and not interaction.permissions.manage_messages:
            await interaction.response.send_message(t(locale, "perm.delete"), ephemeral=True)
            return
        if interaction.message is not None:
            await interaction.message.delete()
        await interaction.response.send_message(t(locale, "deleted"), ephemeral=True)

    async def reroll(
        self, interaction: discord.Interaction, job: Job, *, prompt: str | None = None, kind: str = "reroll"
    ) -> None:
        """The same request again (with a new prompt for a remix), as a new image where the button was pressed."""
        received = time.monotonic()
        await interaction.response.defer(thinking=True)
        request = {**job.request, "prompt": prompt or job.request["prompt"]}
        new = self._new_job(interaction, kind=kind, request=request, parent=None)
        new.defer_ms = elapsed_ms(received)
        await submit(self.bot, new, InteractionSurface(interaction, received_at=received))

    async def continue_from(
        self, interaction: discord.Interaction, job: Job, *, kind: str, prompt: str, size: str
    ) -> None:
        """An edit of `job`'s image, shown in its thread (or in place when there is none)."""
        received = time.monotonic()
        thread_id = job.thread_id
        if thread_id is None and interaction.message is not None and interaction.message.thread is not None:
            thread_id = interaction.message.thread.id  # clicked before the job recorded its new thread
        thread = await self.bot.resolve_channel(thread_id) if thread_id else None
        surface: Surface
        if isinstance(thread, discord.Thread) and interaction.channel_id != thread.id:
            await interaction.response.send_message(
                t(str(interaction.locale), "continue.in_thread", thread=thread.mention), ephemeral=True
            )
            surface = ChannelSurface(
                thread,
                locale=public_locale(interaction),
                private_locale=str(interaction.locale),
                upload_limit=interaction.filesize_limit,
                mention=interaction.user,
            )
        else:
            await interaction.response.defer(thinking=True)
            surface = InteractionSurface(interaction, received_at=received)
        request = {**job.request, "prompt": prompt, "size": size, "reference_keys": []}
        new = self._new_job(interaction, kind=kind, request=request, parent=job)
        if isinstance(thread, discord.Thread):
            new.thread_id = new.channel_id = thread.id
        new.defer_ms = elapsed_ms(received)
        await submit(self.bot, new, surface)

    def _new_job(
        self, interaction: discord.Interaction, *, kind: str, request: dict[str, Any], parent: Job | None
    ) -> Job:
        channel = interaction.channel
        assert channel is not None
        in_thread = isinstance(channel, discord.Thread)
        return Job(
            guild_id=interaction.guild_id,
            channel_id=parent.thread_id if parent and parent.thread_id else channel.id,
            user_id=interaction.user.id,
            kind=kind,
            locale=public_locale(interaction),
            request=request,
            parent_id=parent.id if parent else None,
            thread_id=(parent.thread_id if parent else None) or (channel.id if in_thread else None),
        )


async def setup(bot: BananaBot) -> None:
    await bot.add_cog(Results(bot))
