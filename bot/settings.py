"""The settings: environment variables and `.env`, validated once at start.

The bot's own settings are one model; each provider's are a section of their own (FREEPIK_*, NOVITA_*),
defined with the provider and listed by the registry. `load_settings` reads them all and says every
problem in one line each.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, HttpUrl, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.providers.registry import BY_NAME, PROVIDERS
from bot.providers.spec import ProviderSettings
from bot.store.postgres.url import is_postgres_url
from bot.ui.catalogues import SOURCE_LOCALE, available_locales, speaks


def _either(names: Any) -> str:
    """Return "A or B" / "A, B or C"."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class SettingsError(Exception):
    """Settings that cannot run the bot; each problem is one line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    """Every setting of the bot; the field's description is its line in `.env.example` and the README."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr | None = Field(None, description="bot token (required to run the bot)")
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="comma-separated guild ids: commands are synced to these guilds (instant) "
        "instead of globally",
    )
    shard_count: int | None = Field(
        None,
        ge=1,
        description="total number of Discord shards across all processes (empty: one process, "
        "Discord's recommendation)",
    )
    shard_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="comma-separated shard ids this process runs (empty: all of them)"
    )
    database_path: Path = Field(
        Path("data/bot.sqlite3"), description="the SQLite file; its folder is created"
    )
    database_url: SecretStr | None = Field(
        None,
        description="`postgresql://user:password@host:5432/db`: keep everything in PostgreSQL instead of "
        "the SQLite file; needed to run several bot processes",
    )
    job_lease_seconds: float = Field(
        30.0,
        ge=1,
        description="with DATABASE_URL: a process holds its running tasks this long between renewals; "
        "when it dies, another process takes them over once the hold runs out",
    )

    describe_provider: str | None = Field(
        None,
        description="default provider for image-to-prompt (first configured of "
        + ", ".join(spec.name for spec in PROVIDERS)
        + ")",
    )

    poll_interval_seconds: float = Field(
        2.0,
        gt=0,
        description="first wait before polling an async task while the bot has not yet learned how long "
        "that provider's tasks take (later waits grow); once it has, it polls where tasks end, spending "
        "at most 3/4 of the polls that polling this often would",
    )
    poll_max_interval_seconds: float = Field(10.0, gt=0, description="the longest wait between two polls")
    task_timeout_seconds: float = Field(
        600.0, gt=0, description="a task not finished by then is reported as timed out (and refunded)"
    )

    request_timeout_seconds: float = Field(
        30.0, gt=0, description="how long one request to a provider may take before it is given up"
    )

    quota_describe_per_day: int = Field(
        25, ge=-1, description="default image-to-prompt tasks per user per UTC day (-1: unlimited)"
    )
    quota_imagine_per_day: int = Field(
        10, ge=-1, description="default image generations per user per UTC day (-1: unlimited)"
    )
    max_image_bytes: int = Field(20_000_000, gt=0, description="largest input image accepted (bytes)")

    webhook_public_url: HttpUrl | None = Field(
        None,
        description="when set (with WEBHOOK_SECRET), tasks are created with a webhook and the bot listens",
    )
    webhook_secret: SecretStr | None = Field(None, description="the provider's webhook signing secret")
    webhook_port: int = Field(8080, ge=0, le=65535, description="where the webhook listener binds")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="when set, GET /metrics on this port answers in the Prometheus text format "
        "(a listener of its own, on every interface like the webhook one)",
    )

    mention_trigger: bool = Field(
        False,
        description="describe the image of a replied-to message when a member mentions the bot "
        "(needs the message content intent)",
    )
    default_locale: str = Field(
        SOURCE_LOCALE,
        description="the language of messages that belong to no member (a result posted anew in a channel, "
        "the mention trigger's reply) when the server chose none the bot speaks (Discord says en-US of "
        "every server that is not a Community): " + _either(available_locales()),
    )
    describe_cache_days: int = Field(
        30,
        ge=0,
        description="the same image described by the same provider within this many days is "
        "answered from the database (0: off)",
    )
    max_inflight_per_user: int = Field(
        2, ge=1, description="running tasks one member may have at once (more wait in line)"
    )
    max_inflight_per_provider: int = Field(
        20, ge=1, description="running tasks per provider at once (more wait in line)"
    )
    max_queue_per_provider: int = Field(
        200, ge=0, description="tasks that may wait in line for a provider beyond `MAX_INFLIGHT_PER_PROVIDER`"
    )
    usage_retention_days: int = Field(90, ge=1, description="usage rows older than this are pruned")
    edit_coalesce_seconds: float = Field(
        1.0, ge=0, description="task states that arrive within this many seconds send only the latest edit"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log verbosity")
    log_format: Literal["text", "json"] = Field("text", description="`json` for one JSON object per line")

    @field_validator("discord_guild_ids", "shard_ids", mode="before")
    @classmethod
    def _split_guild_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("default_locale")
    @classmethod
    def _spoken_locale(cls, value: str) -> str:
        locale = value.strip().replace("_", "-")
        if not speaks(locale):
            raise ValueError(f"is not a language the bot speaks (one of: {', '.join(available_locales())})")
        # Spelt as Discord spells it ("pt_br" is pt-BR).
        return next((code for code in available_locales() if code.lower() == locale.lower()), locale)

    _providers: dict[str, ProviderSettings] = PrivateAttr(default_factory=dict)

    @field_validator("discord_token", "webhook_secret", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `.env.example` lists every key with an empty value; empty means "not configured".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("webhook_public_url", "describe_provider", "shard_count", "metrics_port", mode="before")
    @classmethod
    def _blank_optional(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _metrics_port_is_its_own(self) -> Settings:
        if self.metrics_port and self.webhooks_enabled and self.metrics_port == self.webhook_port:
            raise ValueError("METRICS_PORT must differ from WEBHOOK_PORT: each listener needs its own port")
        return self

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr | None) -> SecretStr | None:
        # The value is never echoed: it holds a password.
        if value is not None and not is_postgres_url(value.get_secret_value()):
            raise ValueError(
                "must be a PostgreSQL URL, postgresql://user:password@host:5432/database "
                "(leave it empty to keep the SQLite file at DATABASE_PATH)"
            )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.poll_max_interval_seconds < self.poll_interval_seconds:
            raise ValueError("POLL_MAX_INTERVAL_SECONDS must not be below POLL_INTERVAL_SECONDS")
        if self.shard_ids:
            if self.shard_count is None:
                raise ValueError(
                    "SHARD_IDS needs SHARD_COUNT, the total number of shards across all processes"
                )
            outside = sorted({shard for shard in self.shard_ids if not 0 <= shard < self.shard_count})
            if outside:
                raise ValueError(
                    f"SHARD_IDS has {', '.join(map(str, outside))}, but with SHARD_COUNT={self.shard_count} "
                    f"shard ids go from 0 to {self.shard_count - 1}"
                )
            if len(set(self.shard_ids)) != len(self.shard_ids):
                raise ValueError("SHARD_IDS names a shard twice")
        return self

    @property
    def providers(self) -> Mapping[str, ProviderSettings]:
        """Return every provider's settings section by name (configured or not)."""
        return self._providers

    @property
    def configured_providers(self) -> tuple[str, ...]:
        """Return the providers the admin set up, in preference order."""
        return tuple(
            spec.name
            for spec in PROVIDERS
            if spec.name in self._providers and self._providers[spec.name].configured
        )

    @property
    def default_describe_provider(self) -> str | None:
        """Return DESCRIBE_PROVIDER, else the first configured provider."""
        configured = self.configured_providers
        return self.describe_provider or (configured[0] if configured else None)

    @property
    def webhooks_enabled(self) -> bool:
        return self.webhook_public_url is not None and self.webhook_secret is not None

    @property
    def uses_postgres(self) -> bool:
        """Return whether the data lives in PostgreSQL (DATABASE_URL) rather than the SQLite file."""
        return self.database_url is not None

    @property
    def runs_some_shards(self) -> bool:
        """Return whether this process runs only part of the shards (others run the rest)."""
        return (
            bool(self.shard_ids) and self.shard_count is not None and len(self.shard_ids) < self.shard_count
        )

    def run_problems(self) -> list[str]:
        """Return what stops the bot from running, one line each (empty when it can run)."""
        problems = []
        if self.discord_token is None:
            problems.append(
                "DISCORD_TOKEN is not set: put the bot token from the Discord developer portal in .env"
            )
        if not self.configured_providers:
            problems.append(no_provider_problem())
        if (self.webhook_public_url is None) != (self.webhook_secret is None):
            problems.append("webhooks need both WEBHOOK_PUBLIC_URL and WEBHOOK_SECRET (or neither)")
        if self.runs_some_shards and not self.uses_postgres:
            problems.append(
                "SHARD_IDS runs only some of the shards, so other processes run the rest, and processes "
                "can only share a PostgreSQL database: set DATABASE_URL (README: Running several processes)"
            )
        return problems


def load_settings(values: Mapping[str, Any] | None = None, *, env_file: str | None = ".env") -> Settings:
    """Read the settings (environment, `.env`, and `values` by field name); one line per problem."""
    given = dict(values or {})
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings(
            _env_file=env_file, **{k: v for k, v in given.items() if k in Settings.model_fields}
        )
    except ValidationError as exc:
        problems += [_describe_error(error) for error in exc.errors()]
    sections: dict[str, ProviderSettings] = {}
    for spec in PROVIDERS:
        prefix = spec.env_prefix.lower()
        own = {
            key.removeprefix(prefix): value
            for key, value in given.items()
            if key.startswith(prefix) and key.removeprefix(prefix) in spec.settings.model_fields
        }
        try:
            sections[spec.name] = spec.settings(_env_file=env_file, **own)
        except ValidationError as exc:
            problems += [_describe_error(error, prefix=spec.env_prefix) for error in exc.errors()]
        else:
            problems += sections[spec.name].problems()
    if settings is not None and not problems:
        settings._providers = sections
        problems += _describe_provider_problems(settings)
    if problems or settings is None:
        raise SettingsError(problems)
    return settings


def _describe_provider_problems(settings: Settings) -> list[str]:
    chosen = settings.describe_provider
    if chosen is None:
        return []
    spec = BY_NAME.get(chosen)
    if spec is None:
        return [f"DESCRIBE_PROVIDER is {chosen!r}, which is not a provider (one of: {', '.join(BY_NAME)})"]
    if chosen not in settings.configured_providers:
        return [f"DESCRIBE_PROVIDER is {chosen} but {spec.enabled_by} is not set"]
    return []


def no_provider_problem() -> str:
    return f"no provider is configured: set {_either(spec.enabled_by for spec in PROVIDERS)} in .env"


def _describe_error(error: Any, *, prefix: str = "") -> str:
    location = error.get("loc") or ()
    name = f"{prefix}{location[0]}".upper() if location else "settings"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if not location:
        return message
    # Never echo the input back: it may be a key pasted into the wrong variable.
    return f"{name}: {message}"
