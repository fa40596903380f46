"""A wire-level fake Discord on 127.0.0.1 that the real, unmodified discord.py client talks to.

REST under ``/api/v10``, the gateway websocket at ``/gateway/`` and a CDN at ``/cdn/attachments/...``
(facts in /work/shared/specs/discord-wire.md). Entering the context patches ``discord.http.Route.BASE``
and ``DiscordWebSocket.DEFAULT_GATEWAY``; leaving restores them. Every wait has a timeout and raises
``FakeTimeout`` (an AssertionError and a TimeoutError) naming what it waited for::

    async with FakeDiscord() as fake:
        guild = fake.add_guild("Test", premium_tier=0)          # "general" text channel, owner, bot member
        alice = guild.add_member("alice")                        # ordinary permissions, no admin
        bot = make_bot()                                         # a commands.Bot, Intents.default()
        task = asyncio.create_task(bot.start(fake.token))
        await fake.wait_ready()
        await bot.tree.sync(guild=discord.Object(guild.id))      # stored in fake.synced_commands[guild.id]
        inter = await fake.slash(guild.id, guild.channel_id, alice, "imagine", {"prompt": "a cat"},
                                 attachments={"image": ("in.png", png_bytes, "image/png")})
        assert (await inter.wait_callback()).json["type"] == 5  # deferred in time
        msg = await inter.wait_followup()                        # FakeMessage: content, files, components
        click = await fake.click(msg.id, "t:1", alice)           # a button press on the stored message
        await fake.user_message(msg.thread_id, alice, "bluer", mention_bot=True)  # MESSAGE_CREATE
        mods = guild.add_role("Moderators", permissions=MANAGE_MESSAGES)    # GUILD_ROLE_CREATE
        guild.give_role(alice, mods)                                         # GUILD_MEMBER_UPDATE (members intent)
        await fake.slash(guild.id, guild.channel_id, alice, "settings", {"role": mods}, subcommand="block role")
        adult = guild.add_channel("adult", nsfw=True)                        # interaction.channel.is_nsfw()
        fake.revoke_access(adult)                                            # REST on it: 403 50001
        fake.delete_channel(adult)                                           # CHANNEL_DELETE; REST: 404 10003
        assert not fake.unknown_routes
        await bot.close(); await task

Faithful: Discord's JSON shapes, status codes and error bodies for what bots get wrong (2000-character
content, component limits, 413 uploads, 40060 double acknowledgement, 10062 after the 3 s deadline, 50027
after the token lifetime, 10003 in a deleted channel, 50001 in one the bot cannot view, 50035 for option
values Discord would refuse), the message content and members intents, permissions combined from
@everyone and every role (Administrator means all), resolved USER/CHANNEL/ROLE/MENTIONABLE options,
subcommand groups, the first follow-up after a "thinking" defer replacing the placeholder, THREAD_CREATE,
RESUME. Simplified: one overwrite kind (the bot's View Channel, by revoke_access), no rate limiting (nor
IDENTIFY pacing by max_concurrency), plain-text gateway frames.

Sharding, as Discord does it: each gateway session is one shard, the ``shard`` [shard_id, shard_count] its
IDENTIFY sent ([0, 1] when absent; recorded in ``fake.identified_shards``; READY echoes it). A guild belongs to
shard ``(guild_id >> 22) % shard_count``: a session's READY and GUILD_CREATEs list only its shard's guilds, and
every later guild event (GUILD_CREATE, MESSAGE_*, THREAD_*, CHANNEL_*, GUILD_ROLE_*, GUILD_MEMBER_*) goes only to
sessions of the owning shard; DM events go to shard 0. An interaction goes to the newest connected session of
its guild's shard (shard 0 for DMs and for user installs in servers without the bot); with none, ``slash`` and
the other actions raise, as Discord would not deliver it. ``GET /gateway/bot`` recommends
``FakeDiscord(shards=N)`` (``fake.recommended_shards``) and its ``session_start_limit.remaining`` drops with
each IDENTIFY::

    async with FakeDiscord(shards=2) as fake:
        one = fake.add_guild("On shard 1", shard=(1, 2))         # an id with (id >> 22) % 2 == 1
        ...start discord.AutoShardedClient(shard_ids=[1], shard_count=2), or one with neither (asks /gateway/bot)
        await fake.wait_ready(shard=(1, 2))                      # or wait_ready(sessions=2) for both shards
"""

from __future__ import annotations

from .models import (
    ADMINISTRATOR,
    BOT_PERMISSIONS,
    GUILD_MEMBERS_INTENT,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MEMBER_PERMISSIONS,
    PRIVILEGED_INTENTS,
    VIEW_CHANNEL,
    FakeGuild,
    FakeInteraction,
    FakeMessage,
    FakeRole,
    FakeThread,
    FakeUser,
    RecordedCall,
    UploadedFile,
)
from .server import FakeDiscord, FakeTimeout
from .validation import ApiError

__all__ = [
    "ADMINISTRATOR",
    "BOT_PERMISSIONS",
    "GUILD_MEMBERS_INTENT",
    "MANAGE_GUILD",
    "MANAGE_MESSAGES",
    "MEMBER_PERMISSIONS",
    "PRIVILEGED_INTENTS",
    "VIEW_CHANNEL",
    "ApiError",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMessage",
    "FakeRole",
    "FakeThread",
    "FakeTimeout",
    "FakeUser",
    "RecordedCall",
    "UploadedFile",
]
