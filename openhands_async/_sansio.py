"""Pure protocol functions: no I/O, so they are tested with canned values."""

from __future__ import annotations

import email.utils
import ipaddress
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

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

_REPO_URL = re.compile(
    r"^(?:https?://|git@)(?:[^/:@]+@)?[^/:]+[/:](?P<path>[^?#]+?)(?:\.git)?/?(?:[?#].*)?$"
)
_REPO_SLUG = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+$")


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


def normalize_uuid(value: object, name: str = "id") -> str:
    """A conversation or start-task id as the server writes it: 32 lowercase hex digits."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a UUID string, not {type(value).__name__}")
    try:
        return uuid.UUID(value.strip()).hex
    except ValueError:
        raise ValueError(
            f"{name} must be a UUID (32 hex digits, dashes optional): {value!r}"
        ) from None


def normalize_uuids(values: Iterable[object], name: str = "ids") -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be an iterable of ids, not a single string")
    return [normalize_uuid(v, name) for v in values]


def normalize_repository(value: str) -> str:
    """`owner/repo` from `owner/repo`, a repository URL, or `git@host:owner/repo`."""
    if not isinstance(value, str):
        raise TypeError(f"repository must be a string, not {type(value).__name__}")
    text = value.strip()
    match = _REPO_URL.match(text)
    if match:
        text = match.group("path").strip("/")
    if not _REPO_SLUG.match(text):
        raise ValueError(f"repository must be 'owner/repo' or a repository URL: {value!r}")
    return text


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_page_size(page_size: int) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise TypeError("page_size must be an int")
    if not 1 <= page_size <= 100:
        raise ValueError(f"page_size must be between 1 and 100, got {page_size}")
    return page_size


def check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError("limit must be an int or None")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return limit
