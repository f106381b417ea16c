"""The line of tasks waiting for a provider: members take turns, so no one's many tasks hold others back."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

from bot.domain.tasks import Job


def take_order(waiting: Sequence[Job], last_served: Mapping[int, float]) -> list[Job]:
    """Return the waiting jobs in the order they leave the line.

    Round robin by member: the next job is the oldest one of the member whose last task left the line
    longest ago (a member never served goes first; between those, whoever has waited longest). Once a
    member's task leaves, that member goes to the back. `last_served` maps a member to when their last
    task left this provider's line.
    """
    queues: dict[int, deque[Job]] = {}
    for job in sorted(waiting, key=lambda job: (job.created_at, job.id)):
        queues.setdefault(job.user_id, deque()).append(job)
    served = {user: last_served.get(user, -math.inf) for user in queues}
    turn = max((time for time in served.values() if time != -math.inf), default=0.0)
    order: list[Job] = []
    while queues:
        user = min(queues, key=lambda member: (served[member], queues[member][0].created_at, member))
        order.append(queues[user].popleft())
        turn += 1.0
        served[user] = turn
        if not queues[user]:
            del queues[user]
    return order


def shown_place(place: int) -> int:
    """Round a place for showing: exact up to 10, then to 5 (to 50), 10 (to 100), 25 above.

    A member is told when their place changes; in a line of 200 an exact place would change with every
    task that leaves, and cost an edit each time. Rounded, the last of 200 is edited some 30 times.
    """
    if place <= 10:
        return place
    step = 5 if place <= 50 else 10 if place <= 100 else 25
    return math.ceil(place / step) * step
