"""Check every REST request the bot sends against Discord's OpenAPI spec and Discord's documented limits.

Two layers, in this order:

1. The spec (tests/data/discord-openapi.json, from discord/discord-api-spec): the route and method, the
   path parameters, and the JSON body (for multipart requests, its payload_json part) against the
   operation's request body schema. The file is loaded and its routes indexed once per process; each
   operation's validators are built on its first request. jsonschema does the checking: openapi-core
   (which the Freepik contract tests use) costs about 3.5 ms per request on this 1.2 MB spec, too much
   for a fake that a benchmark drives with hundreds of commands at once.
2. Discord's documented limits that the spec does not encode, or encodes differently (the bot limit
   on content is 2,000 where the spec says 4,000 for channel messages), plus the rules Discord applies
   across fields: embeds' 6,000 characters in all, 5 action rows, one select per row, unique names.

A request that breaks either is refused as Discord refuses it (a RefusedRequest: 400 50035 with an
`errors` tree naming each field, or 404/405 for a route or method Discord does not have), and the fake
records it in `FakeDiscord.violations`.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import relevance
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.fakes.discord.constants import (
    ATTACHMENT_SIZE_LIMIT,
    CALLBACKS_FOR,
    CB_AUTOCOMPLETE,
    CB_MESSAGE,
    CB_MODAL,
    CB_UPDATE,
    FLAG_COMPONENTS_V2,
    FLAG_LOADING,
    SUBCOMMAND,
    SUBCOMMAND_GROUP,
)
from tests.fakes.discord.errors import FieldError, RefusedRequest, invalid_form_body

SPEC_PATH: Final = Path(__file__).resolve().parents[2] / "data" / "discord-openapi.json"
_SPEC_URI: Final = "urn:discord-openapi"
_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# ---------------------------------------------------------------------------------------------- the spec

# Where real Discord accepts what discord.py sends and the spec does not describe it, the spec is
# widened at load time, each case for the reason given. Nothing else is tolerated.
_SNOWFLAKE_MAX: Final = 2**64 - 1
_DECIMAL: Final = "^(0|[1-9][0-9]*)$"


def _tolerate(document: dict[str, Any]) -> None:
    """Widen the spec where real Discord accepts what discord.py really sends."""
    schemas = document["components"]["schemas"]
    # 1. Snowflakes as JSON integers. The spec types every snowflake as a decimal string, but Discord
    #    reads integers as well, and discord.py sends ints in request bodies: the upload index of a new
    #    attachment ({"id": 0, "filename": ...}, as every file upload or edit sends it),
    #    message_reference.message_id/channel_id/guild_id (replies), allowed_mentions.users/roles, and
    #    recipient_id (opening a DM). Strings still have to be decimal digits.
    snowflake = schemas["SnowflakeType"]
    schemas["SnowflakeType"] = {
        **snowflake,
        "type": ["string", "integer"],
        "minimum": 0,
        "maximum": _SNOWFLAKE_MAX,
    }
    # 2. default_member_permissions as a string. The spec says integer; Discord's documentation says
    #    "?string" (a permission bit set, which outgrows a double), and the spec's README says "Our API
    #    accepts strings for int fields if they are parseable as ints". discord.py 2.7 sends the int
    #    (Permissions.value), which the spec allows; this keeps the documented string form valid too.
    for name in (
        "ApplicationCommandCreateRequest",
        "ApplicationCommandUpdateRequest",
        "ApplicationCommandPatchRequestPartial",
    ):
        prop = schemas[name]["properties"]["default_member_permissions"]
        prop["type"] = [*prop["type"], "string"]
        prop["pattern"] = _DECIMAL
    # Two rewrites for speed that accept and refuse exactly what the spec does:
    # - every oneOf becomes anyOf. The spec's README: "Even though we define anyOf and oneOf unions,
    #   they all mean that only one type from the list can be used"; its unions are told apart by a
    #   `type` property, by const values, or null against an object. anyOf stops at the first branch
    #   that matches where oneOf tries every branch.
    # - every $ref to a schema is replaced by the schema itself, so a validation walks Python dicts
    #   instead of resolving JSON pointers through `referencing` at each step.
    # Measured: an edit with an embed and buttons 2.9 -> 0.6 ms, a command sync 32 -> 14 ms.
    _one_of_to_any_of(document)
    _inline_schema_refs(document)


def _one_of_to_any_of(node: Any) -> None:
    if isinstance(node, dict):
        if "oneOf" in node:
            node["anyOf"] = node.pop("oneOf")
        for value in node.values():
            _one_of_to_any_of(value)
    elif isinstance(node, list):
        for value in node:
            _one_of_to_any_of(value)


_SCHEMA_REF: Final = "#/components/schemas/"


def _inline_schema_refs(document: dict[str, Any]) -> None:
    """Replace each {"$ref": "#/components/schemas/X"} by X itself (shared, not copied; the spec has no cycles)."""
    schemas = document["components"]["schemas"]
    # What each dict became, so that a schema shared by many places is walked once and stays shared.
    inlined: dict[int, Any] = {}

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(value) for value in node]
        if not isinstance(node, dict):
            return node
        if id(node) in inlined:
            return inlined[id(node)]
        inlined[id(node)] = node
        for key, value in node.items():
            node[key] = inline(value)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMA_REF):
            target = inline(schemas[ref[len(_SCHEMA_REF) :]])
            if len(node) == 1:
                inlined[id(node)] = target
            else:
                # A $ref beside other keywords applies both (JSON Schema 2020-12): keep those, add the target.
                siblings = {key: value for key, value in node.items() if key != "$ref"}
                siblings["allOf"] = [*siblings.get("allOf", []), target]
                inlined[id(node)] = siblings
        return inlined[id(node)]

    for name in list(schemas):
        schemas[name] = inline(schemas[name])
    document["paths"] = inline(document["paths"])


def _pointer(*parts: str | int) -> str:
    """Build a JSON pointer into the spec, escaped per RFC 6901."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass
