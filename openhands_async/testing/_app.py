"""The aiohttp application: the route groups in registration order, and the request
pipeline every request goes through (record, latency, faults, auth, rate limit, errors).

Routes live in `_routes/`, one module per endpoint group (see its docstring for where new
ones go). A new group is one module plus one entry in `GROUPS`; nothing else changes.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from ._context import Context, RequestRecord
from ._faults import HANDLER_RUNS, drop_connection, truncate, unsendable
from ._ratelimit import FixedWindowLimiter
from ._responses import json_response
from ._routes.agent_server import AgentServerRoutes
from ._routes.catalog import CatalogRoutes
from ._routes.controls import ControlRoutes
from ._routes.conversations import ConversationRoutes
from ._routes.events import EventRoutes
from ._routes.git import GitRoutes
from ._routes.legacy import LegacyRoutes
from ._routes.probes import ProbeRoutes
from ._routes.sandboxes import SandboxRoutes
from ._routes.secrets import SecretRoutes
from ._routes.settings import SettingsRoutes
from ._routes.start import StartRoutes
from ._routes.users import UserRoutes
from ._routing import Handler, RouteGroup
from ._validation import BadRequest, Invalid

# Registration order matters: aiohttp resolves in that order, so StartRoutes' fixed paths
# under /api/v1/app-conversations come before ConversationRoutes' `{conversation_id}`.
GROUPS: tuple[type[RouteGroup], ...] = (
    ProbeRoutes,
    StartRoutes,
    ConversationRoutes,
    EventRoutes,
    SandboxRoutes,
    UserRoutes,
    # The account's configuration and the server's offer (issue 20).
    ControlRoutes,
    SettingsRoutes,
    SecretRoutes,
    GitRoutes,
    CatalogRoutes,
    LegacyRoutes,
    AgentServerRoutes,
)
# The agent servers' routes answer on a port of their own, the rest on the API's.
AGENT_SERVER_GROUPS: tuple[type[RouteGroup], ...] = (AgentServerRoutes,)
API_GROUPS = tuple(group for group in GROUPS if group not in AGENT_SERVER_GROUPS)
_TABLE = tuple(route for group in GROUPS for route in group.table())
PROBES = frozenset(route.name for route in _TABLE if route.access == "probe")
# Routes behind authentication and the rate limiter (the JSON API).
API_ROUTES = frozenset(route.name for route in _TABLE if route.access == "api")
# Names for requests no route took.
OTHER_ROUTES = frozenset({"not_found", "method_not_allowed"})
ROUTE_NAMES = frozenset(route.name for route in _TABLE) | OTHER_ROUTES


class Api:
    """Serves one FakeCloud's context: reads its knobs on every request."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._names: dict[AbstractRoute, str] = {}
        self._limiter: FixedWindowLimiter | None = None

    def application(self, groups: tuple[type[RouteGroup], ...] = GROUPS) -> web.Application:
        """An application serving `groups`' routes through the request pipeline."""
        app = web.Application(middlewares=[self._pipeline])
        for group in groups:
            for route, handler in group(self.ctx).bound():
                added = app.router.add_route(route.method, route.path, handler)
                self._names[added] = route.name
        return app

    @web.middleware
    async def _pipeline(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = self._route_name(request)
        record = self.ctx.log_request(request, route)
        response = await self._faulted(request, handler, route, record)
        if record.status is None:
            record.status = response.status
        return response

    async def _faulted(
        self, request: web.Request, handler: Handler, route: str, record: RequestRecord
    ) -> web.StreamResponse:
        ctx = self.ctx
        if await ctx.sleep(ctx.knobs.latency):
            return self._abandon(request)
        fault = ctx.faults.take(route, request.method, probe=route in PROBES)
        if fault is None:
            return await self._guarded(request, handler, route)
        if fault.action not in ("respond", "hold"):  # "hold" is marked once its handler ran
            record.status = fault.action
        if await ctx.sleep(fault.delay):
            return self._abandon(request)
        if fault.action == "respond":
            return fault.response()
        if fault.action == "reset_before":
            drop_connection(request, flush=False)
            return unsendable()
        if fault.action == "stall":
            await ctx.sleep(None)
            return self._abandon(request)
        assert fault.action in HANDLER_RUNS
        with ctx.breaking(fault, record):
            response = await self._guarded(request, handler, route)
        if response.prepared or not isinstance(response, web.Response):
            return response  # a streaming handler broke its own response
        if fault.action == "hold":
            await ctx.hold(record)
            return self._abandon(request)
        return await truncate(request, response, mid_body=fault.action == "reset_mid_body")

    async def _guarded(
        self, request: web.Request, handler: Handler, route: str
    ) -> web.StreamResponse:
        limit_headers: dict[str, str] = {}
        if route in API_ROUTES:
            if not self.ctx.authorized(request.headers):
                return json_response({"detail": "Unauthorized"}, 401)
            limiter = self._current_limiter()
            if limiter is not None:
                clock = self.ctx.clock
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

    @staticmethod
    def _credential(request: web.Request) -> str:
        presented = request.headers.get("Authorization") or request.headers.get("X-Session-API-Key")
        return f"key:{presented}" if presented else f"ip:{request.remote}"

    def _current_limiter(self) -> FixedWindowLimiter | None:
        spec = self.ctx.knobs.rate_limit
        if spec is None:
            self._limiter = None
        elif self._limiter is None or (self._limiter.limit, self._limiter.window) != spec:
            self._limiter = FixedWindowLimiter(*spec)
        return self._limiter

    @staticmethod
    def _abandon(request: web.Request) -> web.Response:
        drop_connection(request, flush=True)
        return unsendable()
