"""The job repository's contract (jobs, the line, Cancel, /forget-me, the describe cache) and the rules', against
SQLite and PostgreSQL alike; then what only a shared store does: leases (claim, renew, fence, release), the
line dispatched by several processes at once, migrations under a lock, the shared replay guard and webhook
inbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.domain.errors import BadInput, LeaseLost, Refusal
from bot.domain.rules import ChannelRule, SpoilerRule
from bot.domain.tasks import (
    DescribeStyle,
    ImageBytes,
    Job,
    JobState,
    Notice,
    NoticeCode,
    Route,
    Suggestion,
    TaskKind,
)
from bot.store.postgres import jobs as pg_jobs
from bot.store.postgres.database import PgDatabase, migration_files
from bot.store.postgres.jobs import PgJobRepository
from bot.store.postgres.webhooks import PgDeliveryRelay, PgReplayGuard
from bot.store.sqlite.database import Database
from tests.stores import Backend

PNG = ImageBytes(data=b"\x89PNG input", mime="image/png")
OUT = ImageBytes(data=b"\x89PNG output", mime="image/png")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def new_job(clock: Clock, **extra: object) -> Job:
    route = Route(channel_id=42, application_id=7, interaction_token="tok", token_created_at=clock())
    return Job.new(
        kind=TaskKind.DESCRIBE, provider="freepik", guild_id=10, user_id=1, route=route, clock=clock, **extra
    )


# --- the contract both stores keep ------------------------------------------------------------------


async def test_a_job_is_saved_updated_found_and_finished(backend: Backend) -> None:
    clock = Clock()
    jobs = backend.jobs(clock)
    job = new_job(clock, input_hash="abc", notice=Notice(NoticeCode.MORE_IMAGES, {"count": 5}))
    await jobs.create(job, [PNG])
    assert await jobs.get(job.id) == job
    assert await jobs.images(job.id, "input") == [PNG]

    job = await jobs.update(job, state=JobState.CREATED, provider_task_id="task-1")
    assert (await jobs.find_by_task("freepik", "task-1")) == job
    assert await jobs.find_by_task("novita", "task-1") is None
    job = await jobs.save_outputs(job, [OUT], state=JobState.COMPLETED, suggestions=(Suggestion("a cat"),))
    assert await jobs.images(job.id, "output") == [OUT]
    await jobs.save_route(job.id, Route(channel_id=42, message_id=99, via="channel"))
    stored = await jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.result_text, stored.route.message_id, stored.route.via) == (
        JobState.COMPLETED,
        "a cat",
        99,
        "channel",
    )
    assert [j.id for j in await jobs.unfinished()] == [job.id]

    finished = await jobs.finish(job)
    assert finished.route.interaction_token is None
    assert await jobs.unfinished() == []
    stored = await jobs.get(job.id)
    assert stored is not None
    assert stored.finished_at == clock.now
    assert stored.route.interaction_token is None


async def test_every_unfinished_job_is_claimed_oldest_first(backend: Backend) -> None:
    clock = Clock()
    jobs = backend.jobs(clock)
    created = []
    for _ in range(3):
        job = new_job(clock)
        await jobs.create(job)
        created.append(job.id)
        clock.now += 1
    claimed = await jobs.claim(limit=10)
    if backend.kind == "sqlite":
        # One process on its own file: every unfinished job is its, now and always.
        assert [job.id for job in claimed] == created
        assert await jobs.renew() == set(created)
        assert not jobs.shared
        assert await jobs.next_expiry() is None
    else:
        # Created by this process, they carry its lease already: nobody (not even it) claims them again.
        assert claimed == []
        assert await jobs.renew() == set(created)
        assert jobs.shared
    await jobs.release()


async def test_the_describe_cache_answers_within_its_lifetime_and_prune_keeps_the_unfinished(
    backend: Backend,
) -> None:
    clock = Clock()
    jobs = backend.jobs(clock)
    first, second = (Suggestion("first"),), (Suggestion("second", "blurry"), Suggestion("third"))
    await jobs.cache_suggestions("hash", "freepik", "|detailed|1", first)
    await jobs.cache_suggestions("hash", "freepik", "|detailed|1", second)
    await jobs.cache_suggestions("hash", "freepik", "llava|tags|1", first)
    assert await jobs.cached_suggestions("hash", "freepik", "|detailed|1", 30) == second
    assert await jobs.cached_suggestions("hash", "freepik", "llava|tags|1", 30) == first  # its own variant
    assert await jobs.cached_suggestions("hash", "freepik", "|detailed|2", 30) is None
    assert await jobs.cached_suggestions("hash", "novita", "|detailed|1", 30) is None
    assert await jobs.cached_suggestions("hash", "freepik", "|detailed|1", 0) is None

    old = new_job(clock)
    await jobs.create(old, [PNG])
    await jobs.finish(old)
    running = new_job(clock)
    await jobs.create(running, [PNG])
    clock.now += 31 * 86400
    assert await jobs.cached_suggestions("hash", "freepik", "|detailed|1", 30) is None
    assert await jobs.prune(30) == 1
    assert await jobs.get(old.id) is None
    assert await jobs.images(old.id, "input") == []  # the images go with their job
    assert await jobs.get(running.id) is not None


async def test_every_field_of_a_job_comes_back_as_saved(backend: Backend) -> None:
    clock = Clock()
    jobs = backend.jobs(clock)
    route = Route(
        channel_id=42,
        message_id=43,
        application_id=7,
        interaction_token="tok",
        token_created_at=clock(),
        via="channel",
        member_locale="ja",
        guild_locale="pt-BR",
    )
    job = Job.new(
        kind=TaskKind.DESCRIBE,
        provider="openai",
        guild_id=10,
        user_id=1,
        route=route,
        clock=clock,
        style=DescribeStyle.TAGS,
        suggestions_asked=3,
        spoiler=True,
        input_hash="h",
    )
    await jobs.create(job)
    assert await jobs.get(job.id) == job
    assert (job.place, job.dispatched_at, job.hidden) == (None, None, False)
    suggestions = (Suggestion("a cat", "blurry"), Suggestion("a dog"), Suggestion("a fox"))
    done = await jobs.update(
        job, state=JobState.COMPLETED, suggestions=suggestions, hidden=True, dispatched_at=clock.now
    )
    stored = await jobs.get(job.id)
    assert stored == done
    assert stored is not None
    assert (stored.suggestions, stored.result_text, stored.hidden, stored.spoiler) == (
        suggestions,
        "a cat",
        True,
        True,
    )
    assert (stored.route.member_locale, stored.route.guild_locale) == ("ja", "pt-BR")
    assert await backend.value("SELECT result_text FROM jobs WHERE id = ?", job.id) == "a cat"


# --- the line ----------------------------------------------------------------------------------------

ALICE, BOB, CAROL, DAVE = 1, 2, 3, 4


async def _in_line(
    jobs: Any, clock: Clock, user_id: int, provider: str = "freepik", *, guild_id: int = 10, **extra: object
) -> Job:
    clock.now += 1
    job = Job.new(
        kind=TaskKind.DESCRIBE,
        provider=provider,
        guild_id=guild_id,
        user_id=user_id,
        route=Route(channel_id=42),
        clock=clock,
        **extra,
    )
    await jobs.create(job, [PNG])
    return job


async def _end(jobs: Any, job: Job) -> None:
    """The task ended and its end was shown."""
    stored = await jobs.get(job.id)
    assert stored is not None
    await jobs.finish(await jobs.update(stored, state=JobState.COMPLETED))


async def test_members_take_turns_within_the_provider_and_member_caps(backend: Backend) -> None:
    clock = Clock()
    jobs = backend.jobs(clock)
    # Bob was served by freepik an hour ago; Dave has a task running at novita.
    clock.now -= 3600
    served = await _in_line(jobs, clock, BOB)
    served = await jobs.next_in_line("freepik", max_running=9, max_running_per_member=9)
    assert served is not None
    await _end(jobs, served)
    elsewhere = await _in_line(jobs, clock, DAVE, "novita")
    assert await jobs.next_in_line("novita", max_running=9, max_running_per_member=9) == replace(
        elsewhere, dispatched_at=clock.now, updated_at=clock.now
    )
    clock.now += 3600
    a1, a2, a3 = [await _in_line(jobs, clock, ALICE) for _ in range(3)]
    b1 = await _in_line(jobs, clock, BOB)
    c1 = await _in_line(jobs, clock, CAROL)
    d1 = await _in_line(jobs, clock, DAVE)

    # Never served first (oldest first between them), then whoever was served longest ago.
    line = await jobs.line("freepik")
    assert [(job.id, job.place) for job in line] == [
        (a1.id, 1),
        (c1.id, 2),
        (d1.id, 3),
        (b1.id, 4),
        (a2.id, 5),
        (a3.id, 6),
    ]
    assert line[0] == replace(a1, place=1)
    assert await jobs.tasks_of(ALICE) == (0, 3)
    assert await jobs.tasks_of(DAVE) == (1, 1)  # one running (at novita), one waiting

    def take() -> Any:
        return jobs.next_in_line("freepik", max_running=2, max_running_per_member=1)

    clock.now += 1
    first = await take()
    assert first is not None
    assert (first.id, first.dispatched_at, first.state) == (a1.id, clock.now, JobState.QUEUED)
    assert not first.waiting
    assert [job.id for job in await jobs.line("freepik")] == [c1.id, d1.id, b1.id, a2.id, a3.id]
    second = await take()
    assert second is not None
    assert second.id == c1.id
    assert await take() is None  # freepik runs two: its cap
    assert await jobs.tasks_of(ALICE) == (1, 2)

    await _end(jobs, first)
    # Dave's next would be his turn, but his task at novita counts against his own cap: Bob's goes.
    third = await take()
    assert third is not None
    assert third.id == b1.id
    await _end(jobs, second)
    await _end(jobs, third)
    fourth = await take()
    assert fourth is not None
    assert fourth.id == a2.id
    assert await take() is None  # Alice runs one (her cap), Dave one at novita: nobody under their cap
    assert [(job.id, job.place) for job in await jobs.line("freepik")] == [(d1.id, 1), (a3.id, 2)]

    await _end(jobs, await jobs.get(elsewhere.id))  # type: ignore[arg-type]
    fifth = await take()
    assert fifth is not None
    assert fifth.id == d1.id
    assert await take() is None  # freepik's cap again
    await _end(jobs, fourth)
    await _end(jobs, fifth)
    last = await take()
    assert last is not None
    assert last.id == a3.id
    assert await take() is None
    assert await jobs.line("freepik") == []
    assert await jobs.line("novita") == []


async def test_a_task_cancelled_in_line_leaves_it_at_once_and_only_while_it_waits(backend: Backend) -> None:
    clock = Clock()
    jobs = backend.jobs(clock, owner="process-a")
    other = backend.jobs(clock, owner="process-b")  # another process, where the member clicked Cancel
    running = await _in_line(jobs, clock, ALICE)
    assert await jobs.next_in_line("freepik", max_running=1, max_running_per_member=5) is not None
    waiting = await _in_line(jobs, clock, ALICE)
    behind = await _in_line(jobs, clock, BOB)
    assert [job.place for job in await jobs.line("freepik")] == [1, 2]

    clock.now += 5
    cancelled = await other.cancel_waiting(waiting.id)
    assert cancelled is not None
    assert (cancelled.id, cancelled.state, cancelled.updated_at, cancelled.dispatched_at) == (
        waiting.id,
        JobState.CANCELLED,
        clock.now,
        None,
    )
    assert await other.cancel_waiting(waiting.id) is None  # once
    assert await jobs.cancel_waiting(running.id) is None  # at its provider: not for cancel_waiting
    assert [(job.id, job.place) for job in await jobs.line("freepik")] == [(behind.id, 1)]
    assert await jobs.tasks_of(ALICE) == (1, 0)
    # The process that cancelled it closes it (its end shown there), whoever created it.
    await other.finish(cancelled)
    stored = await jobs.get(waiting.id)
    assert stored is not None
    assert (stored.state, stored.finished_at) == (JobState.CANCELLED, clock.now)
    assert await jobs.unfinished() == [await jobs.get(running.id), await jobs.get(behind.id)]


async def test_a_members_tasks_are_counted_per_server_or_in_all(backend: Backend) -> None:
    clock = Clock()
    jobs = backend.jobs(clock)
    await _in_line(jobs, clock, ALICE)
    await _in_line(jobs, clock, ALICE, guild_id=11)
    await _in_line(jobs, clock, BOB)
    assert await jobs.next_in_line("freepik", max_running=5, max_running_per_member=5) is not None
    ended = await _in_line(jobs, clock, ALICE, guild_id=11)
    await _end(jobs, replace(ended, dispatched_at=clock.now))
    assert await jobs.tasks_of(ALICE) == (1, 1)
    assert await jobs.tasks_of(ALICE, 10) == (1, 0)
    assert await jobs.tasks_of(ALICE, 11) == (0, 1)
    assert await jobs.tasks_of(ALICE, 12) == (0, 0)
    assert await jobs.tasks_of(CAROL) == (0, 0)


async def test_forgetting_a_member_deletes_their_tasks_images_and_prompts(backend: Backend) -> None:
    clock = Clock()
    jobs = backend.jobs(clock)
    mine = await _in_line(jobs, clock, ALICE, input_hash="alice-image")
    await jobs.save_outputs(mine, [OUT])  # images of two roles
    imagined = await _in_line(jobs, clock, ALICE, input_hash="not-a-describe")
    imagined = await jobs.update(imagined, kind=TaskKind.IMAGINE)
    elsewhere = await _in_line(jobs, clock, ALICE, guild_id=11, input_hash="alice-image-2")
    bobs = await _in_line(jobs, clock, BOB, input_hash="bob-image")
    for image_hash in ("alice-image", "alice-image-2", "bob-image", "not-a-describe"):
        await jobs.cache_suggestions(image_hash, "freepik", "|detailed|1", (Suggestion("a prompt"),))
    await jobs.cache_suggestions("alice-image", "novita", "|detailed|1", (Suggestion("another"),))

    with pytest.raises(BadInput) as refused:
        await jobs.forget_member(10, ALICE)
    assert (refused.value.refusal, refused.value.params) == (Refusal.FORGET_WHILE_RUNNING, {"count": 2})
    await _end(jobs, mine)
    await _end(jobs, imagined)
    assert await jobs.forget_member(10, ALICE) == (2, 3, 2)  # two tasks, three images, two prompts

    assert await jobs.get(mine.id) is None
    assert await jobs.images(mine.id, "output") == []
    assert await jobs.cached_suggestions("alice-image", "freepik", "|detailed|1", 30) is None
    assert await jobs.cached_suggestions("alice-image", "novita", "|detailed|1", 30) is None
    # Another server's tasks, another member's, and a prompt no describe of theirs asked for stay.
    assert await jobs.get(elsewhere.id) is not None
    assert await jobs.get(bobs.id) is not None
    assert await jobs.cached_suggestions("bob-image", "freepik", "|detailed|1", 30) is not None
    assert await jobs.cached_suggestions("not-a-describe", "freepik", "|detailed|1", 30) is not None
    assert await jobs.forget_member(10, ALICE) == (0, 0, 0)


async def test_a_cancel_is_asked_of_the_driver_only_on_a_shared_store(backend: Backend) -> None:
    clock = Clock()
    driver = backend.jobs(clock, owner="process-a")
    clicked = backend.jobs(clock, owner="process-b")
    waiting = await _in_line(driver, clock, ALICE)
    assert await clicked.request_cancel(waiting.id) is False  # in line: cancel_waiting's
    running = await _in_line(driver, clock, ALICE)
    await driver.cancel_waiting(waiting.id)
    taken = await driver.next_in_line("freepik", max_running=5, max_running_per_member=5)
    assert taken is not None
    assert taken.id == running.id
    asked = await clicked.request_cancel(running.id)
    if backend.kind == "sqlite":
        assert asked is False  # one process drives every job: it cancels its own drives
        assert await driver.cancel_requested() == set()
        return
    assert asked is True
    assert await driver.cancel_requested() == {running.id}  # the driver sees it at its next renewal
    assert await clicked.cancel_requested() == set()  # not the clicking process's job
    await _end(driver, running)
    assert await driver.cancel_requested() == set()
    assert await clicked.request_cancel(running.id) is False  # ended


# --- rules and durations -----------------------------------------------------------------------------


async def test_channel_rules_and_the_blocklist_are_kept_and_audited(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    rules = backend.rules(clock)
    assert await rules.channel_rules(10) == {}
    with caplog.at_level(logging.INFO):
        await rules.set_channel_rule(10, ChannelRule(0, imagine=False), 99)
        await rules.set_channel_rule(10, ChannelRule(5, spoilers=SpoilerRule.OUTSIDE_AGE_RESTRICTED), 99)
        await rules.set_channel_rule(10, ChannelRule(5, describe=False, spoilers=SpoilerRule.ALWAYS), 98)
        await rules.set_channel_rule(11, ChannelRule(0, describe=False), 99)
        assert await rules.add_blocked(10, ["Grim", "grim", "  ", "Très  MÉCHANT"], 99) == (2, 2)
        clock.now += 1
        assert await rules.add_blocked(10, ["GRIM", "gore"], 99) == (1, 3)
        assert await rules.remove_blocked(10, ["grim", "nothing", "..."], 99) == (1, 2)
    assert await rules.channel_rules(10) == {
        0: ChannelRule(0, imagine=False),
        5: ChannelRule(5, describe=False, spoilers=SpoilerRule.ALWAYS),
    }
    assert await rules.channel_rules(11) == {0: ChannelRule(0, describe=False)}
    assert await rules.blocklist(10) == [("tres mechant", "Très  MÉCHANT"), ("gore", "gore")]
    assert await rules.blocklist(11) == []

    audit = await backend.rows(
        "SELECT actor_id, action, detail, at FROM audit WHERE guild_id = ? ORDER BY id", 10
    )
    assert [(row["actor_id"], row["action"]) for row in audit] == [
        (99, "rules-channel"),
        (99, "rules-channel"),
        (98, "rules-channel"),
        (99, "blocklist-add"),
        (99, "blocklist-add"),
        (99, "blocklist-remove"),
    ]
    assert audit[2]["detail"] == '{"channel_id": 5, "describe": false, "imagine": true, "spoilers": "always"}'
    assert audit[3]["detail"] == '{"phrases": ["grim", "tres mechant"]}'
    assert audit[5]["detail"] == '{"phrases": ["grim", "nothing"]}'
    assert [row["at"] for row in audit][-2:] == [clock.now, clock.now]
    changed = [record for record in caplog.records if record.getMessage() == "rules changed"]
    assert len(changed) == 7
    assert (changed[4].action, changed[4].detail) == (  # type: ignore[attr-defined]
        "blocklist-add",
        '{"phrases": ["grim", "tres mechant"]}',
    )


async def test_the_schema_is_the_same_in_both_stores(pg_backend: Backend) -> None:
    """Every SQLite table and column exists in PostgreSQL under the same name (copy-to-postgres relies on it)."""
    backend = pg_backend
    sqlite = await Database.open(":memory:")
    try:
        tables = [
            row["name"]
            for row in await sqlite.fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        expected = {
            table: {row["name"] for row in await sqlite.fetchall(f"PRAGMA table_info({table})")}
            for table in tables
        }
    finally:
        await sqlite.close()
    assert isinstance(backend.db, PgDatabase)
    for table, columns in expected.items():
        found = {
            row["column_name"]
            for row in await backend.db.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = $1",
                table,
            )
        }
        assert columns <= found, f"{table}: PostgreSQL lacks {columns - found}"


# --- leases: what only a shared store does ----------------------------------------------------------


def _postgres(pg_backend: Backend) -> PgDatabase:
    assert isinstance(pg_backend.db, PgDatabase)
    return pg_backend.db


async def test_a_job_whose_lease_ran_out_is_claimed_by_one_other_process_and_fences_the_first(
    pg_backend: Backend,
) -> None:
    _postgres(pg_backend)
    clock = Clock()
    first = pg_backend.jobs(clock, owner="process-a", lease=1.0)
    second = pg_backend.jobs(clock, owner="process-b", lease=30.0)
    job = new_job(clock)
    await first.create(job)
    job = await first.update(job, state=JobState.CREATED, provider_task_id="t1")

    assert await second.claim(limit=10) == []  # leased to a live process
    expires_in = await second.next_expiry()
    assert expires_in is not None
    assert 0 < expires_in <= 1.0  # when process-b should look again
    assert await first.next_expiry() is None  # its own leases are not for it to claim
    await asyncio.sleep(expires_in + 0.05)  # process-a stops renewing (killed): its lease runs out
    claimed = await second.claim(limit=10)
    assert [(j.id, j.state) for j in claimed] == [(job.id, JobState.CREATED)]
    assert await second.claim(limit=10) == []  # claimed once

    # The first process wakes up and tries to go on: every write of its is refused.
    with pytest.raises(LeaseLost):
        await first.update(job, state=JobState.IN_PROGRESS)
    with pytest.raises(LeaseLost):
        await first.save_outputs(job, [OUT], state=JobState.COMPLETED)
    assert await first.renew() == set()
    await first.finish(job)  # not its job any more: nothing happens
    stored = await second.get(job.id)
    assert stored is not None
    assert (stored.state, stored.finished_at) == (JobState.CREATED, None)
    assert await second.renew() == {job.id}
    await second.update(stored, state=JobState.IN_PROGRESS)  # the new driver writes freely


async def test_a_graceful_stop_gives_the_jobs_back_at_once(pg_backend: Backend) -> None:
    _postgres(pg_backend)
    clock = Clock()
    first = pg_backend.jobs(clock, owner="process-a", lease=300.0)
    second = pg_backend.jobs(clock, owner="process-b")
    job = new_job(clock, dispatched_at=clock())  # at its provider: not waiting in line
    await first.create(job)
    await first.release()
    assert [j.id for j in await second.claim(limit=10)] == [job.id]


async def test_processes_claiming_at_once_never_take_the_same_job(pg_backend: Backend) -> None:
    db = _postgres(pg_backend)
    clock = Clock()
    maker = pg_backend.jobs(clock, owner="dead-process", lease=300.0)
    ids = set()
    for _ in range(60):
        job = new_job(clock, dispatched_at=clock())
        await maker.create(job)
        ids.add(job.id)
    await db.execute("UPDATE jobs SET lease_expires_at = 0")  # the process that made them died long ago
    others = [await pg_backend.another_connection() for _ in range(3)]
    claimers = [pg_backend.jobs(clock, owner=f"process-{i}", db=others[i % 3]) for i in range(6)]

    async def claim_all(repo: PgJobRepository) -> list[str]:
        taken: list[str] = []
        while batch := await repo.claim(limit=4):
            taken += [job.id for job in batch]
        return taken

    results = await asyncio.gather(*(claim_all(repo) for repo in claimers))  # type: ignore[arg-type]
    everything = [job_id for taken in results for job_id in taken]
    assert sorted(everything) == sorted(ids)  # each job once, none twice, none left
    owners = await pg_backend.rows("SELECT DISTINCT owner FROM jobs")
    assert len(owners) > 1  # shared out, not all taken by the first


async def test_a_waiting_job_is_never_claimed_and_the_process_that_dispatches_it_drives_it(
    pg_backend: Backend,
) -> None:
    db = _postgres(pg_backend)
    clock = Clock()
    dead = pg_backend.jobs(clock, owner="process-a", lease=300.0)
    alive = pg_backend.jobs(clock, owner="process-b")
    first = await _in_line(dead, clock, ALICE)
    second = await _in_line(dead, clock, BOB)
    await db.execute("UPDATE jobs SET lease_expires_at = 0")  # process-a died with its line
    assert await alive.claim(limit=10) == []  # in line: left to the line, not taken over
    assert await alive.next_expiry() is None  # nothing to wake up for (no busy wait on the line)

    taken = await alive.next_in_line("freepik", max_running=1, max_running_per_member=1)
    assert taken is not None
    assert taken.id == first.id
    rows = await pg_backend.rows("SELECT owner, lease_expires_at FROM jobs WHERE id = ?", first.id)
    assert rows[0]["owner"] == "process-b"
    assert rows[0]["lease_expires_at"] > time.time()
    assert await alive.renew() == {first.id}
    await alive.update(taken, state=JobState.STARTING)  # its writes are fenced on its own lease
    with pytest.raises(LeaseLost):
        await dead.update(taken, state=JobState.FAILED)
    assert [job.id for job in await alive.line("freepik")] == [second.id]


async def test_a_member_another_dispatch_is_weighing_is_not_passed_over(
    pg_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process's dispatch (of another provider) decides on the member whose turn it is, no one
    behind them goes first: this dispatch waits for it (here: gives up at once, as after its last try)."""
    db = _postgres(pg_backend)
    clock = Clock()
    jobs = pg_backend.jobs(clock)
    alices = await _in_line(jobs, clock, ALICE)
    await _in_line(jobs, clock, BOB)
    monkeypatch.setattr(pg_jobs, "_CONTENDED_TRIES", 1)
    async with db.transaction() as other_dispatch:
        await other_dispatch.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':line-member:' || $1::bigint, 0))",
            ALICE,
        )
        assert await jobs.next_in_line("freepik", max_running=5, max_running_per_member=5) is None
    taken = await jobs.next_in_line("freepik", max_running=5, max_running_per_member=5)
    assert taken is not None
    assert taken.id == alices.id


