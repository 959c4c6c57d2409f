"""The aiohttp edge: one function sends a request, one opens a stream.

Everything aiohttp raises is turned into the SDK's connection errors here, with a flag
saying whether the request may have reached the server (starts depend on it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import attrs

from . import errors

log = logging.getLogger("openhands_async")

Params = Sequence[tuple[str, str]]


@attrs.frozen
class Timeouts:
    """Timeouts in seconds. `read` bounds one silence on the socket, `total` one attempt.

    Streams ignore `total` and use `stream_idle` as their read bound instead.
    """

    connect: float | None = 10.0
    read: float | None = 60.0
    total: float | None = 120.0
    stream_idle: float | None = 600.0

    def for_request(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.total, sock_connect=self.connect, sock_read=self.read
        )

    def for_stream(self, idle: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.connect,
            sock_read=self.stream_idle if idle is None else idle,
        )


@attrs.frozen
class RawResponse:
    status: int
    headers: Mapping[str, str]
    content_type: str | None
    body: bytes


def connection_error(
    exc: BaseException, *, method: str, url: str, timeouts: aiohttp.ClientTimeout
) -> errors.APIConnectionError:
    """Map an aiohttp/asyncio failure to the SDK's error, naming the timeout that fired."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return errors.APITimeoutError(
            f"connect timeout after {timeouts.sock_connect}s",
            method=method,
            url=url,
            kind="connect",
            seconds=timeouts.sock_connect,
            may_have_been_sent=False,
        )
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        return errors.APITimeoutError(
            f"read timeout: the server sent nothing for {timeouts.sock_read}s",
            method=method,
            url=url,
            kind="read",
            seconds=timeouts.sock_read,
        )
    if isinstance(exc, asyncio.TimeoutError):
        return errors.APITimeoutError(
            f"total timeout of {timeouts.total}s",
            method=method,
            url=url,
            kind="total",
            seconds=timeouts.total,
        )
    # Failing to connect proves the request never left; anything later may have reached it.
    return errors.APIConnectionError(
        f"connection error: {type(exc).__name__}: {exc}",
        method=method,
        url=url,
        may_have_been_sent=not isinstance(exc, aiohttp.ClientConnectorError),
    )


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

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            # Created on first use, inside the running loop (aiohttp requires it).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
        return self._session

    @property
    def session(self) -> aiohttp.ClientSession | None:
        return self._session

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
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> RawResponse:
        timeout = timeout or self.timeouts.for_request()
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
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
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
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """Open a response whose body the caller reads and must release."""
        try:
            resp = await self._get_session().request(
                method,
                url,
                json=json,
                headers=self._headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise connection_error(exc, method=method, url=url, timeouts=timeout) from exc
        log.debug("%s %s -> %d (streaming)", method, url, resp.status)
        return resp
