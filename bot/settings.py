"""The one settings model: environment variables and `.env`, validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ProviderName = Literal["freepik", "novita"]
# The order in which a default image-to-prompt provider is picked when DESCRIBE_PROVIDER is unset.
DESCRIBE_PROVIDER_ORDER: tuple[ProviderName, ...] = ("freepik", "novita")


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
    database_path: Path = Field(
        Path("data/bot.sqlite3"), description="the SQLite file; its folder is created"
    )

    freepik_api_key: SecretStr | None = Field(
        None, description="enables the Freepik provider (image-to-prompt and image generation)"
    )
    freepik_base_url: HttpUrl = Field(
        HttpUrl("https://api.freepik.com"),
        description="where Freepik requests go (a proxy, the renamed host, or a local fake)",
    )
    freepik_api_key_header: str = Field(
        "x-freepik-api-key",
        description="the header that carries the Freepik key (`x-magnific-api-key` on the renamed host)",
    )
    novita_api_key: SecretStr | None = Field(
        None, description="enables the Novita provider (image-to-prompt)"
    )
    novita_base_url: HttpUrl = Field(HttpUrl("https://api.novita.ai"), description="where Novita requests go")
    describe_provider: ProviderName | None = Field(
        None, description="default provider for image-to-prompt (first configured of freepik, novita)"
    )

    poll_interval_seconds: float = Field(
        2.0, gt=0, description="first wait before polling an async task; later waits grow"
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

    mention_trigger: bool = Field(
        False,
        description="describe the image of a replied-to message when a member mentions the bot "
        "(needs the message content intent)",
    )
    describe_cache_days: int = Field(
        30,
        ge=0,
        description="the same image described by the same provider within this many days is "
        "answered from the database (0: off)",
    )
    max_inflight_per_user: int = Field(2, ge=1, description="running tasks one member may have at once")
    max_inflight_per_provider: int = Field(20, ge=1, description="running tasks per provider at once")
    usage_retention_days: int = Field(90, ge=1, description="usage rows older than this are pruned")
    edit_coalesce_seconds: float = Field(
        1.0, ge=0, description="task states that arrive within this many seconds send only the latest edit"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log verbosity")
    log_format: Literal["text", "json"] = Field("text", description="`json` for one JSON object per line")

    @field_validator("discord_guild_ids", mode="before")
    @classmethod
    def _split_guild_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("discord_token", "freepik_api_key", "novita_api_key", "webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `.env.example` lists every key with an empty value; empty means "not configured".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("webhook_public_url", "describe_provider", mode="before")
    @classmethod
    def _blank_optional(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.poll_max_interval_seconds < self.poll_interval_seconds:
            raise ValueError("POLL_MAX_INTERVAL_SECONDS must not be below POLL_INTERVAL_SECONDS")
        if self.describe_provider is not None and self.describe_provider not in self.configured_providers:
            key = f"{self.describe_provider.upper()}_API_KEY"
            raise ValueError(f"DESCRIBE_PROVIDER is {self.describe_provider} but {key} is not set")
        return self

    @property
    def configured_providers(self) -> tuple[ProviderName, ...]:
        """Return the providers that have a key, in preference order."""
        keys = {"freepik": self.freepik_api_key, "novita": self.novita_api_key}
        return tuple(name for name in DESCRIBE_PROVIDER_ORDER if keys[name] is not None)

    @property
    def default_describe_provider(self) -> ProviderName | None:
        """Return DESCRIBE_PROVIDER, else the first configured provider."""
        configured = self.configured_providers
        return self.describe_provider or (configured[0] if configured else None)

    @property
    def webhooks_enabled(self) -> bool:
        return self.webhook_public_url is not None and self.webhook_secret is not None

    def run_problems(self) -> list[str]:
        """Return what stops the bot from running, one line each (empty when it can run)."""
        problems = []
        if self.discord_token is None:
            problems.append(
                "DISCORD_TOKEN is not set: put the bot token from the Discord developer portal in .env"
            )
        if not self.configured_providers:
            problems.append("no provider is configured: set FREEPIK_API_KEY or NOVITA_API_KEY in .env")
        if (self.webhook_public_url is None) != (self.webhook_secret is None):
            problems.append("webhooks need both WEBHOOK_PUBLIC_URL and WEBHOOK_SECRET (or neither)")
        return problems


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError([_describe_error(error) for error in exc.errors()]) from None


def _describe_error(error: Any) -> str:
    location = error.get("loc") or ()
    name = str(location[0]).upper() if location else "settings"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if not location:
        return message
    # Never echo the input back: it may be a key pasted into the wrong variable.
    return f"{name}: {message}"
