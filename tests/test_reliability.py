"""Nothing lost: restarts, provider faults, Discord's refusals, the circuit breaker, fallback and webhooks."""

from __future__ import annotations

import socket
import time
from typing import Any

import aiohttp

from bot.discord.client import ImageBot
from bot.domain.quota import Member
from bot.domain.tasks import JobState
from tests.conftest import Harness, png_bytes
from tests.fakes.discord import RecordedCall
from tests.fakes.providers import DEFAULT_WEBHOOK_SECRET


def _member(harness: Harness) -> Member:
    return Member(guild_id=harness.discord.guild_ids[0], user_id=harness.discord.default_user_id)


def _is_edit(token: str):
    return lambda call: call.method == "PATCH" and token in call.path


def _title(call: RecordedCall) -> str:
    return str(call.json["embeds"][0]["title"])


async def _usage_states(bot) -> list[str]:
    rows = await bot.core.db.fetchall("SELECT state FROM usage ORDER BY id")
    return [row["state"] for row in rows]


async def test_restart_mid_task_finishes_on_the_original_message(harness: Harness) -> None:
    harness.freepik.seconds_per_state = 0.4  # CREATED, then IN_PROGRESS, then COMPLETED at 0.8 s
    first = await harness.start_bot(describe_provider="freepik")
    payload = harness.describe_payload()
    await harness.discord.send_interaction(payload)
    token = payload["token"]
    await harness.discord.wait_for_call(_is_edit(token))
    await harness.stop_bot(first)  # graceful: the job is paused, its state saved

    job = (await first.core.jobs.unfinished())[0]
    assert job.state is JobState.CREATED
    assert job.provider_task_id

    second = await harness.start_bot()
    await harness.settle(second)
    original = harness.discord.original_reply(token)
    assert original["embeds"][0]["title"] == "Image to prompt · Done"
    assert await _usage_states(second) == ["committed"]
    assert await second.core.jobs.unfinished() == []
    assert harness.freepik.count("POST") == 1  # resumed by polling, never created twice


async def _leave_a_saved_job(harness: Harness) -> tuple[ImageBot, dict[str, Any]]:
    """Save a describe job that never starts, as if the bot died right after saving it; return the stopped bot."""
    bot = await harness.start_bot(describe_provider="freepik")
    # The runner stops driving jobs before the member's command arrives; the command still saves its job.
    await bot.core.runner.shutdown(grace=0)
    bot.core.runner.accepting = True
    payload = harness.describe_payload()
    await harness.discord.send_interaction(payload)
    await harness.discord.wait_for_call(lambda call: payload["token"] in call.path)
    await harness.settle(bot)  # the command has saved its job (nothing drives it)
    await harness.stop_bot(bot)
    return bot, payload


async def test_job_queued_but_never_started_is_started_at_resume(harness: Harness) -> None:
    first, payload = await _leave_a_saved_job(harness)
    jobs = await first.core.jobs.unfinished()
    assert [job.state for job in jobs] == [JobState.QUEUED]
    assert harness.freepik.count("POST") == 0

    second = await harness.start_bot()
    await harness.settle(second)
    assert (
        harness.discord.original_message(payload["token"])["embeds"][0]["title"] == "Image to prompt · Done"
    )
    assert await _usage_states(second) == ["committed"]


async def test_job_whose_create_answer_was_lost_is_refunded_and_told(harness: Harness) -> None:
    bot, payload = await _leave_a_saved_job(harness)
    # The bot died after sending the create and before saving its answer.
    await bot.core.db.execute("UPDATE jobs SET state = 'STARTING'")

    second = await harness.start_bot()
    await harness.settle(second)
    embed = harness.discord.original_message(payload["token"])["embeds"][0]
    assert embed["title"] == "Image to prompt · Failed"
    assert embed["description"].startswith("The answer from Freepik never came")
    assert await _usage_states(second) == ["refunded"]


async def test_job_past_the_token_lifetime_reports_through_the_channel(harness: Harness) -> None:
    harness.freepik.seconds_per_state = 0.4
    first = await harness.start_bot(describe_provider="freepik")
    payload = harness.describe_payload()
    await harness.discord.send_interaction(payload)
    token = payload["token"]
    await harness.discord.wait_for_call(_is_edit(token))
    await harness.stop_bot(first)
    message_id = int(harness.discord.original_message(token)["id"])

    # The bot comes back 15 minutes later: the interaction token is dead, its own token is not.
    harness.discord.age_interaction(token, 15 * 60)
    second = await harness.start_bot(clock=lambda: time.time() + 15 * 60, task_timeout_seconds=3600)
    await harness.settle(second)
    edits = [
        call
        for call in harness.discord.calls
        if call.method == "PATCH" and call.path.startswith("/channels/")
    ]
    # Each new state edits the original message with the bot's own token (and never the dead token).
    assert {call.path for call in edits} == {f"/channels/{harness.discord.channel_id}/messages/{message_id}"}
    assert not [call for call in harness.discord.interaction_calls(token) if call.status == 401]
    assert _title(edits[-1]) == "Image to prompt · Done"
    assert harness.discord.get_message(message_id)["embeds"][0]["title"] == "Image to prompt · Done"
    assert await _usage_states(second) == ["committed"]


