"""Live events: `EventStream` follows a conversation on its agent server's WebSocket.

The app server has no streaming route for events, and its event store is fed by webhooks
the agent server buffers (5 events or 30 s), so `events/search` lags. The live channel is
`<agent server>/sockets/events/<conversation id>` (the web app and software-agent-sdk's
`RemoteConversation` use it): read the conversation for its `conversation_url` and
`session_api_key`, connect, send `{"type": "auth", "session_api_key": ...}` as the first
frame, and read one JSON event per frame.

What this module promises:

- Each event once, in the order the server sends it: ids already yielded are dropped,
  across the replay on connect (`resend_mode=all`, or `since` the caller's time) and every
  reconnect (`since` the last event seen; the server's `since` is inclusive, so the de-dup
  is what keeps it exact).
  The server interleaves its replay with live events, so the terminal state update is held
  until the socket has been quiet for `settle` (stragglers of the replay go first).
  The per-connection `full_state` snapshot (a new id every time) is not yielded; the latest
  is `EventStream.snapshot`.
- Breaks: a dropped socket or a missed heartbeat reconnects with backoff; 4001 re-reads
  the conversation once for a fresh key, then `AuthenticationError`; 4004 `NotFoundError`.
  A PAUSED sandbox raises `ConversationPaused`, or with `resume=True` is resumed and then
  followed; a STARTING one is waited for. With `transport="auto"` an agent server that
  cannot be reached (or only over plain ws:// to another host) makes it poll the app
  server's `events/search` instead, saying so in a warning.
- Security: the session key goes only to the conversation's own agent server, in the first
  frame: never in a URL, a header or a log; the client's account key is never sent there.
  ws:// to a host that is not loopback is refused unless the client has
  `allow_insecure_http=True`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .._constants import (
    DEFAULT_FOLLOW_HEARTBEAT,
    DEFAULT_FOLLOW_MAX_RECONNECTS,
    DEFAULT_FOLLOW_POLL_INTERVAL,
    DEFAULT_FOLLOW_SETTLE,
)
from .._inputs import normalize_uuid
from ..models import Conversation, Event, text_blocks
from ._async_stream import AsyncStream
from ._follow_run import (
    _TRANSPORTS,
    ConversationReader,
    SandboxResumer,
    Transport,
    _Deps,
    _Options,
    _run,
    _State,
    agent_socket_url,
)

__all__ = [
    "ConversationReader",
    "EventStream",
    "SandboxResumer",
    "Transport",
    "agent_socket_url",
    "event_gist",
]


class EventStream(AsyncStream[Event]):
    """A conversation's events as they happen (see `Events.follow`).

    `async for event in client.events.follow(cid)`, or `async with ... as stream:`.
    `break`, cancellation, leaving the `async with` and `aclose()` close the socket at once.
    `transport` says what is in use ("websocket" or "poll", None before connecting),
    `reconnects` how many times the socket was opened again, `snapshot` the latest
    `full_state` state update the agent server sent on connect.
    """

    def __init__(
        self,
        deps: _Deps,
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
    ) -> None:
        if transport not in _TRANSPORTS:
            raise ValueError(f"transport must be one of {_TRANSPORTS}, got {transport!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        if max_reconnects < 0:
            raise ValueError(f"max_reconnects must be >= 0, got {max_reconnects}")
        known = conversation_id if isinstance(conversation_id, Conversation) else None
        self.conversation_id = normalize_uuid(
            known.id if known is not None else conversation_id, "conversation_id"
        )
        options = _Options(
            since,
            until_done,
            resume,
            transport,
            poll_interval,
            heartbeat,
            max_reconnects,
            settle,
            known,
        )
        self._state = _State()
        super().__init__(
            _run(deps, self.conversation_id, self._state, options), self._state.release
        )

    @property
    def transport(self) -> str | None:
        """What the stream uses now: "websocket" or "poll" (None before it connects)."""
        return self._state.transport

    @property
    def reconnects(self) -> int:
        """How many times the socket was reopened after a break."""
        return self._state.reconnects

    @property
    def snapshot(self) -> Event | None:
        """The latest `full_state` snapshot the agent server sent (not yielded)."""
        return self._state.snapshot

    @property
    def last_event(self) -> Event | None:
        """The last event yielded (its timestamp is where a later `since=` would resume)."""
        return self._state.last_event


def event_gist(event: Event, width: int | None = 100) -> str:
    """One line saying what an event is about: the command run, the file edited, the first
    line of an observation, the message text, the new execution status (cut to `width`
    characters with "…"; `None`: not cut)."""
    gist = " ".join(_gist(event).split())
    return gist if width is None or len(gist) <= width else gist[: width - 1] + "…"


def _gist(event: Event) -> str:
    payload = event.payload
    if event.execution_status is not None:
        return f"status -> {event.execution_status}"
    if event.kind == "ActionEvent":
        action = event.action or {}
        kind = action.get("kind") or payload.get("tool_name") or "action"
        what = event.command or event.path or event.text or _first_text(action, _ACTION_FIELDS)
        # The real server's `summary` is the tool call as JSON: the last resort only.
        return f"{kind}: {what}" if what else text_blocks(payload.get("thought")) or str(kind)
    if event.kind == "ObservationEvent":
        output = (event.output or "").strip()
        return output.splitlines()[0] if output else "(no output)"
    if event.kind == "ConversationStateUpdateEvent":
        return f"{payload.get('key')} updated"
    if event.kind == "SystemPromptEvent":
        return "system prompt"
    found = event.text or event.output or _first_text(payload, ("error", "detail", "summary"))
    return found or ""


_ACTION_FIELDS = ("code", "url", "query", "message")


def _first_text(fields: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return next((v for n in names if isinstance(v := fields.get(n), str) and v.strip()), None)
