"""The real DiscordReporter over a MemoryJobRepository, through a real discord.py client and the fake Discord.

A plain `discord.Client` (no cogs, no command tree) answers each interaction with a "thinking" deferral,
as the bot's commands do; the reporter then shows jobs on that interaction's message. Its two clocks are
injected: `clock` decides when the interaction token is too old to use, `monotonic` the coalescing window.
Every request the client sends must be one Discord would accept (`assert_no_violations`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import discord
import pytest

from bot.discord.reporting import INTERACTION_TOKEN_LIFETIME, DiscordReporter
from bot.domain.errors import StorageFull
from bot.domain.tasks import ImageBytes, Job, JobState, Route, Suggestion, TaskKind
from tests.conftest import png_bytes
from tests.fakes.discord import FakeDiscord, RecordedCall, start_bot, stop_bot
from tests.memory import Changes, Clock, Journal, MemoryJobRepository

COALESCE = 5.0
IMAGE = ImageBytes(png_bytes(), "image/png")
TITLES = {
    JobState.QUEUED: "Image to prompt · Queued",
    JobState.STARTING: "Image to prompt · Sending to the provider",
    JobState.CREATED: "Image to prompt · Task created, waiting for the provider",
    JobState.IN_PROGRESS: "Image to prompt · In progress",
    JobState.COMPLETED: "Image to prompt · Done",
}


class WatchedClock(Clock):
    """The reporter's monotonic clock, which says when it is read: a pending edit reads it to decide how
    long is left of the coalescing window, just before it waits that long."""

    def __init__(self, now: float = 0.0) -> None:
        super().__init__(now)
        self.reads = 0
        self.changes = Changes()

    def __call__(self) -> float:
        self.reads += 1
        self.changes.notify()
        return self.now

    async def read_since(self, reads: int) -> None:
        await self.changes.wait_until(lambda: self.reads > reads, "the reporter to read its clock")


@dataclass
class Scene:
    fake: FakeDiscord
    client: discord.Client
    clock: Clock
    monotonic: WatchedClock
    journal: Journal
    jobs: MemoryJobRepository
    reporter: DiscordReporter

    async def deferred_interaction(self) -> tuple[str, Route]:
        """Send a slash command the client defers; return its token and the route a command would save."""
        payload = self.fake.slash("describe")
        token = str(payload["token"])
        await self.fake.send_interaction(payload)
        await self.fake.wait_for_call(lambda call: token in call.path and call.path.endswith("/callback"))
        route = Route(
            channel_id=int(payload["channel_id"]),
            application_id=self.fake.application_id,
            interaction_token=token,
            token_created_at=self.clock(),
        )
        return token, route

    async def job(self, route: Route, state: JobState = JobState.CREATED) -> Job:
        job = Job.new(
            kind=TaskKind.DESCRIBE,
            provider="alpha",
            guild_id=self.fake.guild_ids[0],
            user_id=self.fake.default_user_id,
            route=route,
            clock=self.clock,
        )
        await self.jobs.create(job, [IMAGE])
        return replace(job, state=state)

    async def created_and_shown(self) -> tuple[str, Route, Job]:
        """Defer a command and show its job's CREATED state; return the token, the route and the job."""
        token, route = await self.deferred_interaction()
        created = await self.job(route)
        await self.reporter.report(created)
        await self.shown(created)
        return token, route, created

    async def shown(self, job: Job) -> None:
        """Wait until the reporter has shown `job`'s state and saved that it did."""
        await self.jobs.wait_until(
            lambda: self.jobs.saved(job.id).reported_state is job.state, f"{job.state.value} to be shown"
        )

    def edits_of(self, token: str) -> list[RecordedCall]:
        return [call for call in self.fake.interaction_calls(token) if call.method == "PATCH"]

    def channel_calls(self) -> list[RecordedCall]:
        return [call for call in self.fake.calls if call.path.startswith("/channels/")]


def title(call: RecordedCall) -> str:
    return str(call.json["embeds"][0]["title"])


def buttons(message: dict[str, Any]) -> list[str]:
    return [str(c["custom_id"]).split(":")[1] for row in message["components"] for c in row["components"]]


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    fake = FakeDiscord()
    client = discord.Client(intents=discord.Intents.none())

    async def on_interaction(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)

    client.event(on_interaction)
    clock, monotonic, journal = Clock(), WatchedClock(), Journal()
    jobs = MemoryJobRepository(clock=clock, journal=journal)
    reporter = DiscordReporter(
        client,
        jobs,
        coalesce_seconds=COALESCE,
        provider_labels={"alpha": "Alpha"},
        clock=clock,
        monotonic=monotonic,
    )
    await fake.start()
    try:
        await start_bot(client, fake)
        yield Scene(fake, client, clock, monotonic, journal, jobs, reporter)
        await reporter.close()
        fake.assert_no_violations()
    finally:
        await reporter.close()
        await stop_bot(client, fake)
        await fake.close()
        fake.uninstall()


