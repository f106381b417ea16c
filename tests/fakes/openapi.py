"""Check requests the bot sent to the fake Freepik against Freepik's own OpenAPI file."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.fakes.providers import RecordedRequest

SPEC_PATH: Final = Path(__file__).resolve().parent.parent / "data" / "freepik-openapi.yaml"
# The spec's only server; requests are validated as if sent there, so the fake's port never matters.
SPEC_HOST_URL: Final = "https://api.freepik.com"


class FreepikContractError(AssertionError):
    """A recorded request that Freepik's OpenAPI file does not allow."""


def _is_uri(value: object) -> bool:
    """Tell whether a value is an absolute URI (scheme and something after it)."""
    # openapi-core only checks format "uri" when the optional rfc3987 package is installed, and
    # it is not: without this, webhook_url="not a url" passes silently.
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc or parts.path) and " " not in value


@functools.cache
def freepik_openapi() -> OpenAPI:
    """Load and check the Freepik spec once per test session."""
    return OpenAPI.from_file_path(str(SPEC_PATH), config=Config(extra_format_validators={"uri": _is_uri}))


@dataclass(slots=True)
class _SpecRequest:
    """A RecordedRequest seen through openapi-core's Request protocol."""

    method: str
    path: str
    body: bytes | None
    content_type: str
    host_url: str = SPEC_HOST_URL
    parameters: RequestParameters = field(default_factory=RequestParameters)

    @classmethod
    def from_recorded(cls, req: RecordedRequest) -> _SpecRequest:
        """Build the protocol object from what the fake recorded."""
        return cls(
            method=req.method.lower(),
            path=req.path,
            body=req.raw or None,
            content_type=req.headers.get("content-type", "").lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(req.query),
                header=Headers(req.headers),
            ),
        )


def validate_freepik_request(req: RecordedRequest) -> None:
    """Raise FreepikContractError unless the request conforms to Freepik's OpenAPI file."""
    # A fake built with record_bodies=False keeps no body, so its POSTs fail here as bodiless.
    try:
        freepik_openapi().validate_request(_SpecRequest.from_recorded(req))
    except OpenAPIError as exc:
        raise FreepikContractError(f"{req.method} {req.path}: {_explain(exc)}") from exc


def _explain(exc: BaseException) -> str:
    """Join an openapi-core error with the schema errors it wraps (they hold the useful part)."""
    parts: list[str] = [str(exc)]
    cause: Any = exc.__cause__
    while cause is not None:
        parts.append(str(cause))
        parts.extend(str(error.message) for error in getattr(cause, "schema_errors", ()) or ())
        cause = cause.__cause__
    return " | ".join(dict.fromkeys(p for p in parts if p))
