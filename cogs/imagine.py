"""/imagine: a prompt (and optionally reference images) in, an image in a thread out.

The command is built when the cog loads, from the configured model's capabilities, so members are
offered only the aspect ratios, sizes and thinking levels that model accepts.
"""

from __future__ import annotations

import time
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.core.models import ModelSpec
from bot.ui.commands import ModelCommandCog, user_installable
from bot.ui.intake import (
    attached_only,
    character_autocomplete,
    elapsed_ms,
    ratio_choices,
    size_choices,
    start_job,
    thinking_choice,
)
from bot.ui.surfaces import InteractionSurface
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
}


class Imagine(ModelCommandCog):
    def build(self, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
        return build_command(self, spec)

    async def imagine(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        aspect_ratio: str | None,
        resolution: str | None,
        thinking: str | None,
        references: list[tuple[str, discord.Attachment | None]],
        character: str | None = None,
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
        )


def build_command(cog: Imagine, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
    """/imagine with the choices `spec` allows; the thinking option only where the model takes one."""
    ratios, sizes = ratio_choices(spec), size_choices(spec)
    levels = [thinking_choice(level) for level in spec.thinking_levels]
    if levels:

        @app_commands.describe(**DESCRIPTIONS)
        @app_commands.choices(aspect_ratio=ratios, resolution=sizes, thinking=levels)
        @app_commands.autocomplete(character=character_autocomplete(cog.services))
        async def imagine_thinking(
            interaction: discord.Interaction,
            prompt: Prompt,
            aspect_ratio: str | None = None,
            resolution: str | None = None,
            thinking: str | None = None,
            reference: discord.Attachment | None = None,
            reference2: discord.Attachment | None = None,
            reference3: discord.Attachment | None = None,
            character: str | None = None,
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
            )

        callback: Any = imagine_thinking
    else:
        describe = {k: v for k, v in DESCRIPTIONS.items() if k != "thinking"}

        @app_commands.describe(**describe)
        @app_commands.choices(aspect_ratio=ratios, resolution=sizes)
        @app_commands.autocomplete(character=character_autocomplete(cog.services))
        async def imagine_plain(
            interaction: discord.Interaction,
            prompt: Prompt,
            aspect_ratio: str | None = None,
            resolution: str | None = None,
            reference: discord.Attachment | None = None,
            reference2: discord.Attachment | None = None,
            reference3: discord.Attachment | None = None,
            character: str | None = None,
        ) -> None:
            refs = [("reference", reference), ("reference2", reference2), ("reference3", reference3)]
            await cog.imagine(
                interaction,
                prompt=prompt,
                aspect_ratio=aspect_ratio,
                resolution=resolution,
                thinking=None,
                references=refs,
                character=character,
            )

        callback = imagine_plain
    return app_commands.Command(
        name="imagine",
        description=locale_str(f"Create an image with {spec.label} from a prompt.", model=spec.label),
        callback=callback,
        **user_installable(cog.services),
    )
