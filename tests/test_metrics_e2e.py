"""/metrics end to end: the real bot, the fake Discord and providers, scraped like Prometheus scrapes it."""

from __future__ import annotations

import math
import re
import socket
import time
from typing import Any

import pytest

from bot.discord.client import ImageBot
from bot.domain.metrics import (
    ERROR,
    LABELLED_STATUSES,
    OK,
    BreakerState,
    ProviderOperation,
    QuotaRefusalReason,
    TaskOutcome,
    WebhookResult,
)
from bot.domain.tasks import Fault, TaskKind
from bot.observability.discord_http import NO_ANSWER_STATUSES, RATE_LIMIT_REASONS, ROUTES
from bot.observability.prometheus import NO_FAULT, OTHER
from bot.providers.registry import BY_NAME
from tests.conftest import Harness, eventually, png_bytes
from tests.fakes.providers import DEFAULT_WEBHOOK_SECRET
from tests.scrape import Scrape, scrape

FORGED_SECRET = "whsec_" + "QUJD" * 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start(harness: Harness, *, webhooks: bool = True, **overrides: Any) -> ImageBot:
    settings: dict[str, Any] = {"describe_provider": "freepik", "metrics_port": 0}
    if webhooks:
        port = _free_port()
        settings |= {
            "webhook_public_url": f"http://127.0.0.1:{port}",
            "webhook_secret": DEFAULT_WEBHOOK_SECRET,
            "webhook_port": port,
            # Polling is only the safety net with webhooks: far slower than any task here.
            "poll_interval_seconds": 10,
            "poll_max_interval_seconds": 10,
        }
    return await harness.start_bot(**(settings | overrides))


async def _all_deliveries_answered(harness: Harness) -> None:
    await eventually(
        lambda: all(delivery.answered is not None for delivery in harness.freepik.deliveries),
        "the fake's webhook deliveries to be answered",
    )


def _describe(harness: Harness, shade: int) -> dict[str, Any]:
    return harness.describe_payload(png_bytes(colour=(shade, 100, 100)))


async def test_counters_move_through_a_describe_a_failure_a_cache_hit_a_refusal_and_a_forged_webhook(
    harness: Harness,
) -> None:
    harness.freepik.seconds_per_state = 0.05
    bot = await _start(harness, quota_describe_per_day=1)
    first = await scrape(bot)
    assert first.content_type.startswith("text/plain; version=0.0.4")
    started = {"kind": "describe", "provider": "freepik"}

    # A failure: the provider's task ends FAILED (a webhook says so); refunded, so the quota is intact.
    harness.freepik.outcome = "FAILED"
    await harness.interact(bot, _describe(harness, 1))
    harness.freepik.outcome = "COMPLETED"
    # A describe that completes, then the same image again: answered from the cache, free.
    await harness.interact(bot, _describe(harness, 2))
    await harness.interact(bot, _describe(harness, 2))
    # The one describe of the day is spent: the next new image is refused before any provider sees it.
    refused = await harness.interact(bot, _describe(harness, 3))
    assert "used" in str(harness.discord.original_message(refused))
    await _all_deliveries_answered(harness)
    accepted = sum(1 for delivery in harness.freepik.deliveries if delivery.answered == 204)
    # Forged (another secret) and stale (ten minutes old) deliveries about a real task.
    task_id = next(iter(harness.freepik.tasks))
    assert await harness.freepik.deliver(task_id, status="COMPLETED", secret=FORGED_SECRET) == 401
    assert await harness.freepik.deliver(task_id, status="COMPLETED", timestamp=int(time.time()) - 600) == 401

    after = await scrape(bot)
    print("/metrics after the run (imagebot_* only):")
    print("\n".join(line for line in after.text.splitlines() if "imagebot_" in line and " 0.0" not in line))

    assert after.moved(first, "imagebot_tasks_started_total", **started) == 3
    assert after.moved(first, "imagebot_tasks_started_total") == 3
    finished = "imagebot_tasks_finished_total"
    assert after.moved(first, finished, **started, outcome="refunded", fault="failed") == 1
    assert after.moved(first, finished, **started, outcome="completed", fault="none") == 1
    assert after.moved(first, finished, **started, outcome="cached", fault="none") == 1
    assert after.moved(first, finished) == 3
    assert after.moved(first, "imagebot_quota_refusals_total", kind="describe", reason="used_up") == 1
    assert after.moved(first, "imagebot_quota_refusals_total") == 1
    # Two creates reached Freepik (the cache hit and the refusal sent nothing), and no poll was needed.
    requests = "imagebot_provider_requests_total"
    assert after.moved(first, requests, provider="freepik", operation="describe", status="ok") == 2
    assert after.moved(first, requests) == 2
    assert after.moved(first, "imagebot_provider_request_seconds_count") == 2
    deliveries = "imagebot_webhook_deliveries_total"
    assert accepted >= 2  # at least each task's end
    assert after.moved(first, deliveries, result="accepted") == accepted
    assert after.moved(first, deliveries, result="bad_signature") == 1
    assert after.moved(first, deliveries, result="stale") == 1
    assert after.moved(first, deliveries) == accepted + 2
    # Timings: one completion by the provider; three ends shown; four interactions acknowledged.
    assert after.moved(first, "imagebot_task_completion_seconds_count", **started) == 1
    assert after.moved(first, "imagebot_result_shown_seconds_count", kind="describe") == 3
    assert after.moved(first, "imagebot_interaction_ack_seconds_count") == 4
    assert 0 < after.value("imagebot_interaction_ack_seconds_sum") < 4 * 3.0
    # Nothing is running any more, and the breaker never opened.
    assert after.value("imagebot_tasks_in_flight", provider="freepik") == 0
    assert after.value("imagebot_tasks_waiting", provider="freepik") == 0
    assert after.value("imagebot_circuit_breaker_state", provider="freepik", state="closed") == 1
    assert after.value("imagebot_discord_api_errors_total") == 0
    # The standard process and Python series come along.
    assert after.value("process_resident_memory_bytes") > 0
    assert after.value("imagebot_build_info") == 1


