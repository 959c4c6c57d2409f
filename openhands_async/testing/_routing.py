"""How a route module declares its routes: a `RouteGroup` subclass with `@route` methods.

A group's routes are known from its class alone (names for `Fault(route=...)` and
`FakeCloud.requests` are checked before any server runs); an instance binds them to one
`Context`. `_app.GROUPS` lists the groups in registration order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Literal, TypeVar

import attrs
from aiohttp import web

from ._context import Context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: "api": behind authentication and the rate limiter (the JSON API). "probe": open, and a
#: Fault without a route skips it. "open": open (the web app's pages; a socket that checks
#: credentials itself, in its first frame, with `Context.key_matches`).
Access = Literal["api", "probe", "open"]
F = TypeVar("F", bound=Callable[..., Awaitable[web.StreamResponse]])
_ATTR = "__fake_cloud_route__"


@attrs.frozen
class Route:
    method: str
    path: str
    name: str
    access: Access = "api"


def route(method: str, path: str, name: str, *, access: Access = "api") -> Callable[[F], F]:
    """Mark a `RouteGroup` method as the handler of `method path`, named `name`."""

    def mark(handler: F) -> F:
        setattr(handler, _ATTR, Route(method, path, name, access))
        return handler

    return mark


class RouteGroup:
    """One route module's routes, bound to the FakeCloud's context.

    Routes register in the order the methods are written (aiohttp resolves in registration
    order, so a fixed path goes before a `{variable}` one that would also match it).
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @classmethod
    def table(cls) -> tuple[Route, ...]:
        return tuple(route for _, route in cls._marked())

    def bound(self) -> Iterator[tuple[Route, Handler]]:
        for attribute, marked in self._marked():
            yield marked, getattr(self, attribute)

    @classmethod
    def _marked(cls) -> Iterator[tuple[str, Route]]:
        for attribute, value in vars(cls).items():
            marked = getattr(value, _ATTR, None)
            if isinstance(marked, Route):
                yield attribute, marked