class _Operation:
    """One method of one path template, with validators built on first use."""

    method: str
    template: str
    operation_id: str
    param_pointers: dict[str, str]
    body_pointer: str | None
    body_required: bool
    _registry: Registry[Any] = field(repr=False)
    _params: dict[str, Draft202012Validator] | None = field(default=None, repr=False)
    _body: Draft202012Validator | None = field(default=None, repr=False)

    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{_SPEC_URI}#{pointer}"}, registry=self._registry)

    def params(self) -> dict[str, Draft202012Validator]:
        """Give a validator per path parameter."""
        if self._params is None:
            self._params = {name: self._validator(ptr) for name, ptr in self.param_pointers.items()}
        return self._params

    def body(self) -> Draft202012Validator | None:
        """Give the request body's validator, or None when the operation takes no body."""
        if self._body is None and self.body_pointer is not None:
            self._body = self._validator(self.body_pointer)
        return self._body


@dataclass
class _Template:
    """A path template as a regex, with its operations by upper-case method."""

    template: str
    regex: re.Pattern[str]
    specificity: tuple[int, ...]
    operations: dict[str, _Operation]


class DiscordSpec:
    """Discord's OpenAPI spec, indexed for matching requests to operations."""

    def __init__(self, document: dict[str, Any], load_seconds: float = 0.0) -> None:
        self.load_seconds = load_seconds
        resource: Resource[Any] = Resource.from_contents(document, default_specification=DRAFT202012)
        registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
        by_length: dict[int, list[_Template]] = defaultdict(list)
        for template, item in document["paths"].items():
            segments = template.strip("/").split("/")
            regex = re.compile(
                "/"
                + "/".join(
                    re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(segment)) for segment in segments
                )
            )
            shared = {p["name"]: i for i, p in enumerate(item.get("parameters", [])) if p.get("in") == "path"}
            operations = {}
            for method in _METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                params = {
                    name: _pointer("paths", template, "parameters", i, "schema") for name, i in shared.items()
                }
                for i, param in enumerate(operation.get("parameters", [])):
                    if param.get("in") == "path":
                        params[param["name"]] = _pointer("paths", template, method, "parameters", i, "schema")
                body = operation.get("requestBody") or {}
                content = body.get("content") or {}
                # A multipart body's JSON travels in its payload_json part, which follows the JSON schema.
                media = next((m for m in ("application/json", "multipart/form-data") if m in content), None)
                operations[method.upper()] = _Operation(
                    method=method.upper(),
                    template=template,
                    operation_id=operation.get("operationId", ""),
                    param_pointers=params,
                    body_pointer=None
                    if media is None
                    else _pointer("paths", template, method, "requestBody", "content", media, "schema"),
                    body_required=bool(body.get("required")),
                    _registry=registry,
                )
            # At the first segment where two templates differ, a literal (@me, @original) beats a parameter.
            specificity = tuple(1 if "{" in segment else 0 for segment in segments)
            by_length[len(segments)].append(_Template(template, regex, specificity, operations))
        self._templates = {n: sorted(ts, key=lambda t: t.specificity) for n, ts in by_length.items()}

    def operation(self, method: str, path: str) -> tuple[_Operation, dict[str, str]]:
        """Match a request to its operation, refusing it as Discord does when there is none (404, 405)."""
        matched_path = False
        for template in self._templates.get(len(path.strip("/").split("/")), ()):
            match = template.regex.fullmatch(path)
            if match is None:
                continue
            matched_path = True
            operation = template.operations.get(method)
            if operation is not None:
                return operation, match.groupdict()
        if matched_path:
            raise RefusedRequest(405, 0, "405: Method Not Allowed", f"Discord has no {method} for this path")
        raise RefusedRequest(404, 0, "404: Not Found", "Discord has no such route")

    def check(self, operation: _Operation, params: Mapping[str, str], body: Any) -> None:
        """Refuse path parameters or a body that the operation's schemas do not allow."""
        errors: list[FieldError] = []
        for name, validator in operation.params().items():
            value = params.get(name)
            if value is not None:
                errors.extend(_field_errors(validator, value, prefix=(name,)))
        validator = operation.body()
        if validator is not None:
            if body is None:
                if operation.body_required:
                    errors.append(FieldError((), "BASE_TYPE_REQUIRED", "This field is required"))
            else:
                errors.extend(_field_errors(validator, body))
        if errors:
            raise invalid_form_body(errors)


