"""The context every route handler gets: the FakeCloud's live knobs and its working parts.

`Context` is what a route module may touch: the knobs (read on every request, so changing
`cloud.max_running` affects the next start), the clock, the account's records (`Store`),
the fault book, the traffic counters, the renderer, and the few operations several route
groups need (the visible conversation for an id, the running cap, sleeping until the
FakeCloud stops, the credential check). FakeCloud owns one and hands it to the app; route
modules never see FakeCloud itself.

State a new route group needs beyond `Store` (settings, secrets, profiles: issue 20) goes
in its own record module and one new field here, so FakeCloud can snapshot it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import attrs
from aiohttp import web

from ._account import Account
from ._faults import Fault, FaultBook
from ._plan import AgentServerBehavior, StreamBehavior, Timing
from ._render import Renderer
from ._sockets import SocketBook
from ._state import ConversationRecord, Store
from ._wire import NOT_RUNNING, Clock, loopback_url, uuid_hex

_SELECT_RESOLUTION = 0.001  # epoll's, in seconds


class Knobs(Protocol):
    """The knobs the routes read, as FakeCloud's attributes (see `FakeCloud`)."""

    @property
    def api_key(self) -> str | None: ...
    @property
    def auth(self) -> str: ...
    @property
    def start_timeline(self) -> Sequence[tuple[str, float]]: ...
    @property
    def start_outcome(self) -> str: ...
    @property
    def error_detail(self) -> str: ...
    @property
    def idle_seconds(self) -> float: ...
    @property
    def run_seconds(self) -> float: ...
    @property
    def run_outcome(self) -> str: ...
    @property
    def time_scale(self) -> float: ...
    @property
    def stream(self) -> StreamBehavior: ...
    @property
    def max_running(self) -> int | None: ...
    @property
    def cap_mode(self) -> str: ...
    @property
    def rate_limit(self) -> tuple[int, float] | None: ...
    @property
    def latency(self) -> float: ...
    @property
    def agent_server(self) -> AgentServerBehavior: ...


@attrs.define
class RequestRecord:
    """One request as FakeCloud saw it.

    `time` is the loop time it arrived; `route` a name as in `FakeCloud.requests`; `status`
    the HTTP status sent, the fault action's name when a fault broke the response instead
    ("reset_before", "stall", ...), or None while it is still being handled. A "hold" fault
    sets "hold" only once the handler has run (the server acted; the answer never comes).
    """

    time: float
    method: str
    path: str
    query: list[tuple[str, str]]
    route: str
    status: int | str | None = None


# The fault (if any) the current request is being broken with, and its record, for a
# handler that streams and so breaks its own response (see `Context.breaking`).
_ACTIVE_FAULT: contextvars.ContextVar[Fault | None] = contextvars.ContextVar(
    "fake_cloud_fault", default=None
)
_HELD_RECORD: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "fake_cloud_record", default=None
)


