"""/rules for server admins (Manage Server): what each channel allows, spoilers, and the prompt blocklist."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.discord.client import ImageBot
from bot.discord.interactions import managed_server
from bot.domain.blocklist import split_phrases
from bot.domain.errors import BadInput, Refusal
from bot.domain.rules import SERVER_DEFAULT, ChannelRule, SpoilerRule, rule_for
from bot.ui.words import (
    BLOCKLIST_ADDED,
    BLOCKLIST_REMOVED,
    RULE_OFF,
    RULE_ON,
    RULES_BLOCKLIST_EMPTY,
    RULES_BLOCKLIST_TITLE,
    RULES_CHANNEL_SET,
    RULES_CHANNELS_TITLE,
    RULES_NO_CHANNELS,
    RULES_SERVER_DEFAULT,
    SPOILER_RULES,
    Words,
)

SPOILER_CHOICES = [
    app_commands.Choice(name=locale_str(SPOILER_RULES[rule.value]), value=rule.value) for rule in SpoilerRule
]
# The channels a rule may be set for: where members can run commands (no categories or directories).
_RULE_CHANNEL_TYPES = [
    discord.ChannelType.text,
    discord.ChannelType.news,
    discord.ChannelType.voice,
    discord.ChannelType.stage_voice,
    discord.ChannelType.forum,
    discord.ChannelType.public_thread,
    discord.ChannelType.private_thread,
    discord.ChannelType.news_thread,
]
RuleChannel = app_commands.AppCommandChannel | app_commands.AppCommandThread


class RuleChannelOption(app_commands.Transformer):
    """A channel option limited to the channels commands run in, passed on as Discord resolved it."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        return _RULE_CHANNEL_TYPES

    async def transform(self, interaction: discord.Interaction, value: RuleChannel) -> RuleChannel:
        return value


# An embed field holds 1024 characters; a longer blocklist is cut with an ellipsis.
_FIELD_LIMIT = 1024
_WORDS_LIMIT = 1000


def describe_rule(words: Words, rule: ChannelRule) -> str:
    """Say one channel's rule in a line."""
    name = f"<#{rule.channel_id}>" if rule.channel_id != SERVER_DEFAULT else words.say(RULES_SERVER_DEFAULT)
    return words.say(
        RULES_CHANNEL_SET,
        channel=name,
        describe=words.say(RULE_ON if rule.describe else RULE_OFF),
        imagine=words.say(RULE_ON if rule.imagine else RULE_OFF),
        spoilers=words.say(SPOILER_RULES[rule.spoilers.value]),
    )


class RulesCog(commands.Cog):
    """The server's rules for commands, results and prompts."""

    rules = app_commands.Group(
        name="rules",
        description=locale_str(
            "Which commands each channel allows, spoilers, and words no prompt may contain"
        ),
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @rules.command(
        name="channel", description=locale_str("Switch commands on or off in a channel, and set its spoilers")
    )
    @app_commands.describe(
        channel=locale_str("The channel (leave empty for every channel without its own rule)"),
        describe=locale_str("Whether /describe and Describe image work there"),
        imagine=locale_str("Whether /imagine, Edit image and the Imagine buttons work there"),
        spoilers=locale_str("When results are shown behind a spoiler"),
    )
    @app_commands.choices(spoilers=SPOILER_CHOICES)
    async def channel(
        self,
        interaction: discord.Interaction,
        channel: app_commands.Transform[RuleChannel, RuleChannelOption] | None = None,
        describe: bool | None = None,
        imagine: bool | None = None,
        spoilers: app_commands.Choice[str] | None = None,
    ) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER_RULES)
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = self.bot.core.rules
        channel_id = channel.id if channel is not None else SERVER_DEFAULT
        current = await store.channel_rules(guild_id)
        # A channel's first rule starts from what it followed until now (the server's default).
        before = rule_for(current, channel_id)
        rule = ChannelRule(
            channel_id,
            describe=before.describe if describe is None else describe,
            imagine=before.imagine if imagine is None else imagine,
            spoilers=before.spoilers if spoilers is None else SpoilerRule(spoilers.value),
        )
        if (describe, imagine, spoilers) != (None, None, None):
            await store.set_channel_rule(guild_id, rule, interaction.user.id)
        await interaction.followup.send(describe_rule(self.bot.words_for(interaction), rule), ephemeral=True)

    @rules.command(name="blocklist-add", description=locale_str("Add words or phrases no prompt may contain"))
    @app_commands.describe(words=locale_str("Words or phrases, separated by commas"))
    async def blocklist_add(
        self, interaction: discord.Interaction, words: app_commands.Range[str, 1, _WORDS_LIMIT]
    ) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER_RULES)
        phrases = _phrases(words)
        await interaction.response.defer(ephemeral=True, thinking=True)
        added, total = await self.bot.core.rules.add_blocked(guild_id, phrases, interaction.user.id)
        sentence = self.bot.words_for(interaction).say(BLOCKLIST_ADDED, added=added, total=total)
        await interaction.followup.send(sentence, ephemeral=True)

    @rules.command(
        name="blocklist-remove", description=locale_str("Remove words or phrases from the blocklist")
    )
    @app_commands.describe(words=locale_str("Words or phrases, separated by commas"))
    async def blocklist_remove(
        self, interaction: discord.Interaction, words: app_commands.Range[str, 1, _WORDS_LIMIT]
    ) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER_RULES)
        phrases = _phrases(words)
        await interaction.response.defer(ephemeral=True, thinking=True)
        removed, total = await self.bot.core.rules.remove_blocked(guild_id, phrases, interaction.user.id)
        sentence = self.bot.words_for(interaction).say(BLOCKLIST_REMOVED, removed=removed, total=total)
        await interaction.followup.send(sentence, ephemeral=True)

    @rules.command(name="show", description=locale_str("Show this server's channel rules and blocklist"))
    async def show(self, interaction: discord.Interaction) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER_RULES)
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = self.bot.core.rules
        words = self.bot.words_for(interaction)
        rules = await store.channel_rules(guild_id)
        blocked = await store.blocklist(guild_id)
        embed = discord.Embed(title="/rules", colour=discord.Colour.blurple())
        lines = [describe_rule(words, rules[key]) for key in sorted(rules)]
        embed.add_field(
            name=words.say(RULES_CHANNELS_TITLE),
            value=_cut("\n".join(lines)) if lines else words.say(RULES_NO_CHANNELS),
            inline=False,
        )
        # Behind spoilers: an admin sharing their screen need not show the words themselves.
        listed = ", ".join(f"||{written}||" for _, written in blocked)
        embed.add_field(
            name=words.say(RULES_BLOCKLIST_TITLE),
            value=_cut(listed) if listed else words.say(RULES_BLOCKLIST_EMPTY),
            inline=False,
        )
        await interaction.followup.send(embed=embed, ephemeral=True)


def _phrases(written: str) -> list[str]:
    phrases = split_phrases(written)
    if not phrases:
        raise BadInput(Refusal.NEEDS_WORDS)
    return phrases


def _cut(text: str) -> str:
    return text if len(text) <= _FIELD_LIMIT else text[: _FIELD_LIMIT - 1] + "…"


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(RulesCog(bot))
