"""The job repository's contract, against SQLite and PostgreSQL alike; then what only a shared store does:
leases (claim, renew, fence, release), migrations under a lock, the shared replay guard and webhook inbox."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from bot.domain.errors import LeaseLost
from bot.domain.tasks import ImageBytes, Job, JobState, Notice, NoticeCode, Route, Suggestion, TaskKind
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
