"""Safe start: a start is sent once, and after a lost answer looked for before any resend.

Measured on a real server, a second start with an id it already has does not fail cleanly
(it breaks the original conversation), so: the request carries a client-chosen
conversation id (minted by `make_start_request`), it is sent once, and when the answer is
lost (a connection that may have reached the server, or a 5xx) the task is looked for by
that id. It is sent again only when the server shows no trace of it; when looking fails,
`StartUnconfirmedError` is raised rather than guessing.

Pure logic over two callables, "send" and "find", so `conversations.start`, the streamed
start (which never resends) and the batch runner share it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TypeVar

from ._constants import START_LOOKUPS_BEFORE_RESEND
from .errors import APIConnectionError, APIError, InternalServerError, StartUnconfirmedError
from .models import StartTask

log = logging.getLogger("openhands_async")

T = TypeVar("T")

#: `find(conversation_id, created_after)`: the start task sent with that id, or None.
Find = Callable[[str, datetime], Awaitable[StartTask | None]]

__all__ = ["Find", "SafeStart", "may_have_started"]


def may_have_started(exc: BaseException) -> bool:
    """After this failure the server may have taken the start (so look before resending)."""
    if isinstance(exc, APIConnectionError):
        return exc.may_have_been_sent
    return isinstance(exc, InternalServerError)


class SafeStart:
    """One start of `conversation_id`: `sent_after` is taken when it is made (before sending).

    `url` names the start route in the errors raised; `retry_delay` is the first pause
    between look-ups (doubling).
    """

    def __init__(
        self,
        conversation_id: str,
        find: Find,
        *,
        url: str,
        retry_delay: float,
        lookups: int = START_LOOKUPS_BEFORE_RESEND,
    ) -> None:
        self.conversation_id = conversation_id
        self.sent_after = datetime.now(timezone.utc)
        self._find = find
        self._url = url
        self._retry_delay = retry_delay
        self._lookups = lookups

    async def look(self, cause: APIError) -> StartTask | None:
        """Look for the task after `cause` lost the answer; None if the server has no trace.

        Raises `StartUnconfirmedError` when a look-up itself fails.
        """
        cid = self.conversation_id
        for look in range(self._lookups):
            if look:
                await asyncio.sleep(self._retry_delay * 2 ** (look - 1))
            try:
                task = await self._find(cid, self.sent_after)
            except APIError as exc:
                raise StartUnconfirmedError(
                    f"the start of conversation {cid} may have reached the server "
                    f"({cause}), and looking for it failed ({exc}); it was not sent again",
                    method="POST",
                    url=self._url,
                    conversation_id=cid,
                ) from exc
            if task is not None:
                log.info("found start of %s after a lost answer: task %s", cid, task.id)
                return task
        return None

    async def send(
        self,
        send: Callable[[], Awaitable[StartTask]],
        *,
        max_resends: int,
    ) -> StartTask:
        """Send; after a lost answer return the task found, or resend (at most
        `max_resends` times) only when the server has no trace of it."""
        resends = 0
        while True:
            try:
                return await send()
            except (APIConnectionError, InternalServerError) as exc:
                if not may_have_started(exc):
                    raise
                task = await self.look(exc)
                if task is not None:
                    return task
                if resends >= max_resends:
                    raise
                resends += 1
                log.info(
                    "start %s left no trace on the server; sending it again", self.conversation_id
                )