@functools.cache
def discord_spec() -> DiscordSpec:
    """Load, widen and index the spec once per process (it is 1.2 MB)."""
    started = time.perf_counter()
    document = json.loads(SPEC_PATH.read_bytes())
    _tolerate(document)
    spec = DiscordSpec(document)
    spec.load_seconds = time.perf_counter() - started
    return spec


# At most this many of a body's errors are named in one answer.
_MAX_ERRORS: Final = 10


def _field_errors(
    validator: Draft202012Validator, instance: Any, prefix: tuple[str, ...] = ()
) -> list[FieldError]:
    """Turn jsonschema's errors into Discord's field errors, each at the field it concerns."""
    if validator.is_valid(instance):
        return []
    found = []
    for error in validator.iter_errors(instance):
        found.append(_as_field_error(_most_relevant(error), prefix))
        if len(found) >= _MAX_ERRORS:
            break
    return found


def _most_relevant(error: ValidationError) -> ValidationError:
    """Descend into a union to the branch the value was meant for, as Discord's discriminated parser does.

    A branch was not meant when the value fails it at its root on type (null against an object) or on
    its `type` discriminator. Of the branches left, the one with the fewest errors is taken (the first
    on a tie: a follow-up fits both execute-webhook forms), and its deepest error is the one to name.
    """
    while error.context:
        branches: dict[Any, list[ValidationError]] = defaultdict(list)
        for sub in error.context:
            branches[sub.relative_schema_path[0]].append(sub)
        meant: list[list[ValidationError]] = [
            errs
            for errs in branches.values()
            if not any(
                (not sub.relative_path and sub.validator == "type") or list(sub.relative_path) == ["type"]
                for sub in errs
            )
        ]
        if not meant:
            return error
        fewest = min(meant, key=len)
        error = min(fewest, key=relevance)
    return error


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Discord's own error codes where the fake knows them; a keyword outside this map keeps jsonschema's
# message under a SCHEMA_<KEYWORD> code the fake makes up.
_TYPE_ERRORS: Final = {
    "boolean": ("BASE_TYPE_BOOLEAN", "Must be either true or false."),
    "integer": ("NUMBER_TYPE_COERCE", 'Value "{}" is not int.'),
    "number": ("NUMBER_TYPE_COERCE", 'Value "{}" is not a number.'),
    "string": ("BASE_TYPE_STRING", 'Could not interpret "{}" as string.'),
    "array": ("LIST_TYPE_CONVERT", "Must be an array."),
    "object": ("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"),
}