class Context:
    """One FakeCloud's state and knobs, as the app and its route groups use them."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.clock = Clock()
        self.store = Store()
        #: Settings, profiles, secrets, pending messages, the catalogue (issue 20).
        self.account = Account()
        self.faults = FaultBook()
        #: Requests seen, by route name, faulted and refused ones included.
        self.requests: Counter[str] = Counter()
        #: Every request in arrival order.
        self.request_log: list[RequestRecord] = []
        #: Start POSTs (plain and stream) that reached their handler.
        self.starts_received = 0
        #: The agent-server WebSockets' counters (issue 16).
        self.sockets = SocketBook()
        self._closing: asyncio.Future[None] | None = None
        self._renderer: Renderer | None = None

    # -- lifecycle (FakeCloud calls these) ---------------------------------------------

    @property
    def started(self) -> bool:
        return self.clock.started

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._closing = loop.create_future()
        self.clock.start(loop)

    def serve_at(self, base_url: str, agent_port: int) -> None:
        self._renderer = Renderer(self.clock, base_url, agent_port)

    def close(self) -> None:
        """Wake every sleeper: the FakeCloud is stopping."""
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        self.sockets.close()

    # -- what handlers read ------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    @property
    def render(self) -> Renderer:
        renderer = self._renderer
        if renderer is None:
            raise RuntimeError(NOT_RUNNING)
        # Read live: `cloud.agent_server = AgentServerBehavior(unreachable=True)` moves the
        # agent servers behind a port that refuses connections from the next read on.
        if self.knobs.agent_server.unreachable:
            renderer.agent_base = loopback_url(self.sockets.dead_port())
        else:
            renderer.agent_base = renderer.agents_url
        return renderer

    def timing(self) -> Timing:
        knobs = self.knobs
        return Timing(
            start_timeline=tuple(knobs.start_timeline),
            start_outcome=knobs.start_outcome,
            error_detail=knobs.error_detail,
            idle_seconds=knobs.idle_seconds,
            run_seconds=knobs.run_seconds,
            run_outcome=knobs.run_outcome,
            time_scale=knobs.time_scale,
            stream=knobs.stream,
        )

    def conversation(self, raw_id: str) -> ConversationRecord | None:
        """The conversation an id names, if it exists now (a batch get would answer it)."""
        conv = self.store.conversations.get(uuid_hex(raw_id) or "")
        if conv is None or self.now() < conv.created:
            return None
        return conv

    def make_room(self, now: float) -> int | None:
        """Apply the running cap before a start or resume: the running count if refused."""
        return self.store.make_room(now, self.knobs.max_running, self.knobs.cap_mode)

    # -- credentials -------------------------------------------------------------------

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether a request's headers carry the key, in the way `auth` wants it."""
        if self.knobs.api_key is None:
            return True
        if self.knobs.auth == "session":
            return self.key_matches(headers.get("X-Session-API-Key", ""))
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.key_matches(given)

    def key_matches(self, given: str) -> bool:
        """The key check alone, for credentials sent elsewhere (a socket's first frame)."""
        key = self.knobs.api_key
        return key is None or hmac.compare_digest(given.encode(), key.encode())

    # -- traffic -----------------------------------------------------------------------

    def log_request(self, request: web.Request, route: str) -> RequestRecord:
        record = RequestRecord(
            time=self.now(),
            method=request.method,
            path=request.path,
            query=list(request.query.items()),
            route=route,
        )
        self.request_log.append(record)
        self.requests[route] += 1
        return record

    @contextlib.contextmanager
    def breaking(self, fault: Fault, record: RequestRecord) -> Iterator[None]:
        """While the handler runs: the fault breaking this request (see `active_fault`)."""
        token = _ACTIVE_FAULT.set(fault)
        held = _HELD_RECORD.set(record)
        try:
            yield
        finally:
            _ACTIVE_FAULT.reset(token)
            _HELD_RECORD.reset(held)

    @staticmethod
    def active_fault() -> tuple[Fault | None, RequestRecord | None]:
        """The fault breaking the current request and its record, for a streaming handler."""
        return _ACTIVE_FAULT.get(), _HELD_RECORD.get()

    # -- waiting -----------------------------------------------------------------------

    async def sleep(self, seconds: float | None) -> bool:
        """Sleep (None: forever) unless the FakeCloud stops first; True if it is stopping."""
        closing = self._closing
        if closing is None:
            raise RuntimeError(NOT_RUNNING)
        if not closing.done() and (seconds is None or seconds > 0):
            await asyncio.wait([closing], timeout=seconds)
        return closing.done()

    async def sleep_until(self, deadline: float) -> bool:
        # The selector counts whole milliseconds (asyncio rounds a timeout up), so a timed
        # wait ends up to 1 ms late: each event an agent server pushes would go out 0.5 ms
        # late on average, and the next, 10 us after it, 1 ms late. So wait until 1 ms
        # before, then yield to the loop until the moment.
        early = deadline - self.now() - _SELECT_RESOLUTION
        if early > 0 and await self.sleep(early):
            return True
        while deadline - self.now() > 0:  # noqa: ASYNC110 (no event marks a moment)
            await asyncio.sleep(0)
        return await self.sleep(0)

    async def hold(self, record: RequestRecord) -> None:
        """The handler has run: say so (tests wait for it), then answer nothing until stop."""
        record.status = "hold"
        await self.sleep(None)
