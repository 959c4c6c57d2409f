"""The batch runner: `BatchRun` (run.py) runs `Job`s (jobs.py) under a running cap,
recording each step in a `Journal` (journal.py; `SQLiteJournal` in sqlite.py)."""

from __future__ import annotations

from ...errors import JournalLockedError
from .jobs import BatchProgress, Job, JobResult
from .journal import Journal, JournalRow
from .run import BatchRun, open_journal
from .sqlite import SQLiteJournal

__all__ = [
    "BatchProgress",
    "BatchRun",
    "Job",
    "JobResult",
    "Journal",
    "JournalLockedError",
    "JournalRow",
    "SQLiteJournal",
    "open_journal",
]