def _as_field_error(error: ValidationError, prefix: tuple[str, ...]) -> FieldError:
    path = (*prefix, *error.absolute_path)
    keyword, expected, value = error.validator, error.validator_value, error.instance
    if keyword in ("maxLength", "minLength", "maxItems", "minItems"):
        kind = "Length" if keyword.endswith("Length") else "Items"
        least, most = error.schema.get(f"min{kind}", 0), error.schema.get(f"max{kind}")
        if least and most is not None:
            return FieldError(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {least} and {most} in length.")
        if keyword.startswith("max"):
            return FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {expected} or fewer in length.")
        return FieldError(path, "BASE_TYPE_MIN_LENGTH", f"Must be {expected} or more in length.")
    if keyword == "required":
        missing = next((name for name in expected if name not in value), "")
        return FieldError((*path, missing), "BASE_TYPE_REQUIRED", "This field is required")
    if keyword == "type":
        wanted = [t for t in ([expected] if isinstance(expected, str) else expected) if t != "null"]
        code, message = _TYPE_ERRORS.get(wanted[0] if wanted else "", ("BASE_TYPE_INVALID", "{}"))
        return FieldError(path, code, message.format(_short(value)))
    if keyword == "pattern":
        # Snowflakes and the tolerated permission strings are decimal numbers; the one other pattern is
        # a Slack-compatible webhook's colour.
        if error.schema.get("format") == "snowflake":
            return FieldError(path, "NUMBER_TYPE_COERCE", f'Value "{_short(value)}" is not snowflake.')
        if expected == _DECIMAL:
            return FieldError(path, "NUMBER_TYPE_COERCE", f'Value "{_short(value)}" is not int.')
        return FieldError(
            path, "STRING_TYPE_REGEX", f'String value did not match validation regex "{expected}".'
        )
    if keyword in ("enum", "const"):
        allowed = expected if keyword == "enum" else [expected]
        return FieldError(path, "BASE_TYPE_CHOICES", f"Value must be one of {tuple(allowed)}.")
    if keyword == "minimum":
        return FieldError(
            path, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {expected}."
        )
    if keyword == "maximum":
        return FieldError(path, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {expected}.")
    if keyword in ("anyOf", "oneOf"):
        return FieldError(
            path,
            "UNION_TYPE_CHOICES",
            f"Value {_short(value)} matches none of the forms Discord accepts here.",
        )
    return FieldError(path, f"SCHEMA_{keyword.upper()}", error.message[:200])


# ------------------------------------------------------------------------- Discord's documented limits
#
# From Discord's developer documentation (https://discord.com/developers/docs):
# - resources/message, Create Message and Embed Limits: content up to 2,000 characters; up to 10 embeds;
#   title 256, description 4,096, up to 25 fields, field name 256 and value 1,024, footer text 2,048,
#   author name 256, and "the combined sum of characters in all title, description, field.name,
#   field.value, footer.text, and author.name fields across all embeds attached to a message must not
#   exceed 6000 characters"; an attachment's description (alt text) at most 1,024 characters. A
#   message needs content, embeds, sticker_ids, components, files or a poll.
# - components/reference: custom_id 1-100 characters and unique within a message; an action row holds
#   up to 5 buttons or a single select; "Legacy messages allow up to 5 action rows as top-level
#   components"; IS_COMPONENTS_V2 messages allow up to 40 components in all; a button label at most
#   80; a string select up to 25 options, option label and value 1-100, description 100, placeholder
#   150; a text input's min_length 0-4,000, max_length 1-4,000, value at most 4,000, placeholder 100;
#   a label (or the deprecated text input label) at most 45.
# - interactions/receiving-and-responding: a modal's custom_id 1-100, title at most 45, between 1 and 5
#   components; autocomplete answers at most 25 choices.
# - interactions/application-commands: CHAT_INPUT names and option names match
#   ^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$ in lower case; USER and MESSAGE names 1-32 of any case;
#   descriptions 1-100; up to 25 options and 25 choices; a choice name 1-100 and a string value up to
#   100; required options before optional ones; names unique per type; 100 CHAT_INPUT, 15 USER and
#   15 MESSAGE commands; at most 8,000 characters in a slash command's names, descriptions and choice
#   values (the longest localization of each counts). `name_localizations` and
#   `description_localizations` are keyed by Discord's locales (reference#locales), and their values
#   "follow the same restrictions as" the name or description they localize.
# The upload limit (10 MiB without boosts) answers 413 40005.

CONTENT_MAX: Final = 2000
EMBEDS_MAX: Final = 10
EMBED_TITLE_MAX: Final = 256
EMBED_DESCRIPTION_MAX: Final = 4096
EMBED_FIELDS_MAX: Final = 25
EMBED_FIELD_NAME_MAX: Final = 256
EMBED_FIELD_VALUE_MAX: Final = 1024
EMBED_FOOTER_TEXT_MAX: Final = 2048
EMBED_AUTHOR_NAME_MAX: Final = 256
EMBEDS_TOTAL_MAX: Final = 6000
ATTACHMENT_DESCRIPTION_MAX: Final = 1024
ACTION_ROWS_MAX: Final = 5
COMPONENTS_V2_MAX: Final = 40
ROW_BUTTONS_MAX: Final = 5
CUSTOM_ID_MAX: Final = 100
BUTTON_LABEL_MAX: Final = 80
SELECT_OPTIONS_MAX: Final = 25
SELECT_OPTION_TEXT_MAX: Final = 100
SELECT_PLACEHOLDER_MAX: Final = 150
MODAL_TITLE_MAX: Final = 45
MODAL_COMPONENTS_MAX: Final = 5
LABEL_MAX: Final = 45
TEXT_INPUT_LENGTH_MAX: Final = 4000
TEXT_INPUT_PLACEHOLDER_MAX: Final = 100
AUTOCOMPLETE_CHOICES_MAX: Final = 25
COMMAND_NAME_MAX: Final = 32
COMMAND_DESCRIPTION_MAX: Final = 100
COMMAND_OPTIONS_MAX: Final = 25
COMMAND_CHOICES_MAX: Final = 25
CHOICE_NAME_MAX: Final = 100
CHOICE_STRING_VALUE_MAX: Final = 100
COMMAND_TOTAL_CHARACTERS_MAX: Final = 8000
COMMANDS_MAX: Final = {1: 100, 2: 15, 3: 15}
# Discord's locales (reference#locales, and the spec's AvailableLocalesEnum, which adds ar and he).
DISCORD_LOCALES: Final = frozenset({
    "ar", "bg", "cs", "da", "de", "el", "en-GB", "en-US", "es-419", "es-ES", "fi", "fr", "he", "hi", "hr",
    "hu", "id", "it", "ja", "ko", "lt", "nl", "no", "pl", "pt-BR", "ro", "ru", "sv-SE", "th", "tr", "uk",
    "vi", "zh-CN", "zh-TW",
})  # fmt: skip

# Python's \w is letters, digits and underscore in every script: the documented \p{L}\p{N} (plus Deva
# and Thai marks, which \w misses) without a third-party regex engine.
_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
_SELECT_TYPES: Final = frozenset({3, 5, 6, 7, 8})
_ACTION_ROW, _BUTTON, _STRING_SELECT, _TEXT_INPUT, _LABEL = 1, 2, 3, 4, 18

FieldPath = tuple[str | int, ...]
Limits = Callable[[Any], list[FieldError]]


def _length(errors: list[FieldError], value: Any, path: FieldPath, *, most: int, least: int = 0) -> int:
    """Check the length of a string (anything else is not measured here); return it."""
    if not isinstance(value, str):
        return 0
    if not least <= len(value) <= most:
        if least:
            errors.append(
                FieldError(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {least} and {most} in length.")
            )
        else:
            errors.append(FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {most} or fewer in length."))
    return len(value)


def _count(errors: list[FieldError], items: Any, path: FieldPath, *, most: int, least: int = 0) -> list[Any]:
    """Check how many items a list has; return the list (empty when it is not one)."""
    if not isinstance(items, list):
        return []
    if len(items) > most:
        errors.append(FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {most} or fewer in length."))
    elif len(items) < least:
        errors.append(FieldError(path, "BASE_TYPE_MIN_LENGTH", f"Must be {least} or more in length."))
    return items


def walk_components(components: Any, path: FieldPath = ()) -> Iterator[tuple[FieldPath, Mapping[str, Any]]]:
    """Yield every component with its path, descending into rows, containers, sections and labels."""
    if not isinstance(components, list):
        return
    for index, component in enumerate(components):
        if not isinstance(component, Mapping):
            continue
        here = (*path, index)
        yield here, component
        yield from walk_components(component.get("components"), (*here, "components"))
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, Mapping):
                yield (*here, key), child
                yield from walk_components(child.get("components"), (*here, key, "components"))


def message_limits(body: Any, prefix: FieldPath = ()) -> list[FieldError]:
    """Check a message create or edit body (channel, follow-up, webhook edit, callback data)."""
    errors: list[FieldError] = []
    if not isinstance(body, Mapping):
        return errors
    _length(errors, body.get("content"), (*prefix, "content"), most=CONTENT_MAX)
    _embed_limits(errors, body.get("embeds"), (*prefix, "embeds"))
    flags = body.get("flags")
    flags = flags if isinstance(flags, int) else 0
    _component_limits(
        errors, body.get("components"), (*prefix, "components"), v2=bool(flags & FLAG_COMPONENTS_V2)
    )
    for index, attachment in enumerate(body.get("attachments") or []):
        if isinstance(attachment, Mapping):
            path = (*prefix, "attachments", index, "description")
            _length(errors, attachment.get("description"), path, most=ATTACHMENT_DESCRIPTION_MAX)
    return errors


def _embed_limits(errors: list[FieldError], embeds: Any, path: FieldPath) -> None:
    total = 0
    for index, embed in enumerate(_count(errors, embeds, path, most=EMBEDS_MAX)):
        if not isinstance(embed, Mapping):
            continue
        at = (*path, index)
        total += _length(errors, embed.get("title"), (*at, "title"), most=EMBED_TITLE_MAX)
        total += _length(errors, embed.get("description"), (*at, "description"), most=EMBED_DESCRIPTION_MAX)
        fields = _count(errors, embed.get("fields"), (*at, "fields"), most=EMBED_FIELDS_MAX)
        for f_index, embed_field in enumerate(fields):
            if not isinstance(embed_field, Mapping):
                continue
            where = (*at, "fields", f_index)
            # Discord refuses an empty field name or value, though the spec allows ""
            total += _length(
                errors, embed_field.get("name"), (*where, "name"), least=1, most=EMBED_FIELD_NAME_MAX
            )
            total += _length(
                errors, embed_field.get("value"), (*where, "value"), least=1, most=EMBED_FIELD_VALUE_MAX
            )
        footer, author = embed.get("footer"), embed.get("author")
        if isinstance(footer, Mapping):
            total += _length(errors, footer.get("text"), (*at, "footer", "text"), most=EMBED_FOOTER_TEXT_MAX)
        if isinstance(author, Mapping):
            total += _length(errors, author.get("name"), (*at, "author", "name"), most=EMBED_AUTHOR_NAME_MAX)
    if total > EMBEDS_TOTAL_MAX:
        errors.append(
            FieldError(
                path, "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {EMBEDS_TOTAL_MAX}"
            )
        )


def _component_limits(errors: list[FieldError], components: Any, path: FieldPath, *, v2: bool) -> None:
    if not isinstance(components, list):
        return
    walked = list(walk_components(components, path))
    if v2:
        if len(walked) > COMPONENTS_V2_MAX:
            errors.append(
                FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {COMPONENTS_V2_MAX} or fewer in length.")
            )
    else:
        _count(errors, components, path, most=ACTION_ROWS_MAX)
    _each_component(errors, walked)


def _each_component(errors: list[FieldError], walked: Iterable[tuple[FieldPath, Mapping[str, Any]]]) -> None:
    """Check the limits of each component and that custom ids are unique among them."""
    seen: set[str] = set()
    for where, component in walked:
        ctype = component.get("type")
        custom_id = component.get("custom_id")
        _length(errors, custom_id, (*where, "custom_id"), least=1, most=CUSTOM_ID_MAX)
        if isinstance(custom_id, str):
            if custom_id in seen:
                errors.append(
                    FieldError(
                        (*where, "custom_id"),
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                )
            seen.add(custom_id)
        if ctype == _ACTION_ROW:
            children = _count(
                errors, component.get("components"), (*where, "components"), most=ROW_BUTTONS_MAX
            )
            if len(children) > 1 and any(
                isinstance(c, Mapping) and c.get("type") in _SELECT_TYPES for c in children
            ):
                errors.append(
                    FieldError(
                        (*where, "components"),
                        "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                        "The specified component exceeds the maximum width",
                    )
                )
        elif ctype == _BUTTON:
            _length(errors, component.get("label"), (*where, "label"), most=BUTTON_LABEL_MAX)
        elif ctype in _SELECT_TYPES:
            _length(
                errors, component.get("placeholder"), (*where, "placeholder"), most=SELECT_PLACEHOLDER_MAX
            )
            options = _count(errors, component.get("options"), (*where, "options"), most=SELECT_OPTIONS_MAX)
            for o_index, option in enumerate(options):
                if not isinstance(option, Mapping):
                    continue
                at = (*where, "options", o_index)
                _length(errors, option.get("label"), (*at, "label"), least=1, most=SELECT_OPTION_TEXT_MAX)
                _length(errors, option.get("value"), (*at, "value"), least=1, most=SELECT_OPTION_TEXT_MAX)
                _length(errors, option.get("description"), (*at, "description"), most=SELECT_OPTION_TEXT_MAX)
        elif ctype == _TEXT_INPUT:
            _text_input_limits(errors, component, where)
        elif ctype == _LABEL:
            _length(errors, component.get("label"), (*where, "label"), least=1, most=LABEL_MAX)


def _text_input_limits(errors: list[FieldError], component: Mapping[str, Any], where: FieldPath) -> None:
    _length(errors, component.get("label"), (*where, "label"), least=1, most=LABEL_MAX)
    _length(errors, component.get("placeholder"), (*where, "placeholder"), most=TEXT_INPUT_PLACEHOLDER_MAX)
    least, most = component.get("min_length"), component.get("max_length")
    if isinstance(least, int) and not 0 <= least <= TEXT_INPUT_LENGTH_MAX:
        errors.append(
            FieldError(
                (*where, "min_length"), "NUMBER_TYPE_MAX", f"Must be between 0 and {TEXT_INPUT_LENGTH_MAX}."
            )
        )
    if isinstance(most, int) and not 1 <= most <= TEXT_INPUT_LENGTH_MAX:
        errors.append(
            FieldError(
                (*where, "max_length"), "NUMBER_TYPE_MAX", f"Must be between 1 and {TEXT_INPUT_LENGTH_MAX}."
            )
        )
    low = least if isinstance(least, int) else 0
    high = most if isinstance(most, int) else TEXT_INPUT_LENGTH_MAX
    if low > high:
        errors.append(
            FieldError((*where, "min_length"), "BASE_TYPE_BAD_LENGTH", "Must not be greater than max_length.")
        )
    value = component.get("value")
    # A pre-filled value must already fit the input's declared bounds (an empty one means "no value").
    if isinstance(value, str) and value:
        _length(errors, value, (*where, "value"), least=low, most=min(high, TEXT_INPUT_LENGTH_MAX))


def modal_limits(data: Any, prefix: FieldPath = ()) -> list[FieldError]:
    """Check a modal (the data of an interaction callback of type 9)."""
    errors: list[FieldError] = []
    if not isinstance(data, Mapping):
        return errors
    _length(errors, data.get("custom_id"), (*prefix, "custom_id"), least=1, most=CUSTOM_ID_MAX)
    _length(errors, data.get("title"), (*prefix, "title"), least=1, most=MODAL_TITLE_MAX)
    path = (*prefix, "components")
    _count(errors, data.get("components"), path, least=1, most=MODAL_COMPONENTS_MAX)
    _each_component(errors, walk_components(data.get("components"), path))
    return errors


def autocomplete_limits(data: Any, prefix: FieldPath = ()) -> list[FieldError]:
    """Check an autocomplete answer (the data of an interaction callback of type 8)."""
    errors: list[FieldError] = []
    if not isinstance(data, Mapping):
        return errors
    path = (*prefix, "choices")
    for index, choice in enumerate(_count(errors, data.get("choices"), path, most=AUTOCOMPLETE_CHOICES_MAX)):
        _choice_limits(errors, choice, (*path, index))
    return errors


def _choice_limits(errors: list[FieldError], choice: Any, at: FieldPath) -> None:
    if isinstance(choice, Mapping):
        _length(errors, choice.get("name"), (*at, "name"), least=1, most=CHOICE_NAME_MAX)
        _length(errors, choice.get("value"), (*at, "value"), most=CHOICE_STRING_VALUE_MAX)
        _localizations(errors, choice, at, _choice_name, None)


def callback_limits(body: Any) -> list[FieldError]:
    """Check an interaction callback's data by the callback's type."""
    if not isinstance(body, Mapping):
        return []
    kind, data = body.get("type"), body.get("data")
    if kind in (CB_MESSAGE, CB_UPDATE):
        return message_limits(data, ("data",))
    if kind == CB_MODAL:
        return modal_limits(data, ("data",))
    if kind == CB_AUTOCOMPLETE:
        return autocomplete_limits(data, ("data",))
    return []


def command_list_limits(body: Any) -> list[FieldError]:
    """Check a bulk overwrite of application commands (PUT .../commands), as Discord does at sync."""
    if not isinstance(body, list):
        return [FieldError((), "LIST_TYPE_CONVERT", "Must be an array.")]
    errors: list[FieldError] = []
    seen: set[tuple[Any, Any]] = set()
    counts: dict[Any, int] = defaultdict(int)
    for index, command in enumerate(body):
        if not isinstance(command, Mapping):
            errors.append(
                FieldError((index,), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            )
            continue
        errors.extend(command_limits(command, (index,)))
        key = (command.get("name"), command.get("type") or 1)
        if key in seen:
            errors.append(
                FieldError(
                    (index, "name"),
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            )
        seen.add(key)
        counts[key[1]] += 1
    for ctype, most in COMMANDS_MAX.items():
        if counts[ctype] > most:
            errors.append(FieldError((), "BASE_TYPE_MAX_LENGTH", f"Must be {most} or fewer in length."))
    return errors


def command_limits(command: Any, prefix: FieldPath = ()) -> list[FieldError]:
    """Check one application command (create, edit, or an entry of a bulk overwrite)."""
    errors: list[FieldError] = []
    if not isinstance(command, Mapping):
        return errors
    name = command.get("name")
    if (command.get("type") or 1) == 1:
        _name(errors, name, (*prefix, "name"))
        _length(
            errors,
            command.get("description") or "",
            (*prefix, "description"),
            least=1,
            most=COMMAND_DESCRIPTION_MAX,
        )
        _localizations(errors, command, prefix, _name, _description)
        _option_limits(errors, command.get("options"), (*prefix, "options"))
        if _characters(command) > COMMAND_TOTAL_CHARACTERS_MAX:
            errors.append(
                FieldError(
                    prefix,
                    "APPLICATION_COMMAND_TOO_LARGE",
                    f"Command exceeds maximum size ({COMMAND_TOTAL_CHARACTERS_MAX})",
                )
            )
    else:
        _length(errors, name, (*prefix, "name"), least=1, most=COMMAND_NAME_MAX)
        _localizations(errors, command, prefix, _menu_name, None)
    return errors


def _name(errors: list[FieldError], name: Any, path: FieldPath) -> None:
    if not isinstance(name, str) or not _COMMAND_NAME.fullmatch(name) or name != name.lower():
        errors.append(FieldError(path, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"))


def _menu_name(errors: list[FieldError], name: Any, path: FieldPath) -> None:
    _length(errors, name, path, least=1, most=COMMAND_NAME_MAX)


def _description(errors: list[FieldError], text: Any, path: FieldPath) -> None:
    _length(errors, text, path, least=1, most=COMMAND_DESCRIPTION_MAX)


def _choice_name(errors: list[FieldError], text: Any, path: FieldPath) -> None:
    _length(errors, text, path, least=1, most=CHOICE_NAME_MAX)


Check = Callable[[list[FieldError], Any, FieldPath], None]


def _localizations(
    errors: list[FieldError], node: Mapping[str, Any], at: FieldPath, name: Check, description: Check | None
) -> None:
    """Check a node's localized names and descriptions: Discord's locales, each value by its field's rule."""
    for key, check in (("name", name), ("description", description)):
        localized = node.get(f"{key}_localizations")
        if not isinstance(localized, Mapping):
            continue
        if check is None:
            continue
        for locale, value in localized.items():
            where = (*at, f"{key}_localizations", locale)
            if locale not in DISCORD_LOCALES:
                errors.append(
                    FieldError(where, "BASE_TYPE_CHOICES", f"Value must be one of {sorted(DISCORD_LOCALES)}.")
                )
            check(errors, value, where)


def _option_limits(errors: list[FieldError], options: Any, path: FieldPath) -> None:
    optional_seen = False
    for index, option in enumerate(_count(errors, options, path, most=COMMAND_OPTIONS_MAX)):
        if not isinstance(option, Mapping):
            continue
        where = (*path, index)
        _name(errors, option.get("name"), (*where, "name"))
        _length(
            errors,
            option.get("description") or "",
            (*where, "description"),
            least=1,
            most=COMMAND_DESCRIPTION_MAX,
        )
        _localizations(errors, option, where, _name, _description)
        if option.get("type") in (SUBCOMMAND, SUBCOMMAND_GROUP):
            _option_limits(errors, option.get("options"), (*where, "options"))
            continue
        if option.get("required"):
            if optional_seen:
                errors.append(
                    FieldError(
                        where,
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed first",
                    )
                )
        else:
            optional_seen = True
        choices = _count(errors, option.get("choices"), (*where, "choices"), most=COMMAND_CHOICES_MAX)
        for c_index, choice in enumerate(choices):
            _choice_limits(errors, choice, (*where, "choices", c_index))


def _longest(node: Mapping[str, Any], key: str) -> int:
    """Count a field as Discord does for the size limit: its longest localization, or itself."""
    values = [node.get(key), *((node.get(f"{key}_localizations") or {}).values())]
    return max((len(v) for v in values if isinstance(v, str)), default=0)


def _characters(node: Mapping[str, Any]) -> int:
    """Add up a command's names, descriptions and string choice values, options and choices included."""
    total = _longest(node, "name") + _longest(node, "description")
    for choice in node.get("choices") or []:
        if isinstance(choice, Mapping):
            total += _longest(choice, "name") + len(str(choice.get("value", "")))
    for option in node.get("options") or []:
        if isinstance(option, Mapping):
            total += _characters(option)
    return total


def upload_limits(files: Sequence[tuple[str, bytes, str | None]]) -> None:
    """Refuse uploads over Discord's limit for a server without boosts."""
    size = sum(len(data) for _, data, _ in files)
    if size > ATTACHMENT_SIZE_LIMIT:
        raise RefusedRequest(
            413, 40005, "Request entity too large", f"uploads of {size} bytes exceed {ATTACHMENT_SIZE_LIMIT}"
        )


def require_message_body(message: Mapping[str, Any], *, allow_empty: bool) -> None:
    """Refuse a message left with nothing to show (a "thinking" placeholder is allowed)."""
    loading = bool(message.get("flags", 0) & FLAG_LOADING)
    has_body = (
        message.get("content")
        or message.get("embeds")
        or message.get("attachments")
        or message.get("components")
        or message.get("poll")
    )
    if not (has_body or loading or allow_empty):
        raise RefusedRequest(400, 50006, "Cannot send an empty message", "Cannot send an empty message")


def require_callback_type(interaction_type: int, callback_type: Any) -> None:
    """Refuse a callback type that Discord does not allow for this kind of interaction."""
    if callback_type not in CALLBACKS_FOR.get(interaction_type, frozenset()):
        raise invalid_form_body(
            [
                FieldError(
                    ("type",),
                    "INTERACTION_CALLBACK_TYPE_INVALID",
                    f"Callback type {callback_type} is invalid for this interaction",
                )
            ]
        )


def check_limits(limits: Limits | None, body: Any) -> None:
    """Refuse a body that breaks Discord's documented limits."""
    if limits is None:
        return
    errors = limits(body)
    if errors:
        raise invalid_form_body(errors[:_MAX_ERRORS])
