"""/edit: change any image by instruction; and "Edit image", the same from any message's context menu.

/edit takes up to three images ("put the person from image 2 into image 1"); the result opens a thread
that keeps the edit context, like /imagine. On one of the bot's own results the context menu continues
that image's conversation; on anyone else's image it starts one with that image.
"""

from __future__ import annotations

import time
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.core.models import ModelSpec
from bot.i18n import t
from bot.ui.commands import ModelCommandCog, offered, user_installable
from bot.ui.context import Services
from bot.ui.intake import (
    SPEEDS,
    attached_only,
    character_autocomplete,
    elapsed_ms,
    ratio_choices,
    size_choices,
    start_job,
)
from bot.ui.surfaces import InteractionSurface
from bot.ui.views import TextModal
from cogs.results import Results
from storage.jobs import JobRequest, job_for_message

DESCRIPTIONS = {
    "image": "The image to change.",
    "instruction": "What to change, e.g. 'make it night and add snow'.",
    "image2": "Another image to use (e.g. a person or object to put into the first).",
    "image3": "A third image to use.",
    "aspect_ratio": "Shape of the result (default: the model's choice).",
    "resolution": "1K is fastest and cheapest; 4K takes longest.",
    "character": "A saved character to keep consistent in the result (see /character).",
    "speed": "fast: now. relax: half price, delivered later (usually within hours).",
}
Instruction = app_commands.Range[str, 1, 2000]


class Edit(ModelCommandCog):
    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services, *, results: Results) -> None:
        super().__init__(bot, services)
        #: "Continue from this image" belongs to the Results cog; the context menu hands the bot's own results to it.
        self.results = results
        self.menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_message_image)

    def build(self, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
        return build_command(self, spec)

    async def cog_load(self) -> None:
        await super().cog_load()
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        await super().cog_unload()
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def edit(
        self,
        interaction: discord.Interaction,
        *,
        instruction: str,
        images: list[tuple[str, discord.Attachment | None]],
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        character: str | None = None,
        speed: str | None = None,
    ) -> None:
        received = time.monotonic()
        await interaction.response.defer(thinking=True)
        request = JobRequest(prompt=instruction, aspect_ratio=aspect_ratio)
        surface = InteractionSurface(interaction, locale=self.services.public_locale(interaction), received_at=received)
        await start_job(
            self.services,
            interaction,
            surface,
            request,
            attached_only(images),
            kind="edit",
            defer_ms=elapsed_ms(received),
            size=resolution,
            character=character,
            speed=speed,
        )

    async def edit_message_image(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The context menu: ask for an instruction, then edit the message's image."""
        locale = str(interaction.locale)
        job = await job_for_message(self.services.db, message.id) if message.author == self.bot.user else None
        if job is not None and job.status == "done" and job.guild_id == interaction.guild_id:
            await interaction.response.send_modal(self.results.edit_modal(job, locale))
            return
        image = first_image(message)
        if image is None:
            await interaction.response.send_message(t(locale, "edit.no_image"), ephemeral=True)
            return

        async def submitted(modal_interaction: discord.Interaction, instruction: str) -> None:
            await self.edit(modal_interaction, instruction=instruction, images=[("image", image)])

        modal = TextModal(
            title=t(locale, "modal.edit.title"),
            label=t(locale, "modal.edit.label"),
            placeholder=t(locale, "modal.edit.placeholder"),
            on_submit=submitted,
        )
        await interaction.response.send_modal(modal)


def first_image(message: discord.Message) -> discord.Attachment | None:
    """The message's first attached image (by content type, or by file name where Discord gave none)."""
    for attachment in message.attachments:
        content_type = attachment.content_type or ""
        if content_type.startswith("image/") or attachment.filename.lower().endswith(
            (".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic")
        ):
            return attachment
    return None


def build_command(cog: Edit, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
    ratios, sizes = ratio_choices(spec), size_choices(spec)

    @app_commands.autocomplete(character=character_autocomplete(cog.services))
    async def edit(
        interaction: discord.Interaction,
        image: discord.Attachment,
        instruction: Instruction,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        character: str | None = None,
        speed: str | None = None,
    ) -> None:
        images = [("image", image), ("image2", image2), ("image3", image3)]
        await cog.edit(
            interaction,
            instruction=instruction,
            images=images,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            character=character,
            speed=speed,
        )

    return app_commands.Command(
        name="edit",
        description=locale_str(f"Change an image by instruction with {spec.label}.", model=spec.label),
        callback=offered(
            edit,
            descriptions=DESCRIPTIONS,
            choices={"aspect_ratio": ratios, "resolution": sizes, "speed": SPEEDS},
            leave_out=() if cog.services.jobs.relax.available else ("speed",),
        ),
        **user_installable(cog.services),
    )
