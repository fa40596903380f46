"""The fake Discord against the real discord.py: a tiny bot defined here exercises what Banana Bot needs."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fake_discord import (
    ADMINISTRATOR,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MEMBER_PERMISSIONS,
    PRIVILEGED_INTENTS,
    ApiError,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeUser,
)

pytestmark = pytest.mark.timeout(30)


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (250, 220, 40)).save(buf, "PNG")
    return buf.getvalue()


class EditModal(discord.ui.Modal, title="Edit the prompt"):
    prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(label="Prompt", custom_id="prompt")

    def __init__(self) -> None:
        super().__init__(custom_id="m:edit")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"edited: {self.prompt.value}", ephemeral=True)


class PersistentView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Edit", custom_id="t:1")
    async def edit(self, interaction: discord.Interaction, button: discord.ui.Button[PersistentView]) -> None:
        await interaction.response.send_modal(EditModal())


@app_commands.command(description="Make a picture")
async def imagine(
    interaction: discord.Interaction[TinyBot], prompt: str, image: discord.Attachment | None = None
) -> None:
    await interaction.response.defer(thinking=True)
    note = ""
    if image is not None:
        with Image.open(io.BytesIO(await image.read())) as img:
            note = f" input {img.width}x{img.height}"
    file = discord.File(io.BytesIO(png(64, 48)), filename="out.png")
    msg = await interaction.followup.send(f"done: {prompt}{note}", file=file, view=PersistentView(), wait=True)
    assert isinstance(interaction.channel, discord.TextChannel)
    thread = await interaction.channel.create_thread(name=prompt[:100], message=msg)
    await thread.send("thread started")


@app_commands.command(description="Exercise Discord's limits")
@app_commands.describe(case="big, long or slow")
async def limits(interaction: discord.Interaction[TinyBot], case: str) -> None:
    await interaction.response.defer()
    if case == "slow":
        await asyncio.sleep(0.3)  # the test shortens the token lifetime below this
    content = "x" * 2001 if case == "long" else "ok"
    file = (
        discord.File(io.BytesIO(b"\0" * (10 * 2**20 + 1)), filename="big.bin")
        if case == "big"
        else discord.utils.MISSING
    )
    try:
        await interaction.followup.send(content, file=file)
    except discord.HTTPException as exc:
        interaction.client.errors.append(exc)
        await interaction.channel.send(f"failed: {exc.status} {exc.code}")  # type: ignore[union-attr]


@limits.autocomplete("case")
async def limits_case(interaction: discord.Interaction[TinyBot], current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=c, value=c) for c in ("big", "long", "slow") if c.startswith(current)]


@app_commands.command(description="Answer with a file, then add a second one")
async def retouch(interaction: discord.Interaction[TinyBot]) -> None:
    await interaction.response.send_message("v1", file=discord.File(io.BytesIO(png(4, 4)), filename="a.png"))
    first = await interaction.original_response()
    extra = discord.File(io.BytesIO(png(8, 8)), filename="b.png")
    await interaction.edit_original_response(content="v2", attachments=[*first.attachments, extra])


@app_commands.command(description="Show what discord.py made of the options")
async def inspect(
    interaction: discord.Interaction[TinyBot],
    member: discord.Member,
    role: discord.Role | None = None,
    channel: discord.TextChannel | None = None,
    who: discord.Member | discord.Role | None = None,
) -> None:
    interaction.client.received.append({"member": member, "role": role, "channel": channel, "who": who})
    await interaction.response.send_message("seen", ephemeral=True)


@app_commands.command(description="Validated options")
async def pick(
    interaction: discord.Interaction[TinyBot], mode: Literal["fast", "slow"], count: app_commands.Range[int, 1, 5] = 1
) -> None:
    await interaction.response.send_message(f"{mode} x{count}")


@app_commands.command(description="Is this channel age-restricted?")
async def nsfw(interaction: discord.Interaction[TinyBot]) -> None:
    channel = interaction.channel
    assert isinstance(channel, discord.TextChannel | discord.Thread)
    await interaction.response.send_message(f"nsfw={channel.is_nsfw()} in {type(channel).__name__}", ephemeral=True)


settings = app_commands.Group(name="settings", description="Server settings")
block = app_commands.Group(name="block", description="Block members or roles", parent=settings)


@settings.command(name="show", description="Show the settings")
async def settings_show(interaction: discord.Interaction[TinyBot]) -> None:
    await interaction.response.send_message("settings: none", ephemeral=True)


@block.command(name="member", description="Block a member")
async def block_member(interaction: discord.Interaction[TinyBot], member: discord.Member) -> None:
    interaction.client.received.append({"blocked": member})
    await interaction.response.send_message(f"blocked {member.name}", ephemeral=True)


@block.command(name="role", description="Block a role")
async def block_role(interaction: discord.Interaction[TinyBot], role: discord.Role) -> None:
    interaction.client.received.append({"blocked": role})
    await interaction.response.send_message(f"blocked {role.name}", ephemeral=True)


class ModerationView(discord.ui.View):
    """A moderators' log entry: only members with Manage Messages may use its button."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Delete", custom_id="mod:delete")
    async def delete(self, interaction: discord.Interaction, button: discord.ui.Button[ModerationView]) -> None:
        assert isinstance(interaction.user, discord.Member) and isinstance(interaction.channel, discord.TextChannel)
        roles = ",".join(r.name for r in interaction.user.roles if not r.is_default())
        allowed = "allowed" if interaction.permissions.manage_messages else "refused"
        await interaction.response.send_message(f"{allowed} in #{interaction.channel.name} ({roles})", ephemeral=True)


