"""The aiohttp edge, the only SDK module that imports aiohttp at run time.

It sends a request (`HTTPTransport.send`), opens a streamed response (`HTTPTransport.open`,
a `ByteStream` whose `read`/`aclose` already speak the SDK's errors) and copies a body to a
file (`ByteStream.copy_to`). Everything aiohttp raises is turned into the SDK's connection
errors here, with a flag saying whether the request may have reached the server (starts
depend on it). `Timeouts` become aiohttp's `ClientTimeout` here too. `open_websocket` (in
`_websocket.py`) opens a WebSocket; the failure mapping is in `_failures.py`. This package
is the only part of the SDK that imports aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import IO, Any

import aiohttp
import attrs

from .. import errors
from ..config import Timeouts
from ._failures import _NETWORK_ERRORS, Params, connection_error, log
from ._websocket import WebSocket, WSClose, open_websocket

__all__ = [
    "AIOHTTP_VERSION",
    "ByteStream",
    "ClientSession",
    "HTTPTransport",
    "Params",
    "RawResponse",
    "WSClose",
    "WebSocket",
    "connection_error",
    "open_websocket",
    "request_timeout",
    "stream_timeout",
]

#: Named in the User-Agent.
AIOHTTP_VERSION: str = aiohttp.__version__
#: The session type a user may pass in (named here so no other module imports aiohttp).
ClientSession = aiohttp.ClientSession


def request_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read
    )


def stream_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """No total bound (a stream may last minutes) and no aiohttp read bound: aiohttp's
    `sock_read` would abort the connection when it fires, so `ByteStream` bounds a silence
    itself and leaves the connection open (see `ByteStream.read`)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=None)


@attrs.frozen
class RawResponse:
    status: int
    headers: Mapping[str, str]
    content_type: str | None
    body: bytes


