"""/grid: four variations as one 2x2 preview, with U1-U4 (take one further), V1-V4 (vary one) and Reroll.

The buttons are persistent: their custom ids carry the grid id (``grid:u:<id>:2``) and the grid lives in
SQLite, so they work after a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.core.imaging import image_size, sniff_mime
from bot.core.models import ModelSpec
from bot.i18n import money, t
from bot.media.grids import VARIATION_PROMPT
from bot.ui.commands import ModelCommandCog, offered
from bot.ui.grid import grid_mode_for, start_grid
from bot.ui.intake import (
    SPEEDS,
    InputError,
    attached_only,
    character_autocomplete,
    choose_speed,
    elapsed_ms,
    ratio_choices,
    size_choices,
    take_inputs,
)
from bot.ui.results import ResultFacts, model_label, post_result
from bot.ui.rules import Admitted, Requester, admit, admit_character
from bot.ui.surfaces import ChannelSurface, InteractionSurface, Surface
from bot.ui.views import GRID_CUSTOM_ID, bound, grid_custom_id
from storage.generations import get_generation
from storage.grids import Grid, get_grid, grid_jobs
from storage.jobs import Job, JobRequest, insert_job

DESCRIPTIONS = {
    "prompt": "What to draw; you get four variations of it.",
    "aspect_ratio": "Shape of each image (default 1:1).",
    "resolution": "1K is fastest and cheapest; each variation is made at this size.",
    "reference": "An image to work from (a person, product, style).",
    "reference2": "A second reference image.",
    "reference3": "A third reference image.",
    "character": "A saved character to draw (see /character).",
    "speed": "fast: now. relax: half price, delivered later (usually within hours).",
}
Prompt = app_commands.Range[str, 1, 4000]


class GridButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=GRID_CUSTOM_ID):
    #: Set on the subclass the grid cog registers (views.bound).
    handler: ClassVar[Callable[[discord.Interaction, str, str, int | None], Awaitable[None]]]

    def __init__(self, action: str, grid_id: str, tile: int | None) -> None:
        super().__init__(discord.ui.Button(custom_id=grid_custom_id(action, grid_id, tile)))
        self.action, self.grid_id, self.tile = action, grid_id, tile

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> GridButton:
        return cls(match["action"], match["grid_id"], int(match["tile"]) if match["tile"] else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        await type(self).handler(interaction, self.action, self.grid_id, self.tile)


class GridCog(ModelCommandCog):
    def build(self, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
        return build_command(self, spec)

    async def cog_load(self) -> None:
        await super().cog_load()
        self.buttons = bound(GridButton, GRID_CUSTOM_ID, self.handle)
        self.bot.add_dynamic_items(self.buttons)

    async def cog_unload(self) -> None:
        await super().cog_unload()
        self.bot.remove_dynamic_items(self.buttons)

    def surface(self, interaction: discord.Interaction, received: float) -> InteractionSurface:
        return InteractionSurface(interaction, locale=self.services.public_locale(interaction), received_at=received)

    async def grid(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        aspect_ratio: str | None,
        resolution: str | None,
        references: list[tuple[str, discord.Attachment | None]],
        character: str | None = None,
        speed: str | None = None,
    ) -> None:
        received = time.monotonic()
        await interaction.response.defer(thinking=True)
        surface = self.surface(interaction, received)
        admitted = await admit(self.services, Requester.of_interaction(interaction), [prompt], surface)
        if admitted is None:
            return
        # Through a member's own install no server's settings apply.
        guild_id = None if Requester.of_interaction(interaction).user_install else interaction.guild_id
        try:
            chosen_speed = await choose_speed(self.services, guild_id, speed, surface.private_locale)
        except InputError as exc:
            await surface.error(str(exc))
            return
        request = await take_inputs(
            self.services,
            surface,
            JobRequest(prompt=prompt, aspect_ratio=aspect_ratio),
            attached_only(references),
            guild_id=interaction.guild_id,
            size=resolution,
            character=character,
        )
        if request is None:
            return
        await self._start(
            interaction, surface, request, defer_ms=elapsed_ms(received), admitted=admitted, speed=chosen_speed
        )

    async def _start(
        self,
        interaction: discord.Interaction,
        surface: Surface,
        request: JobRequest,
        *,
        defer_ms: float | None,
        admitted: Admitted | None = None,
        **options: Any,
    ) -> None:
        """Queue the grid, after the server's rules unless the caller checked them already."""
        if admitted is None:
            admitted = await admit(self.services, Requester.of_interaction(interaction), [request.prompt], surface)
            if admitted is None:
                return
        if not await admit_character(self.services, Requester.of_interaction(interaction), request, surface):
            return
        if "speed" not in options:  # a button's grid: the server's speed
            guild_id = None if Requester.of_interaction(interaction).user_install else interaction.guild_id
            try:
                options["speed"] = await choose_speed(self.services, guild_id, None, surface.private_locale)
            except InputError as exc:
                await surface.error(str(exc))
                return
        channel = interaction.channel
        assert channel is not None
        await start_grid(
            self.services,
            surface,
            guild_id=interaction.guild_id,
            channel_id=channel.id,
            user_id=interaction.user.id,
            request=request,
            mode=await grid_mode_for(self.services, interaction.guild_id),
            defer_ms=defer_ms,
            member_daily=admitted.daily,
            **options,
        )

    # --- the buttons -----------------------------------------------------------------------------------
    async def handle(self, interaction: discord.Interaction, action: str, grid_id: str, tile: int | None) -> None:
        locale = str(interaction.locale)
        grid = await get_grid(self.services.db, grid_id)
        if grid is None or grid.guild_id != interaction.guild_id:
            await interaction.response.send_message(t(locale, "job.missing"), ephemeral=True)
            return
        if action == "cancel":
            await self.cancel(interaction, grid, locale)
            return
        if action == "reroll":
            received = time.monotonic()
            await interaction.response.defer(thinking=True)
            surface = self.surface(interaction, received)
            await self._start(interaction, surface, grid.request, defer_ms=elapsed_ms(received))
            return
        assert tile is not None
        key = (grid.tile_keys or [None] * 4)[tile - 1]
        if key is None:
            await interaction.response.send_message(t(locale, "grid.tile_missing", tile=tile), ephemeral=True)
            return
        if action == "u":
            await self.upscale(interaction, grid, tile, key)
        else:
            await self.vary(interaction, grid, tile, key)

    async def cancel(self, interaction: discord.Interaction, grid: Grid, locale: str) -> None:
        if interaction.user.id != grid.user_id:
            await interaction.response.send_message(t(locale, "perm.cancel"), ephemeral=True)
            return
        jobs = await grid_jobs(self.services.db, grid.id)
        cancelled = [await self.services.jobs.cancel(job.id) for job in jobs]
        if any(cancelled):
            answer = t(locale, "cancel.done")
        elif any([await self.services.jobs.cancel_delivery(job.id) for job in jobs if job.speed == "relax"]):
            price = sum(job.reserved_usd for job in jobs)
            answer = t(locale, "cancel.relax_sent", price=money(locale, price))
        else:
            answer = t(locale, "cancel.too_late")
        await interaction.response.send_message(answer, ephemeral=True)

    async def upscale(self, interaction: discord.Interaction, grid: Grid, tile: int, key: str) -> None:
        """U: the variation at full size, as a result of its own in the grid's thread, ready to refine."""
        received = time.monotonic()
        await interaction.response.defer(ephemeral=True, thinking=True)
        if (
            await admit(self.services, Requester.of_interaction(interaction), [], self.surface(interaction, received))
            is None
        ):
            return
        job, facts = await self._tile_job(interaction, grid, tile, key)
        thread = await self.services.resolve_channel(grid.thread_id) if grid.thread_id else None
        target = thread if isinstance(thread, discord.Thread) else interaction.channel
        assert isinstance(target, discord.abc.Messageable)
        job.thread_id = target.id if isinstance(target, discord.Thread) else None
        surface = ChannelSurface(
            target,
            locale=self.services.public_locale(interaction),
            private_locale=locale_of(interaction),
            upload_limit=interaction.filesize_limit,
        )
        data = await self.services.images.get(key)
        message = await post_result(self.services.db, surface, job, facts, data, sniff_mime(data) or "image/png")
        self.services.modlog.result(
            job, message, model=model_label(facts.model), size=facts.size, cost=facts.cost_usd, image=data
        )
        await interaction.followup.send(t(locale_of(interaction), "grid.posted", link=message.jump_url), ephemeral=True)

    async def _tile_job(
        self, interaction: discord.Interaction, grid: Grid, tile: int, key: str
    ) -> tuple[Job, ResultFacts]:
        """The job behind a tile: its own job in tiles mode; in sliced mode a new one holding the cut-out."""
        db = self.services.db
        request = grid.request
        facts = ResultFacts(
            prompt=request.prompt,
            model=self.services.default_model,
            size=request.size,
            aspect=request.aspect_ratio or "1:1",
        )
        jobs = await grid_jobs(db, grid.id)
        tile_job = next((j for j in jobs if j.tile == tile and j.status == "done"), None)
        source = tile_job or next((j for j in jobs if j.status == "done"), None)
        if source is not None and source.generation_id is not None:
            row = await get_generation(db, source.generation_id)
            if row is not None:
                facts.model = row.model
                if tile_job is not None:  # a whole job: its own time and cost
                    facts.seconds = (row.total_ms or 0) / 1000
                    facts.cost_usd = row.cost_usd
        data = await self.services.images.get(key)
        facts.width, facts.height = await asyncio.to_thread(image_size, data)
        if tile_job is not None:
            return tile_job, facts
        facts.notes.append(t(self.services.public_locale(interaction), "grid.cut_from", tile=tile))
        cut = Job(
            guild_id=grid.guild_id,
            channel_id=grid.thread_id or grid.channel_id,
            user_id=interaction.user.id,
            kind="tile",  # a view of an image already paid for: holds no quota (see storage.jobs.RESERVED)
            locale=self.services.public_locale(interaction),
            status="done",
            request=request,
            image_key=key,
            grid_id=grid.id,
            tile=tile,
        )
        await insert_job(db, cut)
        return cut, facts

    async def vary(self, interaction: discord.Interaction, grid: Grid, tile: int, key: str) -> None:
        """V: four new variations of one tile, as a new grid where the button was pressed."""
        received = time.monotonic()
        await interaction.response.defer(thinking=True)
        surface = self.surface(interaction, received)
        jobs = await grid_jobs(self.services.db, grid.id)
        tile_job = next((j for j in jobs if j.tile == tile and j.status == "done"), None)
        request = dataclasses.replace(grid.request, reference_keys=() if tile_job else (key,))
        parents: list[str | None] | None = [tile_job.id] * 4 if tile_job else None
        model_prompt = VARIATION_PROMPT.format(prompt=grid.request.prompt)
        await self._start(
            interaction, surface, request, defer_ms=elapsed_ms(received), parents=parents, model_prompt=model_prompt
        )


def locale_of(interaction: discord.Interaction) -> str:
    return str(interaction.locale)


def build_command(cog: GridCog, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
    ratios, sizes = ratio_choices(spec), size_choices(spec)

    @app_commands.autocomplete(character=character_autocomplete(cog.services))
    async def grid(
        interaction: discord.Interaction,
        prompt: Prompt,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        reference: discord.Attachment | None = None,
        reference2: discord.Attachment | None = None,
        reference3: discord.Attachment | None = None,
        character: str | None = None,
        speed: str | None = None,
    ) -> None:
        refs = [("reference", reference), ("reference2", reference2), ("reference3", reference3)]
        await cog.grid(
            interaction,
            prompt=prompt,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            references=refs,
            character=character,
            speed=speed,
        )

    return app_commands.Command(
        name="grid",
        description=locale_str(f"Four variations of a prompt with {spec.label}, to pick from.", model=spec.label),
        callback=offered(
            grid,
            descriptions=DESCRIPTIONS,
            choices={"aspect_ratio": ratios, "resolution": sizes, "speed": SPEEDS},
            leave_out=() if cog.services.jobs.relax.available else ("speed",),
        ),
    )