async def test_each_new_state_edits_the_original_message_once(scene: Scene) -> None:
    token, route, created = await scene.created_and_shown()

    await scene.reporter.report(created)  # the same state again: nothing to show
    scene.monotonic.advance(COALESCE + 1)
    in_progress = replace(created, state=JobState.IN_PROGRESS)
    await scene.reporter.report(in_progress)
    await scene.shown(in_progress)
    done = replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("a red square"),))
    await scene.reporter.report(done)  # the end is shown before report returns

    edits = scene.edits_of(token)
    assert [call.path.rsplit("/", 1)[-1] for call in edits] == ["@original"] * 3
    assert [title(call) for call in edits] == [
        TITLES[s] for s in (created.state, in_progress.state, done.state)
    ]
    assert [name for name, _, _ in edits[-1].files] == ["input.png"]
    original = scene.fake.original_reply(token)
    assert "a red square" in original["embeds"][0]["description"]
    assert buttons(original) == ["imagine", "text"]
    # The message's id was learnt from the first edit and saved, once.
    assert scene.journal.of(created.id, "route") == [f"route interaction {original['id']}"]
    saved = scene.jobs.saved(created.id)
    assert (saved.route.message_id, saved.route.channel_id) == (int(original["id"]), route.channel_id)
    assert saved.reported_state is JobState.COMPLETED
    assert scene.channel_calls() == []


async def test_a_state_within_the_window_waits_and_the_end_is_never_held_back(scene: Scene) -> None:
    token, _, created = await scene.created_and_shown()

    # Within the coalescing window (the monotonic clock stands still) IN_PROGRESS waits its turn...
    reads = scene.monotonic.reads
    await scene.reporter.report(replace(created, state=JobState.IN_PROGRESS))
    await scene.monotonic.read_since(reads)  # the pending edit looked at the window: it waits
    # ...and the end, which comes before the window is over, replaces it and goes at once.
    await scene.reporter.report(replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("done"),)))
    await scene.reporter.close()  # nothing left waiting may send anything later

    assert [title(call) for call in scene.edits_of(token)] == [
        TITLES[JobState.CREATED],
        TITLES[JobState.COMPLETED],
    ]
    assert scene.jobs.saved(created.id).reported_state is JobState.COMPLETED


async def test_states_within_the_window_show_only_the_latest_once_it_is_over(scene: Scene) -> None:
    token, route = await scene.deferred_interaction()
    queued = await scene.job(route, JobState.QUEUED)
    await scene.reporter.report(queued)
    await scene.shown(queued)

    # Almost all of the window has passed on the reporter's clock; 10 ms of it are left to wait for real.
    scene.monotonic.advance(COALESCE - 0.01)
    reads = scene.monotonic.reads
    await scene.reporter.report(replace(queued, state=JobState.STARTING))
    await scene.monotonic.read_since(reads)  # STARTING waits for the rest of the window...
    created = replace(queued, state=JobState.CREATED)
    await scene.reporter.report(created)  # ...and CREATED, arriving meanwhile, replaces it
    await scene.shown(created)

    assert [title(call) for call in scene.edits_of(token)] == [
        TITLES[JobState.QUEUED],
        TITLES[JobState.CREATED],
    ]


async def test_past_fourteen_minutes_the_bot_reports_with_its_own_token(scene: Scene) -> None:
    token, route, created = await scene.created_and_shown()
    original = scene.fake.original_reply(token)
    message_id = int(original["id"])

    scene.clock.advance(INTERACTION_TOKEN_LIFETIME + 1)
    scene.monotonic.advance(COALESCE + 1)
    in_progress = replace(created, state=JobState.IN_PROGRESS)
    await scene.reporter.report(in_progress)
    await scene.shown(in_progress)
    await scene.reporter.report(
        replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("late but here"),))
    )

    assert len(scene.edits_of(token)) == 1  # the interaction token was used for the first edit only
    edits = scene.channel_calls()
    assert [(call.method, call.path) for call in edits] == [
        ("PATCH", f"/channels/{route.channel_id}/messages/{message_id}")
    ] * 2
    assert all(call.auth == "Bot fake-token" for call in edits)
    assert [title(call) for call in edits] == [TITLES[JobState.IN_PROGRESS], TITLES[JobState.COMPLETED]]
    shown = scene.fake.get_message(message_id)
    assert shown is not None
    assert "late but here" in shown["embeds"][0]["description"]
    assert buttons(shown) == ["imagine", "text"]
    assert scene.journal.of(created.id, "route") == [
        f"route interaction {message_id}",
        f"route channel {message_id}",
    ]
    assert scene.jobs.saved(created.id).route.via == "channel"


