"""The whole batch's results, from its journal: one record per input (job, invalid line or
duplicate), written atomically (`write_results`), and the end-of-run `BatchSummary`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .jobs import BatchProgress
from .journal import Journal

__all__ = ["BatchSummary", "batch_counts", "result_records", "write_results"]

_STATES = ("pending", "starting", "running", "finished", "failed", "skipped")


async def result_records(journal: Journal) -> list[dict[str, Any]]:
    """One JSON-ready record per input of the whole batch, in input order: every job row
    (`state` pending/starting/running/finished/failed) and every reject (failed/skipped)."""
    records: list[tuple[int, dict[str, Any]]] = []
    for row in await journal.rows():
        record = attrs.asdict(row)
        record["history"] = list(row.history)
        record["reason"] = None
        records.append((row.seq, record))
    for reject in await journal.rejects():
        is_skip = reject.state == "skipped"
        records.append(
            (
                reject.seq,
                {
                    "key": reject.key,
                    "seq": reject.seq,
                    "source": reject.source,
                    "job": reject.job,
                    "state": reject.state,
                    "error": None if is_skip else reject.error,
                    "reason": reject.error if is_skip else None,
                    "conversation_id": None,
                    "ended_at": reject.recorded_at,
                },
            )
        )
    records.sort(key=lambda item: item[0])
    return [record for _, record in records]


async def write_results(journal: Journal, path: str | os.PathLike[str]) -> int:
    """Write the whole batch's results as JSONL to `path`, atomically (a temporary file in
    the same directory, renamed over `path`): a reader sees the old file or the new one,
    never a part. Returns the number of lines."""
    records = await result_records(journal)
    _write_atomically(Path(path), [json.dumps(r, sort_keys=True, default=str) for r in records])
    return len(records)


def _write_atomically(target: Path, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def batch_counts(journal: Journal) -> dict[str, int]:
    """Inputs per state over the whole batch (every state present), plus "total"."""
    counts = dict.fromkeys(_STATES, 0)
    for state, n in (await journal.counts()).items():
        counts[state] = counts.get(state, 0) + n
    for reject in await journal.rejects():
        counts[reject.state] += 1
    counts["total"] = sum(counts[s] for s in _STATES)
    return counts


@attrs.frozen
class BatchSummary:
    """Where a run left things: what this run did, and the whole batch's state.

    This run: `finished` and `failed` ended in it; `skipped` were not run (ended in an
    earlier run, or duplicates); of those, `not_retried` had failed earlier and were left
    alone (run again with `retry_failed=True` to start them afresh). `batch` counts every
    input of the whole batch by state ("pending", "starting", "running", "finished",
    "failed", "skipped", "total").
    """

    finished: int
    failed: int
    skipped: int
    not_retried: int
    batch: Mapping[str, int]

    @property
    def complete(self) -> bool:
        """Every job of the batch has ended (none pending, starting or running)."""
        return not any(self.batch[s] for s in ("pending", "starting", "running"))

    @property
    def batch_failed(self) -> int:
        return self.batch["failed"]

    @classmethod
    async def of(cls, progress: BatchProgress, journal: Journal) -> BatchSummary:
        return cls(
            finished=progress.finished,
            failed=progress.failed,
            skipped=progress.skipped,
            not_retried=progress.not_retried,
            batch=await batch_counts(journal),
        )
