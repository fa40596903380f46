"""The fake Discord against the real discord.py: a tiny bot defined here exercises what Banana Bot needs."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fake_discord import PRIVILEGED_INTENTS, FakeDiscord, FakeGuild, FakeUser

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


@app_commands.context_menu(name="Describe")
async def describe(interaction: discord.Interaction[TinyBot], message: discord.Message) -> None:
    text = f"{len(message.attachments)} attachment(s): {message.content}"
    await interaction.response.send_message(text, ephemeral=True)


class TinyBot(commands.Bot):
    def __init__(self) -> None:
        intents = discord.Intents.default()  # no privileged intents: no message content, members, presences
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            guild_ready_timeout=0.1,
            chunk_guilds_at_startup=False,
        )
        self.seen: list[str] = []
        self.errors: list[discord.HTTPException] = []

    async def setup_hook(self) -> None:
        self.add_view(PersistentView())
        self.tree.add_command(imagine)
        for command in (limits, retouch, describe):
            self.tree.add_command(command)

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        self.seen.append(message.content)
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
async def running(fake: FakeDiscord) -> AsyncIterator[TinyBot]:
    bot = TinyBot()
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
    dguild = bot.get_guild(guild.id)
    assert dguild is not None and dguild.filesize_limit == 10 * 2**20
    channel = dguild.get_channel(guild.channel_id)
    assert isinstance(channel, discord.TextChannel) and channel.name == "general"
    perms = channel.permissions_for(dguild.me)
    assert perms.send_messages and perms.attach_files and perms.embed_links and perms.create_public_threads
    assert perms.send_messages_in_threads and not perms.administrator
    synced = {c["name"]: c for c in fake.synced_commands[None]}
    assert set(synced) == {"imagine", "limits", "retouch", "Describe"}
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
