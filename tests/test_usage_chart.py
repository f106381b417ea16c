"""The usage chart: its data from the usage rows, its bars and pixels, its words, and the reply that carries it."""

from __future__ import annotations

import io
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from bot.domain.quota import USAGE_COLUMNS, UsageReport
from bot.domain.tasks import TaskKind
from bot.store.sqlite.database import Database
from bot.store.sqlite.quotas import SqliteQuotaLedger
from bot.ui import usage_chart
from bot.ui.usage_chart import (
    CHART_HEIGHT,
    CHART_WIDTH,
    COLOURS,
    DayCounts,
    draw_usage_figure,
    render_usage_chart,
    usage_series,
)
from bot.ui.words import Words
from tests.conftest import Harness, png_bytes
from tests.test_quota_admin_e2e import admin
from tests.usage_fixture import DAYS, LAST_DAY, thirty_days_report, thirty_days_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEGMENTS = ("completed", "failed", "cached")


def _row(day: str, kind: str, state: str, outcome: str | None) -> dict[str, object]:
    return {"day": day, "kind": kind, "state": state, "outcome": outcome, "provider": "freepik"}


def test_the_series_counts_each_day_by_kind_and_end() -> None:
    rows = [
        _row("2025-03-01", "describe", "committed", "COMPLETED"),
        _row("2025-03-01", "describe", "committed", "COMPLETED"),
        _row("2025-03-01", "describe", "cached", "COMPLETED"),
        _row("2025-03-01", "describe", "refunded", "busy"),
        _row("2025-03-01", "describe", "committed", "rejected"),  # charged, but no result: failed
        _row("2025-03-03", "imagine", "committed", "COMPLETED"),
        _row("2025-03-03", "imagine", "reserved", None),  # still running: not drawn yet
        _row("2025-02-28", "describe", "committed", "COMPLETED"),  # before the period
        _row("2025-03-02", "upscale", "committed", "COMPLETED"),  # a kind this version does not know
    ]
    series = usage_series(rows, date(2025, 3, 1), date(2025, 3, 3))
    assert series.days == (date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3))
    assert list(series.kinds) == [TaskKind.DESCRIBE, TaskKind.IMAGINE]
    assert series.kinds[TaskKind.DESCRIBE] == (DayCounts(2, 2, 1), DayCounts(), DayCounts())
    assert series.kinds[TaskKind.IMAGINE] == (DayCounts(), DayCounts(), DayCounts(1, 0, 0))
    # A kind without a single task gets no panel; a period without any task is empty.
    assert list(usage_series(rows[:5], date(2025, 3, 1), date(2025, 3, 3)).kinds) == [TaskKind.DESCRIBE]
    assert usage_series(rows[6:8], date(2025, 3, 1), date(2025, 3, 3)).empty