async def test_metrics_work_with_webhooks_off_and_show_running_tasks(harness: Harness) -> None:
    harness.freepik.seconds_per_state = 60  # the task stays CREATED while it is looked at
    bot = await _start(harness, webhooks=False, poll_interval_seconds=0.05)
    assert bot.webhooks is None
    payload = _describe(harness, 9)
    await harness.discord.send_interaction(payload)
    await harness.discord.wait_for_call(lambda c: payload["token"] in c.path and c.method == "PATCH")
    running = await scrape(bot)
    assert running.value("imagebot_tasks_in_flight", provider="freepik") == 1
    assert running.value("imagebot_tasks_in_flight", provider="novita") == 0
    assert running.value("imagebot_tasks_waiting") == 0
    harness.freepik.seconds_per_state = 0
    await harness.settle(bot)
    done = await scrape(bot)
    assert done.value("imagebot_tasks_in_flight", provider="freepik") == 0
    assert done.value("imagebot_tasks_finished_total", outcome="completed") == 1
    assert done.moved(running, "imagebot_provider_requests_total", operation="poll", status="ok") >= 1


async def test_a_task_resumed_at_a_restart_counts_in_flight_before_its_next_save(harness: Harness) -> None:
    harness.freepik.seconds_per_state = 60  # the task stays CREATED across the restart: nothing new to save
    first = await _start(harness, webhooks=False)
    payload = _describe(harness, 10)
    await harness.discord.send_interaction(payload)
    await harness.discord.wait_for_call(lambda c: payload["token"] in c.path and c.method == "PATCH")
    await harness.stop_bot(first)  # graceful: the job is paused CREATED

    second = await _start(harness, webhooks=False)  # resumed (claimed) before the bot is up
    resumed = await scrape(second)
    assert resumed.value("imagebot_tasks_in_flight", provider="freepik") == 1
    assert resumed.value("imagebot_tasks_waiting") == 0
    harness.freepik.seconds_per_state = 0
    await harness.settle(second)
    done = await scrape(second)
    assert done.value("imagebot_tasks_in_flight", provider="freepik") == 0
    assert done.value("imagebot_tasks_finished_total", outcome="completed") == 1


