"""Reading a bot's /metrics the way Prometheus does: over HTTP, through the official text parser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bot.discord.client import ImageBot


@dataclass(frozen=True)
class Scrape:
    """One answer of /metrics: its content type, its text, and every sample in it."""

    content_type: str
    text: str

    def samples(self) -> Iterator[Sample]:
        for family in text_string_to_metric_families(self.text):
            yield from family.samples

    def families(self) -> dict[str, str]:
        """Return each family's name and type."""
        return {family.name: family.type for family in text_string_to_metric_families(self.text)}

    def value(self, name: str, **labels: str) -> float:
        """Sum the samples called `name` whose labels include `labels` (0 when there is none)."""
        return sum(
            sample.value
            for sample in self.samples()
            if sample.name == name and all(sample.labels.get(key) == want for key, want in labels.items())
        )

    def moved(self, before: Scrape, name: str, **labels: str) -> float:
        """Return how much a series (or the sum of the matching ones) grew since `before`."""
        return self.value(name, **labels) - before.value(name, **labels)


async def scrape(bot: ImageBot, *, accept: str | None = None) -> Scrape:
    assert bot.metrics_listener is not None, "the bot was started without METRICS_PORT"
    url = f"http://127.0.0.1:{bot.metrics_listener.bound_port}/metrics"
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        return Scrape(response.headers["Content-Type"], await response.text())
