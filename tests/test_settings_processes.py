"""The settings of several processes: DATABASE_URL (never echoed), SHARD_COUNT and SHARD_IDS, checked together."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.discord.heartbeat import heartbeat_path
from bot.logs import secret_values
from bot.settings import SettingsError, load_settings
from bot.store.postgres.url import password, redact

BASE = {"discord_token": "fake-token", "novita_api_key": "test-novita-key"}


def settings_problems(**values: object) -> list[str]:
    with pytest.raises(SettingsError) as refused:
        load_settings({**BASE, **values}, env_file=None)
    return refused.value.problems


def test_shard_ids_need_a_shard_count_they_fit_in() -> None:
    assert settings_problems(shard_ids="0") == [
        "SHARD_IDS needs SHARD_COUNT, the total number of shards across all processes"
    ]
    assert settings_problems(shard_count="2", shard_ids="0,2,5") == [
        "SHARD_IDS has 2, 5, but with SHARD_COUNT=2 shard ids go from 0 to 1"
    ]
    assert settings_problems(shard_count="2", shard_ids="1,1") == ["SHARD_IDS names a shard twice"]
    assert settings_problems(shard_count="0") == ["SHARD_COUNT: Input should be greater than or equal to 1"]
    settings = load_settings({**BASE, "shard_count": "4", "shard_ids": " 2, 3 "}, env_file=None)
    assert (settings.shard_count, settings.shard_ids) == (4, [2, 3])
    blank = load_settings({**BASE, "shard_count": "", "shard_ids": ""}, env_file=None)
    assert (blank.shard_count, blank.shard_ids) == (None, [])


def test_some_shards_in_this_process_need_a_shared_database() -> None:
    alone = load_settings({**BASE, "shard_count": "2", "shard_ids": "0"}, env_file=None)
    assert alone.run_problems() == [
        "SHARD_IDS runs only some of the shards, so other processes run the rest, and processes can only "
        "share a PostgreSQL database: set DATABASE_URL (README: Running several processes)"
    ]
    every = load_settings({**BASE, "shard_count": "2", "shard_ids": "0,1"}, env_file=None)
    assert every.run_problems() == []  # one process running every shard may keep its SQLite file
    shared = load_settings(
        {**BASE, "shard_count": "2", "shard_ids": "0", "database_url": "postgresql://bot:pw@db/bot"},
        env_file=None,
    )
    assert shared.run_problems() == []
    assert shared.uses_postgres


def test_database_url_is_checked_without_being_echoed_and_its_password_is_a_secret() -> None:
    problems = settings_problems(database_url="mysql://bot:Sup3r-Secret-pw@db/bot")
    assert problems == [
        "DATABASE_URL: must be a PostgreSQL URL, postgresql://user:password@host:5432/database (leave it "
        "empty to keep the SQLite file at DATABASE_PATH)"
    ]
    url = "postgresql://bot:Sup3r-Secret-pw@db:5432/bot?sslmode=require"
    settings = load_settings({**BASE, "database_url": url}, env_file=None)
    assert "Sup3r-Secret-pw" not in repr(settings)
    assert url in secret_values(settings)
    assert "Sup3r-Secret-pw" in secret_values(settings)  # the password alone is redacted from logs too
    assert load_settings({**BASE, "database_url": ""}, env_file=None).database_url is None


def test_urls_are_shown_with_the_password_replaced() -> None:
    assert redact("postgresql://bot:s3cret@db:5432/bot") == "postgresql://bot:***@db:5432/bot"
    assert redact("postgresql://bot@db/bot?password=s3cret&sslmode=require") == (
        "postgresql://bot@db/bot?password=***&sslmode=require"
    )
    assert redact("postgresql://db/bot") == "postgresql://db/bot"
    assert password("postgresql://bot:s3cret@db/bot") == "s3cret"
    assert password("postgresql://bot@db/bot") is None


def test_a_process_running_some_shards_has_a_heartbeat_of_its_own(tmp_path: Path) -> None:
    values = {**BASE, "database_path": tmp_path / "bot.sqlite3", "database_url": "postgresql://bot@db/bot"}
    one = load_settings({**values, "shard_count": "2", "shard_ids": "1"}, env_file=None)
    every = load_settings(values, env_file=None)
    assert heartbeat_path(one) == tmp_path / "heartbeat-shards-1"
    assert heartbeat_path(every) == tmp_path / "heartbeat"
