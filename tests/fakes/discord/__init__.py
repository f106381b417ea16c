"""A fake Discord (REST, CDN and gateway) on 127.0.0.1 that a real discord.py 2.7 client can log into.

Point discord.py at it with `FakeDiscord.install()` (or `async with FakeDiscord() as fake`), log a bot
in with `start_bot`, script interactions with the payload builders (`slash`, `button_click`, ...) and
`send_interaction`, then assert on `calls`, the ordered record of every HTTP request the bot made.

The fake behaves like Discord where a bot can get it wrong: the first interaction callback must come
within `ack_window` seconds (else 404 10062), an interaction answers only once (400 40060), webhook tokens
expire after `token_lifetime` (401 50027), empty messages are refused (50006), edits of unknown or deleted
messages answer 10008, and anything it does not model answers 404 `Unknown route (fake)` so gaps show up.
Every REST request is checked against Discord's OpenAPI spec and documented limits (content 2,000,
embeds 6,000 in all, 5 action rows, custom ids 100, ...); one Discord would refuse is answered as Discord
would (400 50035 naming the field) and recorded in `violations`, which `assert_no_violations` fails on.

The package, by what it fakes:
- state.py: users, guilds, channels, roles, messages, interactions, commands and the CDN store;
- payloads.py: the builders tests script with (slash, button_click, make_message, add_attachment, ...);
- rest.py: REST and CDN routes, handlers, injected failures and error answers;
- gateway.py: HELLO/IDENTIFY/RESUME, events, and the scripted faults (identify_close_code, silent_gateway);
- validation.py: Discord's OpenAPI spec (tests/data/discord-openapi.json) and documented limits;
- bot_runner.py: start_bot, stop_bot and connect_task for a real discord.py client;
- fake.py: FakeDiscord, the one object tests hold, composed of the parts above.
"""

from tests.fakes.discord.bot_runner import connect_task, start_bot, stop_bot
from tests.fakes.discord.constants import ATTACHMENT_SIZE_LIMIT, DEFAULT_APP_PERMISSIONS
from tests.fakes.discord.fake import FakeDiscord
from tests.fakes.discord.payloads import DEFAULT_GUILD, InteractionOptions
from tests.fakes.discord.rest import RecordedCall

__all__ = [
    "ATTACHMENT_SIZE_LIMIT",
    "DEFAULT_APP_PERMISSIONS",
    "DEFAULT_GUILD",
    "FakeDiscord",
    "InteractionOptions",
    "RecordedCall",
    "connect_task",
    "start_bot",
    "stop_bot",
]