async def test_provider_failures_open_the_breaker_and_show_their_status(harness: Harness) -> None:
    harness.freepik.fail_next(
        "POST",
        "/v1/ai/image-to-prompt",
        503,
        {"message": "Service Unavailable."},
        headers={"Retry-After": "0"},
        times=100,
    )
    bot = await _start(harness, webhooks=False, novita_api_key=None)
    for shade in range(5):
        await harness.interact(bot, _describe(harness, 20 + shade))
    metrics = await scrape(bot)
    # One request per task, each after the helper's four tries.
    assert metrics.value("imagebot_provider_requests_total", operation="describe", status="503") == 5
    assert metrics.value("imagebot_tasks_finished_total", outcome="refunded", fault="busy") == 5
    assert metrics.value("imagebot_circuit_breaker_state", provider="freepik", state="open") == 1
    assert metrics.value("imagebot_circuit_breaker_state", provider="freepik", state="closed") == 0
    # While open, the breaker answers for the provider: no request is counted.
    await harness.interact(bot, _describe(harness, 99))
    again = await scrape(bot)
    assert again.moved(metrics, "imagebot_provider_requests_total") == 0
    assert again.moved(metrics, "imagebot_tasks_finished_total", fault="unavailable") == 1


async def test_discord_errors_and_rate_limit_waits_are_counted(harness: Harness) -> None:
    bot = await _start(harness, webhooks=False)
    before = await scrape(bot)
    # The first edit of the reply is rate limited once: discord.py waits and sends it again.
    harness.discord.fail_next(
        "PATCH", r"/webhooks/\d+/[^/]+/messages/@original", status=429, retry_after=0.05
    )
    token = await harness.interact(bot, _describe(harness, 40))
    assert harness.discord.original_message(token)["embeds"][0]["title"] == "Image to prompt · Done"
    after = await scrape(bot)
    errors = "imagebot_discord_api_errors_total"
    assert after.moved(before, errors, route="interaction_webhook", status="429") == 1
    assert after.moved(before, errors) == 1
    # The fake says Retry-After: 1 (whole seconds, as Discord does) and no scope header.
    assert after.moved(before, "imagebot_discord_rate_limits_total", reason="unknown") == 1
    assert after.moved(before, "imagebot_discord_rate_limit_wait_seconds_total", reason="unknown") == 1


def _allowed_label_values() -> dict[str, set[str]]:
    providers = set(BY_NAME) | {OTHER}
    statuses = {OK, ERROR} | {str(code) for code in LABELLED_STATUSES} | {f"{n}xx" for n in range(1, 6)}
    return {
        "kind": {kind.value for kind in TaskKind},
        "provider": providers,
        "outcome": {outcome.value for outcome in TaskOutcome},
        "fault": {fault.value for fault in Fault} | {NO_FAULT},
        "operation": {operation.value for operation in ProviderOperation},
        # provider requests: ok, an HTTP status, a fault; Discord errors: an HTTP status or no answer
        "status": statuses | {fault.value for fault in Fault} | set(NO_ANSWER_STATUSES),
        "reason": {reason.value for reason in QuotaRefusalReason} | set(RATE_LIMIT_REASONS),
        "result": {result.value for result in WebhookResult},
        "route": set(ROUTES),
        "state": {state.value for state in BreakerState},
        "generation": {"0", "1", "2"},
    }


def _check_labels(metrics: Scrape) -> int:
    """Fail on any label whose value is not from its fixed set; return how many samples were checked."""
    allowed = _allowed_label_values()
    # Labels whose values are fixed by the process, not by anything a member or a provider sends.
    fixed_by_process = {"python_info": {"implementation", "major", "minor", "patchlevel", "version"}}
    checked = 0
    for sample in metrics.samples():
        checked += 1
        for name, value in sample.labels.items():
            if name == "le":
                assert value == "+Inf" or math.isfinite(float(value)), sample
            elif name == "version" and sample.name == "imagebot_build_info":
                assert re.fullmatch(r"[0-9A-Za-z.+-]{1,40}", value), sample
            elif name in fixed_by_process.get(sample.name, set()):
                continue
            else:
                assert name in allowed, f"label {name!r} of {sample.name} has no fixed set of values"
                assert value in allowed[name], f"{sample.name}{{{name}={value!r}}} is not an allowed value"
    return checked


