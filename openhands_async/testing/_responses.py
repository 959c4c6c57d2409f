"""Answers every route module shares: JSON responses, FastAPI-style errors, paging cursors.

Route modules import this (never each other) for anything they answer alike.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web

from ._wire import json_bytes

T = TypeVar("T")

JSON_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=json_bytes(obj), headers={**JSON_HEADERS, **(headers or {})}
    )


def not_found(detail: str = "Item not found") -> web.Response:
    return json_response({"detail": detail}, 404)


def concurrency_refusal(limit: int | None, current: int) -> web.Response:
    """The Cloud's answer to a start (or resume) beyond the account's running cap."""
    refusal = {"error": "CONCURRENCY_LIMIT_REACHED", "limit": limit, "current": current}
    return json_response({"detail": refusal}, 429)


def page_of(
    matches: Sequence[T],
    page_id: str | None,
    limit: int,
    render: Callable[[T], Any],
    *,
    key: str = "items",
) -> dict[str, Any]:
    """One page of a search answer: `{key: [...], "next_page_id": cursor or None}`."""
    offset = decode_page(page_id)
    return {
        key: [render(item) for item in matches[offset : offset + limit]],
        "next_page_id": next_page(offset, limit, len(matches)),
    }


# Cursors are opaque on the wire; clients must not build or parse them.
def next_page(offset: int, limit: int, total: int) -> str | None:
    end = offset + limit
    return base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if end < total else None


def decode_page(page_id: str | None) -> int:
    """The offset a cursor stands for; 0 (the first page) for a cursor we never issued.

    The real server answers an unparseable page_id with the first page, not an error (its
    search services catch the ValueError: "If page_id is not a valid integer, start from
    beginning"), and the spec documents no 400 for searches.
    """
    if page_id is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(page_id.encode()).decode()
        prefix, _, number = text.partition(":")
        if prefix == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    return 0