@app_commands.context_menu(name="Describe")
async def describe(interaction: discord.Interaction[TinyBot], message: discord.Message) -> None:
    text = f"{len(message.attachments)} attachment(s): {message.content}"
    await interaction.response.send_message(text, ephemeral=True)


class TinyBot(commands.Bot):
    def __init__(self, *, members: bool = False) -> None:
        intents = discord.Intents.default()  # no privileged intents: no message content, members, presences
        intents.members = members  # the members intent brings GUILD_MEMBER_ADD/UPDATE and a member cache
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            guild_ready_timeout=0.1,
            chunk_guilds_at_startup=False,
        )
        self.seen: list[str] = []
        self.authors: list[discord.User | discord.Member] = []
        self.errors: list[discord.HTTPException] = []
        self.received: list[dict[str, Any]] = []  # what slash commands got as options

    async def setup_hook(self) -> None:
        self.add_view(PersistentView())
        self.add_view(ModerationView())
        commands: list[app_commands.Command[Any, ..., Any] | app_commands.ContextMenu | app_commands.Group] = [
            imagine, limits, retouch, describe, inspect, pick, nsfw, settings
        ]  # fmt: skip
        for command in commands:
            self.tree.add_command(command)

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        self.seen.append(message.content)
        self.authors.append(message.author)
        if isinstance(message.channel, discord.Thread) and message.reference is not None:
            await message.channel.send(f"got: {message.content}", reference=message)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:  # noqa: ASYNC109
    """For state inside the bot, which the fake cannot see."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, *, members: bool = False) -> AsyncIterator[TinyBot]:
    bot = TinyBot(members=members)
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_ready(5)
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, 5)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def guild(fake: FakeDiscord) -> FakeGuild:
    return fake.add_guild("Test Guild")


@pytest.fixture
def alice(guild: FakeGuild) -> FakeUser:
    return guild.add_member("alice")


@pytest_asyncio.fixture
async def bot(fake: FakeDiscord, guild: FakeGuild) -> AsyncIterator[TinyBot]:
    async with running(fake) as client:
        await client.tree.sync()
        yield client
    assert not fake.unknown_routes, [(c.method, c.path) for c in fake.unknown_routes]
    assert not fake.internal_errors


async def test_login_ready_permissions_and_sync(fake: FakeDiscord, guild: FakeGuild, bot: TinyBot) -> None:
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    assert fake.identified_intents and not fake.identified_intents[-1] & PRIVILEGED_INTENTS
    assert fake.identified_shards == [(0, 1)]  # a plain Client sends no shard: it is the only one
    [ready] = [d for t, d in fake.session_events() if t == "READY"]
    assert "shard" not in ready and ready["guilds"] == [{"id": str(guild.id), "unavailable": True}]
    dguild = bot.get_guild(guild.id)
    assert dguild is not None and dguild.filesize_limit == 10 * 2**20
    channel = dguild.get_channel(guild.channel_id)
    assert isinstance(channel, discord.TextChannel) and channel.name == "general"
    perms = channel.permissions_for(dguild.me)
    assert perms.send_messages and perms.attach_files and perms.embed_links and perms.create_public_threads
    assert perms.send_messages_in_threads and not perms.administrator
    synced = {c["name"]: c for c in fake.synced_commands[None]}
    assert set(synced) == {"imagine", "limits", "retouch", "Describe", "inspect", "pick", "nsfw", "settings"}
    assert [(o["name"], o["type"]) for o in synced["imagine"]["options"]] == [("prompt", 3), ("image", 11)]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.url}/api/v10/users/@me", headers={"Authorization": "Bot wrong"}) as resp:
            assert resp.status == 401
        async with http.get(f"{fake.url}/api/v10/nope") as resp:
            assert resp.status == 404 and resp.headers["Content-Type"] == "application/json"
    fake.unknown_routes.clear()


async def test_slash_flow_followup_file_button_and_thread(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    inter = await fake.slash(guild.id, guild.channel_id, alice, "imagine", {"prompt": "a cat"})
    first = await inter.wait_callback()
    assert first.json == {"type": 5} and first.status == 200
    assert inter.deferred_at is not None and inter.deferred_at < 1
    msg = await inter.wait_followup()
    assert msg.id == inter.original_id, "the first follow-up after a thinking defer replaces the placeholder"
    assert msg.content == "done: a cat" and not msg.loading and not msg.ephemeral
    assert msg.author_id == fake.bot_user_id
    [att] = msg.attachments
    assert (att["filename"], att["content_type"], att["width"], att["height"]) == ("out.png", "image/png", 64, 48)
    with Image.open(io.BytesIO(msg.files[0].data)) as img:
        assert img.size == (64, 48)
    assert msg.components[0]["components"][0]["custom_id"] == "t:1"
    thread_msg = await fake.wait_for_message(lambda m: m.content == "thread started")
    assert thread_msg.channel_id == msg.id == msg.thread_id
    assert fake.threads[msg.id].parent_id == guild.channel_id and fake.threads[msg.id].name == "a cat"
    async with aiohttp.ClientSession() as http:  # the CDN serves what the bot uploaded
        async with http.get(att["url"]) as resp:
            assert await resp.read() == msg.files[0].data
        # a second acknowledgement is refused, as Discord does
        url = f"{fake.url}/api/v10/interactions/{inter.id}/{inter.token}/callback"
        async with http.post(url, json={"type": 4, "data": {"content": "again"}}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 40060


async def test_attachment_option_is_downloaded_from_the_cdn(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    image = ("in.png", png(20, 10), "image/png")
    inter = await fake.slash(
        guild.id, guild.channel_id, alice, "imagine", {"prompt": "p"}, attachments={"image": image}
    )
    option = inter.payload["data"]["options"][1]
    assert option["type"] == 11 and option["value"] in inter.payload["data"]["resolved"]["attachments"]
    msg = await inter.wait_followup()
    assert msg.content == "done: p input 20x10"
    assert any(path.endswith("/in.png") for path in fake.cdn_requests)


async def test_thread_reply_reaches_on_message_without_message_content_intent(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    inter = await fake.slash(guild.id, guild.channel_id, alice, "imagine", {"prompt": "a dog"})
    starter = await fake.wait_for_message(lambda m: m.content == "thread started")
    reply_id = await fake.user_message(starter.channel_id, alice, "make it blue", reply_to=starter.id)
    answer = await fake.wait_for_message(lambda m: m.content == "got: make it blue")
    assert answer.channel_id == starter.channel_id and answer.type == 19
    assert answer.message_reference is not None and answer.message_reference["message_id"] == str(reply_id)
    # Without the intent and without a mention, Discord blanks the content.
    await fake.user_message(starter.channel_id, alice, "secret")
    await eventually(lambda: len(bot.seen) == 2, "the second message to reach on_message")
    assert bot.seen == ["make it blue", ""]
    assert inter.original() is not None


async def test_button_after_restart_and_modal(fake: FakeDiscord, guild: FakeGuild, alice: FakeUser) -> None:
    async with running(fake) as first:
        await first.tree.sync()
        inter = await fake.slash(guild.id, guild.channel_id, alice, "imagine", {"prompt": "a cat"})
        msg = await inter.wait_followup()
    async with running(fake):
        assert len(fake.identified_intents) == 2
        click = await fake.click(msg.id, "t:1", alice)
        modal = (await click.wait_callback()).json
        assert modal["type"] == 9 and modal["data"]["custom_id"] == "m:edit"
        submit = await fake.submit_modal("m:edit", {"prompt": "a blue cat"}, alice, channel_id=guild.channel_id)
        answer = await submit.wait_callback()
        assert answer.json["type"] == 4
        original = submit.original()
        assert original is not None and original.content == "edited: a blue cat" and original.ephemeral


async def test_gateway_resume_replays_missed_events(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    await fake.drop_gateway()
    await fake.user_message(guild.channel_id, alice, "while away", mention_bot=True)
    await fake.wait_ready(5)
    await eventually(lambda: bool(bot.seen), "the missed message to be replayed")
    assert fake.resumes == 1 and len(fake.identified_intents) == 1
    assert bot.seen == [f"<@{fake.bot_user_id}> while away"]


@pytest.mark.parametrize(("case", "status", "code"), [("big", 413, 40005), ("long", 400, 50035), ("slow", 401, 50027)])
async def test_discord_rejections(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot, case: str, status: int, code: int
) -> None:
    if case == "slow":
        fake.token_lifetime = 0.2
    await fake.slash(guild.id, guild.channel_id, alice, "limits", {"case": case})
    await fake.wait_for_message(lambda m: m.content.startswith("failed"))
    [error] = bot.errors
    assert (error.status, error.code) == (status, code)


async def test_autocomplete_context_menu_and_edit_keeping_attachments(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    choices = await fake.autocomplete(guild.id, guild.channel_id, alice, "limits", {"case": "l"}, "case")
    assert choices == [{"name": "long", "value": "long"}]
    inter = await fake.slash(guild.id, guild.channel_id, alice, "retouch")
    msg = await fake.wait_for_message(lambda m: m.content == "v2")
    assert msg.id == inter.original_id and [a["filename"] for a in msg.attachments] == ["a.png", "b.png"]
    assert [len(e["files"]) for e in msg.edits] == [1] and msg.edited_timestamp is not None
    menu = await fake.context_menu(guild.id, guild.channel_id, alice, "Describe", msg.id)
    await menu.wait_callback()
    answer = menu.original()
    assert answer is not None and answer.ephemeral and answer.content == "2 attachment(s): v2"
    ephemeral_events = [d for t, d in fake.gateway_events if t == "MESSAGE_CREATE" and d["id"] == str(answer.id)]
    assert not ephemeral_events, "ephemeral messages are not sent to the bot"


async def test_boosted_guild_added_while_connected(fake: FakeDiscord, alice: FakeUser, bot: TinyBot) -> None:
    boosted = fake.add_guild("Boosted", premium_tier=2)
    bob = boosted.add_member("bob")
    await eventually(lambda: bot.get_guild(boosted.id) is not None, "GUILD_CREATE for a guild added later")
    dguild = bot.get_guild(boosted.id)
    assert dguild is not None and dguild.filesize_limit == 50 * 2**20
    inter = await fake.slash(boosted.id, boosted.channel_id, bob, "limits", {"case": "long"})
    assert inter.payload["attachment_size_limit"] == 50 * 2**20
    assert inter.payload["member"]["permissions"] == str(fake.guilds[boosted.id].members[bob.id].permissions)
    await fake.wait_for_message(lambda m: m.channel_id == boosted.channel_id and m.content == "failed: 400 50035")


def test_localisations_discord_would_refuse_are_refused() -> None:
    from tests.fake_discord.rest import localization_problem

    good = {
        "name": "imagine",
        "name_localizations": {"id": "bayangkan", "zh-TW": "生成圖片"},
        "description_localizations": {"fr": "Créer une image."},
        "options": [
            {
                "name": "period",
                "choices": [{"name": "today", "value": "today", "name_localizations": {"fr": "Aujourd'hui"}}],
            }
        ],
    }
    assert localization_problem(good, chat_input=True) is None
    assert localization_problem({"name_localizations": {"fr": "Imaginer"}}, chat_input=True) is not None  # case
    assert localization_problem({"name_localizations": {"fr": "créer image"}}, chat_input=True) is not None  # space
    assert localization_problem({"name_localizations": {"fr": "Modifier l'image"}}, chat_input=False) is None  # menu
    assert localization_problem({"name_localizations": {"xx": "a"}}, chat_input=True) is not None  # no such locale
    nested = {"options": [{"name": "a", "name_localizations": {"id": "x" * 33}}]}
    assert localization_problem(nested, chat_input=True) is not None


async def test_named_roles_reach_member_roles_and_permissions(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser
) -> None:
    async with running(fake, members=True) as bot:  # the members intent: GUILD_MEMBER_UPDATE keeps the cache
        await bot.tree.sync()
        mods = guild.add_role("Moderators", permissions=MANAGE_MESSAGES)
        artists = guild.add_role("Artists")
        dguild = bot.get_guild(guild.id)
        assert dguild is not None
        await eventually(lambda: dguild.get_role(artists.id) is not None, "GUILD_ROLE_CREATE")
        guild.give_role(alice, mods)
        guild.give_role(alice, artists)

        def role_names() -> list[str]:
            member = dguild.get_member(alice.id)
            return [r.name for r in member.roles if not r.is_default()] if member else []

        await eventually(lambda: "Artists" in role_names(), "GUILD_MEMBER_UPDATE with the given roles")
        assert role_names() == ["alice", "Moderators", "Artists"]  # its own role, then the named ones
        member = dguild.get_member(alice.id)
        assert member is not None and member.guild_permissions.manage_messages
        assert not member.guild_permissions.manage_guild

        # The interaction's member lists every role and carries the combined permissions.
        inter = await fake.slash(guild.id, guild.channel_id, alice, "nsfw")
        payload_member = inter.payload["member"]
        assert payload_member["roles"] == [
            str(fake.guilds[guild.id].members[alice.id].role_id),
            str(mods.id),
            str(artists.id),
        ]
        assert int(payload_member["permissions"]) == MEMBER_PERMISSIONS | MANAGE_MESSAGES
        await inter.wait_callback()

        # MESSAGE_CREATE's member lists them too, so message.author.roles works without the members cache.
        await fake.user_message(guild.channel_id, alice, "hello", mention_bot=True)
        await eventually(lambda: bool(bot.authors), "the message to reach on_message")
        [author] = bot.authors
        assert isinstance(author, discord.Member)
        assert {r.name for r in author.roles} >= {"Moderators", "Artists"} and author.guild_permissions.manage_messages

        guild.take_role(alice, mods)
        await eventually(lambda: "Moderators" not in role_names(), "GUILD_MEMBER_UPDATE without the role")
        guild.delete_role(artists)
        await eventually(lambda: dguild.get_role(artists.id) is None, "GUILD_ROLE_DELETE")
        assert role_names() == ["alice"]

        # Administrator from a role means every permission, as Discord computes it.
        guild.give_role(alice, guild.add_role("Admins", permissions=ADMINISTRATOR))
        inter = await fake.slash(guild.id, guild.channel_id, alice, "nsfw")
        perms = discord.Permissions(int(inter.payload["member"]["permissions"]))
        assert perms.administrator and perms.manage_guild and perms.manage_messages
        await inter.wait_callback()
    sent = [t for t, _ in fake.gateway_events]
    assert sent.count("GUILD_MEMBER_UPDATE") == 4 and "GUILD_ROLE_DELETE" in sent


async def test_member_updates_need_the_members_intent(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    # Discord sends GUILD_MEMBER_ADD/UPDATE only to a bot that asked for the members intent; the roles still
    # reach it through interactions and messages (tested above).
    dguild = bot.get_guild(guild.id)
    assert dguild is not None
    mods = guild.add_role("Moderators", permissions=MANAGE_MESSAGES)
    guild.give_role(alice, mods)
    guild.add_member("dave")
    await eventually(lambda: dguild.get_role(mods.id) is not None, "GUILD_ROLE_CREATE")
    events = [name for name, _ in fake.session_events()]
    assert "GUILD_ROLE_CREATE" in events and "GUILD_MEMBER_ADD" not in events and "GUILD_MEMBER_UPDATE" not in events
    assert [name for name, _ in fake.gateway_events].count("GUILD_MEMBER_UPDATE") == 1  # kept for a members bot


async def test_user_role_channel_and_mentionable_options_arrive_as_discord_objects(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    bob = guild.add_member("bob")
    mods = guild.add_role("Moderators", permissions=MANAGE_MESSAGES)
    guild.give_role(bob, mods)
    adult = guild.add_channel("adult", nsfw=True)
    await eventually(lambda: bot.get_channel(adult) is not None, "CHANNEL_CREATE")
    options = {"member": bob, "role": mods, "channel": adult, "who": mods}
    inter = await fake.slash(guild.id, guild.channel_id, alice, "inspect", options)
    await inter.wait_callback()
    data = inter.payload["data"]
    assert [(o["name"], o["type"], o["value"]) for o in data["options"]] == [
        ("member", 6, str(bob.id)),
        ("role", 8, str(mods.id)),
        ("channel", 7, str(adult)),
        ("who", 9, str(mods.id)),
    ]
    assert set(data["resolved"]) == {"users", "members", "roles", "channels"}
    got = bot.received[-1]
    member, role, channel, who = got["member"], got["role"], got["channel"], got["who"]
    assert isinstance(member, discord.Member) and member.id == bob.id
    assert [r.name for r in member.roles if not r.is_default()] == ["bob", "Moderators"]
    assert member.guild_permissions.manage_messages
    assert isinstance(role, discord.Role) and role.name == "Moderators" and role.permissions.manage_messages
    assert isinstance(channel, discord.TextChannel) and channel.name == "adult" and channel.is_nsfw()
    assert isinstance(who, discord.Role) and who.id == mods.id

    inter = await fake.slash(guild.id, guild.channel_id, alice, "inspect", {"member": bob, "who": alice})
    await inter.wait_callback()
    assert isinstance(bot.received[-1]["who"], discord.Member) and bot.received[-1]["who"].id == alice.id


async def test_subcommands_and_subcommand_groups(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    bob = guild.add_member("bob")
    blocked = await fake.slash(
        guild.id, guild.channel_id, alice, "settings", {"member": bob}, subcommand="block member"
    )
    await blocked.wait_callback()
    [group] = blocked.payload["data"]["options"]
    assert (group["name"], group["type"]) == ("block", 2)
    assert [(o["name"], o["type"]) for o in group["options"]] == [("member", 1)]
    assert isinstance(bot.received[-1]["blocked"], discord.Member) and bot.received[-1]["blocked"].id == bob.id
    assert answer_of(blocked) == "blocked bob"

    role = guild.add_role("Spammers")
    by_role = await fake.slash(guild.id, guild.channel_id, alice, "settings", {"role": role}, subcommand="block role")
    await by_role.wait_callback()
    assert isinstance(bot.received[-1]["blocked"], discord.Role) and bot.received[-1]["blocked"].name == "Spammers"

    shown = await fake.slash(guild.id, guild.channel_id, alice, "settings", subcommand="show")
    await shown.wait_callback()
    assert shown.payload["data"]["options"] == [{"name": "show", "type": 1, "options": []}]
    assert answer_of(shown) == "settings: none"


def answer_of(inter: FakeInteraction) -> str:
    """The content of the interaction's response message."""
    original = inter.original()
    assert original is not None, f"interaction {inter.id} has no response message"
    return original.content


