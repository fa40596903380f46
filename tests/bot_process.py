"""`banana-bot run` in a process of its own, pointed at a fake Discord's gateway (tests/test_scale_e2e.py).

REST goes to the fake through DISCORD_API_BASE, as it would to a proxy. The gateway address is the one thing
a deployment never changes (it is Discord's own), so this wrapper sets it from FAKE_DISCORD_GATEWAY, as the
fake does in its own process, then runs the real command line.
"""

from __future__ import annotations

import os
import sys

import discord.gateway
import yarl

from bot.cli import main

if __name__ == "__main__":
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
    sys.exit(main(["run"]))
