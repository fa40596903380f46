"""/character: saved characters (a sheet plus reference images) that keep one person the same across scenes.

Characters belong to a guild: every member may use them; their creator and members with Manage Guild may
change or delete them; other guilds never see them. /imagine, /grid and /edit take a `character` option
(autocomplete below), and results have an "Add to character" action. Every change is a numbered version:
/character history lists them and /character restore brings one back (as a new version).
"""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import t, tn
from bot.jobs.characters import (
    MAX_DESCRIPTION,
    SHEET_SECTIONS,
    ChangeSummary,
    name_problem,
    sheet_text,
    summarize,
)
from bot.media.pool import run_image_work
from bot.media.strips import StripRow, compose_strip
from bot.media.uploads import fit_upload
from bot.ui.context import Services
from bot.ui.intake import InputError, read_references
from bot.ui.rules import Requester, admit
from bot.ui.views import bound
from storage.characters import (
    FORGOTTEN,
    Character,
    CharacterGone,
    CharacterVersion,
    DuplicateName,
    Saved,
    UnknownVersion,
    change_character,
    character_images,
    character_versions,
    count_images,
    count_versions,
    create_character,
    delete_character,
    get_character,
    get_character_by_id,
    get_version,
    list_characters,
    restore_version,
)
from storage.guild_settings import get_guild_settings
from storage.jobs import get_job

#: At most this many reference images shown by /character show (Discord allows 10 files per message).
SHOWN_IMAGES = 4
#: Versions listed (and drawn in the strip) by /character history; older ones can still be restored by number.
HISTORY_SHOWN = 10
DELETE_ID = re.compile(r"char:delete:(?P<character_id>[0-9]{1,20}):(?P<user_id>[0-9]{1,20})")
ADD_ID = re.compile(r"char:add:(?P<job_id>[A-Za-z0-9_-]{1,40})")


def may_change(interaction: discord.Interaction, character: Character, managers: str | None = None) -> bool:
    """Manage Server always; the creator too unless the server's /settings says admins only."""
    if interaction.permissions.manage_guild:
        return True
    return managers != "admins" and interaction.user.id == character.created_by


class SheetModal(discord.ui.Modal):
    """The structured character sheet: five inputs covering appearance, hair, eyes, build, outfit, style, marks."""

    def __init__(
        self,
        locale: str,
        title: str,
        on_submit: Callable[[discord.Interaction, str], Awaitable[None]],
        *,
        current: str | None = None,
    ) -> None:
        super().__init__(title=title[:45], timeout=15 * 60)
        self._on_submit = on_submit
        self.inputs: list[tuple[str, discord.ui.TextInput[SheetModal]]] = []
        if current is not None:
            # Editing: one box with the whole current description (the sheet may be free text).
            box: discord.ui.TextInput[SheetModal] = discord.ui.TextInput(
                label=t(locale, "character.description")[:45],
                style=discord.TextStyle.paragraph,
                default=current[:MAX_DESCRIPTION],
                max_length=MAX_DESCRIPTION,
            )
            self.inputs.append(("", box))
            self.add_item(box)
            return
        for section in SHEET_SECTIONS:
            field: discord.ui.TextInput[SheetModal] = discord.ui.TextInput(
                label=t(locale, section.key)[:45],
                placeholder=t(locale, section.key + ".hint")[:100],
                style=discord.TextStyle.paragraph,
                required=section is SHEET_SECTIONS[0],
                max_length=500,
            )
            self.inputs.append((section.key, field))
            self.add_item(field)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        if len(self.inputs) == 1 and not self.inputs[0][0]:
            text = self.inputs[0][1].value.strip()
        else:
            text = sheet_text({key: field.value for key, field in self.inputs})
        await self._on_submit(interaction, text)


class DeleteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=DELETE_ID):
    """ "Yes, delete": persistent, and only for the member who asked to delete."""

    #: Set on the subclass the Characters cog registers (views.bound).
    handler: ClassVar[Callable[[discord.Interaction, int, int], Awaitable[None]]]

    def __init__(self, character_id: int, user_id: int) -> None:
        super().__init__(
            discord.ui.Button(style=discord.ButtonStyle.danger, custom_id=f"char:delete:{character_id}:{user_id}")
        )
        self.character_id, self.user_id = character_id, user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> DeleteButton:
        return cls(int(match["character_id"]), int(match["user_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await type(self).handler(interaction, self.character_id, self.user_id)


class AddSelect(discord.ui.DynamicItem[discord.ui.Select[Any]], template=ADD_ID):
    """ "Add to character": a menu of the characters the member may change; the pick gets the result's image."""

    #: Set on the subclass the Characters cog registers (views.bound).
    handler: ClassVar[Callable[[discord.Interaction, str, int], Awaitable[None]]]

    def __init__(self, job_id: str, options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(
            discord.ui.Select(custom_id=f"char:add:{job_id}", options=options or [discord.SelectOption(label="-")])
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AddSelect:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        data = cast(dict[str, Any], interaction.data or {})
        values = cast(list[str], data.get("values", []))
        await type(self).handler(interaction, self.job_id, int(values[0]) if values else 0)


class Characters(commands.Cog):
    group = app_commands.Group(
        name="character",
        description="Saved characters that stay the same from scene to scene.",
        guild_only=True,
    )

    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services
        # Sent components are made from these too: a view that stays in memory calls its items directly.
        self.delete_button = bound(DeleteButton, DELETE_ID, self.confirm_delete)
        self.add_select = bound(AddSelect, ADD_ID, self.add_image)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(self.delete_button, self.add_select)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(self.delete_button, self.add_select)

    @property
    def max_images(self) -> int:
        return self.services.default_spec.max_reference_images

    async def character_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """The `name` option: the guild's characters whose name starts with what the member typed."""
        if interaction.guild_id is None:
            return []
        found = await list_characters(self.services.db, interaction.guild_id, current, limit=25)
        return [app_commands.Choice(name=c.name, value=c.name) for c in found]

    async def version_numbers(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
        """The `version` option: the named character's versions, newest first, with what each changed."""
        name = getattr(interaction.namespace, "name", None)
        if interaction.guild_id is None or not isinstance(name, str):
            return []
        character = await get_character(self.services.db, interaction.guild_id, name)
        if character is None:
            return []
        locale = str(interaction.locale)
        versions = await character_versions(self.services.db, character.id, limit=26)
        choices = []
        for version, previous in zip(versions, [*versions[1:], None], strict=True):
            before = previous if previous is not None and previous.version == version.version - 1 else None
            if str(current) and not str(version.version).startswith(str(current)):
                continue
            label = t(
                locale,
                "history.choice",
                version=version.version,
                change=change_text(locale, summarize(version, before)),
            )
            choices.append(app_commands.Choice(name=label[:100], value=version.version))
        return choices[:25]

    # --- create ---------------------------------------------------------------------------------------
    @group.command(name="create", description="Save a character: a description and reference images.")
    @app_commands.describe(
        name="What to call the character (used in the character option).",
        description="Appearance, hair, eyes, face, build, outfit, art style, colours, marks. Leave out for a form.",
        reference="A clear image of the character (front view works best).",
        reference2="Another view (side, back, full body).",
        reference3="A third view.",
    )
    async def create(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 100],
        description: app_commands.Range[str, 1, MAX_DESCRIPTION] | None = None,
        reference: discord.Attachment | None = None,
        reference2: discord.Attachment | None = None,
        reference3: discord.Attachment | None = None,
    ) -> None:
        locale = str(interaction.locale)
        problem = name_problem(name)
        if problem is not None:
            await interaction.response.send_message(t(locale, problem, max=32), ephemeral=True)
            return
        assert interaction.guild_id is not None
        if await get_character(self.services.db, interaction.guild_id, name) is not None:
            await interaction.response.send_message(t(locale, "character.exists", name=name), ephemeral=True)
            return
        attached = [
            (o, a) for o, a in (("reference", reference), ("reference2", reference2), ("reference3", reference3)) if a
        ]

        async def finish(done: discord.Interaction, text: str) -> None:
            if await admit(self.services, Requester.of_interaction(done), [name, text]) is None:
                return
            await done.response.defer(ephemeral=True, thinking=True)
            try:
                keys, _ = await read_references(self.services.images, attached, locale)
            except InputError as exc:
                await done.followup.send(str(exc), ephemeral=True)
                return
            try:
                character = await create_character(
                    self.services.db,
                    guild_id=interaction.guild_id,  # type: ignore[arg-type]
                    name=name,
                    description=text,
                    created_by=interaction.user.id,
                    image_keys=keys,
                    max_images=self.max_images,
                )
            except DuplicateName:
                await done.followup.send(t(locale, "character.exists", name=name), ephemeral=True)
                return
            answer = tn(locale, "character.created", len(keys), name=character.name)
            await done.followup.send(answer, ephemeral=True)
            self.log_change(character.guild_id, done.user.id, "modlog.character_created", character.name)

        if description is None:
            await interaction.response.send_modal(
                SheetModal(locale, t(locale, "character.form_title", name=name), finish)
            )
        else:
            await finish(interaction, description.strip())

    # --- list / show ----------------------------------------------------------------------------------
    @group.command(name="list", description="The characters saved in this server.")
    async def list(self, interaction: discord.Interaction) -> None:
        locale = str(interaction.locale)
        assert interaction.guild_id is not None
        found = await list_characters(self.services.db, interaction.guild_id, limit=25)
        if not found:
            await interaction.response.send_message(t(locale, "character.none"), ephemeral=True)
            return
        lines = []
        for character in found:
            images = await count_images(self.services.db, character.id)
            lines.append(
                tn(locale, "character.list_line", images, name=character.name, creator=creator(locale, character))
            )
        embed = discord.Embed(title=t(locale, "character.list_title"), description="\n".join(lines)[:4000])
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @group.command(name="show", description="A character's sheet and reference images.")
    @app_commands.describe(name="The character.")
    @app_commands.autocomplete(name=character_names)
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        locale = str(interaction.locale)
        character = await self._find(interaction, name, locale)
        if character is None:
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        keys = await character_images(self.services.db, character.id)
        embed = discord.Embed(title=character.name, description=character.description[:4000])
        embed.add_field(name=t(locale, "character.creator"), value=creator(locale, character))
        embed.add_field(name=t(locale, "character.version"), value=str(character.version))
        embed.add_field(name=t(locale, "character.images"), value=str(len(keys)))
        if len(keys) > SHOWN_IMAGES:
            embed.set_footer(text=tn(locale, "character.more_images", len(keys) - SHOWN_IMAGES))
        files = []
        per_file = max(interaction.filesize_limit // (SHOWN_IMAGES + 1), 256 * 1024)
        for index, key in enumerate(keys[-SHOWN_IMAGES:], start=1):
            data = await self.services.images.get(key)
            upload = await run_image_work(fit_upload, data, "image/png", 0, 0, per_file)
            files.append(discord.File(io.BytesIO(upload.data), filename=f"{character.name}-{index}.{upload.extension}"))
        await interaction.followup.send(embed=embed, files=files, ephemeral=True)

    # --- edit / delete --------------------------------------------------------------------------------
    @group.command(name="edit", description="Change a character's description or add reference images.")
    @app_commands.describe(
        name="The character.",
        description="The new description (leave out to edit the current one in a form).",
        reference="An image to add to its references.",
        reference2="Another image to add.",
        reference3="A third image to add.",
    )
    @app_commands.autocomplete(name=character_names)
    async def edit(
        self,
        interaction: discord.Interaction,
        name: str,
        description: app_commands.Range[str, 1, MAX_DESCRIPTION] | None = None,
        reference: discord.Attachment | None = None,
        reference2: discord.Attachment | None = None,
        reference3: discord.Attachment | None = None,
    ) -> None:
        locale = str(interaction.locale)
        character = await self._find(interaction, name, locale, change=True)
        if character is None:
            return
        attached = [
            (o, a) for o, a in (("reference", reference), ("reference2", reference2), ("reference3", reference3)) if a
        ]

        async def finish(done: discord.Interaction, text: str | None) -> None:
            if await admit(self.services, Requester.of_interaction(done), [text] if text else []) is None:
                return
            await done.response.defer(ephemeral=True, thinking=True)
            try:
                keys, _ = await read_references(self.services.images, attached, locale)
            except InputError as exc:
                await done.followup.send(str(exc), ephemeral=True)
                return
            try:
                saved = await change_character(
                    self.services.db,
                    character.id,
                    changed_by=done.user.id,
                    change="edit",
                    max_images=self.max_images,
                    description=text or None,
                    add_keys=keys,
                )
            except CharacterGone:
                await done.followup.send(t(locale, "character.missing"), ephemeral=True)
                return
            if not saved.changed:
                await done.followup.send(t(locale, "history.unchanged", name=character.name), ephemeral=True)
                return
            lines = [t(locale, "character.updated", name=character.name)]
            if keys:
                lines.append(tn(locale, "character.images_added", len(keys)))
            lines.extend(self._dropped_and_version(locale, saved))
            await done.followup.send("\n".join(lines), ephemeral=True)
            self.log_change(character.guild_id, done.user.id, "modlog.character_edited", character.name)

        if description is None and not attached:
            title = t(locale, "character.form_title", name=character.name)
            await interaction.response.send_modal(SheetModal(locale, title, finish, current=character.description))
        else:
            await finish(interaction, description.strip() if description else None)

    @group.command(name="delete", description="Delete a character (asks first).")
    @app_commands.describe(name="The character.")
    @app_commands.autocomplete(name=character_names)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        if await admit(self.services, Requester.of_interaction(interaction), []) is None:
            return
        locale = str(interaction.locale)
        character = await self._find(interaction, name, locale, change=True)
        if character is None:
            return
        view = discord.ui.View(timeout=None)
        button = self.delete_button(character.id, interaction.user.id)
        button.item.label = t(locale, "character.delete_confirm_button")
        view.add_item(button)
        await interaction.response.send_message(
            t(locale, "character.delete_confirm", name=character.name), view=view, ephemeral=True
        )

    async def confirm_delete(self, interaction: discord.Interaction, character_id: int, user_id: int) -> None:
        if await admit(self.services, Requester.of_interaction(interaction), []) is None:
            return
        locale = str(interaction.locale)
        character = await get_character_by_id(self.services.db, character_id)
        if character is None or character.guild_id != interaction.guild_id:
            await interaction.response.send_message(t(locale, "character.missing"), ephemeral=True)
            return
        if interaction.user.id != user_id or not may_change(interaction, character, await self._managers(interaction)):
            await interaction.response.send_message(t(locale, "character.not_yours"), ephemeral=True)
            return
        await delete_character(self.services.db, character.id)
        self.log_change(character.guild_id, interaction.user.id, "modlog.character_deleted", character.name)
        await interaction.response.edit_message(content=t(locale, "character.deleted", name=character.name), view=None)

    # --- add a result's image -------------------------------------------------------------------------
    async def offer_add(self, interaction: discord.Interaction, job_id: str) -> None:
        """The "Add to character" button: a menu of the characters this member may change."""
        if await admit(self.services, Requester.of_interaction(interaction), []) is None:
            return
        locale = str(interaction.locale)
        assert interaction.guild_id is not None
        managers = await self._managers(interaction)
        mine = [
            c
            for c in await list_characters(self.services.db, interaction.guild_id, limit=25)
            if may_change(interaction, c, managers)
        ]
        if not mine:
            await interaction.response.send_message(t(locale, "character.none_to_add"), ephemeral=True)
            return
        options = [discord.SelectOption(label=c.name[:100], value=str(c.id)) for c in mine]
        menu = self.add_select(job_id, options)
        menu.item.placeholder = t(locale, "character.pick")
        view = discord.ui.View(timeout=None)
        view.add_item(menu)
        await interaction.response.send_message(view=view, ephemeral=True)

    async def add_image(self, interaction: discord.Interaction, job_id: str, character_id: int) -> None:
        if await admit(self.services, Requester.of_interaction(interaction), []) is None:
            return
        locale = str(interaction.locale)
        job = await get_job(self.services.db, job_id)
        character = await get_character_by_id(self.services.db, character_id)
        if job is None or job.image_key is None or character is None or character.guild_id != interaction.guild_id:
            await interaction.response.send_message(t(locale, "character.missing"), ephemeral=True)
            return
        if not may_change(interaction, character, await self._managers(interaction)):
            await interaction.response.send_message(t(locale, "character.not_yours"), ephemeral=True)
            return
        try:
            saved = await change_character(
                self.services.db,
                character.id,
                changed_by=interaction.user.id,
                change="add_image",
                max_images=self.max_images,
                add_keys=[job.image_key],
            )
        except CharacterGone:
            await interaction.response.edit_message(content=t(locale, "character.missing"), view=None)
            return
        if not saved.changed:
            await interaction.response.edit_message(
                content=t(locale, "history.unchanged", name=character.name), view=None
            )
            return
        self.log_change(character.guild_id, interaction.user.id, "modlog.character_edited", character.name)
        lines = [t(locale, "character.image_added", name=character.name), *self._dropped_and_version(locale, saved)]
        await interaction.response.edit_message(content="\n".join(lines), view=None)

    def _dropped_and_version(self, locale: str, saved: Saved) -> tuple[str, ...]:
        dropped = len(saved.dropped)
        said = (tn(locale, "character.images_dropped", dropped, max=self.max_images),) if dropped else ()
        return (*said, t(locale, "history.now_version", version=saved.character.version, name=saved.character.name))

    # --- history / restore ----------------------------------------------------------------------------
    @group.command(name="history", description="A character's versions: who changed what, and when.")
    @app_commands.describe(name="The character.")
    @app_commands.autocomplete(name=character_names)
    async def history(self, interaction: discord.Interaction, name: str) -> None:
        locale = str(interaction.locale)
        character = await self._find(interaction, name, locale)
        if character is None:
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        db = self.services.db
        # One more than shown: the oldest shown is described against the version before it.
        versions = await character_versions(db, character.id, limit=HISTORY_SHOWN + 1)
        shown = versions[:HISTORY_SHOWN]
        lines = []
        for version, previous in zip(shown, [*versions[1:], None], strict=False):
            before = previous if previous is not None and previous.version == version.version - 1 else None
            line = t(
                locale,
                "history.line",
                version=version.version,
                change=change_text(locale, summarize(version, before)),
                who=changed_by(locale, version),
                when=f"<t:{int(version.changed_at)}:R>",
            )
            if version.version == character.version:
                line += " " + t(locale, "history.current")
            lines.append(line)
        embed = discord.Embed(title=t(locale, "history.title", name=character.name), description="\n".join(lines))
        footer = [t(locale, "history.footer")]
        older = await count_versions(db, character.id) - len(shown)
        if older > 0:
            footer.append(tn(locale, "history.older", older))
        embed.set_footer(text=" ".join(footer))
        files = []
        if any(v.image_keys for v in shown):
            strip = await self._strip(locale, shown)
            files.append(discord.File(io.BytesIO(strip), filename="history.jpg"))
            embed.set_image(url="attachment://history.jpg")
        await interaction.followup.send(embed=embed, files=files, ephemeral=True)

    async def _strip(self, locale: str, versions: Sequence[CharacterVersion]) -> bytes:
        images: dict[str, bytes | None] = {}
        for key in {k for v in versions for k in v.image_keys}:
            try:
                images[key] = await self.services.images.get(key)
            except FileNotFoundError:
                images[key] = None  # stored before retention kept characters' images: drawn crossed out
        rows = [
            StripRow(t(locale, "history.strip_label", version=v.version), str(v.version), v.image_keys)
            for v in versions
        ]
        strip, _ = await run_image_work(compose_strip, rows, images, language=locale)
        return strip

    @group.command(name="restore", description="Make an old version of a character current again, as a new version.")
    @app_commands.describe(name="The character.", version="The version to bring back (see /character history).")
    @app_commands.autocomplete(name=character_names)
    @app_commands.autocomplete(version=version_numbers)
    async def restore(
        self, interaction: discord.Interaction, name: str, version: app_commands.Range[int, 1, 1_000_000_000]
    ) -> None:
        locale = str(interaction.locale)
        character = await self._find(interaction, name, locale, change=True)
        if character is None:
            return
        old = await get_version(self.services.db, character.id, version)
        if old is None:
            text = t(locale, "history.no_version", name=character.name, version=version, latest=character.version)
            await interaction.response.send_message(text, ephemeral=True)
            return
        if version == character.version:
            text = t(locale, "history.already_current", name=character.name, version=version)
            await interaction.response.send_message(text, ephemeral=True)
            return
        # Today's rules apply to an old sheet too.
        if await admit(self.services, Requester.of_interaction(interaction), [old.description]) is None:
            return
        try:
            saved = await restore_version(self.services.db, character.id, version, changed_by=interaction.user.id)
        except (CharacterGone, UnknownVersion):
            await interaction.response.send_message(t(locale, "character.missing"), ephemeral=True)
            return
        if not saved.changed:
            text = t(locale, "history.same_as_current", name=character.name, version=version)
            await interaction.response.send_message(text, ephemeral=True)
            return
        new = saved.character.version
        text = t(locale, "history.restored_reply", name=character.name, version=version, new=new)
        await interaction.response.send_message(text, ephemeral=True)
        self.log_change(
            character.guild_id,
            interaction.user.id,
            "modlog.character_restored",
            character.name,
            version=version,
            new=new,
        )

    def log_change(self, guild_id: int, by: int, key: str, name: str, **values: object) -> None:
        modlog = self.services.modlog
        modlog.change(guild_id, by, t(modlog.locale_for(guild_id), key, name=name, **values))

    async def _managers(self, interaction: discord.Interaction) -> str | None:
        if interaction.guild_id is None:
            return None
        return (await get_guild_settings(self.services.db, interaction.guild_id)).character_managers

    async def _find(
        self, interaction: discord.Interaction, name: str, locale: str, *, change: bool = False
    ) -> Character | None:
        """The guild's character by name, or None after telling the member (unknown, or not theirs to change)."""
        assert interaction.guild_id is not None
        character = await get_character(self.services.db, interaction.guild_id, name)
        if character is None:
            await interaction.response.send_message(t(locale, "character.unknown", name=name), ephemeral=True)
            return None
        if change and not may_change(interaction, character, await self._managers(interaction)):
            await interaction.response.send_message(t(locale, "character.not_yours"), ephemeral=True)
            return None
        return character


def creator(locale: str, character: Character) -> str:
    if character.created_by == FORGOTTEN:
        return t(locale, "history.former_member")
    return f"<@{character.created_by}>"


def changed_by(locale: str, version: CharacterVersion) -> str:
    if version.changed_by is not None:
        return f"<@{version.changed_by}>"
    # Not recorded: the version a character had when history began, or a member who used /forget-me.
    return t(locale, "history.unrecorded" if version.change == "kept" else "history.former_member")


def change_text(locale: str, summary: ChangeSummary) -> str:
    """What a version changed, in a few words."""
    if summary.change == "create":
        return tn(locale, "history.created", summary.images)
    if summary.change == "kept":
        return t(locale, "history.kept")
    if summary.change == "restore":
        return t(locale, "history.restored", version=summary.restored_from)
    parts = []
    if summary.sheet_changed:
        parts.append(t(locale, "history.sheet_changed"))
    if summary.change == "add_image":
        parts.append(t(locale, "history.result_added"))
    elif summary.added:
        parts.append(tn(locale, "history.images_added", summary.added))
    if summary.removed:
        parts.append(tn(locale, "history.images_removed", summary.removed))
    return t(locale, "history.separator").join(parts) if parts else t(locale, "history.no_change")
