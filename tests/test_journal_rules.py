"""The SQLite journal and the batch results, rule by rule (pure: a SQLite file in a tmp dir).

Fast enough to run once per mutant (`nox -s mutation`): every write, what it commits and
when, what a failure leaves, and the records a batch's results are made of. The clock is a
stub (`_Clock`), so no test reads the real time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openhands_async._constants import JOURNAL_COMMIT_DELAY
from openhands_async.errors import JournalLockedError
from openhands_async.lib.batch import sqlite as sqlite_journal
from openhands_async.lib.batch.jobs import BatchProgress
from openhands_async.lib.batch.journal import JournalRow, RejectRow, Remaining
from openhands_async.lib.batch.results import (
    BatchSummary,
    batch_counts,
    result_records,
    write_results,
)
from openhands_async.lib.batch.sqlite import SQLiteJournal

CID_A, CID_B = "a" * 32, "b" * 32
TID = "t" * 32


class _Clock:
    """`time.time` for the journal: 100.0, 101.0, 102.0, ... one second a call."""

    def __init__(self) -> None:
        self.now = 99.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    stub = _Clock()
    monkeypatch.setattr(sqlite_journal, "time", SimpleNamespace(time=stub.time))
    return stub


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "run.db"


def _named_like(folder: Path, part: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if part in p.name)


def _committed(db: Path, sql: str = "SELECT key, state FROM jobs ORDER BY seq") -> list[Any]:
    """What another connection sees: only committed writes."""
    other = sqlite3.connect(db)
    try:
        return other.execute(sql).fetchall()
    finally:
        other.close()


# ---------------------------------------------------------------------- opening and the lock


def test_a_file_journal_is_wal_normal_sync_and_locked(db: Path) -> None:
    journal = SQLiteJournal(db)
    try:
        assert journal.path == db
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert (db.parent / "run.db.lock").exists()
        with pytest.raises(JournalLockedError) as caught:
            SQLiteJournal(db)
        assert str(caught.value) == (
            f"journal {db} is in use by another run; wait for it to end "
            "(two runs on one journal could start the same job twice)"
        )
        assert caught.value.__suppress_context__
    finally:
        journal.close()
    journal.close()  # twice is fine
    SQLiteJournal(db).close()  # the lock was released


def test_memory_journal_locks_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SQLiteJournal(":memory:") as journal:
        assert journal._lock_file is None
        with SQLiteJournal(":memory:") as other:
            assert other._lock_file is None
    assert list(tmp_path.iterdir()) == []


def test_an_old_journal_gains_the_new_columns_and_its_ids(db: Path) -> None:
    old = sqlite3.connect(db)
    old.executescript(
        """
        CREATE TABLE jobs (
            key TEXT PRIMARY KEY, seq INTEGER NOT NULL, job TEXT NOT NULL,
            state TEXT NOT NULL, conversation_id TEXT, start_task_id TEXT,
            sandbox_status TEXT, execution_status TEXT, error TEXT,
            created_at REAL NOT NULL, sent_at REAL, running_at REAL, ended_at REAL
        );
        INSERT INTO jobs (key, seq, job, state, conversation_id, created_at)
            VALUES ('a', 0, '{}', 'starting', 'aaaa', 1.0), ('b', 1, '{}', 'pending', NULL, 2.0);
        """
    )
    old.close()
    with SQLiteJournal(db) as journal:
        a = journal._get("a")
        assert a is not None
        assert (a.source, a.history) == (None, ())
        assert journal._key_of("aaaa") == "a"
        assert _committed(db, "SELECT conversation_id, key FROM conversation_ids") == [
            ("aaaa", "a")
        ]


# ---------------------------------------------------------------------- reads


async def test_rows_counts_and_reads(db: Path, clock: _Clock) -> None:
    with SQLiteJournal(db) as journal:
        assert await journal.get("a") is None
        await journal.add("z", 9, {})
        z = await journal.get("z")
        assert z is not None
        assert z.key == "z"
        journal._db.execute("DELETE FROM jobs WHERE key = 'z'")
        clock.now = 99.0
        assert await journal.counts() == {
            "pending": 0,
            "starting": 0,
            "running": 0,
            "finished": 0,
            "failed": 0,
        }
        row = await journal.add("b", 2, {"z": 1, "a": [2]}, source="jobs.jsonl:3")
        assert row == JournalRow(
            key="b",
            seq=2,
            job={"a": [2], "z": 1},
            state="pending",
            conversation_id=None,
            start_task_id=None,
            sandbox_status=None,
            execution_status=None,
            error=None,
            created_at=100.0,
            sent_at=None,
            running_at=None,
            ended_at=None,
            source="jobs.jsonl:3",
            history=(),
        )
        await journal.add("a", 1, {"m": "x"})
        await journal.add("c", 3, {"m": "y"})
        await journal.mark_starting("c", CID_A)
        assert [r.key for r in await journal.rows()] == ["a", "b", "c"]
        assert [r.key for r in await journal.rows("pending")] == ["a", "b"]
        assert [r.key for r in await journal.rows("starting", "pending")] == ["a", "b", "c"]
        assert await journal.rows("failed") == []
        counts = await journal.counts()
        assert counts == {"pending": 2, "starting": 1, "running": 0, "finished": 0, "failed": 0}
        assert await journal.key_of(CID_A) == "c"
        assert await journal.key_of(CID_B) is None
    # the job is stored as sorted JSON text
    assert _committed(db, "SELECT job FROM jobs WHERE key = 'b'") == [('{"a": [2], "z": 1}',)]


async def test_add_returns_the_earlier_row_and_clears_the_reject_at_its_source(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.reject("jobs.jsonl:1", 0, "failed", error="bad line", job="{oops")
        await journal.reject("jobs.jsonl:2", 1, "skipped", error="duplicate of a", key="a")
        first = await journal.add("a", 5, {"m": "x"}, source="jobs.jsonl:1")
        again = await journal.add("a", 9, {"m": "other"})
        assert again == first
        assert [r.source for r in await journal.rejects()] == ["jobs.jsonl:2"]
        await journal.add("b", 6, {"m": "y"})  # no source: rejects stay
        assert [r.source for r in await journal.rejects()] == ["jobs.jsonl:2"]


# ---------------------------------------------------------------------- the job's life


async def test_each_mark_writes_its_fields(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {})  # created_at 100
        starting = await journal.mark_starting("a", CID_A)  # sent_at 101
        assert (starting.state, starting.conversation_id, starting.sent_at) == (
            "starting",
            CID_A,
            101.0,
        )
        await journal.mark_pending("a")
        pending = journal._get("a")
        assert pending is not None
        assert (pending.state, pending.conversation_id, pending.sent_at) == ("pending", None, None)
        assert await journal.key_of(CID_A) == "a"  # the id stays this job's
        await journal.mark_starting("a", CID_A)  # the same id again: allowed
        running = await journal.mark_running("a", TID)  # running_at 103
        assert (running.state, running.start_task_id, running.running_at) == (
            "running",
            TID,
            103.0,
        )
        await journal.mark_ended(
            "a", "finished", sandbox_status="RUNNING", execution_status="finished", error="e"
        )
        ended = journal._get("a")
        assert ended is not None
        assert (
            ended.state,
            ended.sandbox_status,
            ended.execution_status,
            ended.error,
            ended.ended_at,
        ) == ("finished", "RUNNING", "finished", "e", 104.0)
        await journal.mark_ended("a", "failed")
        failed = journal._get("a")
        assert failed is not None
        assert (failed.state, failed.sandbox_status, failed.execution_status, failed.error) == (
            "failed",
            None,
            None,
            None,
        )


async def test_an_id_never_serves_two_jobs(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {})
        await journal.add("b", 1, {})
        await journal.mark_starting("a", CID_A)
        with pytest.raises(AssertionError) as caught:
            await journal.mark_starting("b", CID_A)
        assert str(caught.value) == (
            f"conversation id {CID_A} belongs to job 'a' in journal {db}: "
            "it is never sent for job 'b'"
        )
        b = journal._get("b")
        assert b is not None
        assert (b.state, b.conversation_id) == ("pending", None)
        # the failed transaction left the connection usable
        await journal.mark_starting("b", CID_B)
        assert _committed(db, "SELECT key, conversation_id FROM jobs ORDER BY seq") == [
            ("a", CID_A),
            ("b", CID_B),
        ]


async def test_unknown_keys_raise_key_error(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        message = f"no job with key 'nope' in journal {db}"
        with pytest.raises(KeyError) as caught:
            await journal.mark_running("nope", TID)
        assert caught.value.args == (message,)
        with pytest.raises(KeyError) as caught:
            await journal.retry("nope")
        assert caught.value.args == (message,)
        with pytest.raises(KeyError):
            await journal.mark_pending("nope")
        with pytest.raises(KeyError):
            await journal.mark_ended("nope", "failed")
        with pytest.raises(KeyError):
            await journal.mark_starting("nope", CID_A)
        # nothing of those stayed, the journal still works
        assert await journal.key_of(CID_A) is None
        await journal.add("a", 0, {})
        assert (await journal.mark_running("a", TID)).state == "running"


async def test_retry_moves_the_attempt_to_history(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {"m": 1})  # 100
        with pytest.raises(ValueError, match=r"^job 'a' is pending, not failed: nothing to retry$"):
            await journal.retry("a")
        await journal.mark_starting("a", CID_A)  # 101
        await journal.mark_running("a", TID)  # 102
        await journal.mark_ended("a", "failed", sandbox_status="ERROR", error="boom")  # 103
        row = await journal.retry("a")
        attempt = {
            "state": "failed",
            "conversation_id": CID_A,
            "start_task_id": TID,
            "sandbox_status": "ERROR",
            "execution_status": None,
            "error": "boom",
            "sent_at": 101.0,
            "running_at": 102.0,
            "ended_at": 103.0,
        }
        assert row.history == (attempt,)
        assert (row.state, row.created_at, row.job) == ("pending", 100.0, {"m": 1})
        for name in ("conversation_id", "start_task_id", "sandbox_status", "error", "sent_at"):
            assert getattr(row, name) is None
        assert (row.execution_status, row.running_at, row.ended_at) == (None, None, None)
        # committed at once, the history as sorted JSON
        assert _committed(db, "SELECT state, history FROM jobs") == [
            ("pending", json.dumps([attempt], sort_keys=True))
        ]
        await journal.mark_starting("a", CID_B)
        await journal.mark_ended("a", "failed", error="again")
        second = await journal.retry("a")
        assert [h["error"] for h in second.history] == ["boom", "again"]
        assert await journal.key_of(CID_A) == "a"


async def test_rejects_are_replaced_by_source_and_listed_in_input_order(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.reject("s3", 3, "skipped", error="dup", key="k", job={"b": 1, "a": 2})
        await journal.reject("s1", 1, "failed", error="bad")  # recorded_at 101
        await journal.reject("s3", 2, "failed", error="worse", key="k2", job={"z": 1, "a": 0})
        assert await journal.rejects() == [
            RejectRow("s1", 1, "failed", None, None, "bad", 101.0),
            RejectRow("s3", 2, "failed", "k2", {"a": 0, "z": 1}, "worse", 102.0),
        ]
    assert _committed(db, "SELECT job FROM rejects ORDER BY seq") == [
        ("null",),
        ('{"a": 0, "z": 1}',),
    ]


async def test_an_empty_history_reads_as_none(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {})
        journal._db.execute("UPDATE jobs SET history = '' WHERE key = 'a'")
        row = await journal.get("a")
        assert row is not None
        assert row.history == ()


async def test_sharing_hooks_have_trivial_answers(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        for key, seq in (("c", 3), ("a", 1), ("b", 2), ("d", 4)):
            await journal.add(key, seq, {})
        await journal.mark_starting("c", CID_A)
        await journal.mark_starting("b", CID_B)
        await journal.mark_running("b", TID)
        await journal.mark_starting("d", "d" * 32)
        await journal.mark_ended("d", "finished")
        assert [r.key for r in await journal.adopt()] == ["b", "c"]
        assert await journal.adopt() == []
        assert await journal.claim_next(CID_A) is None
        assert await journal.remaining() == Remaining()
        assert await journal.wait_for_slot(0) is False
        assert journal.in_flight_window(30.0) == 0.0


# ---------------------------------------------------------------------- what commits, when


async def test_only_the_starting_mark_commits_at_once(db: Path) -> None:
    journal = SQLiteJournal(db)
    try:
        await journal.add("a", 0, {})
        await journal.add("b", 1, {})
        assert _committed(db) == []  # held
        timer = journal._commit_timer
        assert timer is not None
        loop = asyncio.get_running_loop()
        assert 0 < timer.when() - loop.time() <= JOURNAL_COMMIT_DELAY
        await journal.add("c", 2, {})
        assert journal._commit_timer is timer  # one timer for all held writes
        await journal.mark_starting("a", CID_A)  # commits the held writes with it
        assert _committed(db) == [("a", "starting"), ("b", "pending"), ("c", "pending")]
        assert journal._commit_timer is None
        assert timer.cancelled()
        await journal.mark_running("a", TID)
        assert _committed(db)[0] == ("a", "starting")
        journal._commit()  # what the timer calls
        assert _committed(db)[0] == ("a", "running")
        journal._commit()  # nothing held: no error
        await journal.mark_starting("b", CID_B)  # commits
        await journal.mark_pending("b")
        await journal.mark_ended("c", "failed")
        await journal.reject("s", 9, "failed", error="x")
        assert _committed(db) == [("a", "running"), ("b", "starting"), ("c", "pending")]
        assert _committed(db, "SELECT source FROM rejects") == []
    finally:
        journal.close()  # commits what is held
    assert _committed(db) == [("a", "running"), ("b", "pending"), ("c", "failed")]
    assert _committed(db, "SELECT source FROM rejects") == [("s",)]


async def test_the_timer_commits_held_writes(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {})
        timer = journal._commit_timer
        assert timer is not None
        timer._run()  # type: ignore[attr-defined]  # fire it now (no waiting)
        assert _committed(db) == [("a", "pending")]
        assert journal._commit_timer is None


def test_without_a_loop_a_held_write_commits_at_once(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        coro = journal.add("a", 0, {})
        with pytest.raises(StopIteration):  # no await inside: runs to the end at once
            coro.send(None)
        assert journal._commit_timer is None
        assert _committed(db) == [("a", "pending")]


async def test_a_failed_write_keeps_the_writes_held_before_it(db: Path) -> None:
    with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {})
        await journal.add("b", 1, {})
        await journal.mark_starting("a", CID_A)
        await journal.mark_running("a", TID)  # held
        with pytest.raises(KeyError):
            await journal.mark_pending("nope")  # fails inside the held transaction
        with pytest.raises(AssertionError):
            await journal.mark_starting("b", CID_A)
        assert journal._db.in_transaction  # still holding mark_running
        journal._commit()
        assert _committed(db) == [("a", "running"), ("b", "pending")]


# ---------------------------------------------------------------------- export


async def test_export_jsonl_writes_every_row(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with SQLiteJournal(db) as journal:
        assert journal.export_jsonl(out) == 0
        assert out.read_text() == ""
        await journal.add("b", 1, {"m": 2})
        await journal.add("a", 0, {"m": 1})
        assert journal.export_jsonl(out) == 2
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["key"] for r in rows] == ["a", "b"]
    assert rows[0]["job"] == {"m": 1}
    assert rows[0]["history"] == []
    first_line = out.read_text().splitlines()[0]
    assert first_line == json.dumps(rows[0], sort_keys=True)


# ---------------------------------------------------------------------- results


async def _batch(db: Path) -> SQLiteJournal:
    journal = SQLiteJournal(db)
    await journal.add("a", 0, {"m": "a"}, source="in:1")
    await journal.add("c", 3, {"m": "c"})
    await journal.mark_starting("c", CID_A)
    await journal.mark_ended("c", "failed", error="boom")
    await journal.reject("in:2", 1, "skipped", error="duplicate of a", key="a", job={"m": "a"})
    await journal.reject("in:3", 2, "failed", error="not JSON", job="{x")
    return journal


async def test_result_records_list_every_input_in_order(db: Path) -> None:
    journal = await _batch(db)
    try:
        records = await result_records(journal)
    finally:
        journal.close()
    assert [r["seq"] for r in records] == [0, 1, 2, 3]
    job_a = records[0]
    assert (job_a["key"], job_a["state"], job_a["reason"], job_a["history"]) == (
        "a",
        "pending",
        None,
        [],
    )
    assert job_a["source"] == "in:1"
    assert records[1] == {
        "key": "a",
        "seq": 1,
        "source": "in:2",
        "job": {"m": "a"},
        "state": "skipped",
        "error": None,
        "reason": "duplicate of a",
        "conversation_id": None,
        "ended_at": 104.0,
    }
    assert records[2]["state"] == "failed"
    assert (records[2]["error"], records[2]["reason"], records[2]["key"]) == (
        "not JSON",
        None,
        None,
    )
    assert (records[3]["state"], records[3]["error"], records[3]["conversation_id"]) == (
        "failed",
        "boom",
        CID_A,
    )


async def test_write_results_is_atomic_and_counts_lines(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("old\n")
    journal = await _batch(db)
    try:
        assert await write_results(journal, out) == 4
        lines = out.read_text().splitlines()
        records = await result_records(journal)
        assert lines == [json.dumps(r, sort_keys=True, default=str) for r in records]
        assert _named_like(tmp_path, "results") == ["results.jsonl"]

        class Boom(Exception):
            pass

        seen: list[str] = []

        def fail(_: object) -> None:
            # the temporary file sits next to the target (so the rename is atomic)
            seen.extend(p.name for p in tmp_path.iterdir() if p.name != "results.jsonl")
            raise Boom

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("openhands_async.lib.batch.results.os.fsync", fail)
            with pytest.raises(Boom):
                await write_results(journal, out)
        assert [n for n in seen if n.startswith(".results.jsonl.") and n.endswith(".tmp")] == [
            n for n in seen if n != "run.db" and not n.startswith("run.db")
        ]
        assert len([n for n in seen if n.endswith(".tmp")]) == 1
        assert out.read_text().splitlines() == lines  # the old file, whole
        assert _named_like(tmp_path, "results") == ["results.jsonl"]

        def replace_then_fail(src: str, dst: object) -> None:
            Path(src).unlink()  # the temporary file is already gone when the cleanup runs
            raise Boom

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("openhands_async.lib.batch.results.os.replace", replace_then_fail)
            with pytest.raises(Boom):
                await write_results(journal, out)
        assert out.read_text().splitlines() == lines
    finally:
        journal.close()


async def test_batch_counts_and_summary(db: Path) -> None:
    journal = await _batch(db)
    try:
        counts = await batch_counts(journal)
        assert counts == {
            "pending": 1,
            "starting": 0,
            "running": 0,
            "finished": 0,
            "failed": 2,
            "skipped": 1,
            "total": 4,
        }
        progress = BatchProgress(finished=1, failed=2, skipped=3, not_retried=4)
        summary = await BatchSummary.of(progress, journal)
        assert (summary.finished, summary.failed, summary.skipped, summary.not_retried) == (
            1,
            2,
            3,
            4,
        )
        assert summary.batch == counts
        assert summary.batch_failed == 2
        assert not summary.complete
    finally:
        journal.close()
    ended = dict.fromkeys(("pending", "starting", "running"), 0)
    assert BatchSummary(0, 0, 0, 0, {**ended, "failed": 1}).complete
    for state in ("pending", "starting", "running"):
        assert not BatchSummary(0, 0, 0, 0, {**ended, state: 1}).complete


class _StubJournal:
    """Just the reads `results` makes, with answers no SQLite journal gives."""

    def __init__(self, rows: list[JournalRow], rejects: list[RejectRow], counts: Any) -> None:
        self._rows, self._rejects, self._counts = rows, rejects, counts

    async def rows(self) -> list[JournalRow]:
        return self._rows

    async def rejects(self) -> list[RejectRow]:
        return self._rejects

    async def counts(self) -> dict[str, int]:
        return dict(self._counts)


def _job_row(key: str, seq: int, job: dict[str, Any]) -> JournalRow:
    return JournalRow(key, seq, job, "pending", *([None] * 5), 1.0, None, None, None)


async def test_results_of_any_backend(tmp_path: Path) -> None:
    # A row and a reject at one seq: the row first (a stable sort by seq alone).
    journal: Any = _StubJournal(
        [_job_row("a", 1, {"when": Path("x")})],
        [RejectRow("s", 1, "skipped", "a", None, "dup", 2.0)],
        {"pending": 1, "paused": 2},
    )
    records = await result_records(journal)
    assert [r["state"] for r in records] == ["pending", "skipped"]
    out = tmp_path / "r.jsonl"
    assert await write_results(journal, out) == 2
    assert json.loads(out.read_text().splitlines()[0])["job"] == {"when": "x"}
    counts = await batch_counts(journal)
    assert (counts["pending"], counts["paused"], counts["skipped"]) == (1, 2, 1)
    assert counts["total"] == 2  # the states of the batch only
