"""The Cloud's request-rate limit: a fixed window per credential."""

from __future__ import annotations

import math

import attrs


@attrs.frozen
class Verdict:
    allowed: bool
    headers: dict[str, str]


@attrs.define
class _Window:
    ends: float
    used: int


class FixedWindowLimiter:
    """`limit` requests per `window` seconds; a window opens at the first request after the last."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or not window > 0:
            raise ValueError(
                f"rate_limit must be (requests >= 1, seconds > 0), got {(limit, window)}"
            )
        self.limit = limit
        self.window = window
        self._windows: dict[str, _Window] = {}
        seconds = f"{window:g}"
        self.message = f"Rate limit exceeded: {limit} per {seconds} second"

    def hit(self, key: str, now: float, wall_now: float) -> Verdict:
        """Count one request; `wall_now` (epoch seconds) dates the X-RateLimit-Reset header."""
        current = self._windows.get(key)
        if current is None or now >= current.ends:
            current = self._windows[key] = _Window(ends=now + self.window, used=0)
        current.used += 1
        left = current.ends - now
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - current.used)),
            "X-RateLimit-Reset": str(math.ceil(wall_now + left)),
        }
        allowed = current.used <= self.limit
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(left)))
        return Verdict(allowed=allowed, headers=headers)
