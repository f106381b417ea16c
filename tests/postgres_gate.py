"""CI's check after the tests: the PostgreSQL tests ran wherever a server answers, and none hid as a skip.

Usage: `python -m tests.postgres_gate REPORT`, where REPORT is the file the test run wrote its counts to
(BOT_POSTGRES_TEST_REPORT). Prints one line with the counts; exits 1 when a server answers at
TEST_DATABASE_URL but no PostgreSQL test ran, or some were skipped; exits 0 on a machine without a server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.postgres import URL_VARIABLE, PostgresTally, server_url, unavailable_reason


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.postgres_gate REPORT", file=sys.stderr)
        return 2
    report = Path(argv[0])
    try:
        tally = PostgresTally(**json.loads(report.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        tally = PostgresTally(url=server_url())
    print(tally.line())
    reason = asyncio.run(unavailable_reason())
    if reason is not None:
        print(f"PostgreSQL tests not run here: {reason}; CI with a server runs them")
        return 0
    if tally.ran == 0:
        print(
            f"error: a PostgreSQL server answers at {URL_VARIABLE} but no PostgreSQL test ran",
            file=sys.stderr,
        )
        return 1
    if tally.skipped:
        print(
            f"error: a PostgreSQL server answers at {URL_VARIABLE} but {tally.skipped} PostgreSQL tests were "
            f"skipped: {'; '.join(tally.skip_reasons)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
