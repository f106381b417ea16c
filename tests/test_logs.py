"""Logging: one parseable JSON object per line with the task fields, readable text otherwise, never a secret."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from bot.domain.tasks import JobState, TaskKind
from bot.logs import REDACTED, TASK_FIELDS, JsonFormatter, TextFormatter, configure_logging, secret_values
from bot.settings import Settings, load_settings
from tests.conftest import FREEPIK_KEY, NOVITA_KEY, Harness

DISCORD_TOKEN = "made-up-discord-token-for-the-redaction-test"
WEBHOOK_SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LXZhbHVl"


class Capture:
    """A handler with the bot's formatter on one logger, collecting finished lines."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def capture_json() -> Iterator[Capture]:
    capture = Capture(JsonFormatter())
    logger = logging.getLogger("bot")
    logger.addHandler(capture.handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        logger.removeHandler(capture.handler)
        logger.setLevel(previous)


def settings_with_secrets() -> Settings:
    return load_settings(
        {
            "discord_token": DISCORD_TOKEN,
            "freepik_api_key": FREEPIK_KEY,
            "novita_api_key": NOVITA_KEY,
            "webhook_public_url": "https://bot.example.org",
            "webhook_secret": WEBHOOK_SECRET,
        },
        env_file=None,
    )


async def test_task_finished_is_one_json_line_with_the_task_fields(
    harness: Harness, capture_json: Capture
) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    await harness.interact(bot, harness.describe_payload())

    entries = [json.loads(line) for line in capture_json.lines]  # every line parses on its own
    finished = [entry for entry in entries if entry["message"] == "task finished"]
    assert len(finished) == 1
    entry = finished[0]
    assert set(TASK_FIELDS) <= set(entry)
    assert entry["provider"] == "freepik"
    assert entry["kind"] == TaskKind.DESCRIBE.value
    assert entry["state"] == JobState.COMPLETED.value
    assert entry["fault"] is None
    assert str(entry["user_id"]) == str(harness.discord.default_user_id)
    assert str(entry["guild_id"]) == str(harness.discord.guild_ids[0])
    assert isinstance(entry["duration"], int | float)
    assert entry["duration"] >= 0
    assert entry["job_id"]
    assert entry["level"] == "INFO"
    assert entry["logger"] == "bot.core.runner"
    assert entry["time"].endswith("+00:00")


def test_text_line_carries_the_task_fields_as_key_value_pairs() -> None:
    record = logging.LogRecord("bot.core.runner", logging.INFO, __file__, 1, "task finished", None, None)
    for name, value in {
        "job_id": "j1",
        "user_id": 7,
        "guild_id": 9,
        "provider": "novita",
        "state": "completed",
        "duration": 1.5,
    }.items():
        setattr(record, name, value)
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert line.endswith(
        "bot.core.runner: task finished job_id=j1 user_id=7 guild_id=9 provider=novita state=completed duration=1.5"
    )


def test_an_exception_stays_inside_one_json_line() -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = logging.LogRecord("bot", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert "RuntimeError: boom" in entry["exception"]


@pytest.mark.parametrize("formatter_class", [JsonFormatter, TextFormatter])
def test_logging_the_settings_shows_no_secret(formatter_class: type[logging.Formatter]) -> None:
    settings = settings_with_secrets()
    formatter = formatter_class()  # no redaction list: SecretStr alone must hide the values
    lines = [
        formatter.format(
            logging.LogRecord("bot", logging.INFO, __file__, 1, "settings: %r", (settings,), None)
        ),
        formatter.format(
            logging.LogRecord("bot", logging.INFO, __file__, 1, "settings: %s", (settings,), None)
        ),
        formatter.format(
            logging.LogRecord("bot", logging.INFO, __file__, 1, "dump: %s", (settings.model_dump(),), None)
        ),
    ]
    for line in lines:
        for secret in (DISCORD_TOKEN, FREEPIK_KEY, NOVITA_KEY, WEBHOOK_SECRET):
            assert secret not in line


def test_secret_values_lists_every_secret_setting_that_is_set() -> None:
    assert sorted(secret_values(settings_with_secrets())) == sorted(
        [DISCORD_TOKEN, FREEPIK_KEY, NOVITA_KEY, WEBHOOK_SECRET]
    )
    assert secret_values(load_settings(env_file=None)) == []


@pytest.mark.parametrize("formatter_class", [JsonFormatter, TextFormatter])
def test_a_secret_that_slips_into_a_message_is_redacted(formatter_class: type[logging.Formatter]) -> None:
    # E.g. a library's exception text that quotes a header; the last guard is the formatter.
    quoted = 'key"with\\quote-and-backslash'
    formatter = formatter_class(secrets=[*secret_values(settings_with_secrets()), quoted])  # type: ignore[call-arg]
    try:
        raise ValueError(f"bad header Authorization: Bearer {NOVITA_KEY}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "bot", logging.ERROR, __file__, 1, "request to %s failed with %s", ("novita", quoted), exc_info
    )
    line = formatter.format(record)
    assert NOVITA_KEY not in line
    assert quoted not in line
    assert json.dumps(quoted)[1:-1] not in line
    assert REDACTED in line
    if formatter_class is JsonFormatter:
        assert REDACTED in json.loads(line)["exception"]


def test_configure_logging_redacts_and_picks_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    loggers = [logging.getLogger(), logging.getLogger("discord"), logging.getLogger("aiohttp.access")]
    handlers = loggers[0].handlers[:]
    levels = [logger.level for logger in loggers]
    try:
        configure_logging("INFO", "json", secrets=[FREEPIK_KEY])
        logging.getLogger("bot.test").info("key is %s", FREEPIK_KEY, extra={"provider": "freepik"})
        logging.getLogger("discord.gateway").info("gateway chatter is hidden at INFO")
    finally:
        loggers[0].handlers[:] = handlers
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == f"key is {REDACTED}"
    assert entry["provider"] == "freepik"