async def test_a_deleted_message_gets_the_end_posted_anew_mentioning_the_member(scene: Scene) -> None:
    token, route, created = await scene.created_and_shown()
    original = scene.fake.original_reply(token)
    scene.fake.delete_message(int(original["id"]))

    # The runner's jobs keep the route they were submitted with; the reporter goes where it learnt to.
    scene.monotonic.advance(COALESCE + 1)
    in_progress = replace(created, state=JobState.IN_PROGRESS)
    await scene.reporter.report(in_progress)
    await scene.shown(in_progress)  # the edit found no message: nothing more is posted until the end
    assert scene.channel_calls() == []
    await scene.reporter.report(
        replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("still here"),))
    )

    assert [call.status for call in scene.edits_of(token)] == [200, 404]
    (posted,) = scene.channel_calls()
    assert (posted.method, posted.path) == ("POST", f"/channels/{route.channel_id}/messages")
    member = scene.fake.default_user_id
    assert posted.json["content"].startswith(f"<@{member}>")
    assert [int(user) for user in posted.json["allowed_mentions"]["users"]] == [member]
    assert title(posted) == TITLES[JobState.COMPLETED]
    (message,) = [m for m in scene.fake.channel_messages(route.channel_id) if m["id"] != original["id"]]
    assert "still here" in message["embeds"][0]["description"]
    assert scene.journal.of(created.id, "route") == [
        f"route interaction {original['id']}",
        "route channel None",
        f"route channel {message['id']}",
    ]
    saved = scene.jobs.saved(created.id)
    assert (saved.route.via, saved.route.message_id) == ("channel", int(message["id"]))


async def test_the_reporter_keeps_the_route_it_learnt_whatever_route_the_job_carries(scene: Scene) -> None:
    token, route, created = await scene.created_and_shown()
    original = scene.fake.original_reply(token)

    # Discord refuses the token early (it is not 14 minutes old): the reporter moves to the channel.
    scene.fake.fail_next("PATCH", r"/webhooks/.*/messages/@original", status=401, code=50027)
    scene.monotonic.advance(COALESCE + 1)
    in_progress = replace(created, state=JobState.IN_PROGRESS)
    await scene.reporter.report(in_progress)
    await scene.shown(in_progress)
    # The runner's job still carries the interaction route; the end goes the reporter's way.
    assert created.route.via == "interaction"
    await scene.reporter.report(
        replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("moved"),))
    )

    assert [call.status for call in scene.edits_of(token)] == [200, 401]
    channel_path = f"/channels/{route.channel_id}/messages/{original['id']}"
    assert [(call.method, call.path) for call in scene.channel_calls()] == [("PATCH", channel_path)] * 2
    assert [title(call) for call in scene.channel_calls()] == [
        TITLES[JobState.IN_PROGRESS],
        TITLES[JobState.COMPLETED],
    ]


async def test_a_full_disk_when_noting_what_was_shown_does_not_stop_the_report(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    token, route = await scene.deferred_interaction()
    created = await scene.job(route)
    scene.jobs.fail(
        "update", StorageFull("database or disk is full"), when=lambda c: "reported_state" in c, times=None
    )

    with caplog.at_level(logging.WARNING, logger="bot.discord.reporting"):
        await scene.reporter.report(created)
        await scene.fake.wait_for_call(lambda call: call.method == "PATCH" and token in call.path)
        scene.monotonic.advance(COALESCE + 1)
        await scene.reporter.report(
            replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("shown anyway"),))
        )

    assert [title(call) for call in scene.edits_of(token)] == [
        TITLES[JobState.CREATED],
        TITLES[JobState.COMPLETED],
    ]
    assert (
        scene.jobs.saved(created.id).reported_state is None
    )  # never saved; at worst shown again at a resume
    assert scene.journal.of(created.id, "route")  # the route itself was saved
    assert [r for r in caplog.records if r.name == "bot.discord.reporting"] == []


async def test_an_end_discord_answers_5xx_to_is_reported_as_not_shown_then_shown(scene: Scene) -> None:
    """Worth offering again: the runner does. Through the bot's own token, where discord.py does not retry
    a 503 by itself (on the interaction's webhook it retries any 5xx for about 25 s first)."""
    token, _, created = await scene.created_and_shown()
    scene.fake.original_reply(token)  # the reply was made: the edits below go to it
    scene.clock.advance(INTERACTION_TOKEN_LIFETIME + 1)
    scene.monotonic.advance(COALESCE + 1)
    done = replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("a fox"),))
    scene.fake.fail_next("PATCH", r"/channels/.*/messages/", status=503)

    assert await scene.reporter.report(done) is False
    assert await scene.reporter.report(done) is True

    assert [call.status for call in scene.channel_calls()] == [503, 200]
    assert title(scene.channel_calls()[-1]) == TITLES[JobState.COMPLETED]


async def test_an_end_that_can_never_be_shown_counts_as_shown(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal that no retry mends (the channel is gone for the bot) is logged, not offered forever."""
    token, route = await scene.deferred_interaction()
    created = await scene.job(route)
    done = replace(created, state=JobState.COMPLETED, suggestions=(Suggestion("a fox"),))
    scene.fake.fail_next("PATCH", r"/webhooks/.*/messages/@original", status=403, code=50001, times=2)
    with caplog.at_level(logging.ERROR, logger="bot.discord.reporting"):
        assert await scene.reporter.report(done) is True
    assert [call.status for call in scene.edits_of(token)] == [
        403,
        403,
    ]  # then without its files: refused too
    assert "could not show the end" in caplog.text
