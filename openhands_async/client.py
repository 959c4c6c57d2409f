"""`OpenHandsClient`: configuration, lifetime, and the one place requests are sent."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

from . import errors
from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_POLL_INTERVAL,
    DEFAULT_MAX_RUNNING,
    DEFAULT_POLLER_INTERVAL,
    DEFAULT_POLLER_MAX_IN_FLIGHT,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_SESSION_API_KEY,
)
from ._gate import RequestGate
from ._http import HTTPTransport, Params, Timeouts, connection_error
from ._retry import Idempotency, RetryPolicy
from ._sansio import decode_error_body, decode_json, error_from_response, is_loopback_url
from ._version import __version__
from .lib._polling import resolve_poll_interval
from .lib.batch import BatchProgress, BatchRun, Job, Journal
from .lib.poller import ConversationPoller
from .resources.conversations import Conversations
from .resources.events import Events
from .resources.sandboxes import Sandboxes
from .resources.start_tasks import StartTasks
from .resources.users import Users

log = logging.getLogger("openhands_async")

__all__ = ["OpenHandsClient"]


class OpenHandsClient:
    """Async client for the OpenHands Cloud API (V1).

    Use it as `async with OpenHandsClient() as client:`, or call `await client.aclose()`.

    Credentials: `api_key` (else `OPENHANDS_API_KEY`) is sent as `Authorization: Bearer`,
    as OpenHands Cloud expects. A self-hosted open-source server started with a session
    key takes `session_api_key` (else `OPENHANDS_SESSION_API_KEY`) as `X-Session-API-Key`.
    With neither, nothing is sent, which a local server without auth accepts; any other
    host makes the first request fail with a message naming the environment variable.

    `session`: pass your own `aiohttp.ClientSession` to share it; the client then never
    closes it. Otherwise the client creates one on first use and closes it on exit.

    `requests_per_second` (or any async context manager as `rate_limiter`) bounds the
    request rate of everything sent through this client, the poller included.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        session_api_key: str | None = None,
        timeout: float | Timeouts | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        requests_per_second: float | None = None,
        rate_limiter: AbstractAsyncContextManager[Any] | None = None,
        max_connections: int = 100,
        allow_insecure_http: bool = False,
    ) -> None:
        self._api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
        self._session_api_key = (
            session_api_key
            if session_api_key is not None
            else os.environ.get(ENV_SESSION_API_KEY) or None
        )
        resolved_url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        self.base_url = _check_base_url(resolved_url, allow_insecure_http)

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

        self.conversations = Conversations(self)
        self.start_tasks = StartTasks(self)
        self.events = Events(self)
        self.sandboxes = Sandboxes(self)
        self.users = Users(self)
        self._pollers: set[ConversationPoller] = set()

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> OpenHandsClient:
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

    # ------------------------------------------------------------------ pollers

    def run_batch(
        self,
        jobs: Iterable[Job | Mapping[str, Any]] | AsyncIterable[Job | Mapping[str, Any]],
        *,
        max_running: int = DEFAULT_MAX_RUNNING,
        starts_per_second: float | None = None,
        journal: str | os.PathLike[str] | Journal | None = None,
        fail_fast: bool = False,
        poll_interval: float = DEFAULT_BATCH_POLL_INTERVAL,
        on_progress: Callable[[BatchProgress], None] | None = None,
        retry_failed: bool = False,
        out: str | os.PathLike[str] | None = None,
    ) -> BatchRun:
        """Run many jobs, at most `max_running` conversations at once; yields `JobResult`s.

        `journal` is a SQLite file (or any `Journal`) recording every job: run the same
        batch again with it after a crash and finished jobs are skipped, started ones
        tracked (never started again), and only never-submitted ones started;
        `retry_failed=True` starts failed ones again. `out`: write the whole batch's results
        there (JSONL) when the run ends. A 401/403 stops the batch. See `BatchRun`.
        """
        return BatchRun(
            self,
            jobs,
            max_running=max_running,
            starts_per_second=starts_per_second,
            journal=journal,
            fail_fast=fail_fast,
            poll_interval=poll_interval,
            on_progress=on_progress,
            retry_failed=retry_failed,
            out=out,
        )

    def poller(
        self,
        poll_interval: float | None = None,
        *,
        min_interval: float | None = None,
        max_interval: float | None = None,
        max_in_flight: int = DEFAULT_POLLER_MAX_IN_FLIGHT,
        interval: float | None = None,
    ) -> ConversationPoller:
        """A `ConversationPoller` reading through this client (see `openhands_async.lib.poller`).

        `poll_interval` (default 5 s; `interval` is its deprecated name) is the base seconds
        between reads of one item; changed items are read again after `min_interval`
        (default a quarter of it), quiet ones back off by doubling up to `max_interval`
        (default four times it). `max_in_flight` bounds concurrent requests.
        """
        period = resolve_poll_interval(poll_interval, interval, DEFAULT_POLLER_INTERVAL)
        return ConversationPoller(
            self,
            period,
            min_interval=min_interval,
            max_interval=max_interval,
            max_in_flight=max_in_flight,
        )

    def _register_poller(self, poller: ConversationPoller) -> None:
        self._pollers.add(poller)

    def _unregister_poller(self, poller: ConversationPoller) -> None:
        self._pollers.discard(poller)

    def __repr__(self) -> str:
        auth = "bearer" if self._api_key else "session-key" if self._session_api_key else "none"
        return f"OpenHandsClient(base_url={self.base_url!r}, auth={auth})"

    # ------------------------------------------------------------------ config

    @property
    def timeouts(self) -> Timeouts:
        return self._transport.timeouts

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The aiohttp session in use (None until the first request)."""
        return self._transport.session

    @property
    def gate(self) -> RequestGate:
        """The gate shared by every request of this client (rate limit and 429 pauses)."""
        return self._gate

    def _headers(self) -> dict[str, str]:
        headers = {
            "User-Agent": (
                f"openhands-async/{__version__} (Python {platform.python_version()}; "
                f"aiohttp {aiohttp.__version__})"
            ),
            "Accept": "application/json",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self._session_api_key:
            headers["X-Session-API-Key"] = self._session_api_key
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
        query = _query(params)
        async with self.retry_policy.attempts(idempotency, max_retries=max_retries) as tries:
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
    ) -> aiohttp.ClientResponse:
        """Open a streamed 2xx response (retrying only the open); the caller releases it."""
        url = self.url(path)
        self._check_credentials(method, url)
        timeout = self._transport.timeouts.for_stream(idle_timeout)
        async with self.retry_policy.attempts(idempotency) as tries:
            async for attempt in tries:
                with attempt:
                    await self._gate.wait_turn()
                    resp = await self._transport.open(method, url, json=json, timeout=timeout)
                    if resp.status >= 300:
                        try:
                            body = await resp.read()
                        except (aiohttp.ClientError, OSError):
                            body = b""
                        finally:
                            resp.release()
                        raise self._status_error(method, url, resp.status, resp.headers, body)
                    return resp
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

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
        chunk_size: int = 64 * 1024,
        idle_timeout: float | None = None,
    ) -> int:
        """Stream a GET body into `dest` (a path or a binary file object) in chunks.

        Only the opening of the response is retried. A path is written next to its final
        name and renamed when complete, so a failed download leaves no partial file.
        Returns the number of bytes written.
        """
        resp = await self.open_stream(
            "GET", path, idle_timeout=idle_timeout, idempotency=Idempotency.SAFE
        )
        url = self.url(path)
        timeouts = self._transport.timeouts.for_stream(idle_timeout)
        try:
            if isinstance(dest, str | os.PathLike):
                final = Path(dest)
                partial = final.with_name(final.name + ".part")
                try:
                    with partial.open("wb") as fh:
                        written = await _copy_body(resp, fh, chunk_size, url, timeouts)
                    partial.replace(final)
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
                return written
            return await _copy_body(resp, dest, chunk_size, url, timeouts)
        finally:
            resp.release()

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


async def _copy_body(
    resp: aiohttp.ClientResponse,
    out: IO[bytes],
    chunk_size: int,
    url: str,
    timeouts: aiohttp.ClientTimeout,
) -> int:
    """Copy a response body chunk by chunk; a broken read is an APIConnectionError, while
    errors writing to `out` are the caller's own and pass through unchanged."""
    written = 0
    chunks = resp.content.iter_chunked(chunk_size).__aiter__()
    while True:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return written
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            err = connection_error(exc, method="GET", url=url, timeouts=timeouts)
            err.message = f"download broke off after {written} bytes: {err.message}"
            raise err from exc
        out.write(chunk)
        written += len(chunk)


def _query(params: Params | Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query pairs with None dropped, booleans as the server spells them, lists repeated."""
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    out: list[tuple[str, str]] = []
    for key, value in items:
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, bool):
                out.append((key, "true" if v else "false"))
            elif hasattr(v, "isoformat"):
                out.append((key, v.isoformat()))
            else:
                out.append((key, str(v.value if hasattr(v, "value") else v)))
    return out


def _check_base_url(url: str, allow_insecure_http: bool) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with https:// (or http:// for loopback): {url!r}")
    if url.startswith("http://") and not allow_insecure_http and not is_loopback_url(url):
        raise ValueError(
            f"refusing plain http:// to a non-loopback host ({url}): the API key would travel "
            "unencrypted. Use https://, or pass allow_insecure_http=True if you must."
        )
    return url
