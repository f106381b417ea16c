"""The request budget: never more than the provider's limits in any window, creates and likely polls first.

The windows here are tenths of a second so the tests are quick; what they check holds whatever the timing
(the order of events, and counts the budget and the fake Freepik keep themselves), so a loaded machine
makes them slower, not flaky.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from bot.providers.budget import RateLimit, RequestBudget
from bot.providers.freepik import FreepikAdapter
from tests.conftest import Harness, png_bytes
from tests.fakes.providers import RateLimit as FakeLimit

BURST = RateLimit(6, 0.2)
AVERAGE = RateLimit(15, 0.5)


@dataclass
class Sent:
    let_go: float
    answered: float


async def _send(budget: RequestBudget, sent: list[Sent], latency: float, chance: float | None) -> None:
    loop = asyncio.get_running_loop()
    async with budget.slot(chance=chance):
        let_go = loop.time()
        await asyncio.sleep(latency)
    sent.append(Sent(let_go, loop.time()))


async def test_no_window_ever_holds_more_than_the_limit() -> None:
    budget = RequestBudget([BURST, AVERAGE])
    rng = random.Random(4)
    sent: list[Sent] = []
    await asyncio.gather(
        *(_send(budget, sent, rng.uniform(0, 0.03), None if i % 5 == 0 else rng.random()) for i in range(40))
    )
    assert len(sent) == 40
    # The provider counts a request when it arrives, somewhere between its let-go and its answer: however
    # the arrivals fall, a window can only hold requests let go within it or in flight or answered within
    # the window's length before. When each request was let go, fewer than the limit were so.
    for limit in (BURST, AVERAGE):
        for request in sent:
            holding = [
                other
                for other in sent
                if other is not request
                and other.let_go <= request.let_go
                and other.answered > request.let_go - limit.seconds
            ]
            assert len(holding) < limit.requests
    assert budget.waited > 0  # the budget did have to make requests wait


async def test_creates_go_first_then_the_likeliest_polls() -> None:
    budget = RequestBudget([RateLimit(1, 0.05)])
    order: list[str] = []
    blocker = asyncio.Event()

    async def request(name: str, chance: float | None) -> None:
        async with budget.slot(chance=chance):
            order.append(name)
            if name == "first":
                await blocker.wait()

    first = asyncio.create_task(request("first", None))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(request("unlikely poll", 0.05)),
        asyncio.create_task(request("likely poll", 0.9)),
        asyncio.create_task(request("create", None)),
    ]
    await asyncio.sleep(0)
    blocker.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "create", "likely poll", "unlikely poll"]


async def test_a_429_holds_every_request_back() -> None:
    budget = RequestBudget([RateLimit(100, 1.0)])
    loop = asyncio.get_running_loop()
    budget.hold(0.2)
    held_at = loop.time()
    async with budget.slot(chance=None):
        assert loop.time() - held_at >= 0.19


async def test_a_request_given_up_while_waiting_takes_no_place() -> None:
    budget = RequestBudget([RateLimit(1, 0.05)])
    async with budget.slot(chance=None):
        waiting = asyncio.create_task(_send(budget, [], 0, 0.5))
        await asyncio.sleep(0.01)
        waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    sent: list[Sent] = []
    await asyncio.wait_for(_send(budget, sent, 0, 0.5), timeout=5)
    assert len(sent) == 1
    assert budget.used(0.0) == 0  # nothing is left holding a slot: the given-up request never went


async def test_a_burst_of_tasks_stays_inside_the_limits_of_the_limiting_fake(harness: Harness) -> None:
    limits = (FakeLimit(8, 0.25), FakeLimit(20, 1.0))
    harness.freepik.limits = limits
    bot = await harness.start_bot(
        describe_provider="freepik",
        freepik_burst_requests_per_second=32,  # 8 per 0.25 s
        freepik_burst_window_seconds=0.25,
        freepik_average_requests_per_second=20,  # 20 per second
        freepik_average_window_seconds=1.0,
    )
    payloads = [
        harness.describe_payload(png_bytes(colour=(shade * 20, 90, 9)), user_id=700 + shade)
        for shade in range(12)
    ]
    for payload in payloads:
        await harness.discord.send_interaction(payload)
    for payload in payloads:
        await harness.discord.wait_for_call(lambda call, token=payload["token"]: token in call.path)
    await harness.settle(bot, timeout=30)

    titles = [harness.calls_for(p["token"])[-1].json["embeds"][0]["title"] for p in payloads]
    assert titles == ["Image to prompt · Done"] * len(payloads)
    assert harness.freepik.refused == []
    # Counted as the fake received them: no window of either length ever held more than its limit.
    for limit in limits:
        assert 0 < harness.freepik.peak(limit.seconds) <= limit.requests
    assert len(harness.freepik.creates()) == len(payloads)
    poller = bot.core.providers["freepik"].poller
    adapter = getattr(poller, "_inner", poller)  # the adapter inside the metrics' wrapper
    assert isinstance(adapter, FreepikAdapter)
    assert adapter.budget is not None
    assert adapter.budget.waited > 0  # the limits did bind


async def test_a_poll_answered_429_backs_off(harness: Harness) -> None:
    harness.freepik.polls_per_state = 2
    harness.freepik.fail_next(
        "GET",
        "/v1/ai/image-to-prompt/",
        429,
        {"message": "Too Many Requests"},
        headers={"Retry-After": "0.3"},
    )
    bot = await harness.start_bot(describe_provider="freepik")
    token = await harness.interact(bot, harness.describe_payload())
    assert harness.calls_for(token)[-1].json["embeds"][0]["title"] == "Image to prompt · Done"
    polls = harness.freepik.polls()
    assert polls[0].status == 429
    # The polls come every 20 to 50 ms in these tests; after the 429 the next waits for its Retry-After.
    assert polls[1].at - polls[0].at >= 0.3
