"""`.env.example` and the README's settings table are generated from the settings model and never drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.providers.registry import PROVIDERS
from bot.settings import Settings, load_settings
from bot.settings_docs import (
    TABLE_END,
    TABLE_START,
    SettingDoc,
    readme_table,
    render_env_example,
    render_markdown_table,
    setting_docs,
)

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "run `python -m bot.settings_docs` to regenerate it from bot/settings.py"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep settings from the machine's environment out of the comparison."""
    for doc in setting_docs():
        monkeypatch.delenv(doc.env, raising=False)


def env_example_values() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert name not in values, f"{name} is listed twice in .env.example"
            values[name] = value
    return values


def test_every_setting_is_in_env_example_with_its_default() -> None:
    values = env_example_values()
    docs = setting_docs()
    assert set(values) == {doc.env for doc in docs}, REGENERATE
    for doc in docs:
        assert values[doc.env] == doc.default, (
            f"{doc.env}: .env.example has {values[doc.env]!r}; {REGENERATE}"
        )


def test_env_example_is_exactly_the_generated_text() -> None:
    # The comments too: each setting's meaning is its field's description.
    assert (ROOT / ".env.example").read_text(encoding="utf-8") == render_env_example(), REGENERATE


@pytest.mark.usefixtures("clean_env")
def test_env_example_as_written_loads_to_the_model_defaults() -> None:
    # What an admin gets by copying the file unchanged is exactly the defaults: no value is mistyped.
    loaded = load_settings(env_file=str(ROOT / ".env.example"))
    defaults = load_settings(env_file=None)
    assert loaded.model_dump() == defaults.model_dump()
    for name, section in defaults.providers.items():
        assert loaded.providers[name].model_dump() == section.model_dump(), name


def test_every_field_has_a_one_line_meaning() -> None:
    for model in (Settings, *(spec.settings for spec in PROVIDERS)):
        for name, field in model.model_fields.items():
            assert field.description, (
                f"{name} has no description: it is its line in .env.example and the README"
            )
    for doc in setting_docs():
        assert "\n" not in doc.meaning
        assert doc.meaning


def test_readme_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme_table(readme)
    assert table is not None, (
        f"README.md needs the settings table between {TABLE_START} and {TABLE_END} "
        "(the text of bot.settings_docs.render_markdown_table())"
    )
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.MULTILINE)
    expected = [doc.env for doc in setting_docs()]
    assert sorted(set(expected) - set(listed)) == [], f"missing from the README table; {REGENERATE}"
    assert sorted(set(listed) - set(expected)) == [], (
        f"in the README table but not in the model; {REGENERATE}"
    )
    assert table == render_markdown_table(), f"the README table differs from the model; {REGENERATE}"


def test_table_rows_show_defaults_as_an_admin_writes_them() -> None:
    rows = {
        match[0]: match[1]
        for match in re.findall(
            r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", render_markdown_table(), flags=re.MULTILINE
        )
    }
    assert rows["DISCORD_TOKEN"] == "required"
    assert rows["FREEPIK_API_KEY"] == "empty"
    assert rows["DATABASE_PATH"] == "`data/bot.sqlite3`"
    assert rows["FREEPIK_BASE_URL"] == "`https://api.freepik.com`"
    assert rows["POLL_INTERVAL_SECONDS"] == "`2`"
    assert rows["MENTION_TRIGGER"] == "`false`"


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("doc", [doc for doc in setting_docs() if doc.default], ids=lambda doc: doc.env)
def test_each_rendered_default_reads_back_as_the_default(
    doc: SettingDoc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(doc.env, doc.default)
    model, name = model_of(doc.env)
    settings = load_settings(env_file=None)
    read = getattr(settings if model is Settings else settings.providers[section_name(model)], name)
    assert read == model.model_fields[name].get_default(call_default_factory=True)


def model_of(env: str) -> tuple[type[Any], str]:
    """Return the settings model (the bot's own, or a provider's section) and field an env name belongs to."""
    for spec in PROVIDERS:
        if env.startswith(spec.env_prefix):
            return spec.settings, env.removeprefix(spec.env_prefix).lower()
    return Settings, env.lower()


def section_name(model: type[Any]) -> str:
    return next(spec.name for spec in PROVIDERS if spec.settings is model)