async def test_processes_dispatching_at_once_never_pass_the_caps(pg_backend: Backend) -> None:
    """Six processes (three connections) move two providers' lines at once, round after round."""
    _postgres(pg_backend)
    clock = Clock()
    maker = pg_backend.jobs(clock, owner="maker", lease=300.0)
    for user_id in range(10, 20):
        for provider in ("freepik", "novita"):
            for _ in range(3):
                await _in_line(maker, clock, user_id, provider)
    others = [await pg_backend.another_connection() for _ in range(3)]
    processes = [pg_backend.jobs(clock, owner=f"process-{i}", db=others[i % 3]) for i in range(6)]
    caps = {"max_running": 4, "max_running_per_member": 1}

    async def running() -> tuple[dict[str, int], dict[int, int]]:
        rows = await pg_backend.rows(
            "SELECT provider, user_id FROM jobs WHERE dispatched_at IS NOT NULL AND finished_at IS NULL"
        )
        return dict(Counter(row["provider"] for row in rows)), dict(Counter(row["user_id"] for row in rows))

    asks = [(repo, provider) for repo in processes for provider in ("freepik", "novita")]
    dispatched: set[str] = set()
    while len(dispatched) < 60:
        taken = await asyncio.gather(*(repo.next_in_line(provider, **caps) for repo, provider in asks))
        round_ = [(repo, job) for (repo, _), job in zip(asks, taken, strict=True) if job is not None]
        assert round_, "a round with room dispatched nothing"
        per_provider, per_member = await running()
        assert max(per_provider.values()) <= 4, per_provider
        assert max(per_member.values()) == 1, per_member  # one each, across both providers
        ids = {job.id for _, job in round_}
        assert len(ids) == len(round_)
        assert not ids & dispatched  # no job dispatched twice
        dispatched |= ids
        for repo, job in round_:  # each task ends in the process that dispatched (and drives) it
            await _end(repo, job)
    assert await pg_backend.value("SELECT count(*) FROM jobs WHERE finished_at IS NULL") == 0


