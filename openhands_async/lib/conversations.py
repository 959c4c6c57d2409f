"""`Conversations` with the helpers built on it: `stream_start` (the live start)."""

from __future__ import annotations

from typing import Any

from .._constants import DEFAULT_STREAM_POLL_INTERVAL
from .._start_request import MessageInput, make_start_request
from ..resources.conversations import Conversations as _Conversations
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
        )
