"""The SQLite batch journal: a real file, its states, its exclusive hold."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from openhands_async.lib.batch import JournalLockedError, SQLiteJournal

from .conftest import eventually


async def test_states_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    async with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {"message": "x"})
        await journal.add("b", 1, {"message": "y"})
        await journal.mark_starting("a", "c" * 32)
        await journal.mark_running("a", "t" * 32)
        await journal.mark_ended(
            "a", "finished", sandbox_status="RUNNING", execution_status="finished"
        )
        await journal.mark_starting("b", "d" * 32)
    async with SQLiteJournal(db) as journal:
        a, b = await journal.get("a"), await journal.get("b")
        assert a is not None
        assert b is not None
        assert (a.state, a.conversation_id, a.start_task_id) == ("finished", "c" * 32, "t" * 32)
        assert a.execution_status == "finished"
        assert (b.state, b.conversation_id) == ("starting", "d" * 32)
        assert b.sent_at is not None
        # re-adding returns what the earlier run left, never a fresh pending row
        assert (await journal.add("b", 1, {"message": "y"})).state == "starting"
        assert (await journal.counts())["finished"] == 1
        assert [r.key for r in await journal.rows("starting")] == ["b"]


async def test_plain_sqlite_can_read_it(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with SQLiteJournal(db) as journal:
        await journal.add("a", 0, {"message": "x"})
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Closed explicitly: Python 3.13 warns (an error here) about a connection left to the GC.
    with contextlib.closing(sqlite3.connect(db)) as plain:
        rows = plain.execute("SELECT key, state FROM jobs").fetchall()
    assert rows == [("a", "pending")]


def test_a_second_run_is_refused_until_the_first_ends(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with SQLiteJournal(db):
        with pytest.raises(JournalLockedError, match="in use"):
            SQLiteJournal(db)
        other_process = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from openhands_async.lib.batch import SQLiteJournal; SQLiteJournal({str(db)!r})",
            ],
            capture_output=True,
            text=True,
        )
        assert other_process.returncode != 0
        assert "JournalLockedError" in other_process.stderr
    SQLiteJournal(db).close()  # free again


def test_a_killed_holder_releases_the_journal(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from openhands_async.lib.batch import SQLiteJournal; "
            f"j = SQLiteJournal({str(db)!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(JournalLockedError):
                SQLiteJournal(db)
        finally:
            holder.kill()  # SIGKILL: no chance to unlock by itself
            holder.wait()
    SQLiteJournal(db).close()


async def test_unknown_key_and_export(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "run.db") as journal:
        with pytest.raises(KeyError):
            await journal.mark_running("nope", "t")
        await journal.add("a", 0, {"message": "x"})
        await journal.mark_ended("a", "failed", error="HTTP 400: bad")
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

    async def scenario() -> None:
        with SQLiteJournal(":memory:") as a, SQLiteJournal(":memory:") as b:
            await a.add("k", 0, {"message": "x"})
            assert await b.get("k") is None  # separate, private databases

    asyncio.run(scenario())
    assert list(tmp_path.iterdir()) == []


async def test_only_a_starts_mark_commits_at_once_the_rest_soon_after(tmp_path: Path) -> None:
    # A start's conversation id is durable before the start is sent; the other marks ride
    # along with it, or are committed within JOURNAL_COMMIT_DELAY (or on close).
    db = tmp_path / "run.db"

    def committed() -> dict[str, str]:
        with contextlib.closing(sqlite3.connect(db)) as other:
            return dict(other.execute("SELECT key, state FROM jobs").fetchall())

    journal = SQLiteJournal(db)
    await journal.add("a", 0, {"message": "x"})
    assert (await journal.get("a")) is not None  # the journal itself sees it at once
    await journal.mark_starting("a", "c" * 32)
    assert committed() == {"a": "starting"}  # committed with the start's mark
    await journal.mark_running("a", "t" * 32)
    await journal.mark_ended("a", "finished")
    assert committed() == {"a": "starting"}
    await eventually(lambda: committed() == {"a": "finished"})
    await journal.add("b", 1, {"message": "y"})
    with pytest.raises(KeyError):  # a failed mark keeps what is held
        await journal.mark_running("zz", "t" * 32)
    journal.close()
    assert committed() == {"a": "finished", "b": "pending"}
