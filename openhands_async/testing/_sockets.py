"""The fake agent servers' WebSocket bookkeeping: open connections, faults already spent,
and the loopback port that refuses connections (an agent server nobody can reach)."""

from __future__ import annotations

import socket
from collections import Counter

import attrs

from ._wire import HOST


@attrs.define
class SocketBook:
    """Counters the agent-server route keeps across connections (one per FakeCloud)."""

    #: Connections accepted (upgraded), in all.
    opened: int = 0
    #: Connections open now, per conversation id (32 hex).
    open_now: Counter[str] = attrs.Factory(Counter)
    #: Auth frames received and how many were refused (4001).
    auth_frames: int = 0
    refused: int = 0
    #: Connections cut / stalled by a fault so far.
    dropped: int = 0
    stalled: int = 0
    #: Every query string a connection was opened with (tests check no key is in one).
    queries: list[str] = attrs.Factory(list)
    #: Connections that came with an Authorization or X-Session-API-Key header (the SDK
    #: sends its keys to no agent server: the session key goes in the first frame only).
    credential_headers: int = 0
    _dead: socket.socket | None = None

    @property
    def open_total(self) -> int:
        return sum(self.open_now.values())

    def dead_port(self) -> int:
        """A loopback port bound but never listening: connecting to it is refused."""
        if self._dead is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            self._dead = sock
        return int(self._dead.getsockname()[1])

    def close(self) -> None:
        if self._dead is not None:
            self._dead.close()
            self._dead = None
