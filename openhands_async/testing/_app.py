"""The aiohttp application: routes, the request pipeline and the endpoint handlers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from . import _app_conversations, _app_events, _app_legacy
from ._faults import HANDLER_RUNS, Fault, drop_connection, truncate, unsendable
from ._plan import MarkerError, plan_start
from ._ratelimit import FixedWindowLimiter
from ._render import conversation_title
from ._state import ConversationRecord, StartTaskRecord
from ._validation import BadRequest, Invalid, QueryReader, error, parse_start_body, uuid_error
from ._wire import json_bytes, uuid_hex

if TYPE_CHECKING:
    from ._cloud import FakeCloud, RequestRecord

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROBES = frozenset({"alive", "health", "ready"})
# Routes behind authentication and the rate limiter (the JSON API).
API_ROUTES = frozenset(
    {
        "start",
        "stream_start",
        "get_start_tasks",
        "search_start_tasks",
        "count_start_tasks",
        "get_conversations",
        "search_conversations",
        "count_conversations",
    }
    | _app_conversations.ROUTES
    | _app_events.ROUTES
    | _app_legacy.ROUTES
)
OTHER_ROUTES = frozenset({"conversation_page", "not_found", "method_not_allowed"})
ROUTE_NAMES = PROBES | API_ROUTES | OTHER_ROUTES

MAX_CONVERSATION_IDS = 99
MAX_START_TASK_IDS = 100
START_TASK_SORTS = ("CREATED_AT", "CREATED_AT_DESC", "UPDATED_AT", "UPDATED_AT_DESC")

_JSON_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
# The Cloud's answer to any path its API does not own: the web app's shell page.
WEB_APP_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <title>OpenHands</title>
    <script type="module" crossorigin src="/assets/index.js"></script>
  </head>
  <body>
    <div id="root"></div>
  </body>
</html>
"""

# The fault (if any) the current request is being broken with, for handlers that stream.
_ACTIVE_FAULT: contextvars.ContextVar[Fault | None] = contextvars.ContextVar(
    "fake_cloud_fault", default=None
)
# Its record, for a streaming handler that holds its answer (the "hold" action).
_HELD_RECORD: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "fake_cloud_record", default=None
)


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=json_bytes(obj), headers={**_JSON_HEADERS, **(headers or {})}
    )


def concurrency_refusal(limit: int | None, current: int) -> web.Response:
    """The Cloud's answer to a start (or resume) beyond the account's running cap."""
    refusal = {"error": "CONCURRENCY_LIMIT_REACHED", "limit": limit, "current": current}
    return json_response({"detail": refusal}, 429)


@attrs.frozen
class _ConversationFilters:
    title_contains: str | None
    created_gte: int | None
    created_lt: int | None
    updated_gte: int | None
    updated_lt: int | None
    sandbox_id: str | None