class ByteStream:
    """An open response body, read as it arrives. `read(n)` returns as soon as any bytes
    are there (b"" at the end) and raises the SDK's `APIConnectionError` when the
    connection breaks; `aclose()` releases the connection at once (also safe to call twice,
    and from a finalizer via `release`).

    A silence longer than `idle_timeout` (None: no bound) raises `APITimeoutError` with
    kind "stream-idle" but does not touch the connection: the read stays pending, and the
    next `read()` goes on waiting for it (a server that works while the stream is silent,
    and stops when its connection closes, is not cut off by the client's impatience).
    `read(-1)` (the whole rest of the body) is not bounded.
    """

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        *,
        method: str,
        url: str,
        idle_timeout: float | None,
    ) -> None:
        self._resp = resp
        self._content = resp.content
        self._read = resp.content.read  # bound once: read() runs once per chunk
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._method = method
        self._url = url
        #: How long one read may wait for bytes before `read` raises (None: for ever).
        self.idle_timeout = idle_timeout
        # The read a silence left waiting (it carries on; the next `read` takes it up).
        self._pending: asyncio.Task[bytes] | None = None
        #: Bytes handed out so far.
        self.offset = 0

    async def read(self, n: int = -1, /) -> bytes:
        pending = self._pending
        try:
            if pending is None:
                if self.idle_timeout is None or n < 0:
                    data = await self._read(n)
                    self.offset += len(data)
                    return data
                # Bytes already buffered (or the end) need no wait, so no task.
                data = self._content.read_nowait(n)
                if data or self._content.at_eof():
                    self.offset += len(data)
                    return data
                # Waiting: a task, so a silence can stop waiting without cancelling it.
                pending = self._pending = asyncio.ensure_future(self._read(n))
                pending.add_done_callback(_retrieve)
            done, _ = await asyncio.wait((pending,), timeout=self.idle_timeout)
            if not done:
                raise self._silent()
            self._pending = None
            if pending.cancelled():  # released meanwhile (`release` cancels the read)
                raise aiohttp.ClientConnectionError("the stream was closed")
            data = pending.result()
        except _NETWORK_ERRORS as exc:
            raise self._broken(exc) from exc
        self.offset += len(data)
        return data

    async def read_error_body(self) -> bytes:
        """The whole body of an error answer, best effort (b"" if it cannot be read)."""
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, OSError):
            return b""

    async def copy_to(self, out: IO[bytes], chunk_size: int) -> int:
        """Copy the body chunk by chunk; a broken read is an APIConnectionError, while
        errors writing to `out` are the caller's own and pass through unchanged."""
        written = 0
        while True:
            try:
                chunk = await self.read(chunk_size)
            except errors.APIConnectionError as err:
                err.message = f"download broke off after {written} bytes: {err.message}"
                raise
            if not chunk:
                return written
            out.write(chunk)
            written += len(chunk)

    def release(self) -> None:
        """Close the connection if the body was not read to the end; sync and immediate."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            # From a finalizer the loop may be closed already: then nothing waits anyway.
            with contextlib.suppress(RuntimeError):
                pending.cancel()
        self._resp.release()

    async def aclose(self) -> None:
        """`release`, then wait for a read a silence left pending to end (it is cancelled)."""
        pending = self._pending
        self.release()
        if pending is not None:
            await asyncio.wait((pending,))

    def map_error(self, exc: BaseException) -> errors.APIConnectionError | None:
        """The SDK error for an aiohttp/asyncio failure met while reading this stream (None
        if `exc` is not one): for a parser that sees such an error without `read` (ijson's
        C backend re-raises one thrown into its await chain)."""
        return self._broken(exc) if isinstance(exc, _NETWORK_ERRORS) else None

    def _silent(self) -> errors.APITimeoutError:
        idle = self.idle_timeout
        return errors.APITimeoutError(
            f"stream idle timeout: the server sent nothing for {idle}s (after {self.offset} bytes)",
            method=self._method,
            url=self._url,
            kind="stream-idle",
            seconds=idle,
        )

    def _broken(self, exc: BaseException) -> errors.APIConnectionError:
        if isinstance(exc, asyncio.TimeoutError):
            return self._silent()
        err = connection_error(
            exc,
            method=self._method,
            url=self._url,
            timeouts=aiohttp.ClientTimeout(sock_read=self.idle_timeout),
        )
        err.message = f"{err.message} (stream broke after {self.offset} bytes)"
        return err


def _retrieve(task: asyncio.Task[bytes]) -> None:
    # A read left pending by a silence may fail after its stream was given up on: mark the
    # exception retrieved (the stream's next read, if any, raises it), so asyncio logs none.
    if not task.cancelled():
        task.exception()


class HTTPTransport:
    """Owns (or borrows) the aiohttp session and sends requests with fixed headers."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        timeouts: Timeouts,
        session: aiohttp.ClientSession | None,
        max_connections: int,
    ) -> None:
        self._headers = dict(headers)
        self.timeouts = timeouts
        self._session = session
        self._owns_session = session is None
        self._max_connections = max_connections
        self._closed = False
        # A view (`with_timeouts`) sends through its owner's session and owns nothing.
        self._owner: HTTPTransport | None = None

    def with_timeouts(self, timeouts: Timeouts) -> HTTPTransport:
        """A view of this transport with other timeouts: it sends through the same session
        (made when either first sends), and closing it closes nothing."""
        view = HTTPTransport(
            headers=self._headers,
            timeouts=timeouts,
            session=None,
            max_connections=self._max_connections,
        )
        view._owns_session = False
        view._owner = self._owner or self
        return view

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._owner is not None:
            return self._owner._get_session()
        if self._session is None:
            # Created on first use, inside the running loop (aiohttp requires it).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
        return self._session

    @property
    def session(self) -> aiohttp.ClientSession | None:
        return self._owner.session if self._owner is not None else self._session

    async def aclose(self) -> None:
        self._closed = True
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
    ) -> RawResponse:
        timeout = request_timeout(self.timeouts)
        started = time.monotonic()
        try:
            async with self._get_session().request(
                method,
                url,
                params=params,
                json=json,
                headers=self._headers,
                timeout=timeout,
                allow_redirects=False,  # credentials never follow a redirect anywhere
            ) as resp:
                body = await resp.read()
                raw = RawResponse(resp.status, resp.headers, resp.headers.get("Content-Type"), body)
        except _NETWORK_ERRORS as exc:
            log.debug("%s %s failed: %s", method, url, type(exc).__name__)
            raise connection_error(exc, method=method, url=url, timeouts=timeout) from exc
        log.debug(
            "%s %s -> %d (%d bytes, %.3fs)",
            method,
            url,
            raw.status,
            len(raw.body),
            time.monotonic() - started,
        )
        return raw

    async def open(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        idle_timeout: float | None = None,
    ) -> ByteStream:
        """Open a response whose body the caller reads and must close.

        `idle_timeout` (default `stream_idle`) bounds the wait for the headers and then each
        silence of the body (`ByteStream.read`)."""
        idle = self.timeouts.stream_idle if idle_timeout is None else idle_timeout
        timeout = stream_timeout(self.timeouts)
        opening = self._get_session().request(
            method,
            url,
            json=json,
            headers=self._headers,
            timeout=timeout,
            allow_redirects=False,
        )
        try:
            # aiohttp's own read bound is off for streams (it would also cut the body).
            resp = await asyncio.wait_for(opening, idle)
        except _NETWORK_ERRORS as exc:
            if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, aiohttp.ClientError):
                raise errors.APITimeoutError(
                    f"read timeout: the server sent nothing for {idle}s",
                    method=method,
                    url=url,
                    kind="read",
                    seconds=idle,
                ) from exc
            raise connection_error(exc, method=method, url=url, timeouts=timeout) from exc
        log.debug("%s %s -> %d (streaming)", method, url, resp.status)
        return ByteStream(resp, method=method, url=url, idle_timeout=idle)

    async def websocket(self, url: str, *, params: Params, heartbeat: float | None) -> WebSocket:
        """Open a WebSocket to `url` (another host: a conversation's agent server) with
        only the User-Agent: the client's credentials never go there."""
        headers = {"User-Agent": self._headers.get("User-Agent", "openhands-async")}
        return await open_websocket(
            self._get_session(),
            url,
            params=params,
            headers=headers,
            connect_timeout=self.timeouts.connect,
            heartbeat=heartbeat,
        )
