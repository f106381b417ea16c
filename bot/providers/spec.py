"""What the registry knows of a provider: its settings section, the name members see, how to build it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
from pydantic import ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.domain.ports import Provider


class ProviderSettings(BaseSettings):
    """One provider's section of the settings, read from its own prefix (FREEPIK_*, ...) beside the rest."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # `.env.example` lists every setting with an empty value; empty means "not set" for optional ones.
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and field.default is None and isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def configured(self) -> bool:
        """Whether the admin set this provider up (its key or its address is given)."""
        raise NotImplementedError

    def problems(self) -> list[str]:
        """Return what stops this section from working, one line each (settings that need each other)."""
        return []


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What every provider is built with, besides its own settings."""

    session: aiohttp.ClientSession
    request_timeout: float


S = TypeVar("S", bound=ProviderSettings)


@dataclass(frozen=True, slots=True)
class ProviderSpec(Generic[S]):
    """A provider as the registry lists it."""

    name: str  # in settings values, the /describe option's value, the database and the logs
    title: str  # its fixed name, in the /describe option's choices
    settings: type[S]
    enabled_by: str  # the setting that switches it on
    key_setting: str | None  # the setting a refused key is blamed on (None: it takes no key)
    address_setting: str  # the setting an unreachable provider is blamed on
    build: Callable[[S, BuildContext], Provider]
    model_setting: str | None = None  # the setting naming the model, where the admin chooses one
    # What members see in results, when the admin may rename it (an OpenAI-compatible server); else the title.
    label: Callable[[S], str] | None = None
    # What a passing `check --live` proved, after "ok: NAME "; else "accepted KEY_SETTING".
    live_check_summary: Callable[[S], str] | None = None

    def display_name(self, settings: S) -> str:
        return self.label(settings) if self.label is not None else self.title

    def live_check_passed(self, settings: S) -> str:
        if self.live_check_summary is not None:
            return self.live_check_summary(settings)
        return f"accepted {self.key_setting}"

    @property
    def env_prefix(self) -> str:
        return str(self.settings.model_config.get("env_prefix", "")).upper()

    def setting_name(self, field: str) -> str:
        """Return the environment variable of one of this provider's fields."""
        return f"{self.env_prefix}{field}".upper()
