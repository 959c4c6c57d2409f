"""The follow itself, behind `lib.follow.EventStream`: the WebSocket loop (connect, auth
frame, replay, de-dup, reconnect, close codes), waiting for or resuming the sandbox, and the
polling fallback. See `lib/follow.py` for what it promises.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Literal, Protocol

import attrs

from .._base_client import BaseClient
from .._constants import (
    FOLLOW_RECONNECT_INITIAL_DELAY,
    FOLLOW_RECONNECT_MAX_DELAY,
)
from .._converter import structure
from .._http import WebSocket, WSClose
from .._inputs import is_loopback_url
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
    known: Conversation | None = None  # read by the caller: the first connection's URL and key


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


async def _run(
    deps: _Deps, cid: str, state: _State, o: _Options
) -> AsyncGenerator[tuple[Event], None]:
    # One-item batches: what `AsyncStream` takes (a stream-start read hands over many).
    if o.transport == "poll":
        state.transport = "poll"
        async for event in _poll(deps, cid, state, o):
            yield (event,)
        return
    try:
        async for event in _follow_socket(deps, cid, state, o):
            yield (event,)
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
            yield (event,)


async def _follow_socket(
    deps: _Deps, cid: str, state: _State, o: _Options
) -> AsyncGenerator[Event, None]:
    conv = o.known if o.known is not None and _reachable(o.known) else None
    if conv is None:
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
        ending: Event | None = None
        try:
            await ws.send_json({"type": "auth", "session_api_key": conv.session_api_key})
            quiet: float | None = None  # set once the run is known to be over
            # The agent server interleaves its replay with live events, so the terminal
            # state update can arrive before older replayed ones: hold it until the socket
            # has been quiet for `settle`, yielding the stragglers first.
            while True:
                frame = await _receive(ws, quiet)
                if frame is None or (isinstance(frame, WSClose) and ending is not None):
                    if ending is not None:
                        state.last_event = ending
                        yield ending
                    return  # the run is over and its replay delivered
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
                if not state.add(event):
                    continue
                if o.until_done and event.is_terminal and ending is None:
                    ending, quiet = event, o.settle
                    continue
                yield event
        except APIConnectionError as exc:
            log.debug("conversation %s: socket broke: %s", cid, exc.message)
            if ending is not None:
                state.last_event = ending
                yield ending
                return
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


def _reachable(conv: Conversation) -> bool:
    """Its agent server runs, and the conversation says where and with which key."""
    running = conv.sandbox_status == SandboxStatus.RUNNING
    return running and bool(conv.conversation_url and conv.session_api_key)


async def _running(deps: _Deps, cid: str, o: _Options) -> Conversation:
    """Read the conversation until its sandbox runs (waiting while it starts; resuming a
    paused one if asked), and return it with its agent-server URL and key."""
    resumed = False
    while True:
        conv = await deps.conversations.get(cid)
        status = conv.sandbox_status
        if _reachable(conv):
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