class Api:
    """Serves one FakeCloud: reads its knobs on every request and changes its state."""

    def __init__(self, cloud: FakeCloud, closing: asyncio.Future[None]) -> None:
        self.cloud = cloud
        self._closing = closing  # done once the FakeCloud is stopping
        self._names: dict[AbstractRoute, str] = {}
        self._limiter: FixedWindowLimiter | None = None

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._pipeline])
        for method, path, name, handler in self._routes():
            self._names[app.router.add_route(method, path, handler)] = name
        return app

    def _routes(self) -> Iterable[tuple[str, str, str, Handler]]:
        base = "/api/v1/app-conversations"
        # Fixed paths before `{conversation_id}`: aiohttp resolves in registration order.
        return (
            ("GET", "/alive", "alive", self.alive),
            ("GET", "/health", "health", self.health),
            ("GET", "/ready", "ready", self.ready),
            ("POST", base, "start", self.start),
            ("GET", base, "get_conversations", self.get_conversations),
            ("POST", f"{base}/stream-start", "stream_start", self.stream_start),
            ("GET", f"{base}/search", "search_conversations", self.search_conversations),
            ("GET", f"{base}/count", "count_conversations", self.count_conversations),
            ("GET", f"{base}/start-tasks", "get_start_tasks", self.get_start_tasks),
            ("GET", f"{base}/start-tasks/search", "search_start_tasks", self.search_start_tasks),
            ("GET", f"{base}/start-tasks/count", "count_start_tasks", self.count_start_tasks),
            ("GET", f"{base}/{{conversation_id}}", "conversation_page", self.conversation_page),
            *_app_conversations.ConversationRoutes(self).routes(),
            *_app_events.EventRoutes(self).routes(),
            *_app_legacy.LegacyRoutes(self).routes(),
        )

    # -- the pipeline every request goes through ---------------------------------------

    @web.middleware
    async def _pipeline(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        cloud = self.cloud
        route = self._route_name(request)
        record = cloud._log_request(request, route)
        response = await self._faulted(request, handler, route, record)
        if record.status is None:
            record.status = response.status
        return response

    async def _faulted(
        self, request: web.Request, handler: Handler, route: str, record: RequestRecord
    ) -> web.StreamResponse:
        cloud = self.cloud
        if await self._sleep(cloud.latency):
            return self._abandon(request)
        fault = cloud._faults.take(route, request.method, probe=route in PROBES)
        if fault is None:
            return await self._guarded(request, handler, route)
        if fault.action not in ("respond", "hold"):  # "hold" is marked once its handler ran
            record.status = fault.action
        if await self._sleep(fault.delay):
            return self._abandon(request)
        if fault.action == "respond":
            return fault.response()
        if fault.action == "reset_before":
            drop_connection(request, flush=False)
            return unsendable()
        if fault.action == "stall":
            await self._sleep(None)
            return self._abandon(request)
        assert fault.action in HANDLER_RUNS
        token = _ACTIVE_FAULT.set(fault)
        held = _HELD_RECORD.set(record)
        try:
            response = await self._guarded(request, handler, route)
        finally:
            _ACTIVE_FAULT.reset(token)
            _HELD_RECORD.reset(held)
        if response.prepared or not isinstance(response, web.Response):
            return response  # a streaming handler broke its own response
        if fault.action == "hold":
            await self._hold(record)
            return self._abandon(request)
        return await truncate(request, response, mid_body=fault.action == "reset_mid_body")

    async def _hold(self, record: RequestRecord) -> None:
        """The handler has run: say so (tests wait for it), then answer nothing until stop."""
        record.status = "hold"
        await self._sleep(None)

    async def _guarded(
        self, request: web.Request, handler: Handler, route: str
    ) -> web.StreamResponse:
        limit_headers: dict[str, str] = {}
        if route in API_ROUTES:
            if not self._authorized(request):
                return json_response({"detail": "Unauthorized"}, 401)
            limiter = self._current_limiter()
            if limiter is not None:
                clock = self.cloud._clock
                now = clock.now()
                verdict = limiter.hit(self._credential(request), now, clock.wall_us(now) / 1e6)
                if not verdict.allowed:
                    return json_response({"error": limiter.message}, 429, verdict.headers)
                limit_headers = verdict.headers
        try:
            response = await handler(request)
        except Invalid as exc:
            response = json_response({"detail": exc.errors}, 422)
        except BadRequest as exc:
            response = json_response({"detail": exc.detail}, 400)
        except web.HTTPException as exc:  # no route: 404 or 405, FastAPI-style bodies
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = json_response({"detail": exc.reason}, exc.status, allow)
        if not response.prepared:
            response.headers.update(limit_headers)
        return response

    def _route_name(self, request: web.Request) -> str:
        match = request.match_info
        name = self._names.get(match.route)
        if name is not None:
            return name
        failure = match.http_exception
        if failure is not None and failure.status == 405:
            return "method_not_allowed"
        return "not_found"

    def _authorized(self, request: web.Request) -> bool:
        key = self.cloud.api_key
        if key is None:
            return True
        if self.cloud.auth == "session":
            given = request.headers.get("X-Session-API-Key", "")
        else:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return False
        return hmac.compare_digest(given.encode(), key.encode())

    @staticmethod
    def _credential(request: web.Request) -> str:
        presented = request.headers.get("Authorization") or request.headers.get("X-Session-API-Key")
        return f"key:{presented}" if presented else f"ip:{request.remote}"

    def _current_limiter(self) -> FixedWindowLimiter | None:
        spec = self.cloud.rate_limit
        if spec is None:
            self._limiter = None
        elif self._limiter is None or (self._limiter.limit, self._limiter.window) != spec:
            self._limiter = FixedWindowLimiter(*spec)
        return self._limiter

    async def _sleep(self, seconds: float | None) -> bool:
        """Sleep (None: forever) unless the FakeCloud stops first; True if it is stopping."""
        closing = self._closing
        if not closing.done() and (seconds is None or seconds > 0):
            await asyncio.wait([closing], timeout=seconds)
        return closing.done()

    async def _sleep_until(self, deadline: float) -> bool:
        return await self._sleep(deadline - self.cloud._clock.now())

    @staticmethod
    def _abandon(request: web.Request) -> web.Response:
        drop_connection(request, flush=True)
        return unsendable()

    # -- probes and the web app --------------------------------------------------------

    async def alive(self, request: web.Request) -> web.StreamResponse:
        return json_response({"status": "ok"})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return json_response("OK")

    async def ready(self, request: web.Request) -> web.StreamResponse:
        return json_response("OK")

    async def conversation_page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=WEB_APP_PAGE, content_type="text/html")

    # -- starting ----------------------------------------------------------------------

    async def start(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept_start(request)
        if isinstance(accepted, web.Response):
            return accepted
        return json_response(self.cloud._render().task(accepted, 0))

    async def stream_start(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept_start(request)
        if isinstance(accepted, web.Response):
            return accepted
        response = web.StreamResponse(headers=_JSON_HEADERS)
        response.enable_chunked_encoding()
        await response.prepare(request)
        # A client that goes away only ends its stream; the task carries on, as on the server.
        with contextlib.suppress(ConnectionError):
            await self._write_stream(request, response, accepted, _ACTIVE_FAULT.get())
        return response

    async def _accept_start(self, request: web.Request) -> StartTaskRecord | web.Response:
        cloud = self.cloud
        cloud.starts_received += 1
        body = parse_start_body(await request.read())
        try:
            plan = plan_start(cloud._timing(), body.message)
        except MarkerError as exc:
            loc = ("body", "initial_message")
            raise Invalid(
                [error("value_error", loc, f"Value error, {exc}", body.message)]
            ) from None
        store = cloud._store
        now = cloud._clock.now()
        current = store.make_room(now, cloud.max_running, cloud.cap_mode)
        if current is not None:
            return concurrency_refusal(cloud.max_running, current)
        task = store.add_start(now, plan, body.echo, body.conversation_id)
        store.note_peak(now)
        return task

    async def _write_stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        task: StartTaskRecord,
        fault: Fault | None,
    ) -> None:
        render = self.cloud._render().task
        record = _HELD_RECORD.get()
        if fault is not None and fault.action == "hold" and record is not None:
            await self._hold(record)
            drop_connection(request, flush=True)
            return
        if fault is not None and fault.action == "reset_after_headers":
            drop_connection(request, flush=True)
            return
        await response.write(b"[\n")
        if fault is not None and fault.action == "reset_mid_body":
            first = json_bytes(render(task, 0))
            await response.write(first[: len(first) // 2])
            drop_connection(request, flush=True)
            return
        behavior = task.plan.stream
        count = len(task.plan.offsets)
        # Step k writes element k (k == count: the closing bracket) once its phase is reached.
        for k in range(count + 1):
            if k < count and await self._sleep_until(task.at(k)):
                drop_connection(request, flush=True)
                return
            if behavior.cut_after == k:
                drop_connection(request, flush=True)
                return
            if behavior.stall_after == k:
                await self._sleep(None)
                drop_connection(request, flush=True)
                return
            if k == count:
                break
            if behavior.garbage is not None and behavior.garbage_after == k:
                element = behavior.garbage
            else:
                element = json_bytes(render(task, k))
            await response.write(element if k == 0 else b",\n" + element)
        await response.write(b"]")
        await response.write_eof()

    # -- start tasks -------------------------------------------------------------------

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
        tasks = self.cloud._store.tasks
        now = self.cloud._clock.now()
        render = self.cloud._render().task
        found = (tasks.get(task_id or "") for task_id in parsed)
        return json_response([render(t, t.phase(now), zulu=False) if t else None for t in found])

    def _start_task_matches(self, query: QueryReader, now: float) -> list[StartTaskRecord]:
        conversation_id = query.uuid("conversation_id__eq")
        created_gte = query.datetime_us("created_at__gte")
        query.check()
        wall_us = self.cloud._clock.wall_us
        return [
            task
            for task in self.cloud._store.tasks.values()
            # Like the server, conversation_id__eq filters on app_conversation_id: READY only.
            if (
                conversation_id is None
                or (task.conversation_id == conversation_id and now >= task.ready_at)
            )
            and (created_gte is None or wall_us(task.created) >= created_gte)
        ]

    async def search_start_tasks(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        sort_order = query.choice("sort_order", "CREATED_AT_DESC", START_TASK_SORTS)
        page_id = query.text("page_id")
        limit = query.integer("limit", 100, gt=0, le=100)
        now = self.cloud._clock.now()
        matches = self._start_task_matches(query, now)
        offset = _decode_page(page_id)
        if sort_order.startswith("UPDATED_AT"):
            matches.sort(key=lambda task: task.updated(task.phase(now)))
        else:
            matches.sort(key=lambda task: task.created)
        if sort_order.endswith("_DESC"):
            matches.reverse()
        page = matches[offset : offset + limit]
        render = self.cloud._render().task
        return json_response(
            {
                "items": [render(t, t.phase(now), zulu=False) for t in page],
                "next_page_id": _next_page(offset, limit, len(matches)),
            }
        )

    async def count_start_tasks(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        return json_response(len(self._start_task_matches(query, self.cloud._clock.now())))

    # -- conversations -----------------------------------------------------------------

    async def get_conversations(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        ids = query.required_list("ids")
        query.check()
        if len(ids) > MAX_CONVERSATION_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_CONVERSATION_IDS}.")
        parsed = [uuid_hex(raw) for raw in ids]
        bad = [raw for raw, hex_id in zip(ids, parsed, strict=True) if hex_id is None]
        if bad:
            raise BadRequest(f"Invalid UUID format for ids: {bad!r}")
        conversations = self.cloud._store.conversations
        now = self.cloud._clock.now()
        render = self.cloud._render().conversation
        found = (conversations.get(conv_id or "") for conv_id in parsed)
        return json_response([render(c, now) if c else None for c in found])

    def _conversation_filters(self, query: QueryReader) -> _ConversationFilters:
        return _ConversationFilters(
            title_contains=query.text("title__contains"),
            created_gte=query.datetime_us("created_at__gte"),
            created_lt=query.datetime_us("created_at__lt"),
            updated_gte=query.datetime_us("updated_at__gte"),
            updated_lt=query.datetime_us("updated_at__lt"),
            sandbox_id=query.text("sandbox_id__eq"),
        )

    def _conversation_matches(
        self, filters: _ConversationFilters, now: float, *, include_sub: bool
    ) -> list[ConversationRecord]:
        wall_us = self.cloud._clock.wall_us
        needle = filters.title_contains.lower() if filters.title_contains is not None else None

        def keep(conv: ConversationRecord) -> bool:
            if now < conv.created:
                return False
            if not include_sub and conv.task.request.get("parent_conversation_id"):
                return False
            if needle is not None and needle not in conversation_title(conv).lower():
                return False
            if filters.sandbox_id is not None and conv.task.sandbox_id != filters.sandbox_id:
                return False
            return _in_range(wall_us(conv.created), filters.created_gte, filters.created_lt) and (
                (filters.updated_gte is None and filters.updated_lt is None)
                or _in_range(wall_us(conv.updated(now)), filters.updated_gte, filters.updated_lt)
            )

        matches = [
            conv for conv in reversed(self.cloud._store.conversations.values()) if keep(conv)
        ]
        # Newest first; the stable sort keeps later-created first among equal timestamps.
        matches.sort(key=lambda conv: conv.created, reverse=True)
        return matches

    async def search_conversations(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        filters = self._conversation_filters(query)
        page_id = query.text("page_id")
        limit = query.integer("limit", 100, gt=0, le=100)
        include_sub = query.boolean("include_sub_conversations", False)
        query.check()
        offset = _decode_page(page_id)
        now = self.cloud._clock.now()
        matches = self._conversation_matches(filters, now, include_sub=include_sub)
        render = self.cloud._render().conversation
        return json_response(
            {
                "items": [render(c, now) for c in matches[offset : offset + limit]],
                "next_page_id": _next_page(offset, limit, len(matches)),
            }
        )

    async def count_conversations(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        filters = self._conversation_filters(query)
        query.check()
        now = self.cloud._clock.now()
        return json_response(len(self._conversation_matches(filters, now, include_sub=False)))


def _in_range(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value < high)


# Cursors are opaque on the wire; clients must not build or parse them.
def _next_page(offset: int, limit: int, total: int) -> str | None:
    end = offset + limit
    return base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if end < total else None


def _decode_page(page_id: str | None) -> int:
    """The offset a cursor stands for; 0 (the first page) for a cursor we never issued.

    The real server answers an unparseable page_id with the first page, not an error (its
    search services catch the ValueError: "If page_id is not a valid integer, start from
    beginning"), and the spec documents no 400 for searches.
    """
    if page_id is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(page_id.encode()).decode()
        prefix, _, number = text.partition(":")
        if prefix == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    return 0
