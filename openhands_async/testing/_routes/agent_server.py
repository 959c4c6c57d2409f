"""The agent server's event WebSocket of a running conversation (issue 16).

`/agent-server/{sandbox_id}/sockets/events/{conversation_id}`, as openhands-ai 1.11.0's
agent server speaks it: the first frame must be `{"type": "auth", "session_api_key": K}`
with the conversation's own session key (within 10 s; else close 4001 "Authentication
failed"); an unknown conversation closes 4004; one subscriber too many closes 1013. Then
a fresh `full_state` snapshot (a new id each connect), the replay `resend_mode` asks for
(`all`, or `since` with `after_timestamp`, inclusive), and each event when its time comes.
A paused, failed or deleted sandbox cuts the connection (its agent server is gone). Faults:
`AgentServerBehavior` (drop, stall, refuse auth, unreachable, subscriber cap).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from .._events import ensure_events, wire_event
from .._faults import client_gone, drop_connection
from .._routing import RouteGroup, route
from .._state import ConversationRecord
from .._wire import parse_datetime_us

PATH = "/agent-server/{sandbox_id}/sockets/events/{conversation_id}"
AUTH_TIMEOUT = 10.0
# A follower re-checks the conversation at least this often (a pause, a new run).
_RECHECK = 0.25


class AgentServerRoutes(RouteGroup):
    @route("GET", PATH, "agent_events_socket", access="open")
    async def events_socket(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        book = ctx.sockets
        book.queries.append(request.query_string)
        if "Authorization" in request.headers or "X-Session-API-Key" in request.headers:
            book.credential_headers += 1
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        book.opened += 1
        key = await self._auth_frame(ws)
        book.auth_frames += key is not None
        behavior = ctx.knobs.agent_server
        # The agent server knows its sandbox's key, then looks the conversation up.
        sandbox = ctx.store.sandboxes.get(request.match_info["sandbox_id"])
        owner = sandbox.conversation if sandbox is not None else None
        if key is None or owner is None or not _key_ok(key, owner):
            await ws.close(code=4001, message=b"Authentication failed")
            return ws
        if book.refused < behavior.refuse_auth:
            book.refused += 1
            # The key the client had is now stale: a re-read of the conversation finds anew.
            owner.session_api_key = uuid.uuid4().hex
            await ws.close(code=4001, message=b"Authentication failed")
            return ws
        conv = ctx.conversation(request.match_info["conversation_id"])
        if conv is not owner or not self._running(conv):
            await ws.close(code=4004, message=b"Conversation not found")
            return ws
        limit = behavior.max_subscribers
        if limit is not None and book.open_now[conv.id] >= limit:
            await ws.close(code=1013, message=b"Too many connections for this conversation")
            return ws
        book.open_now[conv.id] += 1
        try:
            await self._serve(request, ws, conv)
        finally:
            book.open_now[conv.id] -= 1
        return ws

    async def _auth_frame(self, ws: web.WebSocketResponse) -> str | None:
        try:
            msg = await ws.receive(timeout=AUTH_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        if msg.type is not WSMsgType.TEXT:
            return None
        try:
            data = json.loads(msg.data)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("type") != "auth":
            return None
        key = data.get("session_api_key")
        return key if isinstance(key, str) else None

    def _running(self, conv: ConversationRecord) -> bool:
        view = conv.view(self.ctx.now())
        return (
            view is not None
            and view[0] == "RUNNING"
            and self.ctx.store.conversations.get(conv.id) is conv
        )

    async def _serve(
        self, request: web.Request, ws: web.WebSocketResponse, conv: ConversationRecord
    ) -> None:
        # One task reads (answers pings, sees the client leave), one writes the events.
        reader = asyncio.ensure_future(_drain(ws))
        writer = asyncio.ensure_future(self._follow(request, ws, conv, reader))
        try:
            await asyncio.wait([reader, writer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task

    async def _follow(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        conv: ConversationRecord,
        reader: asyncio.Future[None],
    ) -> None:
        ctx = self.ctx
        book = ctx.sockets
        behavior = ctx.knobs.agent_server
        drop_after = behavior.drop_after if book.dropped < behavior.drops else None
        stall_after = behavior.stall_after if book.stalled < behavior.stalls else None
        await ws.send_str(json.dumps(self._snapshot(conv)))
        sent: set[str] = set()
        wanted = _replay_filter(request, ctx.clock.wall_us)
        written = 0
        events: list[dict[str, Any]] = []
        known = -1
        cursor = 0  # events[:cursor] are all sent (the list is in time order)
        while True:
            if not self._running(conv):
                drop_connection(request, flush=False)  # the agent server went away
                return
            now = ctx.now()
            current = ensure_events(conv)
            if len(current) != known:  # a new run (send-message) appended events: re-sort
                events = sorted(current, key=lambda e: e["_at"])
                known, cursor = len(current), 0
            horizon = min(now, conv.paused_at)
            while cursor < len(events) and events[cursor]["_at"] <= horizon:
                event = events[cursor]
                cursor += 1
                if event["id"] in sent:
                    continue
                sent.add(event["id"])
                if not wanted(event):
                    continue
                if stall_after is not None and written >= stall_after:
                    book.stalled += 1
                    reader.cancel()  # stop reading: pings go unanswered, as on a dead path
                    while not client_gone(request):
                        if await ctx.sleep(_RECHECK):
                            return
                    return
                if drop_after is not None and written >= drop_after:
                    book.dropped += 1
                    drop_connection(request, flush=True)
                    return
                await ws.send_str(json.dumps(wire_event(event, ctx.clock)))
                written += 1
            # Live from here on: every event after the replay is wanted.
            wanted = _everything
            deadline = now + _RECHECK
            if cursor < len(events):
                deadline = min(deadline, events[cursor]["_at"])
            if await ctx.sleep_until(deadline):
                await ws.close()
                return

    def _snapshot(self, conv: ConversationRecord) -> dict[str, Any]:
        ctx = self.ctx
        view = conv.view(ctx.now())
        execution = view[1] if view else None
        return {
            "id": str(uuid.uuid4()),
            "timestamp": ctx.clock.iso(ctx.now(), zulu=False),
            "source": "environment",
            "parent_id": None,
            "key": "full_state",
            "value": {
                "id": str(uuid.UUID(conv.id)),
                "execution_status": execution or "idle",
                "confirmation_policy": {"kind": "NeverConfirm"},
                "max_iterations": 500,
                "stuck_detection": True,
            },
            "kind": "ConversationStateUpdateEvent",
        }


def _key_ok(given: str, conv: ConversationRecord) -> bool:
    return hmac.compare_digest(given.encode(), conv.session_api_key.encode())


def _everything(_event: dict[str, Any]) -> bool:
    return True


def _nothing(_event: dict[str, Any]) -> bool:
    return False


def _replay_filter(request: web.Request, wall_us: Any) -> Any:
    """Which already-visible events the replay sends (`resend_mode`)."""
    mode = request.query.get("resend_mode")
    if mode == "all":
        return _everything
    if mode == "since":
        after = parse_datetime_us(request.query.get("after_timestamp", ""))
        if after is None:
            return _nothing  # the real server logs a warning and replays nothing
        return lambda event: wall_us(event["_at"]) >= after
    return _nothing


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read until the client leaves; aiohttp answers pings while this reads."""
    async for msg in ws:
        if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            return