async def test_no_label_carries_an_unbounded_value(harness: Harness) -> None:
    """Walk every sample after traffic of every kind; each label value must come from a fixed set."""
    harness.freepik.seconds_per_state = 0.05
    bot = await _start(harness)
    await harness.interact(bot, _describe(harness, 50))
    await harness.interact(bot, _describe(harness, 50))  # cached
    await harness.interact(bot, harness.discord.slash("imagine", {"prompt": "a red bicycle"}))
    harness.freepik.fail_next("POST", "/v1/ai/image-to-prompt", 400, {"message": "bad image"})
    await harness.interact(bot, _describe(harness, 51))
    harness.discord.fail_next("PATCH", r"/webhooks/", status=429, retry_after=0.01)
    await harness.interact(bot, _describe(harness, 52))
    await _all_deliveries_answered(harness)
    task_id = next(iter(harness.freepik.tasks))
    await harness.freepik.deliver(task_id, status="COMPLETED", secret=FORGED_SECRET)
    await harness.freepik.deliver(task_id, status="COMPLETED", webhook_id="msg_twice")
    await harness.freepik.deliver(task_id, status="COMPLETED", webhook_id="msg_twice")
    await harness.freepik.deliver(task_id, status="COMPLETED", url=_url_for(bot, "nobody"))
    metrics = await scrape(bot)
    assert metrics.value("imagebot_tasks_finished_total", outcome="failed", fault="rejected") == 1
    assert metrics.value("imagebot_tasks_finished_total", kind="imagine", outcome="completed") == 1
    assert metrics.value("imagebot_webhook_deliveries_total", result="replayed") == 1
    assert metrics.value("imagebot_webhook_deliveries_total", result="unknown_provider") == 1
    assert _check_labels(metrics) > 100
    # Ids and tokens never appear anywhere in the output, not even in a help text.
    for secret in (str(harness.discord.default_user_id), str(harness.discord.guild_ids[0]), task_id):
        assert secret not in metrics.text


def _url_for(bot: ImageBot, provider: str) -> str:
    assert bot.webhooks is not None
    return f"http://127.0.0.1:{bot.webhooks.bound_port}/webhooks/{provider}"


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(harness: Harness) -> None:
    bot = await _start(harness, webhooks=False)
    metrics = await scrape(bot, accept="application/openmetrics-text; version=1.0.0")
    assert metrics.content_type.startswith("application/openmetrics-text")
    assert metrics.text.rstrip().endswith("# EOF")


async def test_a_metrics_port_in_use_is_one_clear_line(harness: Harness) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # the listener binds every interface too
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Exception, match=f"METRICS_PORT {port} cannot be listened on") as caught:
            await _start(harness, webhooks=False, metrics_port=port)
    assert "choose another port" in str(caught.value)


async def test_metrics_need_their_own_port(harness: Harness) -> None:
    from bot.settings import SettingsError

    with pytest.raises(SettingsError, match="METRICS_PORT must differ from WEBHOOK_PORT"):
        harness.settings(
            webhook_public_url="http://127.0.0.1:8080",
            webhook_secret=DEFAULT_WEBHOOK_SECRET,
            webhook_port=8080,
            metrics_port=8080,
        )
    assert harness.settings(metrics_port="").metrics_port is None
    assert harness.settings(metrics_port="9464").metrics_port == 9464


async def test_nothing_listens_without_metrics_port(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    assert bot.metrics_listener is None
    # The bot counts all the same (cheaply): a listener is only a way to read its registry.
    await harness.interact(bot, _describe(harness, 60))
    assert bot.metrics.registry.get_sample_value("imagebot_tasks_started_total", started_labels()) == 1


def started_labels() -> dict[str, str]:
    return {"kind": "describe", "provider": "freepik"}