def _form_errors(exc: pytest.ExceptionInfo[ApiError]) -> dict[str, Any]:
    assert exc.value.status == 400 and exc.value.body["code"] == 50035
    assert exc.value.body["message"] == "Invalid Form Body"
    errors: dict[str, Any] = exc.value.body["errors"]
    return errors


async def test_option_values_discord_would_refuse_raise_its_400(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    async def refused(name: str, options: dict[str, object], subcommand: str | None = None) -> dict[str, Any]:
        with pytest.raises(ApiError) as exc:
            await fake.slash(guild.id, guild.channel_id, alice, name, options, subcommand=subcommand)
        return _form_errors(exc)

    def code(errors: dict[str, Any], *path: str) -> str:
        node = errors
        for key in path:
            node = node[key]
        return str(node["_errors"][0]["code"])

    image = ("in.png", png(2, 2), "image/png")
    errors = await refused("pick", {"mode": "medium"})
    assert code(errors, "data", "options", "0", "value") == "BASE_TYPE_CHOICES"
    assert errors["data"]["options"]["0"]["value"]["_errors"][0]["message"] == "Value must be one of ('fast', 'slow')."
    assert (
        code(await refused("pick", {"mode": "fast", "count": 9}), "data", "options", "1", "value") == "NUMBER_TYPE_MAX"
    )
    assert code(await refused("pick", {"mode": "fast", "count": "x"}), "data", "options", "1", "value") == (
        "NUMBER_TYPE_COERCE"
    )
    assert code(await refused("pick", {"count": 2}), "data", "options") == "BASE_TYPE_REQUIRED"
    assert code(await refused("pick", {"mode": "fast", "speed": 2}), "data", "options", "1", "name") == (
        "BASE_TYPE_CHOICES"
    )
    # A thread where the command takes a text channel (discord.py syncs channel_types [0]).
    inter = await fake.slash(guild.id, guild.channel_id, alice, "imagine", {"prompt": "a cat"})
    thread_id = (await inter.wait_followup()).id
    await fake.wait_for_message(lambda m: m.channel_id == thread_id)
    errors = await refused("inspect", {"member": alice, "channel": thread_id})
    assert code(errors, "data", "options", "1", "value") == "BASE_TYPE_CHOICES"
    errors = await refused("settings", {"member": alice}, subcommand="block nobody")
    assert code(errors, "data", "options", "0", "options", "0", "name") == "BASE_TYPE_CHOICES"
    assert code(await refused("settings", {}), "data", "options") == "BASE_TYPE_REQUIRED"  # no subcommand chosen
    with pytest.raises(ApiError) as exc:  # an attachment where the command takes none
        await fake.slash(guild.id, guild.channel_id, alice, "pick", {"mode": "fast"}, attachments={"file": image})
    assert code(_form_errors(exc), "data", "options") == "BASE_TYPE_CHOICES"

    ok = await fake.slash(guild.id, guild.channel_id, alice, "pick", {"mode": "slow", "count": 5})
    await ok.wait_callback()
    assert answer_of(ok) == "slow x5"


async def test_nsfw_channels_and_their_threads(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    adult = guild.add_channel("adult", nsfw=True)
    await eventually(lambda: bot.get_channel(adult) is not None, "CHANNEL_CREATE")
    dchannel = bot.get_channel(adult)
    assert isinstance(dchannel, discord.TextChannel) and dchannel.is_nsfw()

    async def answer(channel_id: int) -> str:
        inter = await fake.slash(guild.id, channel_id, alice, "nsfw")
        await inter.wait_callback()
        original = inter.original()
        assert original is not None
        return original.content

    assert await answer(adult) == "nsfw=True in TextChannel"
    assert await answer(guild.channel_id) == "nsfw=False in TextChannel"
    inter = await fake.slash(guild.id, adult, alice, "imagine", {"prompt": "a sunset"})
    assert inter.payload["channel"]["nsfw"] is True
    result = await inter.wait_followup()
    await fake.wait_for_message(lambda m: m.channel_id == result.id)  # the thread exists
    assert fake.threads[result.id].parent_id == adult
    assert await answer(result.id) == "nsfw=True in Thread"  # Thread.is_nsfw() reads the parent


async def test_a_moderator_clicks_a_log_button_in_another_channel(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    log_id = guild.add_channel("mod-log")
    carol = guild.add_member("carol")
    guild.give_role(carol, guild.add_role("Moderators", permissions=MANAGE_MESSAGES))
    admin = guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    await eventually(lambda: bot.get_channel(log_id) is not None, "CHANNEL_CREATE")
    log = bot.get_channel(log_id)
    assert isinstance(log, discord.TextChannel)
    entry = await log.send("alice made a picture", view=ModerationView())

    async def click(user: FakeUser) -> str:
        inter = await fake.click(entry.id, "mod:delete", user)
        assert inter.channel_id == log_id and inter.payload["channel"]["name"] == "mod-log"
        await inter.wait_callback()
        answer = inter.original()
        assert answer is not None and answer.ephemeral
        return answer.content

    assert await click(carol) == "allowed in #mod-log (carol,Moderators)"
    assert await click(alice) == "refused in #mod-log (alice)"
    assert await click(admin) == "refused in #mod-log (admin)"  # Manage Server alone is not Manage Messages


async def test_a_deleted_channel_answers_unknown_channel(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    log_id = guild.add_channel("mod-log")
    await eventually(lambda: bot.get_channel(log_id) is not None, "CHANNEL_CREATE")
    log = bot.get_channel(log_id)
    assert isinstance(log, discord.TextChannel)
    thread = await log.create_thread(name="reports", type=discord.ChannelType.public_thread)
    await eventually(lambda: bot.get_channel(thread.id) is not None, "THREAD_CREATE")
    fake.delete_channel(log_id)
    await eventually(lambda: bot.get_channel(log_id) is None, "CHANNEL_DELETE")
    assert bot.get_channel(thread.id) is None  # discord.py drops the channel's threads with it
    for target in (log, thread):
        with pytest.raises(discord.NotFound) as exc:
            await target.send("a report")
        assert (exc.value.status, exc.value.code, exc.value.text) == (404, 10003, "Unknown Channel")
    refused = [c for c in fake.calls if c.path == f"/channels/{thread.id}/messages"]
    assert refused[-1].status == 404 and refused[-1].response == {"code": 10003, "message": "Unknown Channel"}
    with pytest.raises(AssertionError, match="no channel"):
        await fake.user_message(log_id, alice, "anyone?")

    # A thread alone: THREAD_DELETE.
    general = bot.get_channel(guild.channel_id)
    assert isinstance(general, discord.TextChannel)
    other = await general.create_thread(name="side", type=discord.ChannelType.public_thread)
    await eventually(lambda: bot.get_channel(other.id) is not None, "THREAD_CREATE")
    fake.delete_channel(other.id)
    await eventually(lambda: bot.get_channel(other.id) is None, "THREAD_DELETE")
    with pytest.raises(discord.NotFound):
        await other.send("gone")


async def test_a_channel_the_bot_lost_answers_missing_access(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    log_id = guild.add_channel("mod-log")
    await eventually(lambda: bot.get_channel(log_id) is not None, "CHANNEL_CREATE")
    log = bot.get_channel(log_id)
    assert isinstance(log, discord.TextChannel)
    fake.revoke_access(log_id)
    await eventually(lambda: not log.permissions_for(log.guild.me).view_channel, "CHANNEL_UPDATE with the overwrite")
    with pytest.raises(discord.Forbidden) as exc:
        await log.send("a report")
    assert (exc.value.status, exc.value.code, exc.value.text) == (403, 50001, "Missing Access")
    refused = fake.calls[-1]
    assert (refused.method, refused.path, refused.status) == ("POST", f"/channels/{log_id}/messages", 403)
    assert refused.response == {"code": 50001, "message": "Missing Access"}

    # Its messages no longer reach the bot; interactions there still do, with no app permissions.
    await fake.user_message(log_id, alice, "hidden", mention_bot=True)
    await fake.user_message(guild.channel_id, alice, "visible", mention_bot=True)
    await eventually(lambda: bool(bot.seen), "the visible message")
    assert bot.seen == [f"<@{fake.bot_user_id}> visible"]
    inter = await fake.slash(guild.id, log_id, alice, "nsfw")
    assert inter.payload["app_permissions"] == "0"
    assert (await inter.wait_callback()).status == 200  # interaction responses need no channel permission

    fake.restore_access(log_id)
    await eventually(lambda: log.permissions_for(log.guild.me).view_channel, "CHANNEL_UPDATE without it")
    assert (await log.send("back")).content == "back"


class SurveyModal(discord.ui.Modal, title="Survey"):
    """A modal of Labels: a select menu and a text input (discord.py 2.6+)."""

    def __init__(self, *, disabled: bool = False) -> None:
        super().__init__(custom_id="m:survey")
        options = [discord.SelectOption(label=name.title(), value=name) for name in ("ant", "bee", "moth")]
        self.bug: discord.ui.Select[SurveyModal] = discord.ui.Select(
            custom_id="bug", options=options, required=False, disabled=disabled
        )
        self.why: discord.ui.TextInput[SurveyModal] = discord.ui.TextInput(custom_id="why", max_length=20)
        self.add_item(discord.ui.Label(text="Favourite bug", description="Or none", component=self.bug))
        self.add_item(discord.ui.Label(text="Why?", component=self.why))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"bug={self.bug.values} why={self.why.value}", ephemeral=True)


@app_commands.command(description="A survey in a modal")
async def survey(interaction: discord.Interaction[TinyBot], broken: bool = False) -> None:
    try:
        await interaction.response.send_modal(SurveyModal(disabled=broken))
    except discord.HTTPException as exc:
        interaction.client.errors.append(exc)


async def test_a_modal_of_labels_with_a_select_menu(
    fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot
) -> None:
    bot.tree.add_command(survey)
    await bot.tree.sync()
    asked = await fake.slash(guild.id, guild.channel_id, alice, "survey")
    shown = (await asked.wait_callback()).json["data"]
    assert [c["type"] for c in shown["components"]] == [18, 18]  # Labels, no action rows
    assert shown["components"][0]["component"]["type"] == 3 and shown["components"][0]["description"] == "Or none"

    async def answer(fields: dict[str, str | list[str]]) -> str:
        await (await fake.slash(guild.id, guild.channel_id, alice, "survey")).wait_callback()  # a modal answers once
        submitted = await fake.submit_modal("m:survey", fields, alice, channel_id=guild.channel_id)
        data = submitted.payload["data"]["components"]
        assert [c["type"] for c in data] == [18, 18] and data[0]["component"]["custom_id"] == "bug"
        await submitted.wait_callback()
        original = submitted.original()
        assert original is not None
        return original.content

    assert await answer({"bug": ["bee"], "why": "it hums"}) == "bug=['bee'] why=it hums"
    assert await answer({"why": "none"}) == "bug=[] why=none"  # an optional select left empty
    # What Discord's client would not submit: a value it did not offer, two values, an empty required input.
    for fields in ({"bug": ["wasp"], "why": "x"}, {"bug": ["ant", "bee"], "why": "x"}, {"bug": ["ant"]}):
        with pytest.raises(ApiError) as refused:
            await fake.submit_modal("m:survey", fields, alice, channel_id=guild.channel_id)
        assert refused.value.status == 400 and refused.value.body["code"] == 50035

    # A disabled component in a modal is refused.
    broken = await fake.slash(guild.id, guild.channel_id, alice, "survey", {"broken": True})
    call = await broken.wait_callback()
    assert call.status == 400 and call.response["code"] == 50035
    assert "disabled" in call.response["errors"]["data"]["components"]["0"]["component"]
    await eventually(lambda: bool(bot.errors), "discord.py to raise the refusal")


async def test_a_message_carries_at_most_ten_attachments(fake: FakeDiscord, guild: FakeGuild, alice: FakeUser) -> None:
    files = [(f"{n}.png", png(2, 2), "image/png") for n in range(11)]
    with pytest.raises(AssertionError, match="at most 10"):
        await fake.user_message(guild.channel_id, alice, "too many", attachments=files)
    posted = await fake.user_message(guild.channel_id, alice, "ten", attachments=files[:10])
    assert len(fake.messages[posted].attachments) == 10


async def test_one_user_in_two_guilds(fake: FakeDiscord, guild: FakeGuild, alice: FakeUser, bot: TinyBot) -> None:
    other = fake.add_guild("Other Guild")
    await eventually(lambda: bot.get_guild(other.id) is not None, "GUILD_CREATE")
    assert other.join(alice) is alice
    here = await fake.slash(guild.id, guild.channel_id, alice, "pick", {"mode": "fast"})
    there = await fake.slash(other.id, other.channel_id, alice, "pick", {"mode": "slow"})
    for inter, expected in ((here, guild), (there, other)):
        await inter.wait_callback()
        assert inter.payload["guild_id"] == str(expected.id) and inter.payload["member"]["user"]["id"] == str(alice.id)
    with pytest.raises(AssertionError, match="already a member"):
        other.join(alice)


# ----- sharding -----


@app_commands.command(description="Which shard answers")
async def where(interaction: discord.Interaction[ShardBot]) -> None:
    interaction.client.answered.append(interaction.id)
    await interaction.response.send_message("here", ephemeral=True)


class ShardBot(commands.AutoShardedBot):
    """A sharded client (discord.py's AutoShardedBot) that records the interactions that reach it."""

    def __init__(self, **shards: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.1,
            chunk_guilds_at_startup=False,
            **shards,
        )
        self.answered: list[int] = []

    async def setup_hook(self) -> None:
        self.tree.add_command(where)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py waits 5 s before each IDENTIFY but the first (max_concurrency 1); the fake paces nothing.
        return None


@contextlib.asynccontextmanager
async def running_sharded(fake: FakeDiscord, **shards: Any) -> AsyncIterator[ShardBot]:
    bot = ShardBot(**shards)
    task = asyncio.create_task(bot.start(fake.token))
    try:
        waiter = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({waiter, task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()  # a start-up error, e.g. the gateway closing with 4010
        assert waiter in done, "the sharded client did not become ready within 5 s"
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, 5)
    assert not fake.unknown_routes and not fake.internal_errors


def event_guilds(fake: FakeDiscord, shard: tuple[int, int], event: str) -> list[str]:
    """The guild ids of the ``event`` dispatches queued for the newest session of ``shard``."""
    key = "id" if event == "GUILD_CREATE" else "guild_id"  # a DM's events carry no guild_id: None
    return [d.get(key) for t, d in fake.session_events(shard) if t == event]


async def test_two_processes_each_run_one_shard_of_two(fake: FakeDiscord) -> None:
    zero_guild = fake.add_guild("Shard zero", shard=(0, 2))
    one_guild = fake.add_guild("Shard one", shard=(1, 2))
    assert (zero_guild.id >> 22) % 2 == 0 and (one_guild.id >> 22) % 2 == 1
    alice = zero_guild.add_member("alice")
    one_guild.join(alice)
    async with running_sharded(fake, shard_ids=[0], shard_count=2) as zero:
        with pytest.raises(AssertionError, match="no connected, READY bot session owns guild"):
            await fake.slash(one_guild.id, one_guild.channel_id, alice, "where")  # shard 1 is not running
        async with running_sharded(fake, shard_ids=[1], shard_count=2) as one:
            await fake.wait_ready(sessions=2)
            await fake.wait_ready(shard=(1, 2))
            assert fake.identified_shards == [(0, 2), (1, 2)]
            assert [g.id for g in zero.guilds] == [zero_guild.id]
            assert [g.id for g in one.guilds] == [one_guild.id]
            [ready] = [d for t, d in fake.session_events((1, 2)) if t == "READY"]
            assert ready["shard"] == [1, 2] and ready["guilds"] == [{"id": str(one_guild.id), "unavailable": True}]
            assert event_guilds(fake, (1, 2), "GUILD_CREATE") == [str(one_guild.id)]
            await one.tree.sync()

            inter = await fake.slash(one_guild.id, one_guild.channel_id, alice, "where")
            assert (await inter.wait_callback()).status == 200
            assert one.answered == [inter.id] and zero.answered == []
            dm = await fake.slash(None, fake.open_dm(alice), alice, "where")
            assert (await dm.wait_callback()).status == 200
            assert zero.answered == [dm.id] and one.answered == [inter.id]

            # Later guild events go to the owning shard only; a DM's to shard 0.
            late = fake.add_guild("Late", shard=(1, 2))
            await eventually(lambda: one.get_guild(late.id) is not None, "the new guild to reach shard 1")
            await fake.user_message(one_guild.channel_id, alice, "hi", mention_bot=True)
            await fake.user_message(fake.open_dm(alice), alice, "psst")
            role = one_guild.add_role("Painters")
            assert str(late.id) in event_guilds(fake, (1, 2), "GUILD_CREATE")
            assert str(late.id) not in event_guilds(fake, (0, 2), "GUILD_CREATE")
            assert event_guilds(fake, (1, 2), "MESSAGE_CREATE") == [str(one_guild.id)]
            assert event_guilds(fake, (0, 2), "MESSAGE_CREATE") == [None]  # the DM, which has no guild_id
            assert str(role.guild_id) in event_guilds(fake, (1, 2), "GUILD_ROLE_CREATE")
            assert str(role.guild_id) not in event_guilds(fake, (0, 2), "GUILD_ROLE_CREATE")
            assert zero.get_guild(late.id) is None and zero.get_guild(one_guild.id) is None


async def test_gateway_bot_recommends_shards_and_counts_session_starts() -> None:
    async with FakeDiscord(shards=3, max_concurrency=2) as fake, aiohttp.ClientSession() as http:

        async def gateway_bot() -> dict[str, Any]:
            headers = {"Authorization": f"Bot {fake.token}"}
            async with http.get(f"{fake.url}/api/v10/gateway/bot", headers=headers) as resp:
                assert resp.status == 200
                return dict(await resp.json())

        before = await gateway_bot()
        assert before["shards"] == 3 and before["url"].startswith("ws://127.0.0.1:")
        fresh = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 2}
        assert before["session_start_limit"] == fresh
        for _ in range(2):  # two session starts: each client identifies once, and is ready
            async with running(fake) as client:
                assert client.is_ready()
        limit = (await gateway_bot())["session_start_limit"]
        assert limit["remaining"] == 998 and limit["total"] == 1000 and limit["max_concurrency"] == 2
        assert 0 < limit["reset_after"] <= 24 * 3600 * 1000
        async with http.get(f"{fake.url}/api/v10/gateway/bot", headers={"Authorization": "Bot wrong"}) as resp:
            assert resp.status == 401


async def test_an_unsharded_auto_sharded_client_runs_every_recommended_shard() -> None:
    async with FakeDiscord(shards=2) as fake:
        guilds = [fake.add_guild(f"Guild {i}") for i in range(4)]  # made in a row: spread over both shards
        assert {(g.id >> 22) % 2 for g in guilds} == {0, 1}
        alice = guilds[0].add_member("alice")
        for guild in guilds[1:]:
            guild.join(alice)
        async with running_sharded(fake) as bot:
            await fake.wait_ready(sessions=2)
            assert any(c.path == "/gateway/bot" for c in fake.calls)
            assert bot.shard_count == 2 and sorted(fake.identified_shards) == [(0, 2), (1, 2)]
            assert {g.id for g in bot.guilds} == {g.id for g in guilds}
            assert {g.id: g.shard_id for g in bot.guilds} == {g.id: (g.id >> 22) % 2 for g in guilds}
            await bot.tree.sync()
            for guild in guilds:
                inter = await fake.slash(guild.id, guild.channel_id, alice, "where")
                assert (await inter.wait_callback()).status == 200
            assert len(bot.answered) == len(guilds)


async def test_an_impossible_shard_is_refused_with_4010(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 0, "properties": {}, "shard": [2, 2]}})
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4010
    assert fake.identified_shards == []
