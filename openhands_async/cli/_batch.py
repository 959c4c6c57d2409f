"""The batch command: jobs from a JSONL file, a progress display, a summary."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

from ._display import MISSING, Out, show
from ._parser import EXIT_FAILED, EXIT_OK
from ._progress import BatchDisplay


def _read_jobs(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"{path}:{n}: a job must be a JSON object")
                yield obj


def _result_dict(r: Any) -> dict[str, Any]:
    return {
        "key": r.job.key,
        "job": r.job.to_dict(),
        "state": r.state,
        "conversation_id": r.conversation_id,
        "sandbox_status": r.sandbox_status,
        "execution_status": r.execution_status,
        "error": r.error,
        "duration": None if r.duration is None else round(r.duration, 3),
    }


def _open_out(path: str | None) -> TextIO | None:
    return open(path, "w", encoding="utf-8") if path else None


async def cmd_batch(client: Any, args: argparse.Namespace, out: Out) -> int:
    # Read (and check) every job before starting any: a bad line is a usage error, not a
    # surprise halfway through, and the total lets the display show how much is left.
    jobs = list(_read_jobs(args.jobs))
    await _check_key(client)
    results = []
    scratch = tempfile.TemporaryDirectory(prefix="openhands-async-")
    journal = args.journal or os.path.join(scratch.name, "journal.db")  # not ":memory:" (its
    # lock file would land in the working directory)
    display = BatchDisplay(out, len(jobs), sys.stderr)
    if args.journal:
        again = " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "batch ..."
        out.interrupt_hint = (
            "Stopped. Conversations already started keep running on the server, and the\n"
            f"journal remembers them. To resume:\n  openhands-async {again}"
        )
    else:
        out.interrupt_hint = (
            "Stopped. Conversations already started keep running on the server.\n"
            "Without --journal this run cannot be resumed: pass one next time."
        )
    run = client.run_batch(
        jobs,
        max_running=args.max_running,
        journal=journal,
        poll_interval=args.interval,
        on_progress=display,
    )
    outf = _open_out(args.out)
    try:
        with display:
            async with run:
                async for r in run:
                    results.append(r)
                    d = _result_dict(r)
                    if outf is not None:
                        outf.write(json.dumps(d, default=str) + "\n")
                        outf.flush()
                    if out.json:
                        out.emit({"event": "result", **d}, "")
                    display(run.progress)
    finally:
        if outf is not None:
            outf.close()
        scratch.cleanup()
    p = run.progress
    totals = (
        f"finished {p.finished}, failed {p.failed}, skipped {p.skipped} in {out.elapsed():.1f}s"
    )
    if out.json:
        out.emit(
            {
                "event": "summary",
                "finished": p.finished,
                "failed": p.failed,
                "skipped": p.skipped,
                "results": len(results),
                "elapsed": round(out.elapsed(), 3),
            },
            "",
        )
    else:
        if results:
            out.table(
                ["key", "state", "conversation", "status"],
                [_row(r) for r in results],
                keep=(1, 2),
                middle=(0,),
            )
        out.line(totals)
    return EXIT_FAILED if any(not r.ok for r in results) else EXIT_OK


async def _check_key(client: Any) -> None:
    """One request before any start: without a valid key every job would fail alike; this
    way the command stops at once with the hint (exit 3)."""
    from .. import AuthenticationError, OpenHandsError

    try:
        await client.users.me()
    except AuthenticationError:
        raise
    except OpenHandsError:
        pass  # a server without this endpoint: the jobs will tell


def _row(r: Any) -> list[str]:
    if r.error:
        status = r.error
    elif r.sandbox_status is None:
        status = MISSING
    else:
        status = f"{r.sandbox_status}/{show(r.execution_status)}"
    return [r.job.key, r.state, show(r.conversation_id), status]
