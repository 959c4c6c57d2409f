"""Live events: `EventStream` follows a conversation on its agent server's WebSocket.

The app server has no streaming route for events, and its event store is fed by webhooks
the agent server buffers (5 events or 30 s), so `events/search` lags. The live channel is
`<agent server>/sockets/events/<conversation id>` (the web app and software-agent-sdk's
`RemoteConversation` use it): read the conversation for its `conversation_url` and
`session_api_key`, connect, send `{"type": "auth", "session_api_key": ...}` as the first
frame, and read one JSON event per frame.

What this module promises:

- Each event once, in order: ids already yielded are dropped, across the replay on connect
  (`resend_mode=all`, or `since` the caller's time) and every reconnect (`since` the last
  event seen; the server's `since` is inclusive, so the de-dup is what keeps it exact).
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

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol

import attrs

from .._base_client import BaseClient
from .._constants import (
    DEFAULT_FOLLOW_HEARTBEAT,
    DEFAULT_FOLLOW_MAX_RECONNECTS,
    DEFAULT_FOLLOW_POLL_INTERVAL,
    DEFAULT_FOLLOW_SETTLE,
    FOLLOW_RECONNECT_INITIAL_DELAY,
    FOLLOW_RECONNECT_MAX_DELAY,
)
from .._converter import structure
from .._http import WebSocket, WSClose
from .._inputs import is_loopback_url, normalize_uuid
from ..errors import (
    APIConnectionError,
    AuthenticationError,
    ConversationNotRunning,
    ConversationPaused,
    NotFoundError,
)
from ..models import Conversation, Event, SandboxStatus
from ..resources.events import Events

log = logging.getLogger("openhands_async")

__all__ = ["EventStream", "Transport", "agent_socket_url", "event_gist"]

Transport = Literal["auto", "websocket", "poll"]
_TRANSPORTS = ("auto", "websocket", "poll")


class ConversationReader(Protocol):
    async def get(self, conversation_id: str) -> Conversation: ...


class SandboxResumer(Protocol):
    async def resume(self, sandbox_id: str) -> None: ...


@attrs.frozen
class _Deps:
    client: BaseClient
    conversations: ConversationReader
    sandboxes: SandboxResumer
    events: Events


@attrs.frozen
class _Options:
    since: datetime | str | None
    until_done: bool
    resume: bool
    transport: Transport
    poll_interval: float
    heartbeat: float | None
    max_reconnects: int
    settle: float


class _State:
    """What the stream object and its generator share (no reference back to the stream)."""

    def __init__(self) -> None:
        self.socket: WebSocket | None = None
        self.snapshot: Event | None = None
        self.transport: str | None = None
        self.reconnects = 0
        self.seen: set[str] = set()
        self.last_timestamp: str | None = None  # the last event's, verbatim from the server
        self.last_event: Event | None = None

    def add(self, event: Event) -> bool:
        """Note an event; False if it was already yielded."""
        if event.id in self.seen:
            return False
        self.seen.add(event.id)
        raw = event.payload.get("timestamp")
        self.last_timestamp = raw if isinstance(raw, str) else event.timestamp.isoformat()
        self.last_event = event
        return True

    def release(self) -> None:
        ws, self.socket = self.socket, None
        if ws is not None:
            ws.abort()


class EventStream:
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
        conversation_id: str,
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
        self.conversation_id = normalize_uuid(conversation_id, "conversation_id")
        options = _Options(
            since, until_done, resume, transport, poll_interval, heartbeat, max_reconnects, settle
        )
        self._state = _State()
        self._gen = _run(deps, self.conversation_id, self._state, options)
        # A plain `async for ... break` drops the stream without closing it: drop the socket
        # when the object goes away (a finalizer, so no reference cycle keeps it alive).
        self._finalizer = weakref.finalize(self, self._state.release)

    @property
    def transport(self) -> str | None:
        return self._state.transport

    @property
    def reconnects(self) -> int:
        return self._state.reconnects

    @property
    def snapshot(self) -> Event | None:
        return self._state.snapshot

    @property
    def last_event(self) -> Event | None:
        """The last event yielded (its timestamp is where a later `since=` would resume)."""
        return self._state.last_event

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop following: close the socket (the conversation itself carries on)."""
        self._state.release()
        await self._gen.aclose()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def event_gist(event: Event, width: int = 100) -> str:
    """One line saying what an event is about: the command run, the file edited, the first
    line of an observation, the message text, the new execution status."""
    if event.execution_status is not None:
        gist = f"status -> {event.execution_status}"
    elif event.kind == "ActionEvent":
        action = event.action or {}
        what = event.command or event.path or event.text
        gist = f"{action.get('kind', 'action')}: {what}" if what else str(action.get("kind", ""))
    elif event.kind == "ObservationEvent":
        output = (event.output or "").strip()
        gist = output.splitlines()[0] if output else "(no output)"
    elif event.kind == "ConversationStateUpdateEvent":
        gist = f"{event.payload.get('key')} updated"
    else:
        gist = event.text or event.output or ""
    gist = " ".join(gist.split())
    return gist if len(gist) <= width else gist[: width - 1] + "…"