async def test_the_series_agrees_with_the_reports_totals(tmp_path: Path) -> None:
    """The fixture's rows in a real database: the chart's sums are the embed's (the SQL's) sums."""
    rows = thirty_days_rows()
    until = datetime.combine(LAST_DAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    db = await Database.open(tmp_path / "usage.sqlite3")
    try:
        columns = [c for c in USAGE_COLUMNS if c != "id"]
        for row in rows:
            await db.execute(
                f"INSERT INTO usage (guild_id, {', '.join(columns)}) "
                f"VALUES (7, {', '.join('?' * len(columns))})",
                [row[c] for c in columns],
            )
        ledger = SqliteQuotaLedger(
            db,
            defaults={TaskKind.DESCRIBE: 1, TaskKind.IMAGINE: 1},
            max_inflight_per_provider=1,
            reservation_ttl=60,
            clock=until.timestamp,
        )
        report = await ledger.usage_report(7, DAYS)
    finally:
        await db.close()
    series = usage_series(report.rows, report.since.date(), report.until.date())
    assert len(series.days) == DAYS
    for kind, counts in series.kinds.items():
        lines = [line for line in report.lines if line.kind == kind.value]
        for segment in SEGMENTS:
            assert sum(getattr(day, segment) for day in counts) == sum(
                getattr(line, segment) for line in lines
            )
    assert sum(day.total for counts in series.kinds.values() for day in counts) == len(rows) - 1  # 1 running


def _bars(figure: Figure) -> dict[tuple[str, str], list[Rectangle]]:
    """Return the drawn bars by (kind, segment), in day order."""
    bars: dict[tuple[str, str], list[Rectangle]] = {}
    for ax in figure.axes:
        for patch in ax.patches:
            if isinstance(patch, Rectangle) and patch.get_gid():
                kind, segment = str(patch.get_gid()).split(":")
                bars.setdefault((kind, segment), []).append(patch)
    return bars


def test_the_bars_are_the_series() -> None:
    report = thirty_days_report()
    series = usage_series(report.rows, report.since.date(), report.until.date())
    bars = _bars(draw_usage_figure(series, Words(), period_title="last 30 days"))
    assert set(bars) == {(kind.value, segment) for kind in series.kinds for segment in SEGMENTS}
    for kind, counts in series.kinds.items():
        for segment in SEGMENTS:
            drawn = bars[kind.value, segment]
            assert [round(bar.get_height()) for bar in drawn] == [getattr(day, segment) for day in counts]
            below = {"completed": 0, "failed": 1, "cached": 2}[segment]
            assert [round(bar.get_y()) for bar in drawn] == [
                sum(value for _, value in day.segments()[:below]) for day in counts
            ]


def _pixel(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    """Return the colour at display coordinates (matplotlib's origin is the bottom left)."""
    r, g, b, *_ = image.getpixel((int(x), image.height - 1 - int(y)))
    return (r, g, b)


def _rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = to_rgb(colour)
    return (round(r * 255), round(g * 255), round(b * 255))


def test_the_png_has_the_size_and_the_bars_in_their_pixel_columns() -> None:
    report = thirty_days_report()
    series = usage_series(report.rows, report.since.date(), report.until.date())
    figure = draw_usage_figure(series, Words(), period_title="last 30 days")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, facecolor=figure.get_facecolor())
    png = buffer.getvalue()
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    assert image.size == (CHART_WIDTH, CHART_HEIGHT)
    checked = 0
    for (_, segment), drawn in _bars(figure).items():
        for bar in drawn:
            if bar.get_height() == 0:
                continue
            box = bar.get_window_extent()
            # The middle of each segment is its colour, and so is the whole of its pixel column there.
            assert _pixel(image, box.x0 + box.width / 2, box.y0 + box.height / 2) == _rgb(COLOURS[segment])
            column = [
                _pixel(image, box.x0 + box.width / 2, y) for y in range(int(box.y0) + 1, int(box.y1) - 1)
            ]
            assert set(column) == {_rgb(COLOURS[segment])}
            checked += 1
    assert checked > 60
    # A day without imagines (the fixture's quiet days) is an empty column in that panel.
    imagine_ax = figure.axes[1]
    quiet = series.days.index(LAST_DAY - timedelta(days=DAYS - 1 - 3))
    assert series.kinds[TaskKind.IMAGINE][quiet].total == 0
    x = imagine_ax.transData.transform((quiet, 0))[0]
    top = imagine_ax.get_window_extent().y1
    bottom = imagine_ax.get_window_extent().y0
    colours = {_pixel(image, x, y) for y in range(int(bottom) + 2, int(top) - 2)}
    assert not colours & {_rgb(c) for c in COLOURS.values()}
    # The chart renders the same through the function the command uses.
    assert Image.open(io.BytesIO(render_usage_chart(series, Words(), period_title="x"))).size == image.size


class _MarkedWords(Words):
    """Words that mark everything they say, to prove every word on the chart came through them."""

    def say(self, template: str, **params: object) -> str:
        return "«" + super().say(template, **params) + "»"


def test_every_word_on_the_chart_comes_through_words() -> None:
    report = thirty_days_report()
    series = usage_series(report.rows, report.since.date(), report.until.date())
    figure = draw_usage_figure(series, _MarkedWords(), period_title="«period»")
    figure.canvas.draw_idle()
    texts = [text.get_text() for text in figure.findobj(match=lambda a: hasattr(a, "get_text"))]
    # Day labels and counts are numbers, not words.
    words = [t for t in texts if t and not t.replace("-", "").isdigit()]
    assert all(t.startswith("«") and t.endswith("»") for t in words), words
    assert set(words) == {
        "«Tasks per day · «period»»",
        "«2025-06-01 to 2025-06-30 (UTC)»",
        "««Image to prompt» · 537 tasks»",
        "««Image generation» · 154 tasks»",
        "«Tasks»",
        "«Completed»",
        "«Failed»",
        "«From cache»",
    }


async def test_the_chart_is_drawn_off_the_event_loop_and_an_empty_period_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real = usage_chart.render_usage_chart

    def spy(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(usage_chart, "render_usage_chart", spy)
    chart = await usage_chart.usage_chart(thirty_days_report(), Words(), "30 days")
    assert chart.png is not None
    assert chart.png.startswith(PNG_SIGNATURE)
    assert chart.filename == "usage-30days.png"
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()

    now = datetime(2025, 6, 30, 12, tzinfo=UTC)
    empty = UsageReport(1, now.replace(hour=0), now, [], [], [])
    nothing = await usage_chart.usage_chart(empty, Words(), "today")
    assert nothing.png is None
    assert nothing.note == "No tasks in this period, so there is no chart to show."
    assert len(threads) == 1  # nothing was drawn for it


async def test_usage_attaches_the_chart_beside_the_embed_and_the_csv(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    empty = admin(harness, "usage", {"period": "30 days"})
    await harness.interact(bot, empty)
    [sent] = [c for c in harness.calls_for(empty["token"]) if c.method == "POST" and "/webhooks/" in c.path]
    assert sent.json["content"] == "No tasks in this period, so there is no chart to show."
    assert [name for name, _, _ in sent.files] == ["usage-30days.csv"]

    for shade in (1, 2):
        await harness.interact(bot, harness.describe_payload(png_bytes(colour=(shade, 2, 3))))
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=(1, 2, 3))))  # cached
    usage = admin(harness, "usage", {"period": "7 days"})
    await harness.interact(bot, usage)
    [sent] = [c for c in harness.calls_for(usage["token"]) if c.method == "POST" and "/webhooks/" in c.path]
    assert "content" not in sent.json
    assert sent.json["embeds"][0]["title"] == "Usage · last 7 days"
    files = {name: data for name, data, _ in sent.files}
    assert list(files) == ["usage-7days.csv", "usage-7days.png"]
    chart = Image.open(io.BytesIO(files["usage-7days.png"]))
    assert chart.format == "PNG"
    assert chart.size == (CHART_WIDTH, CHART_HEIGHT)
    # Today's bar: two completed, one from the cache; the other six days are empty.
    report = await bot.core.quotas.usage_report(harness.discord.guild_ids[0], 7)
    series = usage_series(report.rows, report.since.date(), report.until.date())
    assert series.kinds == {TaskKind.DESCRIBE: (DayCounts(),) * 6 + (DayCounts(completed=2, cached=1),)}
    final = harness.discord.original_reply(usage["token"])
    assert [a["filename"] for a in final["attachments"]] == ["usage-7days.csv", "usage-7days.png"]


