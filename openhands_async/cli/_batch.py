"""The batch command: jobs from a JSONL file, a progress display, a summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

from ._display import Out
from ._parser import EXIT_FAILED, EXIT_OK
from ._progress import Progress


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
    progress = Progress(out, sys.stderr)
    results = []
    scratch = tempfile.TemporaryDirectory(prefix="openhands-async-")
    journal = args.journal or os.path.join(scratch.name, "journal.db")  # not ":memory:" (its
    # lock file would land in the working directory)
    run = client.run_batch(
        _read_jobs(args.jobs),
        max_running=args.max_running,
        journal=journal,
        poll_interval=args.interval,
        on_progress=progress,
    )
    outf = _open_out(args.out)
    try:
        async with run:
            async for r in run:
                results.append(r)
                d = _result_dict(r)
                if outf is not None:
                    outf.write(json.dumps(d, default=str) + "\n")
                    outf.flush()
                if out.json:
                    out.emit({"event": "result", **d}, "")
                progress(run.progress)
    finally:
        if outf is not None:
            outf.close()
        scratch.cleanup()
    progress(run.progress, final=True)
    p = run.progress
    summary = {
        "event": "summary",
        "finished": p.finished,
        "failed": p.failed,
        "skipped": p.skipped,
        "results": len(results),
        "elapsed": round(out.elapsed(), 3),
    }
    lines = [f"{'key':<26} {'state':<9} {'conversation':<34} status"]
    for r in results:
        lines.append(
            f"{r.job.key[:26]:<26} {r.state:<9} {r.conversation_id!s:<34} "
            f"{r.error or f'{r.sandbox_status}/{r.execution_status}'}"
        )
    lines.append(
        f"finished {p.finished}, failed {p.failed}, skipped {p.skipped} in {out.elapsed():.1f}s"
    )
    out.emit(summary, "\n".join(lines))
    return EXIT_FAILED if any(not r.ok for r in results) else EXIT_OK
