"""Every metric the bot exposes, defined once, in a registry of the bot's own.

`PrometheusMetrics` is the `bot.domain.metrics.Metrics` the bot runs with (and the Discord trace's
observer): each call moves a counter or a histogram. A registry per bot, not prometheus_client's global
default, keeps two bots in one process (the tests) from counting into each other, and keeps every library
that registers into the default out of the bot's output.

Label values come from fixed sets only: the domain's enums, the provider registry's names (anything else
is "other"), bounded HTTP status values and the Discord trace's route and reason names.
"""

from __future__ import annotations

from collections import Counter as TallyCounter
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Final

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bot.domain.metrics import (
    BreakerState,
    LiveState,
    Phase,
    ProviderOperation,
    QuotaRefusalReason,
    TaskOutcome,
    WebhookResult,
)
from bot.domain.tasks import Fault, TaskKind
from bot.observability.discord_http import RATE_LIMIT_REASONS, discord_trace
from bot.providers.registry import BY_NAME

PREFIX: Final = "imagebot"
OTHER: Final = "other"
NO_FAULT: Final = "none"

# Discord allows 3 seconds to acknowledge an interaction; the buckets crowd around that.
ACK_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0)
# Providers take seconds to minutes (TASK_TIMEOUT_SECONDS is 600 by default).
COMPLETION_BUCKETS: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# From the saved end to the edit on Discord: a round trip, or more when Discord makes the bot wait.
SHOWN_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
REQUEST_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _version() -> str:
    try:
        return metadata.version("imageprompt-bot")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def provider_label(name: str) -> str:
    """Return a provider's name if the registry knows it, else "other": a label never takes a free string."""
    return name if name in BY_NAME else OTHER


class _LiveCollector(Collector):
    """Gauges read when Prometheus scrapes: the jobs this process drives, and each provider's breaker."""

    def __init__(self) -> None:
        self._readers: list[Callable[[], LiveState]] = []

    def add(self, read: Callable[[], LiveState]) -> None:
        self._readers.append(read)

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_tasks_in_flight",
            "Tasks sent to a provider and not ended yet, by provider",
            labels=["provider"],
        )
        waiting = GaugeMetricFamily(
            f"{PREFIX}_tasks_waiting",
            "Tasks saved and not sent to their provider yet, by provider",
            labels=["provider"],
        )
        breaker = GaugeMetricFamily(
            f"{PREFIX}_circuit_breaker_state",
            "1 for the state each provider's circuit breaker is in (closed, open, half_open), else 0",
            labels=["provider", "state"],
        )
        for read in self._readers:
            live = read()
            # Every configured provider has a breaker: it names the providers that get a (zero) series.
            providers = {provider_label(name) for name in live.breakers}
            providers |= {provider_label(name) for name, _ in live.jobs}
            counts: TallyCounter[tuple[str, Phase]] = TallyCounter()
            for (name, phase), count in live.jobs.items():
                counts[provider_label(name), phase] += count
            for provider in sorted(providers):
                in_flight.add_metric([provider], counts[provider, Phase.IN_FLIGHT])
                waiting.add_metric([provider], counts[provider, Phase.WAITING])
            for name, state in sorted(live.breakers.items()):
                for candidate in BreakerState:
                    breaker.add_metric([provider_label(name), candidate.value], float(candidate is state))
        yield from (in_flight, waiting, breaker)


