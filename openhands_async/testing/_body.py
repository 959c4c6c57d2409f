"""Reading JSON request bodies the way FastAPI validates them (422 with a `detail` list),
for the account routes (settings, profiles, secrets, pending messages, controls)."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ._validation import Invalid, error

_MISSING = object()
# The spec's pattern for a profile name (path and rename body).
PROFILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


async def json_body(request: web.Request, *, optional: bool = False) -> Any:
    """The decoded body; None for an empty one when `optional`, else 422 as FastAPI does."""
    raw = await request.read()
    if not raw:
        if optional:
            return None
        raise Invalid([error("missing", ("body",), "Field required", None)])
    try:
        return json.loads(raw)
    except ValueError:
        raise Invalid([error("json_invalid", ("body",), "JSON decode error", None)]) from None


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(
            [error("model_attributes_type", ("body",), "Input should be an object", body)]
        )
    return body


def text_field(
    body: dict[str, Any], name: str, errors: list[dict[str, Any]], *, required: bool = True
) -> str | None:
    value = body.get(name, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            errors.append(error("missing", ("body", name), "Field required", body))
        return None
    if not isinstance(value, str):
        errors.append(error("string_type", ("body", name), "Input should be a valid string", value))
        return None
    return value


def bool_field(
    body: dict[str, Any], name: str, default: bool, errors: list[dict[str, Any]]
) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        errors.append(error("bool_type", ("body", name), "Input should be a valid boolean", value))
        return default
    return value


def profile_name_error(name: str, loc: tuple[str, ...]) -> dict[str, Any] | None:
    if PROFILE_NAME.fullmatch(name):
        return None
    return error(
        "string_pattern_mismatch",
        loc,
        "String should match pattern '^[A-Za-z0-9._-]{1,64}$'",
        name,
        {"pattern": "^[A-Za-z0-9._-]{1,64}$"},
    )


def check(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise Invalid(errors)
