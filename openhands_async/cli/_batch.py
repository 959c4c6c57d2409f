"""The batch command: jobs from a JSONL file (each line checked as it is read: a bad one
fails as its own job, named by file:line, and the batch goes on), a progress display, and
this run's and the whole batch's counts. `--check` checks the file and starts nothing.

The batch semantics (one start per key, the stop on 401/403, resume, `--out` written from
the journal) are the SDK's `run_batch`; this module only says what happened."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from .. import errors as _errors
from ..lib.batch import InvalidJob, check_jobs, read_jobs
from ._account import check_jobs as check_on_server
from ._display import MISSING, Out, show
from ._parser import EXIT_AUTH, EXIT_FAILED, EXIT_OK
from ._progress import BatchDisplay

# A 401/403 on a start: the batch stopped, the jobs not started wait in the journal.
_AUTH_ERRORS = (_errors.AuthenticationError, _errors.PermissionDeniedError)
_BATCH_STATES = ("finished", "failed", "skipped", "running", "starting", "pending")


def cmd_check(args: argparse.Namespace, out: Out) -> int:
    """`batch --check`: every bad line (invalid, or a key used twice), nothing started."""
    bad = check_jobs(args.jobs)
    total = sum(1 for _ in read_jobs(args.jobs))
    for b in bad:
        out.emit(
            {"event": "invalid", "source": b.source, "error": b.error}, f"{b.source}: {b.error}"
        )
    if out.json:
        out.emit({"event": "check", "jobs": total, "bad": len(bad)}, "")
    elif bad:
        out.line(f"{_plural(len(bad), 'bad line')} of {total}; nothing was started.")
    else:
        out.line(f"{args.jobs}: {_plural(total, 'job')}, all good; nothing was started.")
    return EXIT_FAILED if bad else EXIT_OK


async def cmd_check_server(client: Any, args: argparse.Namespace, out: Out) -> int:
    """`batch --check`, the server's part: each `llm_model` one it offers, each repository
    one its git provider finds; a check it cannot answer is a warning on stderr."""
    jobs = [job for job in read_jobs(args.jobs) if not isinstance(job, InvalidJob)]
    problems, warnings = await check_on_server(client, jobs)
    for text in warnings:
        print(f"openhands-async: warning: {text}", file=sys.stderr)
    for text in problems:
        out.emit({"event": "invalid", "source": args.jobs, "error": text}, f"{args.jobs}: {text}")
    return EXIT_FAILED if problems else EXIT_OK


async def cmd_batch(client: Any, args: argparse.Namespace, out: Out) -> int:
    if args.jobs == "status":  # a jobs file named so: pass ./status
        return await _status(args, out)
    # Read now (each line checked as it is read, a bad one kept as a failed job), so the
    # display knows the total.
    jobs = list(read_jobs(args.jobs))
    await _check_key(client)
    scratch = tempfile.TemporaryDirectory(prefix="openhands-async-")
    journal = args.journal or os.path.join(scratch.name, "journal.db")  # not ":memory:" (its
    # lock file would land in the working directory)
    display = BatchDisplay(out, len(jobs), sys.stderr)
    again = resume_command(args.argv)
    out.interrupt_hint = "Stopped. Conversations already started keep running on the server" + (
        f", and the\njournal remembers them. To resume:\n  {again}"
        if args.journal
        else ".\nWithout --journal this run cannot be resumed: pass one next time."
    )
    run = client.run_batch(
        jobs,
        max_running=args.max_running,
        journal=journal,
        batch_name=args.batch_name,
        poll_interval=args.interval,
        watch_ends=args.watch_ends,
        on_progress=display,
        retry_failed=args.retry_failed,
        out=args.out,  # the whole batch, rewritten from the journal at the end of each run
    )
    results: list[Any] = []
    try:
        with display:
            async with run:
                async for r in run:
                    results.append(r)
                    _report(out, r)
                    display(run.progress)
    except _AUTH_ERRORS as exc:
        _summary(out, run, results, len(jobs))
        if out.json:
            out.emit({"error": "auth", "detail": str(exc)}, "")
        print(f"openhands-async: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "The batch stopped at once: no further job was started, and those not started "
            "wait\nin the journal. Check your API key (OpenHands Cloud settings -> API keys), "
            + (
                f"then run again:\n  {again}"
                if args.journal
                else "then run\nagain (with --journal FILE, a later run can resume this one)."
            ),
            file=sys.stderr,
        )
        return EXIT_AUTH
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C: the counts so far (the run's summary is set however it ended); main()
        # prints the interrupt hint (how to resume) and exits 130.
        _summary(out, run, results, len(jobs), interrupted=True)
        raise
    finally:
        scratch.cleanup()
    summary = _summary(out, run, results, len(jobs))
    if summary is None:
        return EXIT_FAILED
    failed = summary.batch_failed or summary.failed or not summary.complete
    return EXIT_FAILED if failed else EXIT_OK


def resume_command(argv: Sequence[str]) -> str:
    """The command that runs this batch again, for the shell, without the API key (it
    never goes into output)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--api-key":
            skip = True
        elif not arg.startswith("--api-key="):
            kept.append(arg)
    return " ".join(["openhands-async", *(shlex.quote(a) for a in kept)])


