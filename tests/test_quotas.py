"""The quota ledger's contract, against SQLite (a real file) and PostgreSQL (a fresh schema) alike: exactness,
the resolution order, grants, resets, days, upkeep."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from bot.domain.errors import LineFull, QuotaExceeded
from bot.domain.ports import QuotaLedger
from bot.domain.quota import UNLIMITED, Member, next_utc_midnight
from bot.domain.tasks import Job, Route, TaskKind
from bot.ui import quota_text
from bot.ui.words import Words
from tests.stores import TTL, Backend

GUILD = 10
OTHER_GUILD = 11
ADMIN = 99
ALICE = Member(GUILD, 1)
DESCRIBE, IMAGINE = TaskKind.DESCRIBE, TaskKind.IMAGINE


class Clock:
    """A settable clock, in seconds since the epoch."""

    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 14, 12, 0, tzinfo=UTC))


async def status_of(quotas: QuotaLedger, member: Member, kind: TaskKind = DESCRIBE):
    return next(s for s in await quotas.status(member) if s.kind is kind)


async def spend(quotas: QuotaLedger, member: Member, count: int, kind: TaskKind = DESCRIBE) -> None:
    for _ in range(count):
        reservation = await quotas.reserve(member, kind, "freepik")
        assert await quotas.commit(reservation.usage_id)


# --- exactness -------------------------------------------------------------------------------------


async def test_a_thousand_simultaneous_reservations_grant_exactly_the_limit(
    backend: Backend, clock: Clock
) -> None:
    quotas = backend.ledger(clock, describe=10)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(quotas.reserve(ALICE, DESCRIBE, "freepik") for _ in range(1000)), return_exceptions=True
    )
    elapsed = time.perf_counter() - started

    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(granted) == 10
    assert len(refused) == 990
    assert all(isinstance(r, QuotaExceeded) for r in refused)
    assert len({r.usage_id for r in granted}) == 10
    assert await backend.value("SELECT COUNT(*) FROM usage WHERE state = 'reserved'") == 10
    print(f"1000 simultaneous reservations against a limit of 10: {len(granted)} granted in {elapsed:.3f} s")
    assert elapsed < 5


async def test_two_connections_to_one_store_stay_exact(backend: Backend, clock: Clock) -> None:
    """Two processes (here two connections) share the write lock (SQLite) or the advisory locks (PostgreSQL)."""
    second = await backend.another_connection()
    stores = [backend.ledger(clock, describe=7), backend.ledger(clock, describe=7, db=second)]
    results = await asyncio.gather(
        *(stores[i % 2].reserve(ALICE, DESCRIBE, "freepik") for i in range(200)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 7


async def test_left_grants_min_of_requests_and_what_is_left(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=10)
    await spend(quotas, ALICE, 6)
    results = await asyncio.gather(
        *(quotas.reserve(ALICE, DESCRIBE, "freepik") for _ in range(3)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 3  # N=3 < L=4
    results = await asyncio.gather(
        *(quotas.reserve(ALICE, DESCRIBE, "freepik") for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1  # N=5 > L=1


async def test_commit_and_refund_settle_once(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=2)
    first = await quotas.reserve(ALICE, DESCRIBE, "freepik")
    second = await quotas.reserve(ALICE, DESCRIBE, "freepik")
    assert (await status_of(quotas, ALICE)).used == 2  # running tasks hold their unit
    assert await quotas.commit(first.usage_id)
    assert not await quotas.commit(first.usage_id)
    assert not await quotas.refund(first.usage_id, outcome="FAILED")
    assert await quotas.refund(second.usage_id, outcome="FAILED")
    assert not await quotas.commit(second.usage_id)
    status = await status_of(quotas, ALICE)
    assert (status.used, status.left) == (1, 1)


# --- what applies to a member ------------------------------------------------------------------


async def test_resolution_order_user_then_highest_role_then_server_then_default(
    backend: Backend, clock: Clock
) -> None:
    quotas = backend.ledger(clock, describe=5)
    member = Member(GUILD, 1, role_ids=(501, 502, 503))

    async def limit() -> tuple[int, str]:
        status = await status_of(quotas, member)
        return status.limit, status.source

    assert await limit() == (5, "default")
    await quotas.set_limit(GUILD, "server", GUILD, DESCRIBE, 8, ADMIN)
    await quotas.set_limit(OTHER_GUILD, "server", OTHER_GUILD, DESCRIBE, 50, ADMIN)  # another server's
    await quotas.set_limit(GUILD, "server", GUILD, IMAGINE, 0, ADMIN)  # another kind
    assert await limit() == (8, "server")

    await quotas.set_limit(GUILD, "role", 501, DESCRIBE, 2, ADMIN)
    await quotas.set_limit(GUILD, "role", 502, DESCRIBE, 12, ADMIN)
    await quotas.set_limit(GUILD, "role", 777, DESCRIBE, 40, ADMIN)  # a role the member does not have
    assert await limit() == (12, "role")  # the most generous of the member's roles, even below the server's
    await quotas.set_limit(GUILD, "role", 503, DESCRIBE, UNLIMITED, ADMIN)
    assert await limit() == (UNLIMITED, "role")  # unlimited beats any number
    await quotas.set_limit(GUILD, "role", 503, DESCRIBE, None, ADMIN)
    assert await limit() == (12, "role")

    await quotas.set_limit(GUILD, "user", 1, DESCRIBE, 1, ADMIN)
    await quotas.set_limit(GUILD, "user", 2, DESCRIBE, 30, ADMIN)  # someone else
    assert await limit() == (1, "user")  # an override wins even when lower than the roles

    await quotas.set_limit(GUILD, "user", 1, DESCRIBE, None, ADMIN)
    await quotas.set_limit(GUILD, "role", 501, DESCRIBE, None, ADMIN)
    await quotas.set_limit(GUILD, "role", 502, DESCRIBE, None, ADMIN)
    assert await limit() == (8, "server")
    await quotas.set_limit(GUILD, "server", GUILD, DESCRIBE, None, ADMIN)
    assert await limit() == (5, "default")

    imagine = await status_of(quotas, member, IMAGINE)
    assert (imagine.limit, imagine.source) == (0, "server")


async def test_limit_zero_blocks_with_its_own_sentence_and_unlimited_never_does(
    backend: Backend, clock: Clock
) -> None:
    quotas = backend.ledger(clock)
    await quotas.set_limit(GUILD, "user", ALICE.user_id, DESCRIBE, 0, ADMIN)
    with pytest.raises(QuotaExceeded) as blocked:
        await quotas.reserve(ALICE, DESCRIBE, "freepik")
    assert blocked.value.limit == 0
    assert Words().error(blocked.value) == "Image to prompt is switched off for you on this server."

    await quotas.set_limit(GUILD, "user", ALICE.user_id, DESCRIBE, UNLIMITED, ADMIN)
    await spend(quotas, ALICE, 40)
    status = await status_of(quotas, ALICE)
    assert (status.used, status.left, status.limit) == (40, None, UNLIMITED)

    with pytest.raises(ValueError, match="unlimited"):
        await quotas.set_limit(GUILD, "user", ALICE.user_id, DESCRIBE, -2, ADMIN)


async def test_the_used_up_sentence_names_the_renewal(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=1)
    await spend(quotas, ALICE, 1)
    with pytest.raises(QuotaExceeded) as used_up:
        await quotas.reserve(ALICE, DESCRIBE, "freepik")
    midnight = int(datetime(2025, 3, 15, tzinfo=UTC).timestamp())
    assert Words().error(used_up.value) == (
        f"You have used your description for today; your quota renews <t:{midnight}:R>."
    )


async def test_grant_adds_for_today_and_reset_forgives_spent_tasks(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=2)
    await spend(quotas, ALICE, 2)
    with pytest.raises(QuotaExceeded):
        await quotas.reserve(ALICE, DESCRIBE, "freepik")

    await quotas.grant(GUILD, ALICE.user_id, DESCRIBE, 3, ADMIN)
    status = await status_of(quotas, ALICE)
    assert (status.limit, status.granted, status.used, status.left) == (5, 3, 2, 3)
    await spend(quotas, ALICE, 3)
    with pytest.raises(QuotaExceeded):
        await quotas.reserve(ALICE, DESCRIBE, "freepik")
    # A grant is for one member in one server and one kind.
    assert (await status_of(quotas, Member(OTHER_GUILD, ALICE.user_id))).limit == 2
    assert (await status_of(quotas, ALICE, IMAGINE)).granted == 0

    running = await quotas.reserve(ALICE, IMAGINE, "freepik")
    assert await quotas.reset_today(GUILD, ALICE.user_id, DESCRIBE, ADMIN) == 5
    status = await status_of(quotas, ALICE)
    assert (status.used, status.left) == (0, 5)
    # Reset of all kinds leaves running tasks alone: they may yet be refunded.
    assert await quotas.reset_today(GUILD, ALICE.user_id, None, ADMIN) == 0
    assert (await status_of(quotas, ALICE, IMAGINE)).used == 1
    await quotas.commit(running.usage_id)

    # A grant on a blocked kind opens exactly that many.
    await quotas.set_limit(GUILD, "user", ALICE.user_id, IMAGINE, 0, ADMIN)
    assert (await status_of(quotas, ALICE, IMAGINE)).left == 0
    await quotas.grant(GUILD, ALICE.user_id, IMAGINE, 2, ADMIN)
    assert (await status_of(quotas, ALICE, IMAGINE)).left == 1  # 0 + 2 granted, 1 spent today

    audit = await quotas.audit_log(GUILD)
    assert [(row["action"], row["actor_id"]) for row in reversed(audit)] == [
        ("grant", ADMIN),
        ("reset", ADMIN),
        ("reset", ADMIN),
        ("set", ADMIN),
        ("grant", ADMIN),
    ]
    assert json.loads(str(audit[-1]["detail"])) == {
        "amount": 3,
        "day": "2025-03-14",
        "kind": "describe",
        "user_id": ALICE.user_id,
    }
    assert json.loads(str(audit[-2]["detail"]))["forgiven"] == 5


async def test_the_utc_day_rolls_over_at_midnight(backend: Backend) -> None:
    clock = Clock(datetime(2025, 3, 14, 23, 59, 30, tzinfo=UTC))
    quotas = backend.ledger(clock, describe=2)
    await spend(quotas, ALICE, 1)
    late = await quotas.reserve(ALICE, DESCRIBE, "freepik")  # runs across midnight
    await quotas.grant(GUILD, ALICE.user_id, DESCRIBE, 4, ADMIN)
    status = await status_of(quotas, ALICE)
    assert (status.used, status.limit, status.left) == (2, 6, 4)
    assert status.renews_at == datetime(2025, 3, 15, tzinfo=UTC)

    clock.advance(40)  # 00:00:10 the next day
    assert await quotas.commit(late.usage_id)  # counts against the day it was reserved in
    status = await status_of(quotas, ALICE)
    assert (status.used, status.limit, status.left, status.granted) == (0, 2, 2, 0)
    assert status.renews_at == datetime(2025, 3, 16, tzinfo=UTC)
    await spend(quotas, ALICE, 2)
    with pytest.raises(QuotaExceeded) as used_up:
        await quotas.reserve(ALICE, DESCRIBE, "freepik")
    assert used_up.value.renews_at == datetime(2025, 3, 16, tzinfo=UTC)
    assert next_utc_midnight(clock.now) == datetime(2025, 3, 16, tzinfo=UTC)


# --- in flight ----------------------------------------------------------------------------------


async def test_a_provider_holds_its_running_tasks_and_its_line_and_no_more(
    backend: Backend, clock: Clock
) -> None:
    quotas = backend.ledger(clock, describe=50, imagine=50, per_provider=2, queue=2)
    first = await quotas.reserve(ALICE, DESCRIBE, "freepik")
    # Past the member's cap a task waits in line rather than being refused: reserving still holds it.
    await quotas.reserve(ALICE, IMAGINE, "freepik")
    bob = Member(GUILD, 2)
    await quotas.reserve(bob, DESCRIBE, "freepik")
    await quotas.reserve(bob, DESCRIBE, "freepik")
    with pytest.raises(LineFull) as full:  # two running and two waiting: the line is full
        await quotas.reserve(bob, DESCRIBE, "freepik")
    assert (full.value.provider, full.value.waiting) == ("freepik", 2)
    await quotas.reserve(bob, DESCRIBE, "novita")  # another provider has room

    await quotas.commit(first.usage_id)  # a task ended: its place is free
    await quotas.reserve(ALICE, DESCRIBE, "freepik")
    assert (await status_of(quotas, ALICE)).used == 2  # the spent one and the one in line


async def test_a_used_up_quota_is_said_before_the_in_flight_cap(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=2)
    await quotas.reserve(ALICE, DESCRIBE, "freepik")
    await quotas.reserve(ALICE, DESCRIBE, "freepik")
    with pytest.raises(QuotaExceeded):  # waiting for the two running ones would not help
        await quotas.reserve(ALICE, DESCRIBE, "freepik")


async def test_an_abandoned_reservation_expires_and_is_never_leaked(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=2)
    jobs = backend.jobs(clock)
    abandoned = await quotas.reserve(ALICE, DESCRIBE, "freepik")  # the bot died before the job was saved
    clock.advance(TTL + 1)
    # Past its lifetime it holds nothing, even before maintenance settles it.
    assert (await status_of(quotas, ALICE)).used == 0
    resumed = await quotas.reserve(ALICE, DESCRIBE, "freepik")
    await jobs.create(
        Job.new(
            kind=DESCRIBE,
            provider="freepik",
            guild_id=GUILD,
            user_id=ALICE.user_id,
            route=Route(channel_id=None),
            clock=clock,
            usage_id=resumed.usage_id,
        )
    )
    clock.advance(TTL + 1)

    assert await quotas.expire() == 1  # the job-less one; the unfinished job settles its own
    rows = await backend.rows("SELECT state, outcome FROM usage WHERE id = ?", abandoned.usage_id)
    assert [tuple(row.values()) for row in rows] == [("refunded", "EXPIRED")]
    assert not await quotas.commit(abandoned.usage_id)
    assert await quotas.commit(resumed.usage_id)  # the resumed job completed: it is charged
    assert await quotas.expire() == 0


# --- reports and upkeep ----------------------------------------------------------------------------


async def test_usage_report_totals_failures_and_top_members(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=50, imagine=50)
    bob, carol = Member(GUILD, 2), Member(GUILD, 3)
    old = await quotas.reserve(ALICE, DESCRIBE, "freepik")
    await quotas.commit(old.usage_id)
    clock.advance(10 * 86400)  # the first task is now outside a 7-day report
    await spend(quotas, ALICE, 2)
    await spend(quotas, bob, 3)
    await spend(quotas, carol, 1, IMAGINE)
    failed = await quotas.reserve(bob, DESCRIBE, "novita")
    await quotas.refund(failed.usage_id, outcome="failed")
    rejected = await quotas.reserve(carol, DESCRIBE, "novita")
    await quotas.commit(rejected.usage_id, outcome="rejected")
    await quotas.record_cached(ALICE, DESCRIBE, "freepik")
    await quotas.reserve(ALICE, IMAGINE, "freepik")
    await spend(quotas, Member(OTHER_GUILD, 4), 5)  # another server's

    report = await quotas.usage_report(GUILD, 7)
    lines = {(line.kind, line.provider): line for line in report.lines}
    assert set(lines) == {("describe", "freepik"), ("describe", "novita"), ("imagine", "freepik")}
    freepik = lines["describe", "freepik"]
    assert (freepik.completed, freepik.failed, freepik.cached, freepik.running) == (5, 0, 1, 0)
    novita = lines["describe", "novita"]
    assert (novita.completed, novita.failed, novita.refunded) == (0, 2, 1)
    imagine = lines["imagine", "freepik"]
    assert (imagine.completed, imagine.running) == (1, 1)
    assert report.top_members == [(bob.user_id, 3), (ALICE.user_id, 2), (carol.user_id, 2)]
    assert len(report.rows) == 10
    assert report.since == datetime(2025, 3, 18, tzinfo=UTC)

    assert len((await quotas.usage_report(GUILD, 30)).rows) == 11
    assert (await quotas.usage_report(GUILD, 1)).since == datetime(2025, 3, 24, tzinfo=UTC)

    embed = quota_text.usage_embed(Words(), report, "7 days").to_dict()
    assert embed["title"] == "Usage · last 7 days"
    assert {
        "name": "Image to prompt · Novita",
        "value": "0 completed · 2 failed (1 refunded) · 0 from cache",
        "inline": False,
    } in embed["fields"]
    csv_lines = quota_text.usage_csv(report.rows).decode().splitlines()
    assert (
        csv_lines[0]
        == "id,day,user_id,kind,provider,provider_task_id,state,outcome,forgiven,started_at,ended_at"
    )
    assert len(csv_lines) == 11


async def test_prune_keeps_what_jobs_and_running_tasks_still_need(backend: Backend, clock: Clock) -> None:
    quotas = backend.ledger(clock, describe=50)
    jobs = backend.jobs(clock)
    await spend(quotas, ALICE, 3)
    with_job = await quotas.reserve(ALICE, DESCRIBE, "freepik")
    job = Job.new(
        kind=DESCRIBE,
        provider="freepik",
        guild_id=GUILD,
        user_id=1,
        route=Route(channel_id=None),
        clock=clock,
        usage_id=with_job.usage_id,
    )
    await jobs.create(job)
    await quotas.commit(with_job.usage_id)
    await jobs.update(job, finished_at=clock())
    await quotas.grant(GUILD, ALICE.user_id, DESCRIBE, 1, ADMIN)
    clock.advance(91 * 86400)
    await spend(quotas, ALICE, 1)

    # The finished job still points at its usage row (a foreign key): pruning must not trip over it.
    assert await quotas.prune(90) == 3
    assert await jobs.prune(90) == 1
    assert await quotas.prune(90) == 1  # the job is gone: its row goes at the next round
    remaining = await backend.rows("SELECT day FROM usage")
    assert [row["day"] for row in remaining] == ["2025-06-13"]
    assert await backend.value("SELECT COUNT(*) FROM quota_grants") == 0


async def test_a_reservation_a_job_carries_is_held_however_long_it_waits(
    backend: Backend, clock: Clock
) -> None:
    quotas = backend.ledger(clock, describe=5, per_provider=1, queue=1)
    jobs = backend.jobs(clock)
    for _ in range(2):  # one runs, one waits in line: the line is full
        reservation = await quotas.reserve(ALICE, DESCRIBE, "freepik")
        await jobs.create(
            Job.new(
                kind=DESCRIBE,
                provider="freepik",
                guild_id=GUILD,
                user_id=ALICE.user_id,
                route=Route(channel_id=None),
                clock=clock,
                usage_id=reservation.usage_id,
            )
        )
    clock.advance(TTL + 1)  # a long line: past the reservations' lifetime, their jobs still carry them
    with pytest.raises(LineFull):
        await quotas.reserve(Member(GUILD, 2), DESCRIBE, "freepik")
    assert (await status_of(quotas, ALICE)).used == 2
    assert await quotas.expire() == 0


# --- forgetting a member ---------------------------------------------------------------------------------

FORGOTTEN_ID = 4_242_424_242  # distinctive: no other number in these rows contains it
MEMBER = Member(GUILD, FORGOTTEN_ID)


async def test_a_forgotten_member_keeps_no_id_in_any_row_and_today_still_counts(
    backend: Backend, clock: Clock
) -> None:
    quotas = backend.ledger(clock, describe=5)
    clock.advance(-86400)
    await spend(quotas, MEMBER, 2)  # yesterday's
    await quotas.grant(GUILD, FORGOTTEN_ID, DESCRIBE, 1, ADMIN)
    clock.advance(86400)
    await spend(quotas, MEMBER, 1)
    running = await quotas.reserve(MEMBER, DESCRIBE, "freepik")
    await quotas.record_cached(MEMBER, DESCRIBE, "freepik")
    await quotas.grant(GUILD, FORGOTTEN_ID, DESCRIBE, 2, ADMIN)
    await quotas.set_limit(GUILD, "user", FORGOTTEN_ID, DESCRIBE, 4, ADMIN)
    await quotas.set_limit(GUILD, "user", 7, DESCRIBE, 9, FORGOTTEN_ID)  # the member as an admin
    await spend(quotas, Member(OTHER_GUILD, FORGOTTEN_ID), 1)  # another server's rows are not asked about
    before = await status_of(quotas, MEMBER)
    assert (before.used, before.limit, before.granted, before.source) == (2, 6, 2, "user")

    assert await quotas.forget_member(GUILD, FORGOTTEN_ID) == 5  # usage rows: 2 old, 3 of today

    for table in ("usage", "quota_grants", "quota_limits", "audit"):
        for row in await backend.rows(f"SELECT * FROM {table} WHERE guild_id = ?", GUILD):
            assert not any(str(FORGOTTEN_ID) in str(value) for value in row.values()), (table, row)
    assert await backend.value("SELECT COUNT(*) FROM usage WHERE guild_id = ? AND user_id = 0", GUILD) == 2
    assert await backend.value("SELECT COUNT(*) FROM usage WHERE user_id = ?", FORGOTTEN_ID) == 1  # elsewhere

    # Today's use, today's grant and the limit an admin set still hold for the member, in every process.
    for ledger in (quotas, backend.ledger(clock, describe=5, db=await backend.another_connection())):
        after = await status_of(ledger, MEMBER)
        assert (after.used, after.limit, after.granted, after.source) == (2, 6, 2, "user")
    assert await quotas.commit(running.usage_id)  # settled under the stand-in id
    await spend(quotas, MEMBER, 4)
    with pytest.raises(QuotaExceeded):
        await quotas.reserve(MEMBER, DESCRIBE, "freepik")

    # A new limit for the member replaces the one kept under the stand-in id.
    await quotas.set_limit(GUILD, "user", FORGOTTEN_ID, DESCRIBE, 10, ADMIN)
    limits = await backend.rows("SELECT target_id, daily_limit FROM quota_limits WHERE guild_id = ?", GUILD)
    assert sorted((row["target_id"], row["daily_limit"]) for row in limits) == [(7, 9), (FORGOTTEN_ID, 10)]
    assert (await status_of(quotas, MEMBER)).limit == 12  # 10 and the 2 granted today

    # Once the day is over, the stand-in id goes too: nothing links those rows to anyone.
    clock.advance(86400)
    await quotas.prune(90)
    assert await backend.value("SELECT COUNT(*) FROM usage WHERE user_id < 0") == 0
    assert await backend.value("SELECT COUNT(*) FROM quota_grants WHERE user_id < 0") == 0
    assert (await status_of(quotas, MEMBER)).used == 0


async def test_ledgers_first_used_at_once_make_one_key_for_forgotten_members(
    backend: Backend, clock: Clock
) -> None:
    """The key behind forgotten members' stand-in ids is made on first use; ledgers (tasks or processes)
    that make it at the same moment must all end up with the one the database kept."""
    ledgers = [backend.ledger(clock, describe=5, db=await backend.another_connection()) for _ in range(4)]
    await asyncio.gather(*(status_of(ledger, MEMBER) for ledger in ledgers))  # each makes its key
    await spend(ledgers[0], MEMBER, 2)

    assert await ledgers[0].forget_member(GUILD, FORGOTTEN_ID) == 2

    # Every ledger finds today's use under the stand-in id the first one wrote.
    assert [(await status_of(ledger, MEMBER)).used for ledger in ledgers] == [2, 2, 2, 2]
    assert await backend.value("SELECT COUNT(*) FROM meta WHERE key = 'pseudonym_key'") == 1
