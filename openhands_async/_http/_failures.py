"""What the edge turns aiohttp's failures into: the SDK's connection and timeout errors,
with a flag saying whether the request may have reached the server (starts depend on it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp

from .. import errors

log = logging.getLogger("openhands_async")

Params = Sequence[tuple[str, str]]

# What aiohttp and asyncio raise for a network failure or a fired timeout.
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


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