def _report(out: Out, r: Any) -> None:
    """One result as it ends: a JSON line, or, for people, a line for an input decided when
    read (invalid, a duplicate), named by file:line; other jobs are in the summary table."""
    if out.json:
        out.emit({"event": "result", **_result_dict(r)}, "")
    elif _decided_when_read(r):
        text = r.error if r.state == "failed" else f"skipped, {r.reason}"
        out.line(f"{r.source}: {text}")


def _decided_when_read(r: Any) -> bool:
    return bool(r.source) and r.conversation_id is None and r.start_task is None


def _result_dict(r: Any) -> dict[str, Any]:
    return {
        "key": r.key,
        "source": r.source,
        "job": None if r.job is None else r.job.to_dict(),
        "state": r.state,
        "conversation_id": r.conversation_id,
        "sandbox_status": r.sandbox_status,
        "execution_status": r.execution_status,
        "error": r.error,
        "reason": r.reason,
        "duration": None if r.duration is None else round(r.duration, 3),
    }


def _summary(
    out: Out, run: Any, results: list[Any], inputs: int, *, interrupted: bool = False
) -> Any:
    """This run's counts and the whole batch's (from the journal), and what was left alone.
    Returns the run's `BatchSummary` (None if the run never began). `inputs`: the lines of
    the file; a run that stopped early (401, Ctrl-C) has not read them all."""
    s = run.summary
    p = run.progress
    # Inputs the journal does not hold yet: the run stopped before reading them.
    unread = max(0, inputs - s.batch["total"]) if s is not None else inputs
    finished, failed, skipped = (s or p).finished, (s or p).failed, (s or p).skipped
    elapsed = out.elapsed()
    if out.json:
        obj: dict[str, Any] = {
            "event": "summary",
            "finished": finished,
            "failed": failed,
            "skipped": skipped,
            "not_retried": s.not_retried if s else p.not_retried,
            "ends_heard": p.ends_heard,
            "results": len(results),
            "elapsed": round(elapsed, 3),
        }
        if s is not None:
            obj.update(batch=dict(s.batch), complete=s.complete and not unread)
        obj["not_read"] = unread
        if interrupted:
            obj["interrupted"] = True
        out.emit(obj, "")
        return s
    if results:
        out.table(
            ["key", "state", "conversation", "status"],
            [_row(r) for r in results],
            keep=(1, 2),
            middle=(0,),
        )
    out.line(f"this run: finished {finished}, failed {failed}, skipped {skipped} in {elapsed:.1f}s")
    if s is not None:
        shown = [
            f"{state} {s.batch[state]}"
            for state in _BATCH_STATES
            if s.batch.get(state) or state in ("finished", "failed")
        ]
        if unread:
            shown.append(f"not read yet {unread}")
        out.line(f"whole batch: {_plural(s.batch['total'] + unread, 'job')}, {', '.join(shown)}")
        if s.not_retried:
            them = "it" if s.not_retried == 1 else "them"
            out.line(
                f"{_plural(s.not_retried, 'failed job')} from an earlier run left alone: "
                f"--retry-failed starts {them} again."
            )
    return s


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


async def _check_key(client: Any) -> None:
    """One request before any start: without a valid key every job would fail alike; this
    way the command stops at once with the hint (exit 3)."""
    try:
        await client.users.me()
    except _errors.AuthenticationError:
        raise
    except _errors.OpenHandsError:
        pass  # a server without this endpoint: the jobs will tell


def _row(r: Any) -> list[str]:
    if r.error or r.reason:
        status = r.error or r.reason
    elif r.sandbox_status is None:
        status = MISSING
    else:
        status = f"{r.sandbox_status}/{show(r.execution_status)}"
    # An input decided when read (invalid, a duplicate) is named by where it is.
    key = os.path.basename(r.source) if _decided_when_read(r) else r.key
    return [key or MISSING, r.state, show(r.conversation_id), status]


async def _status(args: argparse.Namespace, out: Out) -> int:
    """`batch status`: a shared batch across its workers, per state and per worker."""
    if not (args.journal or "").startswith(("postgresql://", "postgres://")) or not (
        args.batch_name
    ):
        raise ValueError("batch status needs --journal postgresql://... and --batch-name NAME")
    from ..lib.batch.postgres import batch_status

    status = await batch_status(args.journal, args.batch_name)
    states = list(status.counts)
    if out.json:
        workers = [
            {"worker": w.worker, "account": w.account, "alive": w.alive, "counts": w.counts}
            for w in status.workers
        ]
        out.emit({"event": "status", "counts": status.counts, "workers": workers}, "")
        return EXIT_OK
    out.line(f"batch {status.batch_name}: " + ", ".join(f"{s} {status.counts[s]}" for s in states))
    out.table(
        ["worker", "account", "alive", *states],
        [
            [w.worker, w.account, "yes" if w.alive else "no"]
            + [str(w.counts.get(s, 0)) for s in states]
            for w in status.workers
        ],
        keep=(0,),
        middle=(0,),
    )
    return EXIT_OK
