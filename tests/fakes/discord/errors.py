"""Discord's answers in its own shapes: JSON bodies, error codes and the Invalid Form Body `errors` tree."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """Answer JSON with a Content-Type of exactly application/json, as discord.py's json_or_text requires."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


def no_content() -> web.Response:
    """Answer 204 No Content."""
    return web.Response(status=204)


class DiscordError(Exception):
    """An error answer in Discord's JSON error shape."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def response(self) -> web.Response:
        """Build the JSON error response."""
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return json_response(self.status, body)


class RefusedRequest(DiscordError):
    """A request Discord itself would refuse whatever its timing: the fake records it as a violation.

    `reason` is the short sentence that goes into `FakeDiscord.violations`, after the method and path.
    """

    def __init__(
        self, status: int, code: int, message: str, reason: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, code, message, errors)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field of a request body that Discord refuses, e.g. ("embeds", 0, "title")."""

    path: tuple[str | int, ...]
    code: str
    message: str

    @property
    def where(self) -> str:
        """Name the field with dots, as Discord's error tree nests it ("body" for the whole body)."""
        return ".".join(str(part) for part in self.path) or "body"


def _error_tree(errors: Sequence[FieldError]) -> dict[str, Any]:
    """Nest field errors the way Discord does: {"embeds": {"0": {"title": {"_errors": [...]}}}}."""
    tree: dict[str, Any] = {}
    for error in errors:
        node = tree
        for part in error.path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": error.code, "message": error.message})
    return tree


def invalid_form_body(errors: Sequence[FieldError]) -> RefusedRequest:
    """Refuse a request with 400 Invalid Form Body (50035) naming every field that broke a rule."""
    reason = "; ".join(f"{error.where}: {error.message}" for error in errors)
    return RefusedRequest(400, 50035, "Invalid Form Body", reason, _error_tree(errors))


def form_error(path: str, code: str, message: str) -> DiscordError:
    """Answer 400 Invalid Form Body for one dotted field path, for a refusal that depends on the fake's state."""
    parts = tuple(part for part in path.split(".") if part)
    return DiscordError(400, 50035, "Invalid Form Body", _error_tree([FieldError(parts, code, message)]))
