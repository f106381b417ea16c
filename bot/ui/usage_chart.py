"""The chart `/quota-admin usage` attaches: tasks per day, a panel per kind, completed, failed and cached stacked.

Two steps: `usage_series` turns the report's usage rows into counts per day (a pure function, the same
rules as the report's totals), and `draw_usage_figure` draws those counts and nothing else. `usage_chart`
runs the drawing in a worker thread, since matplotlib is CPU work (it is imported there too, at the first
chart), and says in a sentence when there is nothing to draw. The figure is matplotlib's object API on the Agg canvas (no pyplot and its global state,
so drawing in threads is safe).

The chart carries its own background, a dark card with light text and bright bars, so it reads the same
on Discord's dark and light themes; the bar colours differ in lightness as well as hue, for readers who
do not tell red from green. Every word on it comes through `Words`.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Final

from bot.domain.quota import UsageReport
from bot.domain.tasks import TaskKind
from bot.ui.quota_text import period_title
from bot.ui.words import N_, Words

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CHART_WIDTH: Final = 1200  # pixels: Discord shows it scaled to the chat's width
CHART_HEIGHT: Final = 700
_DPI: Final = 100

BACKGROUND: Final = "#232428"
PANEL: Final = "#2b2d31"
TEXT: Final = "#f2f3f5"
MUTED: Final = "#b5bac1"
GRID: Final = "#4e5058"
# Segment colours (bottom to top), chosen for contrast on the card and for colour-blind readers.
COLOURS: Final = {"completed": "#3fc9a0", "failed": "#f5793a", "cached": "#8ab4f8"}

TITLE: Final = N_("Tasks per day · {period}")
SUBTITLE: Final = N_("{since} to {until} (UTC)")
ONE_DAY: Final = N_("{day} (UTC)")
PANEL_TITLE: Final = N_("{kind} · {count} tasks")
AXIS_LABEL: Final = N_("Tasks")
SEGMENT_NAMES: Final = {
    "completed": N_("Completed"),
    "failed": N_("Failed"),
    "cached": N_("From cache"),
}
NOTHING_TO_CHART: Final = N_("No tasks in this period, so there is no chart to show.")


@dataclass(frozen=True, slots=True)
class DayCounts:
    """One kind's tasks on one day, by how they ended (running tasks are not counted yet)."""

    completed: int = 0
    failed: int = 0
    cached: int = 0

    @property
    def total(self) -> int:
        return self.completed + self.failed + self.cached

    def segments(self) -> tuple[tuple[str, int], ...]:
        """Return the stack, bottom first."""
        return (("completed", self.completed), ("failed", self.failed), ("cached", self.cached))


@dataclass(frozen=True, slots=True)
class UsageSeries:
    """Counts per day over a period: one series per kind that had a task."""

    days: tuple[date, ...]
    kinds: Mapping[TaskKind, tuple[DayCounts, ...]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.kinds


def _segment_of(row: Mapping[str, object]) -> str | None:
    """Sort a usage row the way the report's totals do (bot/store/sqlite/quotas.py usage_report)."""
    state = row.get("state")
    if state == "cached":
        return "cached"
    if state == "committed" and row.get("outcome") == "COMPLETED":
        return "completed"
    if state in ("committed", "refunded"):
        return "failed"
    return None  # reserved: still running


def usage_series(rows: Sequence[Mapping[str, object]], first_day: date, last_day: date) -> UsageSeries:
    """Count the rows per day and kind, every day of the period included (days without tasks are 0)."""
    days = tuple(first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1))
    index = {day.isoformat(): n for n, day in enumerate(days)}
    kinds = {kind.value: kind for kind in TaskKind}
    tallies: dict[TaskKind, list[dict[str, int]]] = {}
    for row in rows:
        kind = kinds.get(str(row.get("kind")))
        position = index.get(str(row.get("day")))
        segment = _segment_of(row)
        if kind is None or position is None or segment is None:
            continue
        per_day = tallies.setdefault(kind, [{} for _ in days])
        per_day[position][segment] = per_day[position].get(segment, 0) + 1
    return UsageSeries(
        days=days,
        kinds={
            kind: tuple(DayCounts(**counts) for counts in tallies[kind])
            for kind in TaskKind
            if kind in tallies
        },
    )


def _day_label(day: date) -> str:
    return f"{day:%m-%d}"


