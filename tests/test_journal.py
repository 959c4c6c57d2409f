"""The batch journal: a real SQLite file, its states, its exclusive hold."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from openhands_async.journal import Journal, JournalLockedError


def test_states_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with Journal(db) as journal:
        journal.add("a", 0, {"message": "x"})
        journal.add("b", 1, {"message": "y"})
        journal.mark_starting("a", "c" * 32)
        journal.mark_running("a", "t" * 32)
        journal.mark_ended("a", "finished", sandbox_status="RUNNING", execution_status="finished")
        journal.mark_starting("b", "d" * 32)
    with Journal(db) as journal:
        a, b = journal.get("a"), journal.get("b")
        assert a is not None
        assert b is not None
        assert (a.state, a.conversation_id, a.start_task_id) == ("finished", "c" * 32, "t" * 32)
        assert a.execution_status == "finished"
        assert (b.state, b.conversation_id) == ("starting", "d" * 32)
        assert b.sent_at is not None
        # re-adding returns what the earlier run left, never a fresh pending row
        assert journal.add("b", 1, {"message": "y"}).state == "starting"
        assert journal.counts()["finished"] == 1
        assert [r.key for r in journal.rows("starting")] == ["b"]


def test_plain_sqlite_can_read_it(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with Journal(db) as journal:
        journal.add("a", 0, {"message": "x"})
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Closed explicitly: Python 3.13 warns (an error here) about a connection left to the GC.
    with contextlib.closing(sqlite3.connect(db)) as plain:
        rows = plain.execute("SELECT key, state FROM jobs").fetchall()
    assert rows == [("a", "pending")]


def test_a_second_run_is_refused_until_the_first_ends(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with Journal(db):
        with pytest.raises(JournalLockedError, match="in use"):
            Journal(db)
        other_process = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from openhands_async.journal import Journal; Journal({str(db)!r})",
            ],
            capture_output=True,
            text=True,
        )
        assert other_process.returncode != 0
        assert "JournalLockedError" in other_process.stderr
    Journal(db).close()  # free again


def test_a_killed_holder_releases_the_journal(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from openhands_async.journal import Journal; "
            f"j = Journal({str(db)!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(JournalLockedError):
                Journal(db)
        finally:
            holder.kill()  # SIGKILL: no chance to unlock by itself
            holder.wait()
    Journal(db).close()


def test_unknown_key_and_export(tmp_path: Path) -> None:
    with Journal(tmp_path / "run.db") as journal:
        with pytest.raises(KeyError):
            journal.mark_running("nope", "t")
        journal.add("a", 0, {"message": "x"})
        journal.mark_ended("a", "failed", error="HTTP 400: bad")
        out = tmp_path / "results.jsonl"
        assert journal.export_jsonl(out) == 1
    (line,) = out.read_text().splitlines()
    record = json.loads(line)
    assert record["key"] == "a"
    assert record["state"] == "failed"
    assert record["error"] == "HTTP 400: bad"
    assert record["job"] == {"message": "x"}


def test_in_memory_journals_lock_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Journal(":memory:") as a, Journal(":memory:") as b:
        a.add("k", 0, {"message": "x"})
        assert b.get("k") is None  # separate, private databases
    assert list(tmp_path.iterdir()) == []
