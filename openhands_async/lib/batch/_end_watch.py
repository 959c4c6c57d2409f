"""`EndWatch`: hear a running job's end from its agent server instead of waiting for a poll.

A poller sees an end up to one `poll_interval` late, and a batch's slot stays empty that
long: at the 5 s default, 2.5 s a job on average. With `run_batch(watch_ends=True)` each
running job's events are followed on its agent server's WebSocket (`events.follow`, at most
`max_running` sockets), and the state update that ends the run is handed to the runner
(`on_end`): it frees the job's slot at once and has the poller read that conversation
(`ConversationPoller.refresh`). The poller's read stays the record of the end: a watch only
hurries it, so a watch that fails (no reachable agent server, a dropped socket past its
reconnects, a paused sandbox) is logged and the job is polled as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...models import Conversation, ExecutionStatus
    from ..events import Events

log = logging.getLogger("openhands_async")

__all__ = ["EndWatch"]


class EndWatch:
    """One watch task per conversation id (normalised); `aclose()` ends them all. `on_end`
    gets the id and the terminal status the agent server reported, once per watch; the
    watch then holds its socket until `stop(conversation_id)`. Closed at once, the socket's
    close (the handshake's answer, the connection's teardown: ~0.4 ms on the event loop)
    would land between the end heard and the start that refills its slot."""

    def __init__(self, events: Events, on_end: Callable[[str, ExecutionStatus], None]) -> None:
        self._events = events
        self._on_end = on_end
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.heard = 0  # ends heard

    def watch(self, conversation_id: str, conversation: Conversation | None = None) -> None:
        """Follow this conversation's events until its run ends (again, if watched before).
        `conversation`: just read (its agent server's URL and key), so not read again."""
        old = self._tasks.get(conversation_id)
        if old is not None and not old.done():
            return
        watching = self._watch(conversation_id, conversation)
        task = asyncio.get_running_loop().create_task(watching)
        self._tasks[conversation_id] = task
        task.add_done_callback(lambda t: self._forget(conversation_id, t))

    def stop(self, conversation_id: str) -> None:
        task = self._tasks.pop(conversation_id, None)
        if task is not None and not task.done():
            task.cancel()  # awaited by `aclose` if still winding down (closing its socket)
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def aclose(self) -> None:
        tasks = [*self._tasks.values(), *self._stopping]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _forget(self, conversation_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(conversation_id) is task:
            del self._tasks[conversation_id]

    async def _watch(self, conversation_id: str, conversation: Conversation | None) -> None:
        # settle=0: the end is wanted the moment it is sent, not after the replay's
        # stragglers (the poller's read, not this event, is what the batch records).
        target = conversation or conversation_id
        stream = self._events.follow(target, transport="websocket", settle=0.0)
        try:
            async with stream:
                async for event in stream:
                    status = event.execution_status
                    if status is not None and event.is_terminal:
                        self.heard += 1
                        self._on_end(conversation_id, status)
                        await asyncio.Event().wait()  # until `stop` cancels it (see above)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the poll still sees the end: only later
            log.info("not watching %s's events (%r); its end is polled", conversation_id, exc)
