"""`BaseClient`: configuration and the request pipeline every request goes through once.

Configuration from arguments or the environment, auth headers, the credentials check,
then for each request: the gate (request rate, 429 pauses), retries (`_retry`), the send
(`_http`) and decoding (`_sansio`). `request`, `open_stream` and `download` are the only
ways out to the API; `open_websocket` (no credentials, no retries) reaches an agent
server. Resources and helpers type against this class, never against the facade.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import platform
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, TypeVar

import attrs

from . import errors
from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONNECTIONS,
    DOWNLOAD_CHUNK_SIZE,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_ORG_ID,
    ENV_SESSION_API_KEY,
    ORG_ID_HEADER,
)
from ._gate import RequestGate
from ._http import AIOHTTP_VERSION, ByteStream, ClientSession, HTTPTransport, Params, WebSocket
from ._inputs import check_base_url, is_loopback_url
from ._retry import Idempotency, attempts
from ._sansio import decode_error_body, decode_json, encode_query, error_from_response
from ._version import __version__
from .config import RetryPolicy, Timeouts

log = logging.getLogger("openhands_async")

__all__ = ["BaseClient"]


_Client = TypeVar("_Client", bound="BaseClient")


class _Closeable(Protocol):
    async def aclose(self) -> None: ...


class BaseClient:
    """Configuration, lifetime and the request pipeline (see `OpenHandsClient` for the
    arguments)."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        session_api_key: str | None = None,
        timeout: float | Timeouts | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        session: ClientSession | None = None,
        requests_per_second: float | None = None,
        rate_limiter: AbstractAsyncContextManager[Any] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        allow_insecure_http: bool = False,
        org_id: str | None = None,
    ) -> None:
        # An API key not bound to one organisation acts in the one named here (X-Org-Id).
        self.org_id = org_id if org_id is not None else os.environ.get(ENV_ORG_ID) or None
        self._api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
        self._session_api_key = (
            session_api_key
            if session_api_key is not None
            else os.environ.get(ENV_SESSION_API_KEY) or None
        )
        resolved_url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        self.base_url = check_base_url(resolved_url, allow_insecure_http)
        #: Plain http/ws to non-loopback hosts allowed (the base URL and agent servers).
        self.allow_insecure_http = allow_insecure_http

        if isinstance(timeout, Timeouts):
            timeouts = timeout
        elif timeout is None:
            timeouts = Timeouts()
        else:
            timeouts = Timeouts(total=float(timeout))
        policy = retry_policy or RetryPolicy()
        if max_retries is not None:
            policy = RetryPolicy(
                max_retries=max_retries,
                initial_delay=policy.initial_delay,
                max_delay=policy.max_delay,
                max_retry_after=policy.max_retry_after,
            )
        self.retry_policy = policy

        if requests_per_second is not None and rate_limiter is not None:
            raise TypeError("pass requests_per_second or rate_limiter, not both")
        if requests_per_second is not None:
            if requests_per_second <= 0:
                raise ValueError(f"requests_per_second must be > 0, got {requests_per_second}")
            from aiolimiter import AsyncLimiter

            rate_limiter = AsyncLimiter(requests_per_second, 1.0)
        self._gate = RequestGate(rate_limiter)
        self._transport = HTTPTransport(
            headers=self._headers(),
            timeouts=timeouts,
            session=session,
            max_connections=max_connections,
        )
        # Helpers (pollers) that run on this client and stop when it closes.
        self._pollers: set[Any] = set()

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> BaseClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop this client's running pollers, then close the session if the client created
        it. Safe to call twice."""
        for poller in list(self._pollers):
            await poller.aclose()
        await self._transport.aclose()

    def _register_poller(self, poller: _Closeable) -> None:
        self._pollers.add(poller)

    def _unregister_poller(self, poller: _Closeable) -> None:
        self._pollers.discard(poller)

    def __repr__(self) -> str:
        auth = "bearer" if self._api_key else "session-key" if self._session_api_key else "none"
        return f"{type(self).__name__}(base_url={self.base_url!r}, auth={auth})"

    def with_options(
        self: _Client,
        *,
        timeout: float | Timeouts | None = None,
        max_retries: int | None = None,
    ) -> _Client:
        """A copy of this client with other options, cheap enough to make per call:

            await client.with_options(timeout=5, max_retries=0).conversations.count()

        `timeout`: seconds for one attempt (the other timeouts kept), or a `Timeouts`;
        `max_retries`: re-sends after a transient failure. The copy shares the session,
        the credentials and the request gate (rate limit, 429 pauses) with this client.
        Closing the copy closes nothing shared; closing this client closes the session,
        and the copy with it.
        """
        clone = copy.copy(self)
        # Resources made on first use are bound to the client that made them.
        for klass in type(self).__mro__:
            for name, attr in vars(klass).items():
                if isinstance(attr, functools.cached_property):
                    clone.__dict__.pop(name, None)
        if isinstance(timeout, Timeouts):
            timeouts = timeout
        elif timeout is None:
            timeouts = self.timeouts
        else:
            timeouts = attrs.evolve(self.timeouts, total=float(timeout))
        clone._transport = self._transport.with_timeouts(timeouts)
        if max_retries is not None:
            clone.retry_policy = attrs.evolve(self.retry_policy, max_retries=max_retries)
        clone._pollers = set()  # the copy's own, stopped when the copy closes
        return clone

    # ------------------------------------------------------------------ config

    @property
    def timeouts(self) -> Timeouts:
        """The client's `Timeouts` (connect, read, total, stream_idle)."""
        return self._transport.timeouts

    @property
    def session(self) -> ClientSession | None:
        """The aiohttp session in use (None until the first request)."""
        return self._transport.session

    def _headers(self) -> dict[str, str]:
        headers = {
            "User-Agent": (
                f"openhands-async/{__version__} (Python {platform.python_version()}; "
                f"aiohttp {AIOHTTP_VERSION})"
            ),
            "Accept": "application/json",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self._session_api_key:
            headers["X-Session-API-Key"] = self._session_api_key
        if self.org_id:
            headers[ORG_ID_HEADER] = self.org_id
        return headers

    def _check_credentials(self, method: str, url: str) -> None:
        if self._api_key or self._session_api_key or is_loopback_url(self.base_url):
            return
        raise errors.AuthenticationError(
            f"no API key: pass api_key=... or set {ENV_API_KEY} "
            f"(get a key at {DEFAULT_BASE_URL}/settings/api-keys)",
            status=401,
            method=method,
            url=url,
        )

    def url(self, path: str) -> str:
        """The absolute URL of an API path on this client's base URL."""
        return self.base_url + path

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency: Idempotency = Idempotency.SAFE,
        max_retries: int | None = None,
        expect_json: bool = True,
        requires_auth: bool = True,
    ) -> Any:
        """Send one API request (with retries) and return its decoded JSON body.

        Every HTTP request of the SDK goes through here, `open_stream` or `download`.
        `requires_auth=False` is for the unauthenticated probes (/alive, /ready).
        """
        url = self.url(path)
        if requires_auth:
            self._check_credentials(method, url)
        query = encode_query(params)
        async with attempts(self.retry_policy, idempotency, max_retries=max_retries) as tries:
            async for attempt in tries:
                with attempt:
                    await self._gate.wait_turn()
                    raw = await self._transport.send(method, url, params=query, json=json)
                    if raw.status >= 300:
                        raise self._status_error(method, url, raw.status, raw.headers, raw.body)
                    if not expect_json:
                        return raw.body
                    return decode_json(
                        raw.status, raw.content_type, raw.body, method=method, url=url
                    )
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    async def open_stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idle_timeout: float | None = None,
        idempotency: Idempotency = Idempotency.UNSENT_ONLY,
    ) -> ByteStream:
        """Open a streamed 2xx response (retrying only the open); the caller closes it.

        The returned stream's `read(n)` and `aclose()` raise only the SDK's errors.
        """
        url = self.url(path)
        self._check_credentials(method, url)
        async with attempts(self.retry_policy, idempotency) as tries:
            async for attempt in tries:
                with attempt:
                    await self._gate.wait_turn()
                    stream = await self._transport.open(
                        method, url, json=json, idle_timeout=idle_timeout
                    )
                    if stream.status >= 300:
                        try:
                            body = await stream.read_error_body()
                        finally:
                            stream.release()
                        raise self._status_error(method, url, stream.status, stream.headers, body)
                    return stream
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    async def open_websocket(
        self, url: str, *, params: Params = (), heartbeat: float | None = None
    ) -> WebSocket:
        """Open a WebSocket to an absolute ws:// or wss:// URL on another host (a
        conversation's agent server). No client credentials are sent with it; the caller
        authenticates in its first frame. Not retried: the caller owns reconnects."""
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"not a WebSocket URL: {url!r}")
        return await self._transport.websocket(url, params=params, heartbeat=heartbeat)

    async def health(self, *, ready: bool = False) -> bool:
        """True if the server is up (`/alive`; with `ready=True` also `/ready`), else raises.

        These probes need no credentials, so this works without an API key.
        """
        await self.request("GET", "/alive", requires_auth=False, max_retries=0)
        if ready:
            await self.request("GET", "/ready", requires_auth=False, max_retries=0)
        return True

    async def download(
        self,
        path: str,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        chunk_size: int = DOWNLOAD_CHUNK_SIZE,
        idle_timeout: float | None = None,
    ) -> int:
        """Stream a GET body into `dest` (a path or a binary file object) in chunks.

        Only the opening of the response is retried. A path is written next to its final
        name and renamed when complete, so a failed download leaves no partial file.
        Returns the number of bytes written.
        """
        stream = await self.open_stream(
            "GET", path, idle_timeout=idle_timeout, idempotency=Idempotency.SAFE
        )
        try:
            if isinstance(dest, str | os.PathLike):
                final = Path(dest)
                partial = final.with_name(final.name + ".part")
                try:
                    with partial.open("wb") as fh:
                        written = await stream.copy_to(fh, chunk_size)
                    partial.replace(final)
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
                return written
            return await stream.copy_to(dest, chunk_size)
        finally:
            stream.release()

    def _status_error(
        self, method: str, url: str, status: int, headers: Mapping[str, str], raw: bytes
    ) -> errors.APIStatusError:
        body = decode_error_body(headers.get("Content-Type"), raw)
        err = error_from_response(status, headers, body, method=method, url=url)
        if isinstance(err, errors.RateLimitError) and not isinstance(
            err, errors.ConcurrencyLimitError
        ):
            # One 429 pauses the whole client: every caller would trip the same limit.
            pause = (
                err.retry_after if err.retry_after is not None else self.retry_policy.initial_delay
            )
            self._gate.pause(min(pause, self.retry_policy.max_retry_after))
        return err
