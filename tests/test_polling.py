"""Learned polling: the prior, learning from finished tasks, what a restart keeps, and the bot doing it.

The schedule is pure arithmetic on ages given to it: these tests pass the times and never sleep.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bot.core.polling import EndDistribution, PollingConfig, PollPlanner, Schedule, TaskWatch
from bot.domain.tasks import TaskDuration, TaskKind
from bot.store.sqlite.database import Database
from bot.store.sqlite.durations import SqliteTaskDurations
from tests.conftest import Harness, png_bytes
from tests.stores import Backend

DESCRIBE = TaskKind.DESCRIBE
CONFIG = PollingConfig(first_wait=2.0, max_wait=10.0, dither=0.0)


class Durations:
    """The TaskDurations port in memory, counting what was written."""

    def __init__(self, ends: list[TaskDuration] | None = None) -> None:
        self.kept = list(ends or [])
        self.writes = 0

    async def record(
        self, provider: str, kind: TaskKind, durations: list[TaskDuration], *, keep: int
    ) -> None:
        self.writes += 1
        self.kept = sorted([*self.kept, *durations], key=lambda end: end.started_at)[-keep:]

    async def recent(self, provider: str, kind: TaskKind, limit: int) -> list[TaskDuration]:
        return self.kept[-limit:]


def ends_between(low: float, high: float, count: int, seed: int = 1) -> list[TaskDuration]:
    """Return `count` tasks that ended at once (webhooks) at ages spread evenly over [low, high]."""
    rng = random.Random(seed)
    ages = [rng.uniform(low, high) for _ in range(count)]
    return [TaskDuration(started_at=float(i), ran_for=age, ended_within=age) for i, age in enumerate(ages)]


def looks(schedule: Schedule, limit: int = 50) -> list[float]:
    """Return the ages of every look the schedule makes at a task that runs for ever (until it has no say)."""
    ages: list[float] = []
    seen = 0.0
    while (look := schedule.next_look(seen)) is not None and len(ages) < limit:
        ages.append(look.age)
        seen = look.age
    return ages


def waits(watch: TaskWatch, count: int) -> list[float]:
    """Return the waits of a task that is found running at every look, as the runner would follow them."""
    now = watch.started_at + watch.seen
    found = []
    for _ in range(count):
        wait, _ = watch.next_look(now)
        found.append(round(wait, 6))
        now += wait
        watch.running(now)
    return found


async def test_before_anything_is_learned_polls_follow_the_prior() -> None:
    planner = PollPlanner(Durations(), CONFIG)
    watch = await planner.watch("freepik", DESCRIBE, started_at=1000.0, learn=True)
    # POLL_INTERVAL_SECONDS first, then x1.5, up to POLL_MAX_INTERVAL_SECONDS: the provider's own advice.
    assert waits(watch, 7) == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0, 10.0]


async def test_too_few_ends_are_not_enough_to_leave_the_prior() -> None:
    planner = PollPlanner(Durations(ends_between(4.5, 7.5, CONFIG.min_samples - 1)), CONFIG)
    schedule = await planner.schedule_for("freepik", DESCRIBE)
    assert not schedule.learned


async def test_learned_looks_go_where_tasks_end_and_cost_less_than_the_fixed_poller() -> None:
    ends = ends_between(4.5, 7.5, 200)
    planner = PollPlanner(Durations(ends), CONFIG)
    schedule = await planner.schedule_for("freepik", DESCRIBE)
    assert schedule.learned
    ages = looks(schedule)
    assert ages[0] >= 4.5 - 0.1  # no look where no task ever ended
    assert ages[-1] <= 7.5 + CONFIG.max_wait
    assert all(later - earlier <= CONFIG.max_wait for earlier, later in zip([0.0, *ages], ages, strict=False))
    # The looks cost 3/4 of the polls a fixed poller every POLL_INTERVAL_SECONDS spends on the same tasks.
    fixed = sum(-(-end.ended_within // 2.0) for end in ends) / len(ends)
    spent = sum(next(i + 1 for i, age in enumerate(ages) if age >= end.ended_within) for end in ends) / len(
        ends
    )
    assert spent <= 0.8 * fixed
    # ... and see the ends sooner than that poller, whose delay is a second on average.
    delays = [next(age for age in ages if age >= end.ended_within) - end.ended_within for end in ends]
    assert sum(delays) / len(delays) < 0.8


async def test_looks_crowd_where_ends_crowd() -> None:
    # Most tasks take about 3 s, a few 20 to 40 s: looks crowd around 3 s, none is spent between the two
    # but those the ceiling asks for, and the tail is looked at more sparsely than the crowd.
    ends = ends_between(2.5, 3.5, 180) + ends_between(20.0, 40.0, 20, seed=2)
    schedule = await PollPlanner(Durations(ends), CONFIG).schedule_for("freepik", DESCRIBE)
    ages = looks(schedule)
    crowd = [age for age in ages if 2.5 <= age <= 3.6]
    between = [age for age in ages if 3.6 < age < 20.0]
    tail = [age for age in ages if age >= 20.0]
    assert len(crowd) >= 2
    assert len(between) <= 2  # POLL_MAX_INTERVAL_SECONDS of 10 allows no fewer
    assert len(tail) / 20.0 < len(crowd) / 1.0  # looks per second of spread


async def test_a_task_older_than_every_end_seen_waits_as_the_prior() -> None:
    planner = PollPlanner(Durations(ends_between(4.5, 7.5, 50)), CONFIG)
    watch = await planner.watch("freepik", DESCRIBE, started_at=0.0, learn=True)
    watch.running(8.0)
    assert waits(watch, 3) == [2.0, 3.0, 4.5]


async def test_ends_seen_by_polls_are_learned_as_intervals() -> None:
    durations = Durations()
    config = PollingConfig(first_wait=2.0, max_wait=10.0, dither=0.0, save_batch=1)
    planner = PollPlanner(durations, config)
    watch = await planner.watch("freepik", DESCRIBE, started_at=100.0, learn=True)
    watch.running(102.0)
    watch.running(105.0)
    watch.ended(109.5, at_once=False)
    await planner.save()
    assert durations.kept == [TaskDuration(started_at=100.0, ran_for=5.0, ended_within=9.5)]
    # A webhook tells the end as it happens.
    hooked = await planner.watch("freepik", DESCRIBE, started_at=200.0, learn=True)
    hooked.ended(206.0, at_once=True)
    # A resumed task was not watched while the bot was away: it teaches nothing.
    resumed = await planner.watch("freepik", DESCRIBE, started_at=300.0, learn=False)
    resumed.ended(320.0, at_once=False)
    await planner.save()
    assert durations.kept[1:] == [TaskDuration(started_at=200.0, ran_for=6.0, ended_within=6.0)]


async def test_the_schedule_follows_what_it_learns() -> None:
    planner = PollPlanner(Durations(), CONFIG)
    for i in range(40):
        watch = await planner.watch("freepik", DESCRIBE, started_at=float(i), learn=True)
        watch.ended(i + 6.0, at_once=True)
    first, second = looks(await planner.schedule_for("freepik", DESCRIBE))[:2]
    assert 5.9 <= first <= 6.05
    assert second <= first + CONFIG.min_wait + 0.01
    # The provider slows down: the newest tasks take 20 s, and the looks move with them (the first one
    # as far as POLL_MAX_INTERVAL_SECONDS lets it).
    for i in range(40, 300):
        watch = await planner.watch("freepik", DESCRIBE, started_at=float(i), learn=True)
        watch.ended(i + 20.0, at_once=True)
    first, second = looks(await planner.schedule_for("freepik", DESCRIBE))[:2]
    assert first == pytest.approx(CONFIG.max_wait)
    assert 19.9 <= second <= 20.05


async def test_tasks_still_running_count_as_ran_at_least_this_long() -> None:
    # Half the tasks of a burst ended at 2 s; the other half are still running at 10 s: the quick ends
    # alone would say every task ends by 2 s.
    quick = ends_between(1.9, 2.1, 50)
    alone = EndDistribution(quick)
    with_running = EndDistribution(quick, running=[10.0] * 50)
    assert alone.cdf(2.5) == pytest.approx(1.0)
    assert with_running.cdf(2.5) == pytest.approx(0.5, abs=0.02)


def test_the_estimate_sharpens_what_wide_intervals_smear() -> None:
    # Every task ended at 5 s, but some were only seen by polls 2 s apart (ran 4 s, ended within 6 s):
    # the narrow observations say where inside the wide intervals the ends lie.
    exact = [TaskDuration(float(i), 4.95, 5.05) for i in range(20)]
    wide = [TaskDuration(float(i), 4.0, 6.0) for i in range(20, 60)]
    ends = EndDistribution(exact + wide)
    assert ends.cdf(4.9) < 0.1
    assert ends.cdf(5.1) > 0.9


async def test_what_is_learned_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await Database.open(path)
    planner = PollPlanner(SqliteTaskDurations(db), CONFIG)
    for end in ends_between(4.5, 7.5, 60):
        watch = await planner.watch("freepik", DESCRIBE, started_at=end.started_at, learn=True)
        watch.ended(end.started_at + end.ended_within, at_once=True)
    before = looks(await planner.schedule_for("freepik", DESCRIBE))
    await planner.save(everything=True)
    await db.close()

    db = await Database.open(path)
    try:
        restarted = PollPlanner(SqliteTaskDurations(db), CONFIG)
        after = looks(await restarted.schedule_for("freepik", DESCRIBE))
        assert after == pytest.approx(before)
        # Another provider or kind learns on its own.
        assert not (await restarted.schedule_for("freepik", TaskKind.IMAGINE)).learned
    finally:
        await db.close()


async def test_storage_keeps_only_the_newest_tasks_by_start(backend: Backend) -> None:
    store = backend.durations()
    # A burst: the slowest tasks end last, but the window keeps the newest starts, whatever their length.
    await store.record(
        "freepik", DESCRIBE, [TaskDuration(float(i), 1.0, 100.0 - i) for i in range(10)], keep=4
    )
    assert [end.started_at for end in await store.recent("freepik", DESCRIBE, 10)] == [6.0, 7.0, 8.0, 9.0]
    # A task that started before those is not among the newest; one that started after them is.
    await store.record("freepik", DESCRIBE, [TaskDuration(3.5, 1.0, 2.0)], keep=4)
    await store.record("freepik", DESCRIBE, [TaskDuration(10.0, 1.0, 2.0)], keep=4)
    assert [end.started_at for end in await store.recent("freepik", DESCRIBE, 10)] == [7.0, 8.0, 9.0, 10.0]
    assert await store.recent("freepik", TaskKind.IMAGINE, 10) == []
    assert await store.recent("novita", DESCRIBE, 10) == []
    # Another process on the same store reads the same ends (on PostgreSQL: what the others learned).
    other = backend.durations(await backend.another_connection())
    assert [end.started_at for end in await other.recent("freepik", DESCRIBE, 2)] == [9.0, 10.0]


async def test_a_failed_poll_backs_off() -> None:
    planner = PollPlanner(Durations(ends_between(4.5, 7.5, 100)), CONFIG)
    watch = await planner.watch("freepik", DESCRIBE, started_at=0.0, learn=True)
    watch.running(5.0)
    watch.failed(5.0, retry_after=None)
    assert watch.next_look(5.0)[0] >= 2.0
    watch.failed(7.0, retry_after=None)
    assert watch.next_look(7.0)[0] >= 3.0
    watch.failed(10.0, retry_after=6.0)  # a Retry-After wins
    assert watch.next_look(10.0)[0] >= 6.0


async def test_the_bot_learns_from_its_own_tasks_and_keeps_it_across_a_restart(harness: Harness) -> None:
    harness.freepik.polls_per_state = 2
    bot = await harness.start_bot(describe_provider="freepik")
    for shade in range(CONFIG.min_samples):
        await harness.interact(bot, harness.describe_payload(png_bytes(colour=(shade * 30, 200, 10))))
    rows = await bot.core.db.fetchall("SELECT provider, kind, ran_for, ended_within FROM task_durations")
    assert len(rows) == CONFIG.min_samples
    assert {(row["provider"], row["kind"]) for row in rows} == {("freepik", "describe")}
    assert all(0 <= row["ran_for"] <= row["ended_within"] for row in rows)
    await harness.stop_bot(bot)

    restarted = await harness.start_bot(describe_provider="freepik")
    assert (await restarted.core.runner.polling.schedule_for("freepik", DESCRIBE)).learned
    token = await harness.interact(restarted, harness.describe_payload(png_bytes(colour=(10, 10, 250))))
    assert harness.calls_for(token)[-1].json["embeds"][0]["title"] == "Image to prompt · Done"
