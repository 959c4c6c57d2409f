"""FakeCloud: the public face of the fake server (lifecycle, knobs, counters, snapshots)."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from ._account import Account
from ._app import AGENT_SERVER_GROUPS, API_GROUPS, ROUTE_NAMES, Api
from ._context import Context, RequestRecord
from ._events import TICK
from ._faults import Fault
from ._plan import (
    DEFAULT_ERROR_DETAIL,
    DEFAULT_START_TIMELINE,
    AgentServerBehavior,
    StreamBehavior,
    check_timeline,
    plan_start,
)
from ._sockets import SocketBook
from ._validation import parse_start_body
from ._wire import HOST, NOT_RUNNING, json_bytes, loopback_url, uuid_hex

# How long stopping waits for in-flight handlers; ours wake up on stop, so this is a backstop.
SHUTDOWN_TIMEOUT = 0.5

__all__ = ["FakeCloud", "RequestRecord"]


class FakeCloud:
    """A real aiohttp server on 127.0.0.1 that answers like the OpenHands Cloud V1 API.

    It speaks raw JSON with the field sets and framing captured from a real server, for the
    routes the SDK uses: start and stream-start, batch get / search / count of start tasks and
    conversations, the probes, and the web app's HTML for `GET /api/v1/app-conversations/{id}`;
    send-message (re-runs a finished conversation; 409 while its sandbox is not RUNNING, 410
    once the sandbox is deleted), update, delete, download (a zip), git changes/diff and file
    reads; events search / count / batch get (a small generated list per conversation, see
    `_events`); sandboxes search / batch get / start / pause / resume / delete (pausing
    freezes the conversation's timeline, resuming continues it); users/me; and the V0 routes
    under /api/conversations (create, search, get, delete, start, stop, events).
    Route names for `requests` and `Fault(route=...)`: see `ROUTE_NAMES` (e.g. "send_message",
    "search_events", "count_events", "get_events", "search_sandboxes", "get_sandboxes",
    "pause_sandbox", "resume_sandbox", "delete_sandbox", "users_me", "legacy_create").
    Statuses are computed lazily from the loop clock, so it holds tens of thousands of
    conversations without a background task each.

        async with FakeCloud(time_scale=0.1) as cloud:
            client = OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url)

    Keyword arguments (all are also attributes; changing one affects later requests/starts):

    - `api_key="test-key"`, `auth="bearer"`: "bearer" wants `Authorization: Bearer <key>`,
      "session" wants `X-Session-API-Key: <key>` (the open-source server). Anything else gets
      401 `{"detail":"Unauthorized"}`. `api_key=None` turns auth off. Probes never need it.
    - `port=0`: a free port is picked; read it back from `port` / `base_url`.
    - `start_timeline`: `(status, seconds after the previous step)` pairs the start task goes
      through (default: every status, ~0.15 s in all). Statuses may be any string, e.g. one
      the client has never heard of. The last step is replaced by (or followed by) the outcome.
    - `start_outcome="READY"` or "ERROR"; `error_detail` is the ERROR task's `detail`.
    - `idle_seconds=0.02`, `run_seconds=0.1`, `run_outcome="finished"`: after READY the
      conversation is idle, then running, then ends in `run_outcome` (finished, error, stuck or
      waiting_for_confirmation). A start without an initial message stays idle.
    - `time_scale=1.0`: multiplies every delay above (0.01 for fast tests, 60 for a slow demo).
    - `stream`: a `StreamBehavior` that makes stream-start cut, stall or write garbage, and
      (`drops_start=True`) end the start with the stream, as the open-source server does.
    - `max_running=None`, `cap_mode="pause"`: the per-account cap on running conversations
      (sandbox STARTING/RUNNING, execution not finished/error/stuck/waiting_for_confirmation).
      A start or a sandbox resume beyond the cap: "pause" pauses the oldest running ones to
      make room (sandbox PAUSED, execution null, counted in `paused_by_cap`); "refuse"
      answers it 429 with
      `{"detail":{"error":"CONCURRENCY_LIMIT_REACHED","limit":N,"current":M}}`.
    - `rate_limit=None` or `(requests, seconds)`: a fixed window per credential, like the
      Cloud: 429 `{"error":"Rate limit exceeded: N per W second"}` with `Retry-After` and
      `X-RateLimit-Limit/Remaining/Reset`. Probes and non-API paths are exempt.
    - `latency=0.0`: seconds added before every response (not scaled).
    - `agent_server`: an `AgentServerBehavior` making the agent servers' event WebSocket
      drop, stall, refuse auth or be unreachable (see `agent_sockets` for its counters).

    Agent servers: while a conversation's sandbox is RUNNING its `conversation_url` and
    `session_api_key` are filled, and `<agent server>/sockets/events/<conversation id>`
    speaks the real agent server's protocol: the first frame must be
    `{"type": "auth", "session_api_key": ...}` (4001 otherwise; 4004 for an unknown
    conversation; 1013 past `max_subscribers`), then a `full_state` snapshot (a new id each
    time), the replay (`resend_mode=all`, or `since` with `after_timestamp`, inclusive), and
    each event as its time comes. Pausing or deleting the sandbox cuts the socket.

    Per-start overrides go in the initial message's text as `[fake:key=value]` markers (several
    keys may share one marker, comma-separated), so one server can serve mixed outcomes:
    `start=READY|ERROR`, `outcome=finished|error|stuck|waiting_for_confirmation`,
    `run_seconds=S`, `idle_seconds=S` (`inf` never ends), and the stream misbehaviours
    `stream_cut_after=K`, `stream_stall_after=K`, `stream_garbage_after=K`, and
    `stream_drops_start=1` (a stream ended before `]` leaves its task frozen for good). An
    unknown key or bad value answers 422, so a typo never silently runs the default.

    Behaviour measured on a real server and reproduced: a start reusing a known
    `conversation_id` ends in ERROR and leaves the original conversation's execution_status
    null for good (`duplicate_starts`); `start-tasks/search?conversation_id__eq=` finds READY
    tasks only; start-task reads from the database (batch get, search) write timestamps
    without the `Z`, while the start response and stream elements have it. A conversation
    appears (batch get stops answering null) once its sandbox exists.

    A FakeCloud runs once: `start()` (or `async with`) then `stop()`; stopping cuts open
    streams and stalled requests at once.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        auth: Literal["bearer", "session"] = "bearer",
        port: int = 0,
        start_timeline: Sequence[tuple[str, float]] = DEFAULT_START_TIMELINE,
        start_outcome: Literal["READY", "ERROR"] = "READY",
        error_detail: str = DEFAULT_ERROR_DETAIL,
        idle_seconds: float = 0.02,
        run_seconds: float = 0.1,
        run_outcome: Literal["finished", "error", "stuck", "waiting_for_confirmation"] = "finished",
        time_scale: float = 1.0,
        stream: StreamBehavior | None = None,
        max_running: int | None = None,
        cap_mode: Literal["pause", "refuse"] = "pause",
        rate_limit: tuple[int, float] | None = None,
        latency: float = 0.0,
        agent_server: AgentServerBehavior | None = None,
    ) -> None:
        if auth not in ("bearer", "session"):
            raise ValueError(f"auth must be 'bearer' or 'session', got {auth!r}")
        if cap_mode not in ("pause", "refuse"):
            raise ValueError(f"cap_mode must be 'pause' or 'refuse', got {cap_mode!r}")
        if not time_scale >= 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale!r}")
        self.api_key = api_key
        self.auth = auth
        self.start_timeline = check_timeline(start_timeline)
        self.start_outcome = start_outcome
        self.error_detail = error_detail
        self.idle_seconds = idle_seconds
        self.run_seconds = run_seconds
        self.run_outcome = run_outcome
        self.time_scale = time_scale
        self.stream = stream or StreamBehavior()
        self.max_running = max_running
        self.cap_mode = cap_mode
        self.rate_limit = rate_limit
        self.latency = latency
        self.agent_server = agent_server or AgentServerBehavior()
        # The routes' view of this FakeCloud: its knobs (read live), state and counters.
        self._ctx = Context(self)
        plan_start(self._ctx.timing(), None)  # fail here, not on the first start, on bad knobs
        self._requested_port = port
        self._port: int | None = None
        self._runners: list[web.AppRunner] = []
        # Tests reach into the records (`cloud._store.conversations[...]`).
        self._store = self._ctx.store

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakeCloud:
        """Start serving on 127.0.0.1 (random port unless `port` was given)."""
        ctx = self._ctx
        if ctx.started:
            raise RuntimeError("a FakeCloud runs once; create a new one")
        ctx.open(asyncio.get_running_loop())
        api = Api(ctx)
        # The API, then the agent servers on a port of their own (see `Renderer`), each an
        # application of its own: neither answers the other's paths, as on a real server.
        runners: list[web.AppRunner] = []
        try:
            for groups, port in ((API_GROUPS, self._requested_port), (AGENT_SERVER_GROUPS, 0)):
                runner = web.AppRunner(
                    api.application(groups),
                    access_log=None,
                    handle_signals=False,
                    shutdown_timeout=SHUTDOWN_TIMEOUT,
                )
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, HOST, port).start()
        except BaseException:
            await _cleanup(runners)
            raise
        self._runners = runners
        self._port, agent_port = (int(runner.addresses[0][1]) for runner in runners)
        ctx.serve_at(self.base_url, agent_port)
        return self

    async def stop(self) -> None:
        """Stop serving; open streams and stalled requests are cut. Safe to call twice."""
        runners, self._runners = self._runners, []
        if not runners:
            return
        self._ctx.close()
        await _cleanup(runners)

    async def __aenter__(self) -> FakeCloud:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (RuntimeError before `start()`)."""
        if self._port is None:
            raise RuntimeError(NOT_RUNNING)
        return self._port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`, without a trailing slash."""
        return loopback_url(self.port)

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not running"
        return f"<FakeCloud {where} conversations={len(self._store.conversations)}>"

    # -- faults ----------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Arm a fault; faults are matched in the order added (see `Fault`)."""
        if fault.route is not None and fault.route not in ROUTE_NAMES:
            raise ValueError(f"unknown route {fault.route!r}; known: {sorted(ROUTE_NAMES)}")
        self._ctx.faults.add(fault)

    def clear_faults(self) -> None:
        """Remove every fault added with `add_fault`."""
        self._ctx.faults.clear()

    # -- counters --------------------------------------------------------------------

    @property
    def requests(self) -> Counter[str]:
        """Requests seen, by route name (see `ROUTE_NAMES`), faulted and refused ones included."""
        return self._ctx.requests

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every request in arrival order."""
        return self._ctx.request_log

    @property
    def starts_received(self) -> int:
        """Start POSTs (plain and stream) that reached their handler."""
        return self._ctx.starts_received

    @property
    def running(self) -> int:
        """Conversations running now, as the cap counts them."""
        return self._store.running(self._ctx.now())

    @property
    def peak_running(self) -> int:
        """The most conversations running at once, checked at every admitted start/resume."""
        return self._store.peak_running

    @property
    def paused_by_cap(self) -> int:
        """Conversations paused to make room under `max_running` (`cap_mode="pause"`)."""
        return self._store.paused_by_cap

    @property
    def agent_sockets(self) -> SocketBook:
        """The agent-server WebSockets' counters (opened, open now, auth refused, faults)."""
        return self._ctx.sockets

    @property
    def duplicate_starts(self) -> int:
        """Starts that reused a conversation_id the server already had."""
        return self._store.duplicate_starts

    @property
    def account(self) -> Account:
        """The account's settings, profiles, secrets, pending messages and catalogue (git
        repositories, LLM models): read it in tests, or change it to seed data."""
        return self._ctx.account

    # -- snapshots -------------------------------------------------------------------

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """The conversation as a batch get would return it now (None where that gives null)."""
        conv = self._store.conversations.get(uuid_hex(conversation_id) or "")
        if conv is None:
            return None
        return copy.deepcopy(self._ctx.render.conversation(conv, self._ctx.now()))

    def start_task(self, task_id: str) -> dict[str, Any] | None:
        """The start task now, shaped like the start response (timestamps with Z)."""
        task = self._store.tasks.get(uuid_hex(task_id) or "")
        if task is None:
            return None
        return copy.deepcopy(self._ctx.render.task(task, task.phase(self._ctx.now())))

    def sandbox(self, sandbox_id: str) -> dict[str, Any] | None:
        """The sandbox now, in the SandboxInfo shape (None before it exists)."""
        record = self._store.sandboxes.get(sandbox_id) or self._store.sandboxes.get(
            uuid_hex(sandbox_id) or ""
        )
        if record is None:
            return None
        return copy.deepcopy(self._ctx.render.sandbox(record, self._ctx.now()))

    def conversation_count(self) -> int:
        """Conversations that exist now (batch get answers them), sub-conversations included."""
        now = self._ctx.now()
        return sum(1 for conv in self._store.conversations.values() if conv.created <= now)

    def seed_conversations(
        self,
        n: int,
        *,
        message: str | None = "Seeded conversation",
        title: str | None = None,
        started_ago: float = 0.0,
    ) -> list[str]:
        """Create `n` conversations directly in state, as if started `started_ago` seconds ago.

        Each gets a start task and a sandbox and follows the normal timelines (markers in
        `message` apply; `message=None` makes idle conversations), so with a large
        `started_ago` they are already finished, and with 0 they start now. No HTTP, no
        request counters, no cap, and `peak_running` is not moved; they do count as running
        for later starts while they run. Returns the conversation ids, oldest first.
        Cheap: 10,000 take well under a second.
        """
        now = self._ctx.now()
        plan = plan_start(self._ctx.timing(), message)
        body: dict[str, Any] = {"title": title}
        if message is not None:
            body["initial_message"] = {"content": [{"type": "text", "text": message}]}
        echo = parse_start_body(json_bytes(body)).echo
        # Distinct timestamps keep the order stable (one TICK apart); all lie at or before
        # the seeding time.
        first = now - started_ago - (n - 1) * TICK
        return [
            self._store.add_start(first + i * TICK, plan, echo, None).conversation_id
            for i in range(n)
        ]


async def _cleanup(runners: list[web.AppRunner]) -> None:
    # Side by side: each waits out its own connections' shutdown.
    await asyncio.gather(*(runner.cleanup() for runner in runners))
