"""Wire rules, pure (no I/O, so tested with canned values): query encoding, deciphering a
response (status -> exception, JSON or not, Retry-After).

The input checks moved to `_inputs`; they are re-exported here for the modules that still
import them from this one (to be removed once those import `_inputs`).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import errors

_STATUS_ERRORS: dict[int, type[errors.APIStatusError]] = {
    400: errors.BadRequestError,
    401: errors.AuthenticationError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    410: errors.GoneError,
    422: errors.UnprocessableEntityError,
    503: errors.ServiceUnavailableError,
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def error_message_from_body(body: Any) -> str:
    """The human part of an error body: FastAPI's `detail`, the Cloud's `error`, or text."""
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:
                parts = []
                for item in value:
                    if isinstance(item, dict):
                        loc = ".".join(str(p) for p in item.get("loc", []))
                        parts.append(f"{loc}: {item.get('msg', item)}" if loc else str(item))
                    else:
                        parts.append(str(item))
                return "; ".join(parts)
            if isinstance(value, dict) and value:
                return json.dumps(value, sort_keys=True)
    if isinstance(body, str):
        text = body.strip()
        return text[:200] + ("..." if len(text) > 200 else "")
    return ""


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    method: str,
    url: str,
) -> errors.APIStatusError:
    """Map a non-2xx answer to its exception, keeping the parsed body."""
    detail = error_message_from_body(body)
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    common: dict[str, Any] = {
        "status": status,
        "body": body,
        "headers": headers,
        "method": method,
        "url": url,
    }
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        concurrency = body.get("detail") if isinstance(body, dict) else None
        if (
            isinstance(concurrency, dict)
            and concurrency.get("error") == "CONCURRENCY_LIMIT_REACHED"
        ):
            return errors.ConcurrencyLimitError(
                message,
                limit=_int_or_none(concurrency.get("limit")),
                current=_int_or_none(concurrency.get("current")),
                retry_after=retry_after,
                **common,
            )
        return errors.RateLimitError(message, retry_after=retry_after, **common)
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = errors.InternalServerError if status >= 500 else errors.APIStatusError
    return cls(message, **common)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def decode_json(status: int, content_type: str | None, raw: bytes, *, method: str, url: str) -> Any:
    """Parse a 2xx body that must be JSON; anything else is a ResponseValidationError."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise errors.ResponseValidationError(
            f"expected JSON but the server answered {status} with "
            f"content type {media or '(none)'!r} ({len(raw)} bytes)",
            method=method,
            url=url,
            content_type=media or None,
            body=raw[:500].decode("utf-8", "replace"),
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: hostile deep nesting
        raise errors.ResponseValidationError(
            f"the server answered {status} with a body that is not valid JSON: {exc}",
            method=method,
            url=url,
            content_type=media,
            body=raw[:500].decode("utf-8", "replace"),
        ) from None


def decode_error_body(content_type: str | None, raw: bytes) -> Any:
    """Best-effort body of an error answer: JSON when it parses, else text."""
    text = raw.decode("utf-8", "replace")
    if "json" in (content_type or ""):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    return text


def encode_query(
    params: Sequence[tuple[str, str]] | Mapping[str, Any] | None,
) -> list[tuple[str, str]] | None:
    """Query pairs with None dropped, booleans as the server spells them, lists repeated."""
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    out: list[tuple[str, str]] = []
    for key, value in items:
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if type(v) is str:  # the common case (a batch read's 99 ids): no other test
                out.append((key, v))
            elif isinstance(v, bool):
                out.append((key, "true" if v else "false"))
            elif hasattr(v, "isoformat"):
                out.append((key, v.isoformat()))
            else:
                out.append((key, str(v.value if hasattr(v, "value") else v)))
    return out


# Re-exported for batch, poller and cli until they import `_inputs` (issue 14).
from ._inputs import (  # noqa: E402
    check_limit,
    check_page_size,
    is_loopback_url,
    normalize_repository,
    normalize_uuid,
    normalize_uuids,
)

__all__ = [
    "check_limit",
    "check_page_size",
    "decode_error_body",
    "decode_json",
    "encode_query",
    "error_from_response",
    "error_message_from_body",
    "is_loopback_url",
    "normalize_repository",
    "normalize_uuid",
    "normalize_uuids",
    "parse_retry_after",
]