async def test_token_refused_early_switches_to_the_channel(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    # The second edit (IN_PROGRESS) is refused as if the token were invalid.
    harness.discord.fail_next("PATCH", r"/webhooks/.*/messages/@original", status=401, code=50027, times=1)
    payload = harness.describe_payload()
    token = await harness.interact(bot, payload)
    # The very first edit failed: the message id is unknown to the bot, so the end is posted anew.
    channel_posts = [call for call in harness.discord.calls if call.path.startswith("/channels/")]
    assert channel_posts, "the result must reach the channel"
    assert _title(channel_posts[-1]) == "Image to prompt · Done"
    assert harness.discord.interaction_calls(token)[-1].status == 401


async def test_deleted_message_stops_the_edits_and_the_result_is_posted_anew(harness: Harness) -> None:
    harness.freepik.polls_per_state = 3
    bot = await harness.start_bot(describe_provider="freepik")
    payload = harness.describe_payload()
    await harness.discord.send_interaction(payload)
    token = payload["token"]
    await harness.discord.wait_for_call(_is_edit(token))
    harness.discord.delete_message(int(harness.discord.original_message(token)["id"]))
    await harness.settle(bot)

    posted = [
        call for call in harness.discord.calls if call.method == "POST" and call.path.startswith("/channels/")
    ]
    assert len(posted) == 1
    assert posted[0].json["content"].startswith(f"<@{harness.discord.default_user_id}>")
    assert _title(posted[0]) == "Image to prompt · Done"
    assert [int(user) for user in posted[0].json["allowed_mentions"]["users"]] == [
        harness.discord.default_user_id
    ]
    assert await _usage_states(bot) == ["committed"]


async def test_429_with_retry_after_on_create_is_retried(harness: Harness) -> None:
    harness.freepik.fail_next(
        "POST",
        "/v1/ai/image-to-prompt",
        429,
        {"message": "Too many requests"},
        headers={"Retry-After": "0.2"},
    )
    bot = await harness.start_bot(describe_provider="freepik")
    started = time.monotonic()
    token = await harness.interact(bot, harness.describe_payload())
    posts = harness.freepik.creates()
    assert len(posts) == 2
    assert posts[1].at - posts[0].at >= 0.2  # Retry-After honoured
    assert time.monotonic() - started < 3
    assert _title(harness.calls_for(token)[-1]) == "Image to prompt · Done"


async def test_create_whose_answer_never_came_is_not_retried(harness: Harness) -> None:
    harness.freepik.hang_next("POST", "/v1/ai/image-to-prompt")
    bot = await harness.start_bot(
        describe_provider="freepik", novita_api_key=None, request_timeout_seconds=0.3
    )
    token = await harness.interact(bot, harness.describe_payload())
    assert harness.freepik.count("POST") == 1
    embed = harness.calls_for(token)[-1].json["embeds"][0]
    assert embed["description"].startswith("The answer from Freepik never came")
    assert await _usage_states(bot) == ["refunded"]


async def test_poll_errors_and_timeouts_keep_polling(harness: Harness) -> None:
    harness.freepik.fail_next(
        "GET", "/v1/ai/image-to-prompt/", 500, {"message": "Internal Server Error"}, times=2
    )
    harness.freepik.hang_next("GET", "/v1/ai/image-to-prompt/")
    bot = await harness.start_bot(describe_provider="freepik", request_timeout_seconds=0.2)
    token = await harness.interact(bot, harness.describe_payload())
    assert _title(harness.calls_for(token)[-1]) == "Image to prompt · Done"
    assert len(harness.freepik.polls()) >= 5


async def test_task_timeout_is_reported_and_refunded(harness: Harness) -> None:
    harness.freepik.polls_per_state = 10_000
    bot = await harness.start_bot(describe_provider="freepik", task_timeout_seconds=0.5)
    token = await harness.interact(bot, harness.describe_payload())
    embed = harness.calls_for(token)[-1].json["embeds"][0]
    assert embed["description"].startswith("Freepik took too long")
    assert await _usage_states(bot) == ["refunded"]


async def test_circuit_breaker_opens_after_repeated_faults(harness: Harness) -> None:
    harness.freepik.fail_next(
        "POST",
        "/v1/ai/image-to-prompt",
        503,
        {"message": "Service Unavailable."},
        headers={"Retry-After": "0"},
        times=100,
    )
    bot = await harness.start_bot(describe_provider="freepik", novita_api_key=None)
    for shade in range(5):
        await harness.interact(bot, harness.describe_payload(png_bytes(colour=(shade, 0, 0))))
    sent = harness.freepik.count("POST")
    assert sent == 20  # five tasks, each tried four times
    token = await harness.interact(bot, harness.describe_payload(png_bytes(colour=(99, 0, 0))))
    embed = harness.calls_for(token)[-1].json["embeds"][0]
    assert embed["description"].startswith("Freepik is failing at the moment and is paused")
    assert harness.freepik.count("POST") == sent  # answered without calling the provider
    assert await _usage_states(bot) == ["refunded"] * 6


async def test_describe_falls_back_to_the_other_provider_and_says_so(harness: Harness) -> None:
    harness.freepik.fail_next(
        "POST",
        "/v1/ai/image-to-prompt",
        503,
        {"message": "Service Unavailable."},
        headers={"Retry-After": "0"},
        times=4,
    )
    harness.novita.prompt_text = "answered by novita"
    bot = await harness.start_bot(describe_provider="freepik")
    token = await harness.interact(bot, harness.describe_payload())
    embed = harness.calls_for(token)[-1].json["embeds"][0]
    assert "answered by novita" in embed["description"]
    notes = [field["value"] for field in embed["fields"] if field["name"] == "Note"]
    assert notes == ["Freepik was unavailable, so Novita answered instead."]
    rows = await bot.core.db.fetchall("SELECT provider, state FROM usage")
    assert [(row["provider"], row["state"]) for row in rows] == [("novita", "committed")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_webhook_bot(harness: Harness):
    port = _free_port()
    bot = await harness.start_bot(
        describe_provider="freepik",
        webhook_public_url=f"http://127.0.0.1:{port}",
        webhook_secret=DEFAULT_WEBHOOK_SECRET,
        webhook_port=port,
        # Polling is only the safety net with webhooks: far slower than the task.
        poll_interval_seconds=10,
        poll_max_interval_seconds=10,
    )
    return bot, port


async def test_webhook_delivery_finishes_the_task_without_polling(harness: Harness) -> None:
    harness.freepik.seconds_per_state = 0.1
    bot, port = await _start_webhook_bot(harness)
    token = await harness.interact(bot, harness.describe_payload())
    assert harness.freepik.creates()[0].json["webhook_url"] == f"http://127.0.0.1:{port}/webhooks/freepik"
    assert [_title(call) for call in harness.calls_for(token)[1:]] == [
        "Image to prompt · Task created, waiting for the provider",
        "Image to prompt · In progress",
        "Image to prompt · Done",
    ]
    assert harness.freepik.polls() == []
    assert {delivery.answered for delivery in harness.freepik.deliveries} == {204}


async def test_webhook_deliveries_that_must_be_refused(harness: Harness) -> None:
    harness.freepik.deliver_webhooks = False
    harness.freepik.polls_per_state = 10_000
    bot, port = await _start_webhook_bot(harness)
    payload = harness.describe_payload()
    await harness.discord.send_interaction(payload)
    await harness.discord.wait_for_call(_is_edit(payload["token"]))
    task_id = next(iter(harness.freepik.tasks))

    assert await harness.freepik.deliver(task_id, status="COMPLETED", secret="whsec_" + "QUJD" * 8) == 401
    assert await harness.freepik.deliver(task_id, status="COMPLETED", timestamp=int(time.time()) - 600) == 401
    async with aiohttp.ClientSession() as session:
        big = b"{" + b" " * 200_000 + b"}"
        async with session.post(f"http://127.0.0.1:{port}/webhooks/freepik", data=big) as response:
            assert response.status == 413
    unknown = await harness.freepik.deliver(
        task_id, body_override={"task_id": "unknown", "status": "COMPLETED", "generated": ["x"]}
    )
    assert unknown == 200
    job = (await bot.core.jobs.unfinished())[0]
    assert job.state is JobState.CREATED  # none of those moved the task

    assert await harness.freepik.deliver(task_id, status="COMPLETED", webhook_id="msg_once") == 204
    assert (
        await harness.freepik.deliver(task_id, status="COMPLETED", webhook_id="msg_once") == 200
    )  # replay ignored
    await harness.settle(bot)
    assert (
        harness.discord.original_message(payload["token"])["embeds"][0]["title"] == "Image to prompt · Done"
    )
    assert await _usage_states(bot) == ["committed"]


async def test_healthz_reports_database_and_gateway(harness: Harness) -> None:
    _, port = await _start_webhook_bot(harness)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        body = await response.json()
    assert body["database"] is True
    assert "gateway" in body


async def test_403_says_the_bot_is_misconfigured_and_refunds(harness: Harness) -> None:
    harness.freepik.fail_next(
        "POST", "/v1/ai/image-to-prompt", 403, {"message": "Your plan does not include this"}
    )
    bot = await harness.start_bot(describe_provider="freepik", novita_api_key=None)
    token = await harness.interact(bot, harness.describe_payload())
    embed = harness.calls_for(token)[-1].json["embeds"][0]
    assert embed["description"].startswith("The bot is misconfigured: Freepik rejected its API key or plan")
    assert await _usage_states(bot) == ["refunded"]
