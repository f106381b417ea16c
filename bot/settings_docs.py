"""The settings reference, made from the settings model: `.env.example` and the README table."""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyUrl, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from bot.providers.registry import PROVIDERS
from bot.settings import Settings

ENV_EXAMPLE_HEADER = (
    "# Copy to .env and fill in. Every setting, with its default; an empty value means 'not set'.\n"
    "# Generated from the settings model (bot/settings.py) by bot/settings_docs.py; tests keep it in step.\n"
)
TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


@dataclass(frozen=True)
class SettingDoc:
    """One setting as an admin sees it."""

    env: str  # the environment variable
    default: str  # the default as it is written in `.env` ("" when unset)
    required: bool  # the bot refuses to run while it is unset
    meaning: str  # one line
    choices: tuple[str, ...] = ()  # the only values accepted, when the model lists them

    def explained(self, quote: str = "") -> str:
        """Return the meaning, with the accepted values when the meaning does not name them all."""
        if all(choice in self.meaning for choice in self.choices):
            return self.meaning
        return f"{self.meaning} (one of: {', '.join(f'{quote}{choice}{quote}' for choice in self.choices)})"


def setting_docs() -> list[SettingDoc]:
    """Return every setting: the bot's own, with each provider's section right after the database."""
    core = model_docs(Settings)
    after_database = next(i for i, doc in enumerate(core) if doc.env == "DATABASE_PATH") + 1
    providers = [doc for spec in PROVIDERS for doc in model_docs(spec.settings)]
    return core[:after_database] + providers + core[after_database:]


def model_docs(model: type[BaseSettings]) -> list[SettingDoc]:
    """Return every setting of one model (or provider section), in the model's order."""
    prefix = str(model.model_config.get("env_prefix") or "")
    required = _required_to_run(model, prefix) if issubclass(model, Settings) else set()
    docs = []
    for name, field in model.model_fields.items():
        env = f"{prefix}{name}".upper()
        default = field.get_default(call_default_factory=True)
        if default is PydanticUndefined:
            default = None
        docs.append(
            SettingDoc(
                env=env,
                default=env_value(default),
                required=env in required,
                meaning=" ".join((field.description or "").split()),
                choices=tuple(env_value(choice) for choice in _literal_choices(field.annotation)),
            )
        )
    return docs


def env_value(value: Any) -> str:
    """Write a value the way an admin writes it in `.env` (and the model reads it back)."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(env_value(item) for item in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, AnyUrl):
        text = str(value)
        # pydantic adds "/" to a bare host; admins write "https://api.example.com".
        return text[:-1] if value.path == "/" and not value.query and text.endswith("/") else text
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def render_env_example(docs: list[SettingDoc] | None = None) -> str:
    """Return the text of `.env.example`: every setting with its meaning and default."""
    blocks = [ENV_EXAMPLE_HEADER]
    for doc in docs if docs is not None else setting_docs():
        meaning = doc.explained()
        if doc.required and "required" not in meaning:
            meaning += " (required)"
        blocks.append(f"# {meaning}\n{doc.env}={doc.default}\n")
    return "\n".join(blocks)


def render_markdown_table(docs: list[SettingDoc] | None = None) -> str:
    """Return the README's settings table (markdown, ending in a newline)."""
    lines = ["| name | default | meaning |", "|---|---|---|"]
    for doc in docs if docs is not None else setting_docs():
        if doc.required:
            default = "required"
        elif doc.default:
            default = f"`{doc.default}`"
        else:
            default = "empty"
        lines.append(f"| `{doc.env}` | {default} | {_cell(doc.explained(quote='`'))} |")
    return "\n".join(lines) + "\n"


def readme_table(readme_text: str) -> str | None:
    """Return the text between the settings-table markers of a README, or None without them."""
    start = readme_text.find(TABLE_START)
    end = readme_text.find(TABLE_END)
    if start < 0 or end < start:
        return None
    return readme_text[start + len(TABLE_START) : end].strip("\n") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    """Return the values of a Literal annotation (also inside `X | None`), else nothing."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(
            value
            for arg in typing.get_args(annotation)
            if arg is not type(None)
            for value in _literal_choices(arg)
        )
    return ()


def _required_to_run(model: type[Settings], prefix: str) -> set[str]:
    """Return the variables the model's own run check asks for when everything is at its default."""
    defaults = model.model_construct()
    names = {f"{prefix}{name}".upper() for name in model.model_fields}
    return {
        problem.split(" ", 1)[0] for problem in defaults.run_problems() if problem.split(" ", 1)[0] in names
    }


def write_docs(root: Path) -> list[str]:
    """Rewrite `.env.example`, and the README table between its markers; return the files changed."""
    changed = []
    env_example = root / ".env.example"
    text = render_env_example()
    if not env_example.exists() or env_example.read_text(encoding="utf-8") != text:
        env_example.write_text(text, encoding="utf-8")
        changed.append(env_example.name)
    readme = root / "README.md"
    if readme.exists():
        current = readme.read_text(encoding="utf-8")
        if readme_table(current) is not None:
            head, rest = current.split(TABLE_START, 1)
            tail = rest.split(TABLE_END, 1)[1]
            updated = f"{head}{TABLE_START}\n{render_markdown_table()}\n{TABLE_END}{tail}"
            if updated != current:
                readme.write_text(updated, encoding="utf-8")
                changed.append(readme.name)
    return changed


if __name__ == "__main__":
    # `python -m bot.settings_docs` after changing the settings model: the tests compare against this.
    import sys

    done = write_docs(Path.cwd())
    sys.stdout.write(f"updated: {', '.join(done)}\n" if done else "up to date\n")
