"""WebSockets at the edge (a conversation's live events): `open_websocket` and the
`WebSocket` whose `receive()` returns text frames and, at the end, the close code as data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
from yarl import URL

from .. import errors
from ._failures import _NETWORK_ERRORS, Params, connection_error, log


@attrs.frozen
class WSClose:
    """How a WebSocket ended, as data: the close code (None: the connection just broke,
    no close frame) and its reason."""

    code: int | None
    reason: str = ""


class WebSocket:
    """An open WebSocket: `send_json`, `receive()` (the next text frame, or a `WSClose` once
    it ended), `aclose()`/`abort()`. Network failures and a missed heartbeat pong raise the
    SDK's `APIConnectionError`; close codes are returned, so the caller decides what 4001
    or 4004 mean."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool], *, url: str) -> None:
        self._ws = ws
        self._url = url

    async def send_json(self, obj: Any) -> None:
        try:
            await self._ws.send_json(obj)
        except _NETWORK_ERRORS as exc:
            raise self._broken(exc) from exc

    async def receive(self) -> str | WSClose:
        try:
            msg = await self._ws.receive()
        except _NETWORK_ERRORS as exc:
            raise self._broken(exc) from exc
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.BINARY:
            return bytes(msg.data).decode("utf-8", "replace")
        if msg.type is aiohttp.WSMsgType.ERROR:
            failure = msg.data if isinstance(msg.data, BaseException) else OSError(str(msg.data))
            raise self._broken(failure) from failure
        # CLOSE / CLOSING / CLOSED (aiohttp has answered a close already); 1006 means no
        # close frame came: the connection broke.
        code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else self._ws.close_code
        reason = msg.extra if isinstance(msg.extra, str) else ""
        return WSClose(None if code in (None, 1006) else int(code), reason)

    def abort(self) -> None:
        """Drop the connection at once, without a close frame (sync: for finalizers)."""
        response = getattr(self._ws, "_response", None)
        if response is not None:
            response.close()

    async def aclose(self) -> None:
        if not self._ws.closed:
            with contextlib.suppress(*_NETWORK_ERRORS, RuntimeError):
                await asyncio.wait_for(self._ws.close(), timeout=1.0)

    def _broken(self, exc: BaseException) -> errors.APIConnectionError:
        if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
            return errors.APITimeoutError(
                "websocket heartbeat: no pong", method="WS", url=self._url, kind="read"
            )
        message = f"websocket broke: {type(exc).__name__}: {exc}"
        return errors.APIConnectionError(message, method="WS", url=self._url)


async def open_websocket(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: Params,
    headers: Mapping[str, str],
    connect_timeout: float | None,
    heartbeat: float | None,
) -> WebSocket:
    """Open a WebSocket on `session` sending only `headers` (no client credentials). A
    redirect to another host is refused: the caller's first frame may carry a key."""
    connect = session.ws_connect(
        url, params=params, headers=headers, heartbeat=heartbeat, max_msg_size=0
    )  # max_msg_size=0: no cap, an event can carry a whole file
    try:
        ws = await asyncio.wait_for(connect, timeout=connect_timeout)
    except aiohttp.WSServerHandshakeError as exc:
        message = f"websocket handshake refused: HTTP {exc.status}"
        raise errors.APIConnectionError(message, method="WS", url=url) from exc
    except _NETWORK_ERRORS as exc:
        # A handshake that did not finish in time never carried anything: a connect timeout.
        cause = aiohttp.ConnectionTimeoutError() if isinstance(exc, asyncio.TimeoutError) else exc
        timeouts = aiohttp.ClientTimeout(sock_connect=connect_timeout)
        raise connection_error(cause, method="WS", url=url, timeouts=timeouts) from exc
    landed = URL(str(ws._response.url))
    if (landed.host, landed.port) != (URL(url).host, URL(url).port):
        await ws.close()
        message = "websocket redirected to another host: refusing to authenticate there"
        raise errors.APIConnectionError(message, method="WS", url=url)
    log.debug("WS %s open", url)
    return WebSocket(ws, url=url)