def draw_usage_figure(series: UsageSeries, words: Words, *, period_title: str) -> Figure:
    """Draw the series: a panel per kind, one stacked bar per day. The series must not be empty."""
    if series.empty:
        raise ValueError("nothing to draw: say NOTHING_TO_CHART instead")
    # Imported at the first chart, in the worker thread that draws it: matplotlib and numpy take most of a
    # second to import, which every start of the bot (and of each CLI command) would otherwise pay.
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    figure = Figure(figsize=(CHART_WIDTH / _DPI, CHART_HEIGHT / _DPI), dpi=_DPI, facecolor=BACKGROUND)
    figure.set_layout_engine("constrained", h_pad=0.12, w_pad=0.15, hspace=0.08)
    figure.suptitle(words.say(TITLE, period=period_title), color=TEXT, fontsize=22, fontweight="bold")
    axes = figure.subplots(len(series.kinds), 1, sharex=True, squeeze=False)[:, 0]
    positions = list(range(len(series.days)))
    label_every = max(1, math.ceil(len(series.days) / 10))
    for ax, (kind, counts) in zip(axes, series.kinds.items(), strict=True):
        ax.set_facecolor(PANEL)
        bottoms = [0] * len(counts)
        for segment in ("completed", "failed", "cached"):
            heights = [getattr(day, segment) for day in counts]
            ax.bar(
                positions,
                heights,
                bottom=bottoms,
                width=0.72,
                color=COLOURS[segment],
                label=words.say(SEGMENT_NAMES[segment]),
                gid=f"{kind.value}:{segment}",
                zorder=3,
            )
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        highest = max(day.total for day in counts)
        ax.set_ylim(0, max(1, highest) * 1.18)
        if len(series.days) <= 31:
            for x, day in zip(positions, counts, strict=True):
                if day.total:
                    ax.annotate(
                        str(day.total),
                        (x, day.total),
                        xytext=(0, 3),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        color=TEXT,
                        fontsize=12,
                    )
        total = sum(day.total for day in counts)
        ax.set_title(
            words.say(PANEL_TITLE, kind=words.kind(kind), count=total),
            color=TEXT,
            fontsize=17,
            loc="left",
            pad=8,
        )
        ax.set_ylabel(words.say(AXIS_LABEL), color=MUTED, fontsize=14)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.grid(axis="y", color=GRID, linewidth=0.8, zorder=0)
        ax.tick_params(colors=MUTED, labelsize=13, length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_xlim(-0.6, len(series.days) - 0.4)
    last = axes[-1]
    last.set_xticks(positions[::label_every], [_day_label(day) for day in series.days[::label_every]])
    since, until = series.days[0].isoformat(), series.days[-1].isoformat()
    span = words.say(SUBTITLE, since=since, until=until) if since != until else words.say(ONE_DAY, day=since)
    last.set_xlabel(span, color=MUTED, fontsize=14, labelpad=8)
    legend = axes[0].legend(
        loc="upper right",
        ncols=3,
        frameon=False,
        fontsize=15,
        labelcolor=TEXT,
        bbox_to_anchor=(1.0, 1.22),
        handlelength=1.2,
    )
    legend.set_zorder(5)
    return figure


def render_usage_chart(series: UsageSeries, words: Words, *, period_title: str) -> bytes:
    """Return the chart as a PNG of CHART_WIDTH x CHART_HEIGHT pixels."""
    figure = draw_usage_figure(series, words, period_title=period_title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor=BACKGROUND, metadata={"Software": None})
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class UsageChart:
    """What the usage reply attaches: the chart, or the sentence that says there is none."""

    filename: str
    png: bytes | None = None
    note: str | None = None


async def usage_chart(report: UsageReport, words: Words, period: str) -> UsageChart:
    """Draw the report's chart off the event loop; an empty period gets a sentence instead of empty axes."""
    series = usage_series(report.rows, report.since.date(), report.until.date())
    filename = f"usage-{period.replace(' ', '')}.png"
    if series.empty:
        return UsageChart(filename, note=words.say(NOTHING_TO_CHART))
    if not await asyncio.to_thread(font_writes, words.say(TITLE, period=period_title(words, "today"))):
        # The image's font (DejaVu Sans) has no glyphs for this language's script (Japanese): the chart is
        # drawn in English rather than in empty boxes; the reply around it stays in the member's language.
        words = words.in_locale(None)
    title = period_title(words, period)
    png = await asyncio.to_thread(render_usage_chart, series, words, period_title=title)
    return UsageChart(filename, png=png)


def font_writes(text: str) -> bool:
    """Tell whether the font the chart is drawn in has a glyph for every character of the text."""
    from matplotlib import font_manager, rcParams  # noqa: PLC0415 (at the first chart, as in drawing)
    from matplotlib.ft2font import FT2Font  # noqa: PLC0415

    font = FT2Font(font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"])))
    return all(char.isspace() or font.get_char_index(ord(char)) != 0 for char in text)
