"""What a batch is made of: `Job` (one agent task and its key), `InvalidJob` (an input that
is not one), `JobResult` (how a job ended), `BatchProgress` (live counts), and reading jobs
from what the caller passes or from a JSONL file (`read_jobs`), checked when read with the
rules `conversations.start` applies (`check_start_options`)."""

from __future__ import annotations

import collections.abc
import hashlib
import json
import os
import time
import types
import typing
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Literal

import attrs

from ..._start_request import make_start_request
from ...models import Conversation, ExecutionStatus, StartTask, StartTaskStatus
from .._polling import StatusChange

__all__ = [
    "BatchProgress",
    "InvalidJob",
    "Job",
    "JobResult",
    "JobsInput",
    "check_jobs",
    "check_start_options",
    "read_jobs",
]

# The start arguments a job may carry: make_start_request's own, less the two the batch
# sets itself (the message is the job's, the conversation id is minted per start).
_START_HINTS = typing.get_type_hints(make_start_request)
_START_OPTIONS = frozenset(_START_HINTS) - {"message", "conversation_id", "return"}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON-ish value fits a start argument's annotation (as far as JSON can)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, list, tuple):
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value)
    if origin in (collections.abc.Mapping, dict):
        return isinstance(value, Mapping) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()
        )
    return True  # an annotation JSON cannot express: make_start_request decides


def check_start_options(message: object, options: Mapping[str, Any]) -> None:
    """Raise ValueError (or TypeError) unless `conversations.start(message, **options)`
    would accept these: a non-empty text message, known fields only, each of its type."""
    if message is None:
        raise ValueError("message is required")
    if not isinstance(message, str):
        raise TypeError(f"message must be a string, not {type(message).__name__}")
    unknown = sorted(set(options) - _START_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
        )
    for name, value in options.items():
        if not _fits(value, _START_HINTS[name]):
            raise TypeError(f"{name} must be {_START_HINTS[name]}, not {value!r}")
    # The same function start() builds its request with: its own checks apply as they are.
    make_start_request(message, conversation_id=uuid.UUID(int=0).hex, **options)


