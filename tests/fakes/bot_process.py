"""Run the real `python -m bot` as its own process against a fake Discord.

The one difference from a deployment is where discord.py connects: FAKE_DISCORD_URL names the fake's
root, and the REST base, gateway and CDN base are pointed there before the bot's entry point runs.
Usage: `FAKE_DISCORD_URL=http://127.0.0.1:PORT python -m tests.fakes.bot_process [run|...]`.
"""

from __future__ import annotations

import os
import sys

import discord.asset
import discord.gateway
import discord.http
import yarl

from bot.__main__ import main


def point_discord_at(base_url: str) -> None:
    discord.http.Route.BASE = f"{base_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        base_url.replace("http://", "ws://") + "/gateway"
    )
    discord.asset.Asset.BASE = f"{base_url}/cdn"


if __name__ == "__main__":
    point_discord_at(os.environ["FAKE_DISCORD_URL"])
    sys.exit(main(sys.argv[1:]))
