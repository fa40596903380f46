"""/imagine: a prompt (and optionally reference images) in, an image in a thread out; and "Imagine with these
images", the same from any message's context menu with every image on it as a reference.

The command is built when the cog loads, from the configured model's capabilities, so members are
offered only the aspect ratios, sizes and thinking levels that model accepts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.core.models import ModelSpec
from bot.i18n import t, tn
from bot.jobs.characters import MAX_NAME
from bot.ui.commands import ModelCommandCog, offered, user_installable
from bot.ui.context import Services
from bot.ui.intake import (
    SPEEDS,
    attached_only,
    character_autocomplete,
    elapsed_ms,
    message_images,
    ratio_choices,
    size_choices,
    start_job,
    thinking_choice,
)
from bot.ui.rules import Requester, admit
from bot.ui.surfaces import InteractionSurface
from storage.characters import list_characters
from storage.guild_settings import get_guild_settings
from storage.jobs import JobRequest

MAX_PROMPT = 4000
# Module level: discord.py resolves the callbacks' annotations against this module's globals.
Prompt = app_commands.Range[str, 1, MAX_PROMPT]

DESCRIPTIONS = {
    "prompt": "What to draw: subject, setting, style, light, mood.",
    "aspect_ratio": "Shape of the image (default 1:1).",
    "resolution": "1K is fastest and cheapest; 4K takes longest.",
    "thinking": "How hard the model thinks first (high is slower, often better).",
    "reference": "An image to work from (a person, product, style).",
    "reference2": "A second reference image.",
    "reference3": "A third reference image.",
    "character": "A saved character to draw (see /character).",
    "speed": "fast: now. relax: half price, delivered later (usually within hours).",
}


#: Discord offers at most 25 options in a select menu; a server with more characters types the name.
MAX_OPTIONS = 25


class Imagine(ModelCommandCog):
    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services) -> None:
        super().__init__(bot, services)
        self.menu = app_commands.ContextMenu(name="Imagine with these images", callback=self.imagine_with_images)

    def build(self, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
        return build_command(self, spec)

    async def cog_load(self) -> None:
        await super().cog_load()
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        await super().cog_unload()
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def imagine_with_images(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The context menu: every image on the message as a reference, and a form for the rest."""
        locale = str(interaction.locale)
        images = message_images(message)
        if not images:
            await interaction.response.send_message(t(locale, "form.imagine.no_images"), ephemeral=True)
            return
        # A blocked member is told now, not after typing a prompt; the prompt itself is checked on submit.
        if await admit(self.services, Requester.of_interaction(interaction), []) is None:
            return
        guild_id = interaction.guild_id
        settings = await get_guild_settings(self.services.db, guild_id) if guild_id is not None else None
        spec = self.services.spec_for(settings.default_model if settings is not None else None)
        found = await list_characters(self.services.db, guild_id, limit=MAX_OPTIONS + 1) if guild_id else []
        references = [(f"{image.filename} (#{n})", image) for n, image in enumerate(images, start=1)]

        async def submitted(modal_interaction: discord.Interaction, form: ImagineForm) -> None:
            await self.imagine(
                modal_interaction,
                prompt=form.prompt.value,
                aspect_ratio=form.aspect_ratio,
                resolution=form.size,
                thinking=None,
                references=references,
                character=form.character,
            )

        names = [c.name for c in found]
        form = ImagineForm(locale=locale, spec=spec, images=len(images), characters=names, on_submit=submitted)
        await interaction.response.send_modal(form)

    async def imagine(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        aspect_ratio: str | None,
        resolution: str | None,
        thinking: str | None,
        references: Sequence[tuple[str, discord.Attachment | None]],
        character: str | None = None,
        speed: str | None = None,
    ) -> None:
        received = time.monotonic()
        # Within Discord's 3 seconds, before any work: downloading references alone can take longer.
        await interaction.response.defer(thinking=True)
        defer_ms = elapsed_ms(received)
        request = JobRequest(prompt=prompt, aspect_ratio=aspect_ratio, thinking=thinking)
        surface = InteractionSurface(interaction, locale=self.services.public_locale(interaction), received_at=received)
        await start_job(
            self.services,
            interaction,
            surface,
            request,
            attached_only(references),
            kind="imagine",
            defer_ms=defer_ms,
            size=resolution,
            character=character,
            speed=speed,
        )


