"""Refining an image by talking to it: replies in the bot's threads continue the conversation.

A message in a thread that replies to one of the bot's images continues from *that* image (the thread is
a version tree); a message that only mentions the bot continues from the newest image in the thread.
Words become the instruction and attached images become extra references. No privileged intent is
needed: a reply that pings the bot, like a mention, carries its content. A reply with the ping turned off
("@OFF" in the reply bar) arrives without its words and images, so the member is told to ping the bot. In
a DM with the bot, where there are no threads, a reply to an image continues from it in place.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import discord
from discord.ext import commands

from bot.i18n import t
from bot.ui.context import Services
from bot.ui.intake import InputError, choose_speed, message_images, submit, take_inputs
from bot.ui.rules import Requester, admit
from bot.ui.surfaces import DEFAULT_UPLOAD_LIMIT, ChannelSurface
from storage.jobs import Job, job_for_message, latest_done_job_in_thread

log = logging.getLogger(__name__)

MAX_ATTACHMENTS = 10  # all a message can carry: take_inputs keeps the model's limit and names the rest


class Conversation(commands.Cog):
    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        channel = message.channel
        in_dm = isinstance(channel, discord.DMChannel)
        if message.author.bot or not (isinstance(channel, discord.Thread) or in_dm) or self.bot.user is None:
            return
        parent = await self.parent_job(message)
        if parent is None or (in_dm and parent.channel_id != channel.id):
            return
        guild = None if in_dm else getattr(channel, "guild", None)
        # In a DM the conversation continues in place: a reply to the image, answered with a reply.
        locale = self.services.guild_locale(guild) if guild is not None else parent.locale
        upload_limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
        instruction = re.sub(rf"<@!?{self.bot.user.id}>", "", message.content).strip()
        surface = ChannelSurface(channel, locale=locale, upload_limit=upload_limit, reply_to=message)
        if not instruction:
            await message.reply(t(locale, self.empty_reply_hint(message)), mention_author=False)
            return
        images = message_images(message)[:MAX_ATTACHMENTS]
        admitted = await admit(self.services, Requester.of_message(message), [instruction])
        if admitted is None:
            return
        asked = dataclasses.replace(parent.request, prompt=instruction, reference_keys=(), input_notes=())
        attached = [(a.filename, a) for a in images]
        guild_id = guild.id if guild is not None else None
        request = await take_inputs(
            self.services, surface, asked, attached, guild_id=guild_id, size=parent.request.size
        )
        if request is None:
            return
        try:
            # A reply follows the server's setting (fast unless it defaults to relax or allows relax only).
            speed = await choose_speed(self.services, None if parent.user_install else guild_id, None, locale)
        except InputError as exc:
            await surface.error(str(exc))
            return
        job = Job(
            guild_id=guild_id,
            channel_id=channel.id,
            user_id=message.author.id,
            kind="reply",
            locale=locale,
            request=request,
            parent_id=parent.id,
            thread_id=None if in_dm else channel.id,
            user_install=parent.user_install,
            speed=speed,
        )
        await submit(self.services, job, surface, member_daily=admitted.daily)

    def empty_reply_hint(self, message: discord.Message) -> str:
        """Which hint an empty reply gets: without the message content intent, Discord sends a reply that
        doesn't ping or mention the bot with its words and attachments blanked, so the member did write."""
        hidden = not self.bot.intents.message_content and self.bot.user not in message.mentions
        return "reply.no_ping" if hidden else "reply.empty"

    async def parent_job(self, message: discord.Message) -> Job | None:
        """The job whose image this message continues from, or None if the message isn't for the bot."""
        db = self.services.db
        reference = message.reference
        if reference is not None and reference.message_id is not None:
            replied = await job_for_message(db, reference.message_id)
            if replied is not None and replied.status == "done":
                return replied
        assert self.bot.user is not None
        if self.bot.user in message.mentions and isinstance(message.channel, discord.Thread):
            return await latest_done_job_in_thread(db, message.channel.id)
        return None
