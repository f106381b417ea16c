"""The pure rules of the line (turns, shown places) and of the blocklist (what counts as the same word)."""

from __future__ import annotations

import pytest

from bot.domain.blocklist import contains_blocked, phrase_key, split_phrases
from bot.domain.errors import BadInput, Refusal
from bot.domain.line import shown_place, take_order
from bot.domain.rules import ChannelRule, SpoilerRule, check_allowed, rule_for
from bot.domain.tasks import Job, Route, TaskKind


def _job(user_id: int, at: float) -> Job:
    return Job.new(
        kind=TaskKind.DESCRIBE, provider="p", guild_id=1, user_id=user_id, route=Route(None), clock=lambda: at
    )


def test_members_take_turns_and_the_least_recently_served_goes_first() -> None:
    waiting = [_job(1, t) for t in (1, 2, 3)] + [_job(2, 4), _job(3, 5), _job(2, 6)]
    order = take_order(waiting, {1: 100.0, 2: 50.0})  # 3 was never served, 2 longest ago
    assert [job.user_id for job in order] == [3, 2, 1, 2, 1, 1]
    assert [job.created_at for job in order if job.user_id == 1] == [1, 2, 3]  # a member's own in order


def test_shown_places_are_exact_up_front_and_rounded_behind() -> None:
    assert [shown_place(p) for p in (1, 9, 10, 11, 15, 16, 50, 51, 100, 101, 200)] == [
        1,
        9,
        10,
        15,
        15,
        20,
        50,
        60,
        100,
        125,
        200,
    ]
    assert len({shown_place(p) for p in range(1, 201)}) <= 30  # the last of 200 is edited some 30 times


@pytest.mark.parametrize(
    ("text", "blocked"),
    [
        ("BAD word", True),
        ("bád", True),
        ("\uff42\uff41\uff44", True),
        ("b\u200bad", True),
        ("b\u00adad", True),  # a soft hyphen
        ("b.a.d", True),
        ("b-a-d!", True),
        ("badge", False),
        ("abad", False),
        ("bad_luck", True),  # an underscore separates words
        ("", False),
    ],
)
def test_a_blocked_word_is_found_however_it_is_written(text: str, blocked: bool) -> None:
    assert contains_blocked(text, [phrase_key("Bad")]) is blocked


def test_a_phrase_matches_its_words_in_a_row() -> None:
    key = phrase_key("  Très   MÉCHANT ")
    assert key == "tres mechant"
    assert contains_blocked("un chien très méchant", [key])
    assert not contains_blocked("très gentil, méchant", [key])
    assert split_phrases("a, b c,\n, d") == ["a", "b c", "d"]
    assert phrase_key("...") == ""


def test_a_channel_follows_its_own_rule_then_its_parent_then_the_server() -> None:
    server = ChannelRule(0, imagine=False)
    art = ChannelRule(10, imagine=True, spoilers=SpoilerRule.ALWAYS)
    rules = {0: server, 10: art}
    assert rule_for(rules, 10) is art
    assert rule_for(rules, 11, parent_id=10) is art  # a thread of #art
    assert rule_for(rules, 12) is server
    assert rule_for({}, 12) == ChannelRule(0)
    with pytest.raises(BadInput) as refused:
        check_allowed(rules, TaskKind.IMAGINE, 12)
    assert (refused.value.refusal, refused.value.params) == (
        Refusal.COMMAND_OFF_HERE,
        {"kind": "imagine", "channels": "<#10>"},
    )
    assert art.spoilered(age_restricted=True)
    assert ChannelRule(1, spoilers=SpoilerRule.OUTSIDE_AGE_RESTRICTED).spoilered(age_restricted=False)
    assert not ChannelRule(1, spoilers=SpoilerRule.OUTSIDE_AGE_RESTRICTED).spoilered(age_restricted=True)
