"""Input normalisation: what the SDK accepts from its users, checked and put in wire form.

Pure: no I/O. UUIDs, repositories, page sizes and limits, opaque ids, the base URL
(and whether a URL is loopback, which decides if plain http and no key are acceptable).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable
from urllib.parse import urlsplit

# http(s) URLs may name a port (`host:8443/owner/repo`); in scp-like `git@host:owner/repo`
# the colon starts the path, so a numeric owner is not taken for a port.
_REPO_URL = re.compile(
    r"^(?:https?://(?:[^/:@]+@)?[^/:]+(?::\d+)?/|git@[^/:]+[/:])"
    r"(?P<path>[^?#]+?)(?:\.git)?/?(?:[?#].*)?$"
)
_REPO_SLUG = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+$")


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


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_ids(ids: Iterable[object], name: str) -> list[str]:
    """Opaque ids (sandboxes, events): non-empty strings, stripped."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be an iterable of ids, not a single string")
    out = []
    for value in ids:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be non-empty strings, got {value!r}")
        out.append(value.strip())
    return out


def check_base_url(url: str, allow_insecure_http: bool) -> str:
    """The base URL without its trailing slash; plain http only to loopback unless allowed."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with https:// (or http:// for loopback): {url!r}")
    if url.startswith("http://") and not allow_insecure_http and not is_loopback_url(url):
        raise ValueError(
            f"refusing plain http:// to a non-loopback host ({url}): the API key would travel "
            "unencrypted. Use https://, or pass allow_insecure_http=True if you must."
        )
    return url
