"""Injected faults: what to break, how often, and the low-level ways of breaking a response."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Literal

import attrs
from aiohttp import web

from ._wire import json_bytes

FaultAction = Literal[
    "respond", "reset_before", "reset_after_headers", "reset_mid_body", "stall", "hold"
]
"""What a `Fault` does to a request it matches (see `Fault`)."""
ACTIONS: tuple[str, ...] = (
    "respond",
    "reset_before",
    "reset_after_headers",
    "reset_mid_body",
    "stall",
    "hold",
)
# Actions that let the request reach its handler (its side effects happen) before breaking.
HANDLER_RUNS = frozenset({"reset_after_headers", "reset_mid_body", "hold"})


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | int | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"Fault.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(eq=False)
class Fault:
    """One injected failure, matched against incoming requests in the order faults were added.

    Faults act like the network and proxies in front of the server: they are checked before
    authentication and the rate limiter, and do not use rate-limit budget.

    - `route`: a route name as in `FakeCloud.requests` (e.g. "start", "get_conversations");
      None matches every route except the /alive, /health and /ready probes.
    - `method`: match only this HTTP method; None matches any.
    - `skip`: let this many matching requests pass untouched first (e.g. `skip=3` breaks
      the 4th start); the ones skipped can still be hit by faults added later.
    - `times`: how many matching requests it hits before it is used up; None = every one.
    - `delay`: seconds to sleep before acting (not scaled by time_scale).
    - `action`:
      - "respond" (default): answer `status` (503 by default) with `body` (a dict/list is sent
        as JSON; default `{"detail": "<reason phrase>"}`), `content_type` (default
        application/json), extra `headers`, and `Retry-After: <retry_after>` if given. The
        handler does not run.
      - "reset_before": close the connection without answering. The handler does not run.
      - "reset_after_headers": run the handler (a start really happens), send the status
        line and headers with the full Content-Length, then close before any body byte.
      - "reset_mid_body": run the handler, send headers and half the body, then close. On
        stream-start: `[` and half of the first element.
      - "stall": never answer; the connection stays open until the client gives up or the
        FakeCloud stops. The handler does not run.
      - "hold": run the handler (a start really happens, the conversation is recorded),
        then never answer, like "stall". This is the window between a server acting on a
        request and the client hearing of it: once the handler has run, the request's
        `RequestRecord.status` becomes "hold", so a test can wait for exactly that moment
        (e.g. to SIGKILL a client whose start the server took but never answered).
    """

    route: str | None = None
    method: str | None = None
    skip: int = attrs.field(default=0, validator=_non_negative)
    times: int | None = attrs.field(default=1, validator=_non_negative)
    status: int | None = None
    body: str | bytes | dict[str, Any] | list[Any] | None = None
    headers: Mapping[str, str] | None = None
    retry_after: str | None = None
    delay: float = attrs.field(default=0.0, validator=_non_negative)
    action: FaultAction = attrs.field(default="respond", validator=attrs.validators.in_(ACTIONS))
    content_type: str | None = None

    def matches(self, route: str, method: str, *, probe: bool) -> bool:
        """Whether this fault applies to a request on `route` with `method`."""
        if self.route is None and probe:
            return False
        if self.route is not None and self.route != route:
            return False
        return self.method is None or self.method.upper() == method.upper()

    def response(self) -> web.Response:
        """The error response a `respond` fault answers with."""
        status = self.status or HTTPStatus.SERVICE_UNAVAILABLE
        body = self.body
        if body is None:
            body = {"detail": HTTPStatus(status).phrase}
        if isinstance(body, (dict, list)):
            payload = json_bytes(body)
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = body
        headers = {"Content-Type": self.content_type or "application/json"}
        headers.update(self.headers or {})
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return web.Response(status=status, body=payload, headers=headers)


@attrs.define
class _Armed:
    fault: Fault
    remaining: int | None
    to_skip: int = 0


class FaultBook:
    """Faults waiting to fire, first added first matched."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def add(self, fault: Fault) -> None:
        if fault.times != 0:
            self._armed.append(_Armed(fault, fault.times, fault.skip))

    def clear(self) -> None:
        self._armed.clear()

    def take(self, route: str, method: str, *, probe: bool) -> Fault | None:
        for armed in self._armed:
            if armed.fault.matches(route, method, probe=probe):
                if armed.to_skip > 0:
                    armed.to_skip -= 1
                    continue
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
                return armed.fault
        return None


def drop_connection(request: web.BaseRequest, *, flush: bool) -> None:
    """Close the client's connection: `flush` lets bytes already written reach the client first."""
    transport = request.transport
    if transport is not None:
        if flush:
            transport.close()
        else:
            transport.abort()


def client_gone(request: web.BaseRequest) -> bool:
    """Whether the client's connection closed (aiohttp tells a handler only when it writes)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def unsendable() -> web.Response:
    # Returned after the connection was dropped: aiohttp finds the transport closing and
    # gives up on the response quietly, as with a client that went away.
    return web.Response(status=499)


async def truncate(
    request: web.Request, response: web.Response, *, mid_body: bool
) -> web.StreamResponse:
    """Send `response`'s headers with its full Content-Length, then (half) its body, then close."""
    body = response.body
    payload = body if isinstance(body, bytes) else b""
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    broken = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
    broken.content_length = len(payload)
    await broken.prepare(request)
    if mid_body:
        await broken.write(payload[: len(payload) // 2])
    drop_connection(request, flush=True)
    return broken
