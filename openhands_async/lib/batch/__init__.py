"""The batch runner: `BatchRun` (run.py) runs `Job`s (jobs.py; `read_jobs` for a JSONL
file) under a running cap, recording each step in a `Journal` (journal.py; `SQLiteJournal`
in sqlite.py, the shared `PostgresJournal` in postgres.py); the whole batch's results and
summary come from the journal (results.py)."""

from __future__ import annotations

from ...errors import JournalLockedError
from .jobs import (
    BatchProgress,
    InvalidJob,
    Job,
    JobResult,
    check_jobs,
    check_start_options,
    read_jobs,
)
from .journal import Journal, JournalRow, RejectRow
from .results import BatchSummary, batch_counts, result_records, write_results
from .run import BatchRun, open_journal
from .sqlite import SQLiteJournal

__all__ = [
    "BatchProgress",
    "BatchRun",
    "BatchSummary",
    "InvalidJob",
    "Job",
    "JobResult",
    "Journal",
    "JournalLockedError",
    "JournalRow",
    "RejectRow",
    "SQLiteJournal",
    "batch_counts",
    "check_jobs",
    "check_start_options",
    "open_journal",
    "read_jobs",
    "result_records",
    "write_results",
]
