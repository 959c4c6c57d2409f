"""The client-wide gate every request passes: an optional request rate, and 429 pauses.

A 429 pauses *all* of the client's requests until its Retry-After has passed, not just
the one that got it; when the pause ends, waiters leave spread over a short window so
they do not hit the server in one burst.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import AbstractAsyncContextManager
from typing import Any

# When a pause ends, waiters leave spread over up to this many seconds.
_RESUME_SPREAD = 0.5


class RequestGate:
    def __init__(self, rate_limiter: AbstractAsyncContextManager[Any] | None = None) -> None:
        self._rate_limiter = rate_limiter
        self._paused_until = 0.0

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - asyncio.get_running_loop().time())

    def pause(self, seconds: float) -> None:
        """Hold every request of this client for `seconds` from now (extends, never shortens)."""
        until = asyncio.get_running_loop().time() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until

    async def wait_turn(self) -> None:
        loop = asyncio.get_running_loop()
        # A loop, not an Event: a later 429 may push the deadline out while we sleep.
        while (left := self._paused_until - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left + random.uniform(0.0, min(_RESUME_SPREAD, left)))
        if self._rate_limiter is not None:
            async with self._rate_limiter:
                pass
