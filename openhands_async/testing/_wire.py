"""Wire-level details: ids, JSON bytes and timestamps, written as the server writes them."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

NOT_RUNNING = "FakeCloud is not running: use `async with FakeCloud()` or start()"
HOST = "127.0.0.1"  # every FakeCloud address: loopback only
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BASE62_ONLY = str.maketrans("-_", "xQ")
_ONE_US = timedelta(microseconds=1)
_MAX_TIMESTAMP_US = 253_402_300_800 * 1_000_000  # 10000-01-01T00:00:00Z


def loopback_url(port: int) -> str:
    """`http://127.0.0.1:<port>`: the API's, the agent servers' or a dead port's address."""
    return f"http://{HOST}:{port}"


def new_id() -> str:
    """A conversation or start-task id: a version-4 UUID written as 32 hex digits."""
    # uuid.uuid4().hex, minus the UUID object: seeding thousands of records stays cheap.
    raw = secrets.token_hex(16)
    return f"{raw[:12]}4{raw[13:16]}{'89ab'[int(raw[16], 16) & 3]}{raw[17:]}"


def new_sandbox_id() -> str:
    """An opaque 22-character base62 sandbox id (`6IdHNmY7NZBwfPKRwWgL5J`)."""
    # base64url without its two non-alphanumerics: unique enough, and cheap in bulk.
    return secrets.token_urlsafe(17)[:22].translate(_BASE62_ONLY)


def new_session_key() -> str:
    return secrets.token_urlsafe(32)


def uuid_hex(value: str) -> str | None:
    """The 32-hex form of a UUID given in any form the server accepts, else None."""
    try:
        return uuid.UUID(value).hex
    except ValueError:
        return None


def dashed(hex_id: str) -> str:
    return str(uuid.UUID(hex_id))


def json_bytes(obj: Any) -> bytes:
    # Compact separators: FastAPI/pydantic write no spaces, and byte-exact shapes catch parser bugs.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Clock:
    """The event loop's clock, plus the wall-clock instant it maps to.

    State records store loop times (cheap floats, immune to wall-clock jumps); they become
    wall-clock timestamps only when rendered or compared with a query parameter. Everything
    goes through whole microseconds, so a timestamp read from a response and sent back as a
    filter compares equal to the record it came from.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mono0 = 0.0
        self._wall0 = 0.0

    @property
    def started(self) -> bool:
        return self._loop is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._mono0 = loop.time()
        self._wall0 = time.time()

    def now(self) -> float:
        if self._loop is None:
            raise RuntimeError(NOT_RUNNING)
        return self._loop.time()

    def wall_us(self, t: float) -> int:
        return round((self._wall0 + (t - self._mono0)) * 1_000_000)

    def iso(self, t: float, *, zulu: bool = True) -> str:
        return format_us(self.wall_us(t), zulu=zulu)


def format_us(us: int, *, zulu: bool = True) -> str:
    """`2026-11-22T22:59:57.760460Z`; pydantic drops the fraction when it is zero, and so do we."""
    moment = _EPOCH + us * _ONE_US
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z" if zulu else text


def parse_datetime_us(text: str) -> int | None:
    """Epoch microseconds of an ISO 8601 datetime (naive = UTC, as in the server's DB), or None."""
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        try:
            seconds = float(text)
        except ValueError:
            return None
        us = seconds * 1_000_000
        # pydantic refuses timestamps past year 9999; 1.8e308 would also overflow round().
        return round(us) if math.isfinite(us) and abs(us) < _MAX_TIMESTAMP_US else None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // _ONE_US
