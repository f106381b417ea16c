"""The approach other bots of this kind take: poll every task at a fixed interval until it ends."""

from __future__ import annotations

import asyncio
import base64
import math
import time
from dataclasses import dataclass, field

import aiohttp

from benchmarks.burst import member_png
from benchmarks.fakes import TimedFreepik
from tests.fakes.providers import DEFAULT_FREEPIK_KEY, FINAL_STATUSES


@dataclass(slots=True)
class PollerResult:
    size: int
    interval: float
    provider_requests: list[int] = field(default_factory=list)  # per task: create + polls
    completion_delays: list[float] = field(default_factory=list)  # provider COMPLETED -> the poll that saw it
    unfinished: int = 0


async def fixed_poller(
    freepik: TimedFreepik, size: int, interval: float, *, longest_task: float
) -> PollerResult:
    """Create `size` tasks at once, then poll each every `interval` seconds until it ends."""
    result = PollerResult(size, interval)
    url = f"{freepik.base_url}/v1/ai/image-to-prompt"
    headers = {"x-freepik-api-key": DEFAULT_FREEPIK_KEY}
    most_polls = math.ceil((longest_task + 5.0) / interval) + 1  # bounded, whatever the fake does

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        image = "data:image/png;base64," + base64.b64encode(member_png(index)).decode()
        async with session.post(url, json={"image": image}, headers=headers) as response:
            task_id = str((await response.json())["data"]["task_id"])
        requests = 1
        for _ in range(most_polls):
            await asyncio.sleep(interval)
            async with session.get(f"{url}/{task_id}", headers=headers) as response:
                status = (await response.json())["data"]["status"]
            requests += 1
            if status in FINAL_STATUSES:
                result.completion_delays.append(time.monotonic() - freepik.completed_at(task_id))
                break
        else:
            result.unfinished += 1
        result.provider_requests.append(requests)

    # No connection cap: the poller is the yardstick, not the thing measured.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(one(session, index) for index in range(size)))
    return result


async def run_pollers(
    size: int, intervals: tuple[float, ...], *, seconds_per_state: float, jitter: float
) -> list[PollerResult]:
    """Run a fixed-interval poller per interval, side by side, each on its own set of tasks."""
    freepik = TimedFreepik(seconds_per_state=seconds_per_state, jitter=jitter, seed=size)
    await freepik.start()
    try:
        longest = 2 * seconds_per_state * (1 + jitter)
        return list(
            await asyncio.gather(
                *(fixed_poller(freepik, size, interval, longest_task=longest) for interval in intervals)
            )
        )
    finally:
        await freepik.close()
