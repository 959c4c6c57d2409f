"""`Conversations` with the helpers built on it: `stream_start` (the live start) and `ask`
(a follow-up message and the agent's next reply)."""

from __future__ import annotations

import asyncio
from typing import Any

from .._constants import (
    DEFAULT_ASK_POLL_INTERVAL,
    DEFAULT_ASK_TIMEOUT,
    DEFAULT_START_STALL_TIMEOUT,
    DEFAULT_STREAM_POLL_INTERVAL,
)
from .._inputs import normalize_uuid
from .._start_request import MessageInput, make_start_request
from ..models import Event
from ..resources.conversations import Conversations as _Conversations
from ..resources.events import Events
from .streaming import StartTaskStream

__all__ = ["Conversations"]


class Conversations(_Conversations):
    """App conversations: start them (also streamed), read them, search them."""

    def stream_start(
        self,
        message: MessageInput,
        *,
        raise_on_error: bool = True,
        recover: bool = True,
        idle_timeout: float | None = None,
        poll_interval: float = DEFAULT_STREAM_POLL_INTERVAL,
        stall_timeout: float | None = DEFAULT_START_STALL_TIMEOUT,
        **options: Any,
    ) -> StartTaskStream:
        """Start a conversation and follow its start task live (`POST .../stream-start`).

        Use as `async for task in client.conversations.stream_start(...)` or inside
        `async with ... as stream`. Each `StartTask` snapshot is yielded as soon as the
        server writes it. `options` are those of `start`.

        - `raise_on_error`: after yielding a final ERROR task, raise `StartTaskFailed`.
        - `recover`: if the stream breaks or stays silent for `idle_timeout` seconds (default
          `Timeouts.stream_idle`), carry on by polling the task every `poll_interval`
          seconds (looking it up by conversation id first if no element had arrived). The
          start is never sent twice. With `recover=False` the break is raised
          (`StreamError`, `APIConnectionError`/`APITimeoutError`).
        - A silent stream is not closed: the open-source server runs the start inside the
          stream's response and drops it when that connection closes. The connection stays
          open, and is read on (later elements are used too), while the task is polled; each
          status is yielded once, in order. It is closed once the task is READY or ERROR,
          on `StartStalledError`, when the server ends it, or when you leave (`break`,
          cancellation, `aclose()`). A cut connection is gone anyway: then only polling.
        - `stall_timeout`: while recovering, a task whose status and `updated_at` have not
          moved for this many seconds (default 900: above the server's own bounds on a
          sandbox start and a setup script) raises `StartStalledError` (`.task`); None polls
          for as long as it takes. A start the server dropped (a cut stream on the
          open-source server) stays in its last status for good. The start is not sent
          again: look at it later with `client.start_tasks.get(error.task.id)`.
        """
        request = make_start_request(message, **options)
        return StartTaskStream(
            self._client,
            request,
            start_tasks=self._start_tasks,
            safe_start=self.safe_start(request),
            raise_on_error=raise_on_error,
            recover=recover,
            idle_timeout=idle_timeout,
            poll_interval=poll_interval,
            stall_timeout=stall_timeout,
        )

    async def ask(
        self,
        conversation_id: str,
        message: MessageInput,
        *,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
        poll_interval: float = DEFAULT_ASK_POLL_INTERVAL,
    ) -> str | None:
        """Send a follow-up message and wait for the agent's reply to it: the text of its
        next message (or final answer), never one it gave before this message.

        Returns None if the agent's run ends (finished, error, stuck) without a reply. Ask
        an agent that is idle or done: one still working on an earlier message may answer
        that one first, and its answer is what comes next.
        Raises `TimeoutError` after `timeout` seconds (None: wait as long as it takes),
        and what `send_message` raises (e.g. `ConflictError` for a paused sandbox). The
        events are read every `poll_interval` seconds.

            reply = await client.conversations.ask(conversation_id, "Now add tests")
        """
        cid = normalize_uuid(conversation_id, "conversation_id")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 or None, got {timeout!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        events = Events(self._client)
        # What is there before the message goes out is not the reply, however recent: read
        # the newest event's time (the server's clock, not ours) and every event since.
        newest = [e async for e in events.search(cid, order="TIMESTAMP_DESC", limit=1)]
        since = newest[0].timestamp if newest else None
        seen = {e.id async for e in events.search(cid, since=since)} if since else set()
        await self.send_message(cid, message)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            async for event in events.search(cid, since=since):
                if event.id in seen:
                    continue
                seen.add(event.id)
                if _is_reply(event):
                    return event.text
                if _run_ended(event):
                    return None
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(
                    f"no reply from the agent of conversation {cid} within {timeout:g} s "
                    "(it may still answer: read it later with events.last_agent_message)"
                )
            pause = (
                poll_interval if deadline is None else min(poll_interval, deadline - loop.time())
            )
            await asyncio.sleep(max(0.0, pause))


# Where a run of the agent ends; a reply, if any, comes before it.
_RUN_ENDED = frozenset({"finished", "error", "stuck"})


def _is_reply(event: Event) -> bool:
    """The agent's message, or its final answer (what `last_agent_message` reads)."""
    return (
        event.source == "agent"
        and event.kind in ("MessageEvent", "ActionEvent")
        and event.text is not None
    )


def _run_ended(event: Event) -> bool:
    payload = event.payload
    return (
        event.kind == "ConversationStateUpdateEvent"
        and payload.get("key") == "execution_status"
        and str(payload.get("value")).lower() in _RUN_ENDED
    )