# ---------------------------------------------------------------------- the follow


class _Fallback(Exception):
    """The agent server is out of reach: poll instead (transport="auto" only)."""


def agent_socket_url(conversation: Conversation, *, allow_insecure_http: bool) -> str:
    """The conversation's event WebSocket: its agent server's base (the `conversation_url`
    up to `/api/conversations`) in ws/wss, `/sockets/events/<id>`. ws:// to a host that is
    not loopback is refused (ValueError) unless `allow_insecure_http`."""
    url = conversation.conversation_url or ""
    base, found, _ = url.partition("/api/conversations")
    if not found or not base.startswith(("http://", "https://")):
        raise ValueError(f"conversation {conversation.id} has no usable conversation_url")
    if base.startswith("http://") and not allow_insecure_http and not is_loopback_url(base):
        raise ValueError(
            f"refusing plain ws:// to a non-loopback agent server ({base}): the session key "
            "would travel unencrypted. Pass allow_insecure_http=True to the client if you must."
        )
    return "ws" + base[len("http") :] + f"/sockets/events/{conversation.id}"


async def _run(deps: _Deps, cid: str, state: _State, o: _Options) -> AsyncGenerator[Event, None]:
    if o.transport == "poll":
        state.transport = "poll"
        async for event in _poll(deps, cid, state, o):
            yield event
        return
    try:
        async for event in _follow_socket(deps, cid, state, o):
            yield event
    except _Fallback as why:
        log.warning(
            "conversation %s: agent server unreachable (%s); following by polling "
            "events/search every %ss instead (events arrive late, up to 30 s)",
            cid,
            why,
            o.poll_interval,
        )
        state.transport = "poll"
        async for event in _poll(deps, cid, state, o):
            yield event


async def _follow_socket(
    deps: _Deps, cid: str, state: _State, o: _Options
) -> AsyncGenerator[Event, None]:
    conv = await _running(deps, cid, o)
    refreshed = False  # re-read the conversation once after a 4001
    failures = 0  # reconnects in a row without an event
    connected = False
    while True:
        try:
            url = agent_socket_url(conv, allow_insecure_http=deps.client.allow_insecure_http)
        except ValueError as exc:
            if o.transport == "auto" and conv.conversation_url:
                raise _Fallback(str(exc)) from exc
            raise
        try:
            ws = await deps.client.open_websocket(
                url, params=_replay(state, o.since), heartbeat=o.heartbeat
            )
        except APIConnectionError as exc:
            failures += 1
            if o.transport == "auto" and (not connected or failures > o.max_reconnects):
                raise _Fallback(exc.message) from exc
            if failures > o.max_reconnects:
                raise
            await _backoff(failures)
            conv = await _running(deps, cid, o)
            continue
        state.socket = ws
        state.transport = "websocket"
        close: WSClose | None = None
        try:
            await ws.send_json({"type": "auth", "session_api_key": conv.session_api_key})
            quiet: float | None = None  # set once a snapshot shows the run already over
            while True:
                frame = await _receive(ws, quiet)
                if frame is None:
                    return  # the replay of a finished run is over
                if isinstance(frame, WSClose):
                    close = frame
                    break
                event = _parse(frame, url)
                if event is None:
                    continue
                # Any frame means the key was taken.
                connected, refreshed = True, False
                if event.is_snapshot:
                    state.snapshot = event
                    if o.until_done and event.is_terminal:
                        quiet = o.settle
                    continue
                failures = 0
                if state.add(event):
                    yield event
                    if o.until_done and event.is_terminal:
                        return
        except APIConnectionError as exc:
            log.debug("conversation %s: socket broke: %s", cid, exc.message)
        finally:
            state.socket = None
            await ws.aclose()
        if close is not None and close.code == 4001:
            if refreshed:
                raise AuthenticationError(
                    f"agent server refused the session key of conversation {cid} (4001), "
                    "also after reading the conversation again",
                    status=401,
                    method="WS",
                    url=url,
                )
            refreshed = True
            conv = await _running(deps, cid, o)
            continue
        if close is not None and close.code == 4004:
            raise NotFoundError(
                f"agent server has no conversation {cid} (4004)", status=404, method="WS", url=url
            )
        failures += 1
        if failures > o.max_reconnects:
            if o.transport == "auto":
                raise _Fallback(f"{failures - 1} reconnects failed")
            raise APIConnectionError(
                f"conversation {cid}: the agent server socket closed "
                f"({_describe(close)}) {failures - 1} times in a row",
                method="WS",
                url=url,
            )
        log.debug("conversation %s: socket closed (%s); reconnecting", cid, _describe(close))
        state.reconnects += 1
        await _backoff(failures)
        conv = await _running(deps, cid, o)


