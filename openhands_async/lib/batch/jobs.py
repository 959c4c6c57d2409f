"""What a batch is made of: `Job` (one agent task and its key), `JobResult` (how it ended),
`BatchProgress` (live counts), and reading jobs from what the caller passes."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, Literal

import attrs

from ...models import Conversation, ExecutionStatus, StartTask, StartTaskStatus
from .._polling import StatusChange

__all__ = ["BatchProgress", "Job", "JobResult", "JobsInput"]


@attrs.frozen
class Job:
    """One agent task: a message plus any start argument (`repository`, `branch`, ...).

    `key` identifies the job in the journal; by default a stable hash of its content, so
    the same job read again from the same file is recognised.
    """

    message: str | None
    repository: str | None = None
    branch: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    key: str = attrs.field(default="")

    def __attrs_post_init__(self) -> None:
        if self.message is not None and not self.message.strip():
            raise ValueError("Job.message must not be empty")
        if "conversation_id" in self.options:
            raise ValueError("Job.options must not set conversation_id: the batch mints it")
        if not self.key:
            object.__setattr__(self, "key", content_key(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message}
        if self.repository is not None:
            data["repository"] = self.repository
        if self.branch is not None:
            data["branch"] = self.branch
        if self.options:
            data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """From a JSON object (one line of a JSONL file): message, repository, branch, key,
        and any other start argument (top level or under "options")."""
        known = {"message", "repository", "branch", "key", "options"}
        options = {
            **dict(data.get("options") or {}),
            **{k: v for k, v in data.items() if k not in known},
        }
        return cls(
            message=data.get("message"),
            repository=data.get("repository"),
            branch=data.get("branch"),
            options=options,
            key=str(data.get("key") or ""),
        )

    def start_options(self) -> dict[str, Any]:
        return {"repository": self.repository, "branch": self.branch, **self.options}


def content_key(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@attrs.frozen
class JobResult:
    """How one job ended. `state` is "finished" (the agent finished) or "failed"."""

    job: Job
    state: Literal["finished", "failed"]
    conversation_id: str | None
    start_task: StartTask | None
    conversation: Conversation | None
    sandbox_status: str | None
    execution_status: str | None
    error: str | None
    started_at: float | None
    ended_at: float

    @property
    def ok(self) -> bool:
        return self.state == "finished"

    @property
    def duration(self) -> float | None:
        return None if self.started_at is None else self.ended_at - self.started_at


def failed(
    job: Job,
    conversation_id: str | None,
    task: StartTask | None,
    error: str,
    started_at: float | None,
    *,
    sandbox_status: str | None = None,
) -> JobResult:
    """The result of a job that failed before (or without) reaching a final conversation."""
    return JobResult(
        job, "failed", conversation_id, task, None, sandbox_status, None, error, started_at,
        time.time(),
    )  # fmt: skip


def ended(
    job: Job,
    conversation_id: str | None,
    task: StartTask,
    change: StatusChange,
    started_at: float | None,
) -> JobResult:
    """The result of a followed job from its terminal status change."""
    model = change.model
    conversation = model if isinstance(model, Conversation) else None
    if isinstance(model, StartTask):
        task = model
    sandbox = str(conversation.sandbox_status) if conversation else None
    execution = (
        str(conversation.execution_status)
        if conversation and conversation.execution_status
        else None
    )
    error: str | None = None
    if change.missing:
        error = f"{change.kind} {change.id} is missing on the server"
    elif isinstance(model, StartTask) and model.status is StartTaskStatus.ERROR:
        error = f"start failed: {model.detail or '(no detail)'}"
    elif conversation is not None and conversation.execution_status is not ExecutionStatus.FINISHED:
        error = f"conversation ended {sandbox}/{execution}"
    return JobResult(
        job=job,
        state="failed" if error else "finished",
        conversation_id=conversation_id,
        start_task=task,
        conversation=conversation,
        sandbox_status=sandbox,
        execution_status=execution,
        error=error,
        started_at=started_at,
        ended_at=time.time(),
    )


@attrs.define
class BatchProgress:
    """Counts for a progress display. `queued` jobs are read but not started yet."""

    queued: int = 0
    starting: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    target: int = 0
    #: Started jobs the server paused at its running cap; resumed as slots free.
    paused: int = 0
    started_at: float = attrs.field(factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.finished + self.failed


JobsInput = Iterable[Job | Mapping[str, Any]] | AsyncIterable[Job | Mapping[str, Any]]


async def aiter_jobs(jobs: JobsInput) -> AsyncIterator[Job]:
    """Jobs one at a time from a sync or async iterable (never all loaded at once)."""
    if isinstance(jobs, AsyncIterable):
        async for item in jobs:
            yield as_job(item)
    else:
        for item in jobs:
            yield as_job(item)


def as_job(item: Job | Mapping[str, Any]) -> Job:
    if isinstance(item, Job):
        return item
    if isinstance(item, Mapping):
        return Job.from_dict(item)
    raise TypeError(f"a job must be a Job or a mapping, not {type(item).__name__}")
