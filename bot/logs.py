"""Logging, configured once: human-readable lines by default, JSON lines with LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from bot.settings import Settings
from bot.store.postgres.url import password

# Fields that `log.info(..., extra={...})` may attach; they are printed after the message.
TASK_FIELDS = (
    "job_id",
    "user_id",
    "guild_id",
    "provider",
    "kind",
    "state",
    "fault",
    "duration",
)
# The fields of an admin's change (the rules): who, what, and the change itself as JSON.
ADMIN_FIELDS = ("guild_id", "actor_id", "action", "detail")
_FIELDS = tuple(dict.fromkeys(TASK_FIELDS + ADMIN_FIELDS))
REDACTED = "[redacted]"
# Shorter values are not secrets worth the name, and replacing them would mangle ordinary words.
_MIN_SECRET_LENGTH = 8


def secret_values(settings: Settings) -> list[str]:
    """Return the values of every secret setting (tokens, keys, signing secrets) that is set, providers' too."""
    values = []
    for model in (settings, *settings.providers.values()):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
    if settings.database_url is not None:
        # The password alone too: a line that shows the URL in another form must not show it either.
        database_password = password(settings.database_url.get_secret_value())
        if database_password:
            values.append(database_password)
    return values


class _Redactor:
    """Replace known secret values in a finished log line: the last guard if one slips into a message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {secret for secret in secrets if len(secret) >= _MIN_SECRET_LENGTH}
        forms = unique | {json.dumps(secret)[1:-1] for secret in unique}  # as it appears inside JSON
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for form in self._forms:
            if form in line:
                line = line.replace(form, REDACTED)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the task fields a log shipper can index."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    """A readable line, with the task fields as key=value pairs after the message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
        self._redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{name}={getattr(record, name)}" for name in _FIELDS if hasattr(record, name))
        return self._redact(f"{line} {extras}" if extras else line)


def configure_logging(level: str = "INFO", fmt: str = "text", *, secrets: Iterable[str] = ()) -> None:
    """Send every log line to stderr in `fmt`; any of `secrets` that reaches a line is replaced."""
    handler = logging.StreamHandler(sys.stderr)
    secrets = list(secrets)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.py's gateway chatter at INFO is noise for an admin; warnings still show.
    logging.getLogger("discord").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