async def test_two_processes_starting_together_migrate_once(pg_backend: Backend) -> None:
    _postgres(pg_backend)
    url = str(pg_backend.where)
    await pg_backend.db.execute(
        "DROP TABLE schema_migrations, jobs, job_images, usage, quota_limits, quota_grants, audit, meta, "
        "describe_cache, webhook_seen, webhook_inbox, channel_rules, blocklist, task_durations CASCADE"
    )  # type: ignore[arg-type]
    await pg_backend.db.execute("DROP FUNCTION bot_reserve")  # type: ignore[arg-type]
    opened = await asyncio.gather(*(PgDatabase.open(url) for _ in range(4)))
    try:
        rows = await pg_backend.rows("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in rows] == list(range(1, len(migration_files()) + 1))
        assert [await db.schema_version() for db in opened] == [len(migration_files())] * 4
    finally:
        for db in opened:
            await db.close()


async def test_the_replay_guard_holds_across_processes(pg_backend: Backend) -> None:
    _postgres(pg_backend)
    other = await pg_backend.another_connection()
    assert isinstance(other, PgDatabase)
    here, there = PgReplayGuard(pg_backend.db), PgReplayGuard(other)  # type: ignore[arg-type]
    now = time.time()
    racing = await asyncio.gather(*(guard.seen_before("msg_1", now, 600) for guard in [here, there] * 5))
    assert sorted(racing) == [False] + [True] * 9  # exactly one process takes it as new
    assert await there.seen_before("msg_1", now + 601, 600) is False  # outside the window: new again
    await here.forget("msg_1")
    assert await there.seen_before("msg_1", now + 602, 600) is False


async def test_the_webhook_inbox_wakes_every_process_and_hands_a_delivery_over_once(
    pg_backend: Backend,
) -> None:
    _postgres(pg_backend)
    other = await pg_backend.another_connection()
    assert isinstance(other, PgDatabase)
    receiver, driver = PgDeliveryRelay(pg_backend.db), PgDeliveryRelay(other)  # type: ignore[arg-type]
    woken: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    await driver.listen(lambda provider, task_id: woken.put_nowait((provider, task_id)))
    try:
        assert await receiver.post("freepik", "task-9", b'{"status": "IN_PROGRESS"}')
        assert await receiver.post("freepik", "task-9", b'{"status": "COMPLETED"}')
        async with asyncio.timeout(5):
            assert await woken.get() == ("freepik", "task-9")
        taken = await asyncio.gather(driver.take("freepik", "task-9"), receiver.take("freepik", "task-9"))
        assert sorted(taken, key=len) == [[], [b'{"status": "IN_PROGRESS"}', b'{"status": "COMPLETED"}']]
        assert not await receiver.post("freepik", "x" * 500, b"{}")  # too long to relay: polling finds it
    finally:
        await driver.close()