class ImagineForm(discord.ui.Modal):
    """The context menu's form: the prompt, and the shape, size and character to draw it with (each left
    empty for the server's or the model's default)."""

    def __init__(
        self,
        *,
        locale: str,
        spec: ModelSpec,
        images: int,
        characters: list[str],
        on_submit: Callable[[discord.Interaction, ImagineForm], Awaitable[None]],
    ) -> None:
        super().__init__(title=t(locale, "form.imagine.title")[:45], timeout=15 * 60)
        self._on_submit = on_submit
        self.prompt: discord.ui.TextInput[ImagineForm] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph,
            placeholder=t(locale, "form.imagine.prompt_hint")[:100],
            min_length=1,
            max_length=MAX_PROMPT,
        )
        described = tn(locale, "form.imagine.images", images)[:100]
        self.add_item(label(t(locale, "form.imagine.prompt"), self.prompt, described))
        default = t(locale, "form.imagine.default")
        self._ratio = choice_menu(spec.aspect_ratios, default)
        self.add_item(label(t(locale, "form.imagine.aspect_ratio"), self._ratio))
        self._size = choice_menu(spec.sizes, default)
        self.add_item(label(t(locale, "form.imagine.size"), self._size))
        self._character: discord.ui.Select[ImagineForm] | discord.ui.TextInput[ImagineForm] | None = None
        if len(characters) > MAX_OPTIONS:
            self._character = discord.ui.TextInput(
                placeholder=t(locale, "form.imagine.character_hint")[:100], required=False, max_length=MAX_NAME
            )
        elif characters:
            self._character = choice_menu(characters, t(locale, "form.imagine.no_character"))
        if self._character is not None:
            self.add_item(label(t(locale, "form.imagine.character"), self._character))

    @property
    def aspect_ratio(self) -> str | None:
        return self._ratio.values[0] if self._ratio.values else None

    @property
    def size(self) -> str | None:
        return self._size.values[0] if self._size.values else None

    @property
    def character(self) -> str | None:
        if isinstance(self._character, discord.ui.Select):
            return self._character.values[0] if self._character.values else None
        if isinstance(self._character, discord.ui.TextInput):
            return self._character.value.strip() or None
        return None

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self)


def label(
    text: str, component: discord.ui.Item[ImagineForm], description: str | None = None
) -> discord.ui.Label[ImagineForm]:
    return discord.ui.Label(text=text[:45], component=component, description=description)


def choice_menu(values: tuple[str, ...] | list[str], placeholder: str) -> discord.ui.Select[ImagineForm]:
    """An optional single choice among `values` (Discord shows at most 25)."""
    options = [discord.SelectOption(label=v[:100], value=v[:100]) for v in values[:MAX_OPTIONS]]
    return discord.ui.Select(options=options, placeholder=placeholder[:150], required=False)


def build_command(cog: Imagine, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
    """/imagine with the choices `spec` allows: the thinking option only where the model takes one, the speed
    option only where the bot can make relax images (a Gemini key)."""
    levels = [thinking_choice(level) for level in spec.thinking_levels]

    @app_commands.autocomplete(character=character_autocomplete(cog.services))
    async def imagine(
        interaction: discord.Interaction,
        prompt: Prompt,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        thinking: str | None = None,
        reference: discord.Attachment | None = None,
        reference2: discord.Attachment | None = None,
        reference3: discord.Attachment | None = None,
        character: str | None = None,
        speed: str | None = None,
    ) -> None:
        refs = [("reference", reference), ("reference2", reference2), ("reference3", reference3)]
        await cog.imagine(
            interaction,
            prompt=prompt,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            thinking=thinking,
            references=refs,
            character=character,
            speed=speed,
        )

    leave_out = ([] if levels else ["thinking"]) + ([] if cog.services.jobs.relax.available else ["speed"])
    choices = {"aspect_ratio": ratio_choices(spec), "resolution": size_choices(spec), "thinking": levels}
    callback = offered(imagine, descriptions=DESCRIPTIONS, choices={**choices, "speed": SPEEDS}, leave_out=leave_out)
    return app_commands.Command(
        name="imagine",
        description=locale_str(f"Create an image with {spec.label} from a prompt.", model=spec.label),
        callback=callback,
        **user_installable(cog.services),
    )
