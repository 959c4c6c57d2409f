"""The health probes: open (no key, no rate limit); only a Fault naming one matches it."""

from __future__ import annotations

from aiohttp import web

from .._responses import json_response
from .._routing import RouteGroup, route


class ProbeRoutes(RouteGroup):
    @route("GET", "/alive", "alive", access="probe")
    async def alive(self, request: web.Request) -> web.StreamResponse:
        return json_response({"status": "ok"})

    @route("GET", "/health", "health", access="probe")
    async def health(self, request: web.Request) -> web.StreamResponse:
        return json_response("OK")

    @route("GET", "/ready", "ready", access="probe")
    async def ready(self, request: web.Request) -> web.StreamResponse:
        return json_response("OK")
