"""A PostgreSQL server for the tests: where it is, whether it answers, and a fresh schema per test.

The server is TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test: the machine's and CI's
server, trust authentication). Each test gets a schema of its own with a random name, created in that
database and dropped after it; the bot is pointed at it with `?search_path=<schema>` in DATABASE_URL, so
every table, lock key and NOTIFY channel of the test is its own. Tests that need the server carry the
`postgres` marker (set automatically for the fixtures below) and skip, saying why, when it does not answer.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
URL_VARIABLE = "TEST_DATABASE_URL"
# Where the counts of PostgreSQL tests are written for .ci/run (a path in this variable).
REPORT_VARIABLE = "BOT_POSTGRES_TEST_REPORT"
_CONNECT_TIMEOUT = 3.0


def server_url() -> str:
    return os.environ.get(URL_VARIABLE) or DEFAULT_URL


def with_search_path(url: str, schema: str) -> str:
    """Return the URL with `search_path=<schema>` (asyncpg sends it to the server at connect)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


_reason: str | None = None
_probed = False


async def unavailable_reason() -> str | None:
    """Return why the server cannot be used (once per session), or None when it answers."""
    global _reason, _probed  # noqa: PLW0603 (probed once per test session)
    if not _probed:
        _probed = True
        try:
            conn = await asyncpg.connect(server_url(), timeout=_CONNECT_TIMEOUT)
        except Exception as exc:  # whatever stops a connection is the reason to skip
            _reason = f"no PostgreSQL server answers at {URL_VARIABLE} ({_shown(server_url())}): {exc}"
        else:
            await conn.close()
    return _reason


def _shown(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


@asynccontextmanager
async def fresh_schema(server: str | None = None) -> AsyncIterator[str]:
    """Create a schema with a random name, yield a DATABASE_URL pointed at it, and drop it after."""
    server = server or server_url()
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(server, timeout=_CONNECT_TIMEOUT)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    try:
        yield with_search_path(server, schema)
    finally:
        conn = await asyncpg.connect(server, timeout=_CONNECT_TIMEOUT)
        try:
            # Bots are closed (and killed processes gone) by now; a lock still held would show a bug.
            await conn.execute("SET lock_timeout = '20s'")
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


@dataclass
class PostgresTally:
    """How many tests marked `postgres` ran, passed, failed or were skipped (and why)."""

    url: str
    ran: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        reasons = f" (skipped: {self.skip_reasons[0]})" if self.skip_reasons else ""
        return (
            f"PostgreSQL tests: {self.ran} ran ({self.passed} passed, {self.failed} failed), "
            f"{self.skipped} skipped, against {_shown(self.url)}{reasons}"
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")
