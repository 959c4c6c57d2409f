"""What a start will do, fixed when the start arrives: the FakeCloud's knobs plus message markers.

A marker is `[fake:key=value]` anywhere in the initial message's text (several keys may share
one marker, separated by commas). They let one FakeCloud serve a batch with mixed outcomes:

- `start=READY|ERROR`: how the start task ends.
- `outcome=finished|error|stuck|waiting_for_confirmation`: where the conversation's run ends.
- `run_seconds=S`, `idle_seconds=S`: the run timeline (before time_scale; `inf` never ends).
- `stream_cut_after=K`, `stream_stall_after=K`, `stream_stall_seconds=S`,
  `stream_garbage_after=K`: stream-start misbehaviour for this start (see `StreamBehavior`).
- `stream_drops_start=1|0`: whether a stream that ends before `]` ends the start with it,
  as on the open-source server (`StreamBehavior.drops_start`).
- `steps=N`: the agent's run takes N steps (an action and its observation each, spread
  evenly over the run; default 1).

An unknown key or a bad value answers 422, so a typo never silently runs the default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import attrs

from ._constants import RUN_OUTCOMES, START_OUTCOMES, START_STATUSES

_RANK = {status: rank for rank, status in enumerate(START_STATUSES)}
_SANDBOX_RANK = _RANK["WAITING_FOR_SANDBOX"]
DEFAULT_START_TIMELINE: tuple[tuple[str, float], ...] = (
    ("WORKING", 0.0),
    ("WAITING_FOR_SANDBOX", 0.05),
    ("PREPARING_REPOSITORY", 0.02),
    ("RUNNING_SETUP_SCRIPT", 0.02),
    ("SETTING_UP_GIT_HOOKS", 0.01),
    ("SETTING_UP_SKILLS", 0.01),
    ("STARTING_CONVERSATION", 0.02),
    ("READY", 0.02),
)
"""The start statuses a start task goes through, each `(status, seconds after the last)`."""
# The detail measured on a real server, both for a failed agent server and a duplicate id.
DEFAULT_ERROR_DETAIL = "500: Agent Server Failed to start properly"
DEFAULT_GARBAGE = b"<html><body>502 Bad Gateway</body></html>"

_MARKER = re.compile(r"\[fake:([^\]]*)\]")


@attrs.frozen
class StreamBehavior:
    """How `stream-start` misbehaves. Counts are elements already written (0 = right after `[`).

    - `cut_after=k`: close the connection abruptly after k elements, without `]`. The task
      keeps advancing on the server, so a client can still poll it.
    - `stall_after=k`: after k elements write nothing, keeping the connection open, for
      `stall_seconds` (loop seconds, not scaled; None: until the client goes away), then
      write the elements the start reached meanwhile and carry on. The start goes on
      during the silence; a client that closes the connection ends the stream.
    - `garbage=b"..."`: write these bytes in place of element number `garbage_after`
      (counting from 0), then carry on with the rest of the stream.
    - `drops_start=True`: the start runs inside the stream's response, as on the open-source
      server (openhands-ai 1.11.0, `_stream_app_conversation_start`): when the response ends
      before `]` (a cut above, a fault, or the client going away, noticed at the next
      write), the start stops for good in the last status the stream wrote. A client that
      goes away during a stall is noticed at once (as the server's ASGI disconnect is): the
      start stops where it had got to by then, written or not. Its task keeps that status
      and its `updated_at` forever, and its conversation gets no further. With the default
      False the task carries on, as the Cloud is expected to.
    """

    cut_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float | None = None
    garbage: bytes | None = None
    garbage_after: int = 1
    drops_start: bool = False


@attrs.frozen
class AgentServerBehavior:
    """How the fake agent servers' event WebSocket misbehaves (counts are event frames
    written on one connection, the snapshot not counted).

    - `drop_after=k`: cut the connection abruptly after k events, for the first `drops`
      connections made (the conversation carries on, so a client can reconnect).
    - `stall_after=k`: after k events write nothing more and stop reading (pings go
      unanswered), for the first `stalls` connections.
    - `refuse_auth=n`: close the first n connections with 4001 after their auth frame, and
      give the conversation a new session key each time (a re-read finds the fresh one).
    - `unreachable=True`: conversation, start-task and sandbox URLs point the agent server
      at a loopback port that refuses connections (a network only the app server is on).
    - `max_subscribers=n`: a connection beyond n open ones to a conversation closes 1013.
    """

    drop_after: int | None = None
    drops: int = 1
    stall_after: int | None = None
    stalls: int = 1
    refuse_auth: int = 0
    unreachable: bool = False
    max_subscribers: int | None = None


@attrs.frozen
class Timing:
    """The FakeCloud-wide defaults a plan starts from."""

    start_timeline: tuple[tuple[str, float], ...]
    start_outcome: str
    error_detail: str
    idle_seconds: float
    run_seconds: float
    run_outcome: str
    time_scale: float
    stream: StreamBehavior


@attrs.frozen
class StartPlan:
    """Phases are `(status, seconds after the start)`, scaled; the last is READY or ERROR.

    One plan is shared by every start it was made for (a seeded batch shares one), so what
    can be derived from the phases is derived here, once.
    """

    phases: tuple[tuple[str, float], ...]
    detail: str | None
    runs: bool
    idle_seconds: float
    run_seconds: float
    outcome: str
    stream: StreamBehavior
    # Agent steps (an action and its observation each) spread over the run.
    steps: int = 1
    statuses: tuple[str, ...] = attrs.field(init=False)
    offsets: tuple[float, ...] = attrs.field(init=False)
    # The first phase showing each field (len(phases): never). Phases, not times, decide
    # what an element shows, so zero-delay steps still render in order.
    sandbox_phase: int = attrs.field(init=False)
    server_phase: int = attrs.field(init=False)
    ready_phase: int = attrs.field(init=False)
    error_phase: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        statuses = tuple(status for status, _ in self.phases)

        def first(test: Callable[[str], bool]) -> int:
            return next((i for i, status in enumerate(statuses) if test(status)), len(statuses))

        derived = {
            "statuses": statuses,
            "offsets": tuple(offset for _, offset in self.phases),
            # Statuses the fake does not know (a test of client tolerance) reveal nothing new.
            "sandbox_phase": first(lambda s: s != "ERROR" and _RANK.get(s, -1) >= _SANDBOX_RANK),
            "server_phase": first(lambda s: s in ("STARTING_CONVERSATION", "READY")),
            "ready_phase": first(lambda s: s == "READY"),
            "error_phase": first(lambda s: s == "ERROR"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def as_duplicate(self) -> StartPlan:
        """A start whose conversation id the server already has ends in ERROR (measured)."""
        *head, (_, at) = self.phases
        return attrs.evolve(self, phases=(*head, ("ERROR", at)), detail=DEFAULT_ERROR_DETAIL)


class MarkerError(ValueError):
    pass


def plan_start(timing: Timing, message: str | None) -> StartPlan:
    """The plan for one start; `message` is the initial message's text, None without a message."""
    marks = _parse_markers(message or "")
    start_outcome = _choice(marks, "start", timing.start_outcome, START_OUTCOMES)
    outcome = _choice(marks, "outcome", timing.run_outcome, RUN_OUTCOMES)
    idle = _seconds(marks, "idle_seconds", timing.idle_seconds)
    run = _seconds(marks, "run_seconds", timing.run_seconds)
    stream = timing.stream
    if "stream_cut_after" in marks:
        stream = attrs.evolve(stream, cut_after=_count(marks, "stream_cut_after"))
    if "stream_stall_after" in marks:
        stream = attrs.evolve(stream, stall_after=_count(marks, "stream_stall_after"))
    if "stream_stall_seconds" in marks:
        stall = _seconds(marks, "stream_stall_seconds", math.inf)
        stream = attrs.evolve(stream, stall_seconds=None if stall == math.inf else stall)
    if "stream_garbage_after" in marks:
        stream = attrs.evolve(
            stream,
            garbage=stream.garbage or DEFAULT_GARBAGE,
            garbage_after=_count(marks, "stream_garbage_after"),
        )
    if "stream_drops_start" in marks:
        stream = attrs.evolve(stream, drops_start=_flag(marks, "stream_drops_start"))
    steps = _count(marks, "steps") if "steps" in marks else 1
    if marks:
        raise MarkerError(f"unknown FakeCloud marker key(s): {sorted(marks)}")
    scale = timing.time_scale
    return StartPlan(
        phases=_phases(timing.start_timeline, start_outcome, scale),
        detail=timing.error_detail if start_outcome == "ERROR" else None,
        runs=message is not None,
        idle_seconds=idle * scale,
        run_seconds=run * scale,
        outcome=outcome,
        stream=stream,
        steps=steps,
    )