def _replay(state: _State, since: datetime | str | None) -> Sequence[tuple[str, str]]:
    """What the server replays on connect: after the last event seen, else from `since`,
    else everything."""
    after = state.last_timestamp
    if after is None and since is not None:
        after = since if isinstance(since, str) else since.isoformat()
    if after is None:
        return [("resend_mode", "all")]
    return [("resend_mode", "since"), ("after_timestamp", after)]


async def _receive(ws: WebSocket, quiet: float | None) -> str | WSClose | None:
    """The next frame; None if `quiet` seconds pass without one."""
    if quiet is None:
        return await ws.receive()
    try:
        return await asyncio.wait_for(ws.receive(), quiet)
    except asyncio.TimeoutError:
        return None


def _parse(frame: str, url: str) -> Event | None:
    try:
        data = json.loads(frame)
        return structure(data, Event, method="WS", url=url)
    except Exception as exc:  # one bad frame must not end the follow
        log.warning("skipping an agent-server frame that is not an event: %s", exc)
        return None


def _describe(close: WSClose | None) -> str:
    if close is None:
        return "connection lost"
    return f"code {close.code}" + (f" {close.reason!r}" if close.reason else "")


async def _backoff(failures: int) -> None:
    delay = FOLLOW_RECONNECT_INITIAL_DELAY * 2 ** (failures - 1)
    await asyncio.sleep(min(FOLLOW_RECONNECT_MAX_DELAY, delay))


async def _running(deps: _Deps, cid: str, o: _Options) -> Conversation:
    """Read the conversation until its sandbox runs (waiting while it starts; resuming a
    paused one if asked), and return it with its agent-server URL and key."""
    resumed = False
    while True:
        conv = await deps.conversations.get(cid)
        status = conv.sandbox_status
        if status == SandboxStatus.RUNNING and conv.conversation_url and conv.session_api_key:
            return conv
        if status == SandboxStatus.PAUSED:
            if not o.resume:
                raise ConversationPaused(
                    f"conversation {cid} is paused (its sandbox is stopped): pass resume=True "
                    "to resume and follow it, or read its events with events.search",
                    conversation_id=cid,
                    sandbox_status=str(status),
                )
            if not resumed and conv.sandbox_id:
                log.info("conversation %s: resuming its paused sandbox to follow it", cid)
                await deps.sandboxes.resume(conv.sandbox_id)
                resumed = True
        elif status in (SandboxStatus.ERROR, SandboxStatus.MISSING):
            raise ConversationNotRunning(
                f"conversation {cid} has no running sandbox ({status})",
                conversation_id=cid,
                sandbox_status=str(status),
            )
        await asyncio.sleep(o.poll_interval)


async def _poll(deps: _Deps, cid: str, state: _State, o: _Options) -> AsyncGenerator[Event, None]:
    """Follow through the app server's `events/search` (late: webhook-fed), by timestamp."""
    while True:
        since = state.last_event.timestamp if state.last_event is not None else _as_dt(o.since)
        async for event in deps.events.search(cid, since=since):
            if event.is_snapshot or not state.add(event):
                continue
            yield event
            if o.until_done and event.is_terminal:
                return
        if o.until_done:
            conv = await deps.conversations.get(cid)
            if conv.sandbox_status in (SandboxStatus.ERROR, SandboxStatus.MISSING):
                return  # nothing more will come
        await asyncio.sleep(o.poll_interval)


def _as_dt(since: datetime | str | None) -> datetime | None:
    if since is None or isinstance(since, datetime):
        return since
    return structure(since, datetime)
