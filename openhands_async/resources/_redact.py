"""Keeping secret values a caller passes in (custom secrets, git tokens, LLM API keys) out of
reprs, logs and exceptions while still sending them.

`secret_body(body)` takes a request body holding `SecretStr`s and returns the JSON to send:
a dict whose repr is the masked original, so a traceback's locals, a debugger or a log of
the call's arguments show the mask. `guarding(secrets)` wraps the request: a server error
that echoes the input back (a pydantic 422 carries `"input": ...`) has every secret value
replaced by the mask in its message and body before it reaches the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import APIStatusError, ResponseValidationError
from ..models_settings import SecretStr

MASK = "**********"


class WireBody(dict):  # type: ignore[type-arg]
    """The JSON sent (secret values revealed) that prints as the masked original."""

    def __init__(self, masked: dict[str, Any]) -> None:
        super().__init__(_reveal(masked))
        self._masked = masked

    def __repr__(self) -> str:
        return repr(self._masked)

    __str__ = __repr__


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value


def secrets_in(value: Any) -> list[str]:
    """Every non-empty secret value held in a body (for `guarding`)."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()] if value else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in secrets_in(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in secrets_in(v)]
    return []


def secret_body(masked: dict[str, Any]) -> WireBody:
    return WireBody(masked)


def _scrub(value: Any, secrets: Iterable[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets) for v in value]
    return value


@contextlib.contextmanager
def guarding(secrets: Iterable[str]) -> Iterator[None]:
    """Mask `secrets` in any APIStatusError / ResponseValidationError raised inside."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    try:
        yield
    except (APIStatusError, ResponseValidationError) as exc:
        if values:
            exc.message = _scrub(exc.message, values)
            exc.args = tuple(_scrub(a, values) for a in exc.args)
            exc.body = _scrub(exc.body, values)
        raise