def test_the_example_in_docs_is_the_fixtures_chart() -> None:
    """docs/usage-chart-example.png is what the bot draws today for the 30-day fixture."""
    from tests.usage_fixture import example_chart

    committed = Image.open(Path(__file__).parent.parent / "docs" / "usage-chart-example.png").convert("RGB")
    drawn = Image.open(io.BytesIO(example_chart())).convert("RGB")
    assert committed.size == drawn.size == (CHART_WIDTH, CHART_HEIGHT)
    assert committed.tobytes() == drawn.tobytes(), (
        "regenerate it: python -m tests.usage_fixture docs/usage-chart-example.png "
        "docs/usage-chart-on-discord-themes.png"
    )


def test_the_themes_sheet_in_docs_is_the_fixtures_chart_on_both_backgrounds() -> None:
    """docs/usage-chart-on-discord-themes.png (linked from the README) is today's chart on dark and light."""
    from tests.usage_fixture import example_chart, on_discord_themes

    committed = Image.open(Path(__file__).parent.parent / "docs" / "usage-chart-on-discord-themes.png")
    drawn = Image.open(io.BytesIO(on_discord_themes(example_chart())))
    assert committed.size == drawn.size
    assert committed.convert("RGB").tobytes() == drawn.convert("RGB").tobytes(), (
        "regenerate it: python -m tests.usage_fixture docs/usage-chart-example.png "
        "docs/usage-chart-on-discord-themes.png"
    )


async def test_a_language_the_font_cannot_write_gets_the_chart_in_english(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert usage_chart.font_writes("Tasks per day · today")
    assert not usage_chart.font_writes("日ごとのタスク")  # DejaVu Sans, the image's font, has no kanji
    drawn: list[str] = []
    real = usage_chart.render_usage_chart

    def spy(series: Any, words: Words, *, period_title: str) -> bytes:
        drawn.append(words.locale)
        return real(series, words, period_title=period_title)

    monkeypatch.setattr(usage_chart, "render_usage_chart", spy)
    monkeypatch.setattr(usage_chart, "font_writes", lambda text: False)
    chart = await usage_chart.usage_chart(thirty_days_report(), Words("ja"), "30 days")
    assert chart.png is not None
    assert drawn == ["en-US"]