class PrometheusMetrics:
    """The bot's metrics, in its own registry: `registry` is what /metrics serves."""

    def __init__(self) -> None:
        # No `*_created` series beside every counter and histogram: they double the text format and
        # Prometheus does not use them. (A switch of prometheus_client's, the same for every registry.)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # The standard process_* (CPU, memory, open files, start time) and python_* (version, GC) series.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Info(f"{PREFIX}_build", "The bot's version", registry=registry).info({"version": _version()})

        self._started = Counter(
            f"{PREFIX}_tasks_started",
            "Tasks saved to run, answers from the cache included, by kind and provider",
            ["kind", "provider"],
            registry=registry,
        )
        self._finished = Counter(
            f"{PREFIX}_tasks_finished",
            "Tasks ended, by kind, provider, outcome (completed, cached, failed, refunded, cancelled) and fault",
            ["kind", "provider", "outcome", "fault"],
            registry=registry,
        )
        self._completion = Histogram(
            f"{PREFIX}_task_completion_seconds",
            "From a task's start (saved) to its provider's result, by kind and provider",
            ["kind", "provider"],
            buckets=COMPLETION_BUCKETS,
            registry=registry,
        )
        self._shown = Histogram(
            f"{PREFIX}_result_shown_seconds",
            "From a task's end (saved) to the member seeing it on Discord, by kind",
            ["kind"],
            buckets=SHOWN_BUCKETS,
            registry=registry,
        )
        self._ack = Histogram(
            f"{PREFIX}_interaction_ack_seconds",
            "From Discord creating an interaction to the bot's acknowledgement of it (Discord allows 3 s)",
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self._requests = Counter(
            f"{PREFIX}_provider_requests",
            "Calls to a provider by provider, operation and status (ok, an HTTP status, or the fault "
            "when no status came), each after the request helper's retries",
            ["provider", "operation", "status"],
            registry=registry,
        )
        self._request_seconds = Histogram(
            f"{PREFIX}_provider_request_seconds",
            "How long calls to a provider took, retries included, by provider and operation",
            ["provider", "operation"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._refusals = Counter(
            f"{PREFIX}_quota_refusals",
            "Tasks refused before they started, by kind and reason",
            ["kind", "reason"],
            registry=registry,
        )
        self._webhooks = Counter(
            f"{PREFIX}_webhook_deliveries",
            "Deliveries to the webhook listener, by result",
            ["result"],
            registry=registry,
        )
        self._discord_errors = Counter(
            f"{PREFIX}_discord_api_errors",
            "Discord requests answered with an error (or not at all), by route and status",
            ["route", "status"],
            registry=registry,
        )
        self._rate_limits = Counter(
            f"{PREFIX}_discord_rate_limits",
            "Times Discord made the bot wait: a spent bucket, or a 429 by its scope",
            ["reason"],
            registry=registry,
        )
        self._rate_limit_seconds = Counter(
            f"{PREFIX}_discord_rate_limit_wait_seconds",
            "Seconds Discord asked the bot to wait, by reason",
            ["reason"],
            registry=registry,
        )
        self._live = _LiveCollector()
        registry.register(self._live)

        # Series that exist from the start, so a rate over them is 0 rather than absent.
        for kind in TaskKind:
            for reason in QuotaRefusalReason:
                self._refusals.labels(kind.value, reason.value)
        for result in WebhookResult:
            self._webhooks.labels(result.value)
        for wait in RATE_LIMIT_REASONS:
            self._rate_limits.labels(wait)
            self._rate_limit_seconds.labels(wait)

    def discord_trace(self) -> aiohttp.TraceConfig:
        """Return the trace to give discord.py (its `http_trace` option)."""
        return discord_trace(self)

    # --- bot.domain.metrics.Metrics -------------------------------------------------------------

    def task_started(self, kind: TaskKind, provider: str) -> None:
        self._started.labels(kind.value, provider_label(provider)).inc()

    def task_finished(self, kind: TaskKind, provider: str, outcome: TaskOutcome, fault: Fault | None) -> None:
        fault_label = fault.value if fault is not None else NO_FAULT
        self._finished.labels(kind.value, provider_label(provider), outcome.value, fault_label).inc()

    def provider_completed(self, kind: TaskKind, provider: str, seconds: float) -> None:
        self._completion.labels(kind.value, provider_label(provider)).observe(max(0.0, seconds))

    def result_shown(self, kind: TaskKind, seconds: float) -> None:
        self._shown.labels(kind.value).observe(max(0.0, seconds))

    def provider_request(
        self, provider: str, operation: ProviderOperation, status: str, seconds: float
    ) -> None:
        name = provider_label(provider)
        self._requests.labels(name, operation.value, status).inc()
        self._request_seconds.labels(name, operation.value).observe(max(0.0, seconds))

    def quota_refused(self, kind: TaskKind, reason: QuotaRefusalReason) -> None:
        self._refusals.labels(kind.value, reason.value).inc()

    def webhook_delivery(self, result: WebhookResult) -> None:
        self._webhooks.labels(result.value).inc()

    def watch(self, read: Callable[[], LiveState]) -> None:
        self._live.add(read)

    # --- bot.observability.discord_http.DiscordObserver -----------------------------------------

    def interaction_acknowledged(self, seconds: float) -> None:
        self._ack.observe(seconds)

    def discord_error(self, route: str, status: str) -> None:
        self._discord_errors.labels(route, status).inc()

    def discord_rate_limited(self, reason: str, seconds: float) -> None:
        self._rate_limits.labels(reason).inc()
        self._rate_limit_seconds.labels(reason).inc(seconds)