def check_timeline(timeline: Sequence[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    steps = tuple((str(status), float(delay)) for status, delay in timeline)
    if not steps:
        raise ValueError("start_timeline needs at least one step")
    for status, delay in steps:
        if not delay >= 0:  # also rejects NaN
            raise ValueError(f"start_timeline delay for {status} must be >= 0, got {delay}")
    return steps


def _phases(
    timeline: tuple[tuple[str, float], ...], outcome: str, scale: float
) -> tuple[tuple[str, float], ...]:
    at = 0.0
    phases = []
    for status, delay in timeline:
        at += delay * scale
        phases.append((status, at))
    if phases[-1][0] in START_OUTCOMES:
        phases[-1] = (outcome, phases[-1][1])
    else:
        phases.append((outcome, at))
    return tuple(phases)


def _parse_markers(text: str) -> dict[str, str]:
    marks: dict[str, str] = {}
    for body in _MARKER.findall(text):
        for item in body.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise MarkerError(f"FakeCloud marker item {item.strip()!r} is not key=value")
            marks[key.strip()] = value.strip()
    return marks


def _choice(marks: dict[str, str], key: str, default: str, allowed: Sequence[str]) -> str:
    raw = marks.pop(key, default)
    by_lower = {option.lower(): option for option in allowed}
    if raw.lower() not in by_lower:
        raise MarkerError(f"FakeCloud {key} must be one of {list(allowed)}, got {raw!r}")
    return by_lower[raw.lower()]


def _seconds(marks: dict[str, str], key: str, default: float) -> float:
    if key not in marks:
        return default
    raw = marks.pop(key)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise MarkerError(f"FakeCloud {key} must be a number >= 0, got {raw!r}")
    return value


def _count(marks: dict[str, str], key: str) -> int:
    raw = marks.pop(key)
    if not raw.isdigit():
        raise MarkerError(f"FakeCloud {key} must be an integer >= 0, got {raw!r}")
    return int(raw)


def _flag(marks: dict[str, str], key: str) -> bool:
    raw = marks.pop(key)
    value = {"1": True, "true": True, "0": False, "false": False}.get(raw.lower())
    if value is None:
        raise MarkerError(f"FakeCloud {key} must be 1 or 0, got {raw!r}")
    return value
