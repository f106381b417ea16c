"""Rows of the tables both stores keep, as the domain's objects and back: the same for SQLite and PostgreSQL.

Both stores keep the same columns under the same names; only their SQL differs. What a row holds, the
conditions that say whether a job waits in line or runs at its provider, and the log line of a change to a
server's rules are written here once, and so is what forgetting a member means outside their SQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from bot.domain.privacy import pseudonym
from bot.domain.quota import Member, UsageLine
from bot.domain.rules import ChannelRule, SpoilerRule
from bot.domain.tasks import (
    DescribeStyle,
    Fault,
    Job,
    JobState,
    Notice,
    NoticeCode,
    Route,
    Suggestion,
    TaskKind,
)

log = logging.getLogger(__name__)

# The job's own columns; its route is kept in the columns below, and its place in line is not kept.
JOB_COLUMNS = tuple(f.name for f in fields(Job) if f.name not in ("route", "place"))
ROUTE_COLUMNS = {
    "channel_id": "channel_id",
    "message_id": "message_id",
    "application_id": "application_id",
    "interaction_token": "interaction_token",
    "token_created_at": "token_created_at",
    "via": "report_via",
    "member_locale": "member_locale",
    "guild_locale": "guild_locale",
}
# A job waits in line until it is dispatched; from then until its end is known it runs at its provider.
WAITING = "finished_at IS NULL AND dispatched_at IS NULL AND state = 'QUEUED'"
RUNNING = (
    "finished_at IS NULL AND dispatched_at IS NOT NULL AND state NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')"
)
# The meta row of the key of forgotten members' stand-in ids (one per database).
PSEUDONYM_KEY = "pseudonym_key"


class Row(Protocol):
    """A row as either database driver returns it: its columns by name."""

    def __getitem__(self, key: str, /) -> Any: ...


def notice_to_text(notice: Notice | None) -> str | None:
    """Store a notice as its code and parameters (JSON), never as a sentence."""
    if notice is None:
        return None
    return json.dumps({"code": notice.code.value, **notice.params}, sort_keys=True)


def notice_from_text(text: str | None) -> Notice | None:
    if not text:
        return None
    data = json.loads(text)
    code = NoticeCode(data.pop("code"))
    return Notice(code, data)


def suggestions_to_text(suggestions: Sequence[Suggestion]) -> str:
    """Store described prompts as JSON: [{"prompt": ..., "negative": ...}, ...]."""
    return json.dumps([{"prompt": s.prompt, "negative": s.negative} for s in suggestions])


def suggestions_from_text(text: str) -> tuple[Suggestion, ...]:
    return tuple(Suggestion(str(item["prompt"]), item.get("negative")) for item in json.loads(text))


def job_from_row(row: Row) -> Job:
    values = {name: row[name] for name in JOB_COLUMNS}
    values["kind"] = TaskKind(values["kind"])
    values["state"] = JobState(values["state"])
    values["reported_state"] = JobState(values["reported_state"]) if values["reported_state"] else None
    values["fault"] = Fault(values["fault"]) if values["fault"] else None
    values["notice"] = notice_from_text(values["notice"])
    values["style"] = DescribeStyle(values["style"]) if values["style"] else None
    values["spoiler"] = bool(values["spoiler"])
    values["hidden"] = bool(values["hidden"])
    if values["suggestions"]:
        values["suggestions"] = suggestions_from_text(values["suggestions"])
    else:  # a job saved before suggestions existed kept its one prompt in result_text
        values["suggestions"] = (Suggestion(row["result_text"]),) if row["result_text"] else ()
    route = Route(**{field: row[column] for field, column in ROUTE_COLUMNS.items()})
    return Job(route=route, **values)


def route_values(route: Route) -> dict[str, Any]:
    """The route's columns and their values."""
    return {column: getattr(route, field) for field, column in ROUTE_COLUMNS.items()}


def column_values(job: Job) -> dict[str, Any]:
    """Every column of the job's row and its value."""
    values = {name: getattr(job, name) for name in JOB_COLUMNS}
    values["notice"] = notice_to_text(job.notice)
    values["suggestions"] = suggestions_to_text(job.suggestions) if job.suggestions else None
    # The first prompt is kept on its own too: it is what "Imagine this" and "Show as text" used before.
    values["result_text"] = job.result_text
    # Flags are integer columns (SQLite has no booleans; PostgreSQL's columns follow SQLite's schema).
    values["spoiler"] = int(job.spoiler)
    values["hidden"] = int(job.hidden)
    return values | route_values(job.route)


def channel_rule_from_row(row: Row) -> ChannelRule:
    return ChannelRule(
        int(row["channel_id"]), bool(row["describe"]), bool(row["imagine"]), SpoilerRule(row["spoilers"])
    )


def channel_rule_detail(rule: ChannelRule) -> dict[str, object]:
    """What the audit row and the log line of a channel rule's change say of it."""
    return {
        "channel_id": rule.channel_id,
        "describe": rule.describe,
        "imagine": rule.imagine,
        "spoilers": rule.spoilers.value,
    }


def log_rules_change(guild_id: int, actor_id: int, action: str, detail: dict[str, object]) -> None:
    """The one log line of every change to a server's rules (beside its audit row)."""
    log.info(
        "rules changed",
        extra={
            "guild_id": guild_id,
            "actor_id": actor_id,
            "action": action,
            "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False),
        },
    )


def usage_line_from_row(row: Row) -> UsageLine:
    """One kind and provider's counts, as both stores' usage summary query returns them."""
    return UsageLine(
        str(row["kind"]),
        str(row["provider"]),
        int(row["completed"]),
        int(row["failed"]),
        int(row["refunded"]),
        int(row["cached"]),
        int(row["running"]),
    )


@dataclass(frozen=True, slots=True)
class MemberIds:
    guild_id: int
    user_id: int
    pseudonym: int  # the stand-in id of their rows of today, had they asked to be forgotten


def member_ids(secret: bytes, member: Member) -> MemberIds:
    """The member's id and the stand-in id their rows took if they asked to be forgotten today."""
    return MemberIds(member.guild_id, member.user_id, pseudonym(secret, member.guild_id, member.user_id))


def limit_target(row: Row, ids: MemberIds) -> int:
    """A limit set for a member who then asked to be forgotten is kept under their stand-in id."""
    target = int(row["target_id"])
    return ids.user_id if target == ids.pseudonym else target


def forget_in_detail(detail_text: str, user_id: int, stand_in: int) -> str:
    """Return an audit row's detail (JSON) with the member's id, where it names them, as their stand-in id."""
    detail = json.loads(detail_text)
    for key in ("user_id", "target_id"):
        if detail.get(key) == user_id:
            detail[key] = stand_in
    return json.dumps(detail, sort_keys=True)
