"""`Events` with the helper built on it: `follow` (a conversation's events live)."""

from __future__ import annotations

from datetime import datetime

from .._base_client import BaseClient
from .._constants import (
    DEFAULT_FOLLOW_HEARTBEAT,
    DEFAULT_FOLLOW_MAX_RECONNECTS,
    DEFAULT_FOLLOW_POLL_INTERVAL,
    DEFAULT_FOLLOW_SETTLE,
)
from ..models import Conversation
from ..resources.events import Events as _Events
from ._follow_run import _Deps
from .follow import ConversationReader, EventStream, SandboxResumer, Transport

__all__ = ["Events"]


class Events(_Events):
    """A conversation's events: search, count, batch reads, and `follow` (live)."""

    def __init__(
        self, client: BaseClient, conversations: ConversationReader, sandboxes: SandboxResumer
    ) -> None:
        super().__init__(client)
        self._conversations = conversations
        self._sandboxes = sandboxes

    def follow(
        self,
        conversation_id: str | Conversation,
        *,
        since: datetime | str | None = None,
        until_done: bool = True,
        resume: bool = False,
        transport: Transport = "auto",
        poll_interval: float = DEFAULT_FOLLOW_POLL_INTERVAL,
        heartbeat: float | None = DEFAULT_FOLLOW_HEARTBEAT,
        max_reconnects: int = DEFAULT_FOLLOW_MAX_RECONNECTS,
        settle: float = DEFAULT_FOLLOW_SETTLE,
    ) -> EventStream:
        """Follow a conversation's events live, from its agent server's WebSocket.

        `async for event in client.events.follow(cid)` (or `async with ... as stream`)
        yields each `Event` as the agent emits it, once, in order: first the replay (all
        past events, or those at or after `since`), then live ones. Given a `Conversation`
        just read (not its id) whose sandbox is RUNNING, the first connection uses its agent
        server URL and key instead of reading it again.

        - `until_done=True`: end after the state update putting the agent in a terminal
          execution status (finished, error, stuck, waiting_for_confirmation), yielded once
          the socket has been quiet for `settle` s (replayed stragglers go first); a run
          already over ends the same way after its replay.
          `until_done=False` follows until you stop.
        - Breaks: a dropped socket (or a heartbeat pong missing for `heartbeat`/2 s)
          reconnects with backoff and replays from the last event seen: nothing missed,
          nothing repeated. `max_reconnects` failures in a row end it (or fall back).
          4001 re-reads the conversation once for a fresh key, then `AuthenticationError`;
          4004 raises `NotFoundError`.
        - A STARTING sandbox is waited for (reads every `poll_interval` s); a PAUSED one
          raises `ConversationPaused` unless `resume=True` (then it is resumed and followed);
          ERROR/MISSING raise `ConversationNotRunning`.
        - `transport="auto"`: if the agent server cannot be reached, poll the app server's
          `events/search` every `poll_interval` s instead (a warning says so; those events
          lag up to 30 s). "websocket" never falls back; "poll" only polls.
        - The session key goes only to the conversation's agent server, in the first
          frame; the client's API key never goes there; ws:// to a non-loopback host needs
          the client's `allow_insecure_http=True`.
        """
        deps = _Deps(self._client, self._conversations, self._sandboxes, self)
        return EventStream(
            deps,
            conversation_id,
            since=since,
            until_done=until_done,
            resume=resume,
            transport=transport,
            poll_interval=poll_interval,
            heartbeat=heartbeat,
            max_reconnects=max_reconnects,
            settle=settle,
        )