@attrs.frozen
class Job:
    """One agent task: a message plus any start argument (`repository`, `branch`, ...).

    `key` identifies the job in the journal; by default a stable hash of its content, so
    the same job read again from the same file is recognised.
    """

    message: str
    repository: str | None = None
    branch: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    key: str = attrs.field(default="")
    #: Where the job was read ("jobs.jsonl:7"), for messages; not part of its content.
    source: str | None = attrs.field(default=None, eq=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.message, str) and not self.message.strip():
            raise ValueError("Job.message must not be empty")
        if "conversation_id" in self.options:
            raise ValueError("Job.options must not set conversation_id: the batch mints it")
        if not isinstance(self.key, str):
            raise TypeError(f"Job.key must be a string, not {self.key!r}")
        # Checked now, not when the job's turn to start comes (maybe hours later).
        check_start_options(self.message, self.start_options())
        if not self.key:
            object.__setattr__(self, "key", content_key(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """The job as a JSONL line's object (what `read_jobs` reads back)."""
        data: dict[str, Any] = {"message": self.message}
        if self.repository is not None:
            data["repository"] = self.repository
        if self.branch is not None:
            data["branch"] = self.branch
        if self.options:
            data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Job:
        """From a JSON object (one line of a JSONL file): message, repository, branch, key,
        and any other start argument (top level or under "options"). Raises ValueError or
        TypeError for a job `conversations.start` would refuse."""
        known = {"message", "repository", "branch", "key", "options"}
        nested = data.get("options") or {}
        if not isinstance(nested, Mapping):
            raise TypeError(f"options must be an object, not {nested!r}")
        options = {**nested, **{k: v for k, v in data.items() if k not in known}}
        return cls(
            message=data.get("message"),  # type: ignore[arg-type]  # checked by the class
            repository=data.get("repository"),
            branch=data.get("branch"),
            options=options,
            key=data.get("key") or "",
            source=source,
        )

    def start_options(self) -> dict[str, Any]:
        """The keyword arguments this job gives `conversations.start`."""
        options = dict(self.options)
        if self.repository is not None:
            options["repository"] = self.repository
        if self.branch is not None:
            options["branch"] = self.branch
        return options


@attrs.frozen
class InvalidJob:
    """An input that is not a valid job: its place (`source`), why, and what was read.
    The batch reports it as a failed result and goes on."""

    source: str
    error: str
    data: Any = None
    key: str | None = None


def content_key(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@attrs.frozen
class JobResult:
    """How one job ended. `state` is "finished" (the agent finished), "failed" (`error`
    says why), or "skipped" (not run: a duplicate of an earlier job; `reason` says which).

    For an input that was not a valid job, `job` is None and `source` says where it was.
    """

    job: Job | None
    state: Literal["finished", "failed", "skipped"]
    conversation_id: str | None
    start_task: StartTask | None
    conversation: Conversation | None
    sandbox_status: str | None
    execution_status: str | None
    error: str | None
    started_at: float | None
    ended_at: float
    #: Where the job was read ("jobs.jsonl:7"), or its position in the input ("item 7").
    source: str | None = None
    reason: str | None = None

    @property
    def key(self) -> str | None:
        """The job's key (None for an input that was not a valid job)."""
        return self.job.key if self.job is not None else None

    @property
    def ok(self) -> bool:
        """True if the agent finished."""
        return self.state == "finished"

    @property
    def duration(self) -> float | None:
        """Seconds from the start request to the end; None if it never started."""
        return None if self.started_at is None else self.ended_at - self.started_at


def failed(
    job: Job | None,
    conversation_id: str | None,
    task: StartTask | None,
    error: str,
    started_at: float | None,
    *,
    sandbox_status: str | None = None,
    source: str | None = None,
) -> JobResult:
    """The result of a job that failed before (or without) reaching a final conversation."""
    return JobResult(
        job, "failed", conversation_id, task, None, sandbox_status, None, error, started_at,
        time.time(), source=source or (job.source if job else None),
    )  # fmt: skip


def skipped(job: Job, reason: str) -> JobResult:
    return JobResult(
        job, "skipped", None, None, None, None, None, None, None, time.time(),
        source=job.source, reason=reason,
    )  # fmt: skip


def ended(
    job: Job,
    conversation_id: str | None,
    task: StartTask,
    change: StatusChange,
    started_at: float | None,
    heard: ExecutionStatus | None = None,
) -> JobResult:
    """The result of a followed job from its terminal status change. `heard`: the status the
    agent server reported, for a read that shows none (its sandbox was paused since)."""
    model = change.model
    conversation = model if isinstance(model, Conversation) else None
    if isinstance(model, StartTask):
        task = model
    sandbox = str(conversation.sandbox_status) if conversation else None
    status = (conversation.execution_status or heard) if conversation else None
    execution = str(status) if status else None
    error: str | None = None
    if change.missing:
        error = f"{change.kind} {change.id} is missing on the server"
    elif isinstance(model, StartTask) and model.status is StartTaskStatus.ERROR:
        error = f"start failed: {model.detail or '(no detail)'}"
    elif conversation is not None and status is not ExecutionStatus.FINISHED:
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
        source=job.source,
    )


@attrs.define
class BatchProgress:
    """This run's counts, for a progress display. `queued` jobs are read but not started
    yet; `skipped` were not run: ended in an earlier run, or duplicates; of those,
    `not_retried` failed in an earlier run (pass `retry_failed=True` to start them again)."""

    queued: int = 0
    starting: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    not_retried: int = 0
    target: int = 0
    #: Started jobs the server paused at its running cap; resumed as slots free.
    paused: int = 0
    #: Ends heard on the jobs' agent servers (`watch_ends`); the others the poll found.
    ends_heard: int = 0
    started_at: float = attrs.field(factory=time.monotonic)

    @property
    def done(self) -> int:
        """Jobs ended in this run: finished + failed."""
        return self.finished + self.failed


JobInput = Job | InvalidJob | Mapping[str, Any]
JobsInput = Iterable[JobInput] | AsyncIterable[JobInput]


async def aiter_jobs(jobs: JobsInput) -> AsyncIterator[Job | InvalidJob]:
    """Jobs one at a time from a sync or async iterable (never all loaded at once); a
    mapping that is not a valid job becomes an `InvalidJob` named by its position."""
    n = 0
    if isinstance(jobs, AsyncIterable):
        async for item in jobs:
            n += 1
            yield as_job(item, n)
    else:
        for item in jobs:
            n += 1
            yield as_job(item, n)


def as_job(item: JobInput, position: int) -> Job | InvalidJob:
    if isinstance(item, InvalidJob):
        return item
    if isinstance(item, Job):
        return item if item.source else attrs.evolve(item, source=f"item {position}")
    if isinstance(item, Mapping):
        source = f"item {position}"
        try:
            return Job.from_dict(item, source=source)
        except (ValueError, TypeError) as exc:
            return InvalidJob(source, str(exc), dict(item), _given_key(item))
    raise TypeError(f"a job must be a Job or a mapping, not {type(item).__name__}")


def _given_key(data: Any) -> str | None:
    key = data.get("key") if isinstance(data, Mapping) else None
    return key if isinstance(key, str) and key else None


def read_jobs(path: str | os.PathLike[str]) -> Iterator[Job | InvalidJob]:
    """The jobs of a JSONL file, one per non-blank line, lazily: a `Job` (its `source` is
    "path:line"), or an `InvalidJob` for a line that is not JSON, not an object, or not a
    job `conversations.start` would accept."""
    with open(path, encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            source = f"{os.fspath(path)}:{n}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                yield InvalidJob(source, f"not valid JSON ({exc})", line.rstrip("\n"))
                continue
            if not isinstance(data, dict):
                yield InvalidJob(source, "a job must be a JSON object", data)
                continue
            try:
                yield Job.from_dict(data, source=source)
            except (ValueError, TypeError) as exc:
                yield InvalidJob(source, str(exc), data, _given_key(data))


def check_jobs(path: str | os.PathLike[str]) -> list[InvalidJob]:
    """Every bad line of a JSONL jobs file (invalid, or a key used twice), starting
    nothing. An empty list: the file is good."""
    bad: list[InvalidJob] = []
    seen: dict[str, tuple[str, str]] = {}
    for item in read_jobs(path):
        if isinstance(item, InvalidJob):
            bad.append(item)
            continue
        problem = duplicate_problem(item, seen)
        if problem is not None and problem[0] == "failed":
            bad.append(InvalidJob(item.source or "", problem[1], item.to_dict(), item.key))
    return bad


def canonical(job: Mapping[str, Any]) -> str:
    """A job's content as compared for duplicates (and stored by the journal)."""
    return json.dumps(job, sort_keys=True)


def duplicate_problem(
    job: Job, seen: dict[str, tuple[str, str]]
) -> tuple[Literal["skipped", "failed"], str] | None:
    """None for a key not in `seen` (then recorded there as (source, content)), else how to
    report the job: ("skipped", reason) for the same content again, ("failed", error) for
    other content under the same key."""
    content = canonical(job.to_dict())
    earlier = seen.get(job.key)
    if earlier is None:
        seen[job.key] = (job.source or "", content)
        return None
    where = where_of(earlier[0], job.source)
    if earlier[1] == content:
        return "skipped", f"duplicate of the job {where} (same key {job.key!r}, same content)"
    return "failed", f"duplicate key {job.key!r} (first {where})"


def where_of(first: str, this: str | None) -> str:
    """ "on line 2" when both are lines of one file, else "on <source>"."""
    if not first:
        return "in an earlier run"
    file, _, line = first.rpartition(":")
    if this and line.isdigit() and this.rpartition(":")[0] == file:
        return f"on line {line}"
    return f"on {first}"
