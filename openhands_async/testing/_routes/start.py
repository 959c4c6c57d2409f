"""Starting: start and stream-start, and the start tasks' batch get / search / count."""

from __future__ import annotations

import contextlib
import math

from aiohttp import web

from .._constants import MAX_PAGE_SIZE, MAX_START_TASK_IDS, START_TASK_SORTS
from .._faults import Fault, client_gone, drop_connection
from .._plan import MarkerError, plan_start
from .._responses import JSON_HEADERS, concurrency_refusal, json_response, page_of
from .._routing import RouteGroup, route
from .._state import StartTaskRecord
from .._validation import BadRequest, Invalid, QueryReader, error, parse_start_body, uuid_error
from .._wire import json_bytes, uuid_hex

BASE = "/api/v1/app-conversations"


class StartRoutes(RouteGroup):
    # Registered before ConversationRoutes: its fixed paths come before `{conversation_id}`.

    @route("POST", BASE, "start")
    async def start(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept_start(request)
        if isinstance(accepted, web.Response):
            return accepted
        return json_response(self.ctx.render.task(accepted, 0))

    @route("POST", f"{BASE}/stream-start", "stream_start")
    async def stream_start(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept_start(request)
        if isinstance(accepted, web.Response):
            return accepted
        response = web.StreamResponse(headers=JSON_HEADERS)
        response.enable_chunked_encoding()
        await response.prepare(request)
        # A client that goes away ends its stream; the task carries on unless the plan says
        # the start lives in the response (`StreamBehavior.drops_start`, the open-source server).
        progress = _Progress()
        try:
            with contextlib.suppress(ConnectionError):
                await self._write_stream(request, response, accepted, progress)
        finally:
            if not progress.finished and accepted.plan.stream.drops_start:
                if progress.gone_at is not None:
                    # Seen going away during a stall: the start ran on until then.
                    self.ctx.store.drop_start(accepted, progress.gone_at)
                else:
                    # Noticed at a write: the start stops in the last status it wrote.
                    written = progress.written
                    floor = accepted.at(written - 1) if written else accepted.created
                    stop = min(self.ctx.now(), accepted.at(written) - _BEFORE)
                    self.ctx.store.drop_start(accepted, max(floor, stop))
        return response

    async def _accept_start(self, request: web.Request) -> StartTaskRecord | web.Response:
        ctx = self.ctx
        ctx.starts_received += 1
        body = parse_start_body(await request.read())
        try:
            plan = plan_start(ctx.timing(), body.message)
        except MarkerError as exc:
            loc = ("body", "initial_message")
            raise Invalid(
                [error("value_error", loc, f"Value error, {exc}", body.message)]
            ) from None
        store = ctx.store
        now = ctx.now()
        current = ctx.make_room(now)
        if current is not None:
            return concurrency_refusal(ctx.knobs.max_running, current)
        task = store.add_start(now, plan, body.echo, body.conversation_id)
        store.note_peak(now)
        return task

    async def _write_stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        task: StartTaskRecord,
        progress: _Progress,
    ) -> None:
        ctx = self.ctx
        render = ctx.render.task
        fault, record = ctx.active_fault()
        if fault is not None and fault.action == "hold" and record is not None:
            await ctx.hold(record)
            drop_connection(request, flush=True)
            return
        if _breaks(fault, "reset_after_headers"):
            drop_connection(request, flush=True)
            return
        await response.write(b"[\n")
        if _breaks(fault, "reset_mid_body"):
            first = json_bytes(render(task, 0))
            await response.write(first[: len(first) // 2])
            drop_connection(request, flush=True)
            return
        behavior = task.plan.stream
        count = len(task.plan.offsets)
        # Step k writes element k (k == count: the closing bracket) once its phase is reached.
        # A stall starts right after element k-1, so the silence covers the wait for phase k.
        for k in range(count + 1):
            if behavior.stall_after == k and await self._stall(
                request, behavior.stall_seconds, progress
            ):
                drop_connection(request, flush=True)
                return
            if k < count and await ctx.sleep_until(task.at(k)):
                drop_connection(request, flush=True)
                return
            if behavior.cut_after == k:
                drop_connection(request, flush=True)
                return
            if k == count:
                break
            if behavior.garbage is not None and behavior.garbage_after == k:
                element = behavior.garbage
            else:
                element = json_bytes(render(task, k))
            await response.write(element if k == 0 else b",\n" + element)
            progress.written = k + 1
        await response.write(b"]")
        await response.write_eof()
        progress.finished = True

    async def _stall(
        self, request: web.Request, seconds: float | None, progress: _Progress
    ) -> bool:
        """Write nothing for `seconds` (None: for ever); True when the stream ends instead
        (the client went away, noted in `progress`, or the FakeCloud is stopping)."""
        ctx = self.ctx
        until = math.inf if seconds is None else ctx.now() + seconds
        while True:
            # aiohttp tells a handler its client left only when it writes: look now and then.
            if client_gone(request):
                progress.gone_at = ctx.now()
                return True
            left = until - ctx.now()
            if left <= 0:
                return False
            if await ctx.sleep(min(left, _RECHECK)):
                return True

    # -- start tasks -------------------------------------------------------------------

    @route("GET", f"{BASE}/start-tasks", "get_start_tasks")
    async def get_start_tasks(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        ids = query.required_list("ids")
        query.check()
        # The ids are typed as UUIDs in the spec, so FastAPI rejects bad ones with a 422.
        parsed = [uuid_hex(raw) for raw in ids]
        bad = [
            uuid_error(("query", "ids", i), raw) for i, raw in enumerate(ids) if parsed[i] is None
        ]
        if bad:
            raise Invalid(bad)
        if len(ids) > MAX_START_TASK_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_START_TASK_IDS}.")
        tasks = self.ctx.store.tasks
        now = self.ctx.now()
        render = self.ctx.render.task
        found = (tasks.get(task_id or "") for task_id in parsed)
        return json_response([render(t, t.phase(now), zulu=False) if t else None for t in found])

    def _matches(self, query: QueryReader, now: float) -> list[StartTaskRecord]:
        conversation_id = query.uuid("conversation_id__eq")
        created_gte = query.datetime_us("created_at__gte")
        query.check()
        wall_us = self.ctx.clock.wall_us
        return [
            task
            for task in self.ctx.store.tasks.values()
            # Like the server, conversation_id__eq filters on app_conversation_id: READY only.
            if (
                conversation_id is None
                or (task.conversation_id == conversation_id and now >= task.ready_at)
            )
            and (created_gte is None or wall_us(task.created) >= created_gte)
        ]

    @route("GET", f"{BASE}/start-tasks/search", "search_start_tasks")
    async def search_start_tasks(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        sort_order = query.choice("sort_order", "CREATED_AT_DESC", START_TASK_SORTS)
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        now = self.ctx.now()
        matches = self._matches(query, now)
        if sort_order.startswith("UPDATED_AT"):
            matches.sort(key=lambda task: task.updated(task.phase(now)))
        else:
            matches.sort(key=lambda task: task.created)
        if sort_order.endswith("_DESC"):
            matches.reverse()
        render = self.ctx.render.task
        return json_response(
            page_of(matches, page_id, limit, lambda t: render(t, t.phase(now), zulu=False))
        )

    @route("GET", f"{BASE}/start-tasks/count", "count_start_tasks")
    async def count_start_tasks(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        return json_response(len(self._matches(query, self.ctx.now())))


# A dropped start stops just before the phase it did not write (then it is never reached).
_BEFORE = 1e-6
# How often a stalled stream looks whether its client went away.
_RECHECK = 0.02


class _Progress:
    """How far a stream-start response got: elements written, whether `]` went out, and
    when the client was seen going away during a stall."""

    def __init__(self) -> None:
        self.written = 0
        self.finished = False
        self.gone_at: float | None = None


def _breaks(fault: Fault | None, action: str) -> bool:
    return fault is not None and fault.action == action
