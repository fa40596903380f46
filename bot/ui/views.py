"""The buttons under a status or result message.

Every button is persistent: its custom id is ``job:<action>:<job id>`` and the job lives in the database,
so a click works after a restart and weeks later. The clicks are handled by ``cogs/results.py``, which
registers a `discord.ui.DynamicItem` matching these ids at start-up (see `bound`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import discord

from bot.core.models import model_spec
from bot.i18n import t
from storage.jobs import Job

Persistent = TypeVar("Persistent", bound=type[discord.ui.DynamicItem[Any]])


def bound(item: Persistent, template: re.Pattern[str], handler: Callable[..., Awaitable[None]]) -> Persistent:
    """A subclass of the persistent component `item` whose clicks go to `handler`, for the cog that registers
    it with ``add_dynamic_items``: the component finds its handler without looking the cog up by name, and
    each bot gets its own. `item` itself still builds the component that is sent."""
    return type(item.__name__, (item,), {"handler": staticmethod(handler)}, template=template)  # type: ignore[return-value]


ACTIONS = ("reroll", "remix", "edit", "upscale", "delete", "cancel", "addchar", "report")
CUSTOM_ID = re.compile(rf"job:(?P<action>{'|'.join(ACTIONS)}):(?P<job_id>[A-Za-z0-9_-]{{1,40}})")


def custom_id(action: str, job_id: str) -> str:
    assert action in ACTIONS
    return f"job:{action}:{job_id}"


GRID_ACTIONS = ("u", "v", "reroll", "cancel")
GRID_CUSTOM_ID = re.compile(
    rf"grid:(?P<action>{'|'.join(GRID_ACTIONS)}):(?P<grid_id>[A-Za-z0-9_-]{{1,40}})(?::(?P<tile>[1-4]))?"
)


def grid_custom_id(action: str, grid_id: str, tile: int | None = None) -> str:
    assert action in GRID_ACTIONS
    return f"grid:{action}:{grid_id}" + (f":{tile}" if tile is not None else "")


def grid_view(grid_id: str, tile_keys: list[str | None], locale: str) -> discord.ui.View:
    """U1-U4 (take a variation further), V1-V4 (four new variations of it), Reroll; failed tiles greyed out."""
    view = discord.ui.View(timeout=None)
    for action, row, style in (("u", 0, discord.ButtonStyle.primary), ("v", 1, discord.ButtonStyle.secondary)):
        for tile, key in enumerate(tile_keys, start=1):
            view.add_item(
                discord.ui.Button(
                    style=style,
                    label=f"{action.upper()}{tile}",
                    custom_id=grid_custom_id(action, grid_id, tile),
                    disabled=key is None,
                    row=row,
                )
            )
    view.add_item(
        discord.ui.Button(
            label=t(locale, "button.reroll"), emoji="🎲", custom_id=grid_custom_id("reroll", grid_id), row=2
        )
    )
    return view


def grid_cancel_view(grid_id: str, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label=t(locale, "button.cancel"), custom_id=grid_custom_id("cancel", grid_id)))
    return view


def larger_size(model: str, size: str) -> str | None:
    """The next size up that the model makes, if any."""
    sizes = [s for s in model_spec(model).sizes if s != "512"]
    if size not in sizes or sizes.index(size) + 1 >= len(sizes):
        return None
    return sizes[sizes.index(size) + 1]


def result_view(job: Job, locale: str, *, model: str, deletable: bool = True) -> discord.ui.View:
    """Reroll, Remix, Edit, Redo larger, Delete, Add to character and Report. `deletable` is False on an
    ephemeral copy (/show): Discord deletes those only through their own interaction, never by id."""
    view = discord.ui.View(timeout=None)
    view.add_item(_button("reroll", job, t(locale, "button.reroll"), "🎲"))
    view.add_item(_button("remix", job, t(locale, "button.remix"), "🎛️"))
    view.add_item(_button("edit", job, t(locale, "button.edit"), "✏️"))
    bigger = larger_size(model, job.request.size)
    if bigger is not None:
        view.add_item(_button("upscale", job, t(locale, "button.upscale", size=bigger), "🔍"))
    if deletable:
        view.add_item(_button("delete", job, t(locale, "button.delete"), "🗑️", style=discord.ButtonStyle.danger))
    if job.guild_id is not None and not job.user_install:  # characters and moderators belong to a server
        view.add_item(_button("addchar", job, t(locale, "button.add_character"), "🧬"))
        view.add_item(_button("report", job, t(locale, "button.report"), "🚩"))
    return view


def cancel_view(job: Job, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(_button("cancel", job, t(locale, "button.cancel"), None, style=discord.ButtonStyle.secondary))
    return view


def _button(
    action: str,
    job: Job,
    label: str,
    emoji: str | None,
    *,
    style: discord.ButtonStyle = discord.ButtonStyle.secondary,
) -> discord.ui.Button[discord.ui.View]:
    return discord.ui.Button(style=style, label=label, emoji=emoji, custom_id=custom_id(action, job.id))


class TextModal(discord.ui.Modal):
    """One paragraph of text from the member (an edit instruction, a remixed prompt), handed to `on_submit`."""

    def __init__(
        self,
        *,
        title: str,
        label: str,
        on_submit: Callable[[discord.Interaction, str], Awaitable[None]],
        placeholder: str | None = None,
        default: str | None = None,
        max_length: int = 2000,
    ) -> None:
        super().__init__(title=title[:45], timeout=15 * 60)
        self._on_submit = on_submit
        self.text: discord.ui.TextInput[TextModal] = discord.ui.TextInput(
            label=label[:45],
            placeholder=placeholder[:100] if placeholder else None,
            default=default[:max_length] if default else None,
            style=discord.TextStyle.paragraph,
            max_length=max_length,
        )
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_submit(interaction, self.text.value)
