"""`OpenHandsClient`, the facade a user constructs: the pipeline (`BaseClient`) with the
resources wired on it, and the `poller()` / `run_batch()` factories."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from ._base_client import BaseClient
from ._constants import (
    DEFAULT_BATCH_POLL_INTERVAL,
    DEFAULT_MAX_RUNNING,
    DEFAULT_POLLER_INTERVAL,
    DEFAULT_POLLER_MAX_IN_FLIGHT,
)
from .lib._polling import resolve_poll_interval
from .lib.batch import BatchProgress, BatchRun, Job, Journal, account_label
from .lib.conversations import Conversations
from .lib.events import Events
from .lib.poller import ConversationPoller
from .resources.api_keys import ApiKeys
from .resources.config import Config
from .resources.git import Git
from .resources.sandbox_specs import SandboxSpecs
from .resources.sandboxes import Sandboxes
from .resources.secrets import Secrets
from .resources.settings import SettingsResource
from .resources.skills import Skills
from .resources.start_tasks import StartTasks
from .resources.users import Users

__all__ = ["OpenHandsClient"]


class OpenHandsClient(BaseClient):
    """Async client for the OpenHands Cloud API (V1).

    Use it as `async with OpenHandsClient() as client:`, or call `await client.aclose()`.

    Credentials: `api_key` (else `OPENHANDS_API_KEY`) is sent as `Authorization: Bearer`,
    as OpenHands Cloud expects. A self-hosted open-source server started with a session
    key takes `session_api_key` (else `OPENHANDS_SESSION_API_KEY`) as `X-Session-API-Key`.
    With neither, nothing is sent, which a local server without auth accepts; any other
    host makes the first request fail with a message naming the environment variable.

    `session`: pass your own `aiohttp.ClientSession` to share it; the client then never
    closes it. Otherwise the client creates one on first use and closes it on exit.

    `org_id` (else `OPENHANDS_ORG_ID`) is sent as `X-Org-Id` on every request: the
    organisation an API key not bound to one acts in.

    `requests_per_second` (or any async context manager as `rate_limiter`) bounds the
    request rate of everything sent through this client, the poller included.

        async with OpenHandsClient(timeout=30, max_retries=4) as client:
            async for conv in client.conversations.search(title_contains="README"):
                print(conv.id, conv.execution_status)
            quick = client.with_options(timeout=5, max_retries=0)  # shares the session
    """

    # Resources are made on first use (openai-python does the same): the facade adds no
    # constructor arguments of its own, so BaseClient's signature is the one written.

    @functools.cached_property
    def start_tasks(self) -> StartTasks:
        """Start tasks: a conversation's start-up (`get`, `get_many`, `search`, `count`)."""
        return StartTasks(self)

    @functools.cached_property
    def conversations(self) -> Conversations:
        """Conversations: `start`, `stream_start`, `get`/`get_many`, `search`, `count`,
        `send_message`, `ask`, `update`, `delete`, `download`, the workspace reads."""
        return Conversations(self, self.start_tasks)

    @functools.cached_property
    def events(self) -> Events:
        """A conversation's events: `search`, `count`, `get_many`, `last_agent_message`,
        and `follow` (live, over the agent server's WebSocket)."""
        return Events(self, self.conversations, self.sandboxes)

    @functools.cached_property
    def sandboxes(self) -> Sandboxes:
        """Sandboxes: `get`/`get_many`, `search`, `start`, `pause`, `resume`, `delete`."""
        return Sandboxes(self)

    @functools.cached_property
    def users(self) -> Users:
        """The signed-in user: `await client.users.me()`."""
        return Users(self)

    # -- the account's configuration and what the server offers (issue 20) --

    @functools.cached_property
    def settings(self) -> SettingsResource:
        """The account's settings (`get`, `update`, the schemas) and saved LLM `profiles`."""
        return SettingsResource(self)

    @functools.cached_property
    def secrets(self) -> Secrets:
        """Custom secrets the agents get as environment variables, and git-provider tokens."""
        return Secrets(self)

    @functools.cached_property
    def git(self) -> Git:
        """What the git providers offer: `installations`, `repositories`, `branches`,
        `suggested_tasks` (each with `search`).
        """
        return Git(self)

    @functools.cached_property
    def sandbox_specs(self) -> SandboxSpecs:
        """The sandbox specs a sandbox can be started from (`search`, `get`, `get_many`)."""
        return SandboxSpecs(self)

    @functools.cached_property
    def skills(self) -> Skills:
        """The skills available to agents (`search`) and what plugin marketplaces offer."""
        return Skills(self)

    @functools.cached_property
    def config(self) -> Config:
        """What the server offers: LLM `models` and `providers` (`search`), `web_client()`."""
        return Config(self)

    @functools.cached_property
    def api_keys(self) -> ApiKeys:
        """The API key in use: `await client.api_keys.current()`."""
        return ApiKeys(self)

    async def __aenter__(self) -> OpenHandsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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
        watch_ends: bool = False,
        on_progress: Callable[[BatchProgress], None] | None = None,
        retry_failed: bool = False,
        out: str | os.PathLike[str] | None = None,
        batch_name: str | None = None,
        lease_seconds: float | None = None,
    ) -> BatchRun:
        """Run many jobs, at most `max_running` conversations at once; yields `JobResult`s.

        `journal` is a SQLite file (or any `Journal`) recording every job: run the same
        batch again with it after a crash and finished jobs are skipped, started ones
        tracked (never started again), and only never-submitted ones started;
        `retry_failed=True` starts failed ones again. `out`: write the whole batch's results
        there (JSONL) when the run ends. A 401/403 stops the batch. Ends are polled every
        `poll_interval` s; `watch_ends=True` also hears each one from its agent server's
        WebSocket, so its slot is refilled at once. See `BatchRun`.

        Several workers share one batch with `journal="postgresql://user@host:5432/db"` and
        the same `batch_name` (extra `openhands-async[postgres]`): `max_running` then holds
        per account (this client's API key) across them, and a dead worker's jobs are
        adopted by a survivor once their lease (`lease_seconds`) lapses.
        """
        return BatchRun(
            self,
            jobs,
            max_running=max_running,
            starts_per_second=starts_per_second,
            journal=journal,
            fail_fast=fail_fast,
            poll_interval=poll_interval,
            watch_ends=watch_ends,
            on_progress=on_progress,
            retry_failed=retry_failed,
            out=out,
            batch_name=batch_name,
            lease_seconds=lease_seconds,
            account=account_label(self._api_key or self._session_api_key or "", self.base_url),
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
