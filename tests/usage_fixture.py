"""A 30-day usage log of a lively server, as `usage_report` returns its rows; and the chart made from it.

`python -m tests.usage_fixture docs/usage-chart-example.png docs/usage-chart-on-discord-themes.png` draws
the example chart the README shows, and the same chart over Discord's dark and light chat backgrounds.
"""

from __future__ import annotations

import io
import random
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from PIL import Image

from bot.domain.quota import UsageReport
from bot.ui.usage_chart import render_usage_chart, usage_series
from bot.ui.words import Words

LAST_DAY = date(2025, 6, 30)
DAYS = 30


def thirty_days_rows(last_day: date = LAST_DAY, seed: int = 18) -> list[dict[str, object]]:
    """Return usage rows for 30 days: describes (some cached, a few failed) and fewer imagines."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    first = last_day - timedelta(days=DAYS - 1)
    for n in range(DAYS):
        day = first + timedelta(days=n)
        weekend = day.weekday() >= 5
        busy = 1.6 if weekend else 1.0
        plan = [
            ("describe", "freepik", "committed", "COMPLETED", int(rng.randint(6, 16) * busy)),
            ("describe", "novita", "committed", "COMPLETED", rng.randint(0, 4)),
            ("describe", "freepik", "cached", "COMPLETED", rng.randint(0, 5)),
            ("describe", "freepik", "refunded", "busy", rng.choice([0, 0, 0, 1, 2])),
            ("describe", "freepik", "committed", "rejected", rng.choice([0, 0, 1])),
            ("imagine", "freepik", "committed", "COMPLETED", int(rng.randint(1, 7) * busy)),
            ("imagine", "freepik", "refunded", "failed", rng.choice([0, 0, 0, 1])),
        ]
        if n == 11:  # an outage: most of the day's describes failed and were refunded
            plan.append(("describe", "freepik", "refunded", "unavailable", 9))
        if n in (3, 4):  # a quiet stretch with no imagines at all
            plan = [entry for entry in plan if entry[0] != "imagine"]
        started = datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp()
        for kind, provider, state, outcome, count in plan:
            for _ in range(count):
                rows.append(
                    {
                        "id": len(rows) + 1,
                        "day": day.isoformat(),
                        "user_id": 100 + rng.randint(0, 30),
                        "kind": kind,
                        "provider": provider,
                        "provider_task_id": f"task-{len(rows) + 1}",
                        "state": state,
                        "outcome": outcome,
                        "forgiven": 0,
                        "started_at": started + rng.randint(0, 86_000),
                        "ended_at": None,
                    }
                )
    if last_day == LAST_DAY:
        rows.append({**rows[-1], "id": len(rows) + 1, "state": "reserved", "outcome": None})  # running
    return rows


def thirty_days_report(last_day: date = LAST_DAY) -> UsageReport:
    since = datetime.combine(last_day - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=UTC)
    until = datetime.combine(last_day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=17, minutes=42)
    return UsageReport(1, since, until, [], [], thirty_days_rows(last_day))


def example_chart() -> bytes:
    report = thirty_days_report()
    series = usage_series(report.rows, report.since.date(), report.until.date())
    return render_usage_chart(series, Words(), period_title="last 30 days")


# The chat backgrounds of Discord's dark and light themes.
DISCORD_DARK = "#313338"
DISCORD_LIGHT = "#ffffff"


def on_discord_themes(png: bytes, margin: int = 40) -> bytes:
    """Return the chart twice, over the dark theme's background and over the light one's."""
    chart = Image.open(io.BytesIO(png)).convert("RGBA")
    width, height = chart.size[0] + 2 * margin, chart.size[1] + 2 * margin
    sheet = Image.new("RGB", (width, 2 * height), DISCORD_LIGHT)
    sheet.paste(Image.new("RGB", (width, height), DISCORD_DARK), (0, 0))
    for top in (margin, height + margin):
        sheet.paste(chart, (margin, top), chart)
    out = io.BytesIO()
    sheet.save(out, "PNG", optimize=True)
    return out.getvalue()


if __name__ == "__main__":
    chart = example_chart()
    Path(sys.argv[1]).write_bytes(chart)
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_bytes(on_discord_themes(chart))
