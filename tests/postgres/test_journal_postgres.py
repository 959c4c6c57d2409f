"""The shared journal's database semantics, against a real PostgreSQL (never a mock)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import openhands_async as oh
from openhands_async.lib.batch.postgres import PostgresJournal, account_label

Open = Callable[..., Awaitable[PostgresJournal]]


@pytest.fixture
async def open_journal(pg_dsn: str) -> AsyncIterator[Open]:
    """Open a worker's journal on this test's database (closed at the end)."""
    opened: list[PostgresJournal] = []

    async def open_(
        account: str = "acct-a", max_running: int = 3, batch: str = "b", **kw: object
    ) -> PostgresJournal:
        journal = PostgresJournal(
            pg_dsn, batch_name=batch, account=account, max_running=max_running, **kw
        )
        opened.append(await journal.open())
        return journal

    yield open_
    for journal in opened:
        await journal.close()


def jobs(n: int, prefix: str = "k") -> list[tuple[str, int, dict[str, str]]]:
    return [(f"{prefix}{i:03}", i, {"message": f"task {i}"}) for i in range(n)]


def cid() -> str:
    return uuid.uuid4().hex


async def expire_leases(journal: PostgresJournal, worker: str) -> None:
    """As if `lease_seconds` had passed without a renewal from `worker` (it died)."""
    await journal._require().execute(
        "UPDATE openhands_batch_jobs SET lease_until = now() - interval '1 second'"
        " WHERE worker = %s",
        (worker,),
    )


async def test_jobs_are_inserted_once_by_key_whoever_feeds_them(open_journal: Open) -> None:
    one, two = await open_journal(), await open_journal()
    assert await one.add_many(jobs(5)) == 5
    # The second worker feeds the same file, plus one line: only the new line is inserted,
    # and a key keeps the job its first feeder gave it.
    again = [(k, s, {"message": "other"}) for k, s, _ in jobs(5)] + [("k005", 5, {"message": "6"})]
    assert await two.add_many(again) == 1
    rows = await two.rows()
    assert [r.key for r in rows] == [f"k{i:03}" for i in range(6)]
    assert rows[0].job == {"message": "task 0"}
    assert await one.counts() == {
        "pending": 6,
        "starting": 0,
        "running": 0,
        "finished": 0,
        "failed": 0,
    }


async def test_concurrent_claims_give_each_job_to_exactly_one_worker(open_journal: Open) -> None:
    workers = [await open_journal(max_running=1000) for _ in range(6)]
    await workers[0].add_many(jobs(120))

    async def drain(journal: PostgresJournal) -> list[str]:
        got = []
        while (row := await journal.claim(cid())) is not None:
            got.append(row.key)
        return got

    claimed = await asyncio.gather(*(drain(w) for w in workers))
    every = [key for keys in claimed for key in keys]
    assert sorted(every) == [f"k{i:03}" for i in range(120)]  # all, none twice
    assert sum(1 for keys in claimed if keys) > 1  # the work really was shared


async def test_the_running_cap_holds_across_workers_under_contention(open_journal: Open) -> None:
    workers = [await open_journal(max_running=5) for _ in range(8)]
    await workers[0].add_many(jobs(60))
    # Forty claims at once from eight connections: exactly five get a slot.
    results = await asyncio.gather(*(workers[i % 8].claim(cid()) for i in range(40)))
    taken = [r for r in results if r is not None]
    assert len(taken) == 5
    assert len({r.key for r in taken}) == 5
    # Ending two frees two slots, for anyone of the account.
    for row in taken[:2]:
        owner = next(w for w in workers if row.key in w.held)
        await owner.mark_ended(row.key, "finished")
    results = await asyncio.gather(*(workers[i % 8].claim(cid()) for i in range(40)))
    assert sum(r is not None for r in results) == 2
    counts = await workers[0].counts()
    assert counts["starting"] == 5
    assert counts["finished"] == 2


async def test_slots_are_counted_per_account(open_journal: Open) -> None:
    a1, a2 = await open_journal("acct-a", 3), await open_journal("acct-a", 3)
    b1 = await open_journal("acct-b", 3)
    await a1.add_many(jobs(20))
    results = await asyncio.gather(*(w.claim(cid()) for w in [a1, a2, b1] * 6))
    taken = Counter(r.account for r in results if r is not None)
    assert taken == {"acct-a": 3, "acct-b": 3}


async def test_the_claim_records_the_minted_id_and_lease_in_the_same_step(
    open_journal: Open,
) -> None:
    journal = await open_journal()
    await journal.add_many(jobs(1))
    minted = cid()
    row = await journal.claim(minted)
    assert row is not None
    stored = await journal.get(row.key)
    assert stored == row
    assert stored.state == "starting"
    assert stored.conversation_id == minted
    assert stored.worker == journal.worker
    assert stored.account == "acct-a"
    assert stored.attempts == 1
    assert stored.lease_until is not None
    assert stored.sent_at is not None
    assert stored.lease_until > stored.sent_at


async def test_a_conversation_id_belongs_to_one_job(open_journal: Open) -> None:
    journal = await open_journal()
    await journal.add_many(jobs(2))
    minted = cid()
    assert await journal.claim(minted) is not None
    with pytest.raises(AssertionError, match=minted):
        await journal.claim(minted)
    row = await journal.get("k001")
    assert row is not None
    assert row.state == "pending"  # the failed claim took nothing


async def test_lapsed_leases_are_adopted_by_the_same_account_only(open_journal: Open) -> None:
    dead, survivor = await open_journal("acct-a", 2), await open_journal("acct-a", 2)
    other = await open_journal("acct-b", 2)
    await dead.add_many(jobs(4))
    first, second = await dead.claim(cid()), await dead.claim(cid())
    assert first is not None
    assert second is not None
    await dead.mark_running(first.key, "task-1")
    assert await survivor.adopt() == []  # leases still current

    await expire_leases(survivor, dead.worker)
    assert await other.adopt() == []  # another API key could not even read them
    adopted = {row.key: row for row in await survivor.adopt()}
    assert set(adopted) == {first.key, second.key}
    assert adopted[first.key].state == "running"
    assert adopted[first.key].start_task_id == "task-1"
    assert adopted[second.key].state == "starting"  # the survivor looks it up, never resends blind
    assert {r.conversation_id for r in adopted.values()} == {
        first.conversation_id,
        second.conversation_id,
    }
    assert all(r.worker == survivor.worker for r in adopted.values())
    assert all(r.attempts == 1 for r in adopted.values())
    # Adopted jobs keep their slots: the account's two are still taken.
    assert await survivor.claim(cid()) is None
    assert await survivor.adopt() == []  # and nobody adopts them twice


async def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_owner(
    open_journal: Open,
) -> None:
    stalled, survivor = await open_journal(), await open_journal()
    await stalled.add_many(jobs(1))
    row = await stalled.claim(cid())
    assert row is not None
    await expire_leases(survivor, stalled.worker)
    assert [r.key for r in await survivor.adopt()] == [row.key]

    assert await stalled.renew() == 0
    assert stalled.lost == {row.key}
    assert stalled.held == set()
    with pytest.raises(oh.errors.JournalLeaseLost):
        await stalled.mark_ended(row.key, "failed", error="stale")
    await survivor.mark_ended(row.key, "finished", execution_status="finished")
    ended = await survivor.get(row.key)
    assert ended is not None
    assert ended.state == "finished"


async def test_renewing_extends_the_leases_of_the_workers_own_jobs(open_journal: Open) -> None:
    journal, neighbour = await open_journal(), await open_journal()
    await journal.add_many(jobs(2))
    mine, theirs = await journal.claim(cid()), await neighbour.claim(cid())
    assert mine is not None
    assert theirs is not None
    await expire_leases(journal, journal.worker)
    assert await journal.renew() == 1
    renewed = await journal.get(mine.key)
    assert renewed is not None
    assert renewed.lease_until is not None
    assert mine.lease_until is not None
    assert renewed.lease_until > mine.lease_until
    assert await neighbour.adopt() == []  # renewed in time: nothing to adopt


async def test_a_lease_lapses_on_its_own_when_a_worker_stops_renewing(pg_dsn: str) -> None:
    # A real lapse: the holder's connection is cut (as by SIGKILL), nothing renews any more.
    dead = await PostgresJournal(
        pg_dsn, batch_name="b", account="a", max_running=1, lease_seconds=0.3
    ).open()
    async with PostgresJournal(
        pg_dsn, batch_name="b", account="a", max_running=1, lease_seconds=30
    ) as survivor:
        await dead.add_many(jobs(1))
        row = await dead.claim(cid())
        assert row is not None
        assert dead._heartbeat is not None
        dead._heartbeat.cancel()
        await survivor._require().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"openhands-async {dead.worker}"[:63],),
        )
        adopted = []
        for _ in range(500):  # bounded: the lease is 0.3 s
            adopted = await survivor.adopt()
            if adopted:
                break
            await asyncio.sleep(0.01)
        assert [r.key for r in adopted] == [row.key]
        await dead.close()  # its connection is gone: closing must not raise


async def test_a_clean_close_hands_the_jobs_over_at_once(open_journal: Open) -> None:
    leaving, staying = await open_journal(), await open_journal()
    await leaving.add_many(jobs(2))
    assert await leaving.claim(cid()) is not None
    await leaving.close()
    assert len(await staying.adopt()) == 1
    status = await staying.status()
    by_worker = {w.worker: w for w in status.workers}
    assert by_worker[leaving.worker].stopped_at is not None
    assert not by_worker[leaving.worker].alive
    assert by_worker[staying.worker].alive
    assert by_worker[staying.worker].counts == {"starting": 1}


async def test_a_refused_start_gives_the_job_and_its_slot_back(open_journal: Open) -> None:
    journal = await open_journal(max_running=1)
    await journal.add_many(jobs(2))
    row = await journal.claim(cid())
    assert row is not None
    assert await journal.claim(cid()) is None
    await journal.mark_pending(row.key)
    again = await journal.get(row.key)
    assert again is not None
    assert again.state == "pending"
    assert again.conversation_id is None
    retaken = await journal.claim(cid())
    assert retaken is not None
    assert retaken.key == row.key  # first in line again
    assert retaken.attempts == 2


async def test_retrying_failed_jobs_keeps_their_old_conversation_ids(open_journal: Open) -> None:
    journal = await open_journal()
    await journal.add_many(jobs(2))
    row = await journal.claim(cid())
    assert row is not None
    await journal.mark_ended(row.key, "failed", error="boom")
    assert await journal.retry_failed() == 1
    retried = await journal.claim(cid(), key=row.key)
    assert retried is not None
    assert [h["conversation_id"] for h in retried.history] == [row.conversation_id]
    assert retried.history[0]["state"] == "failed"
    assert retried.history[0]["error"] == "boom"
    # The old id stays that job's: never sent for it or any other job again.
    assert await journal.key_of(row.conversation_id or "") == row.key
    assert retried.conversation_id != row.conversation_id
    assert retried.error is None


async def test_status_and_remaining_across_workers(open_journal: Open) -> None:
    one, two = await open_journal(), await open_journal()
    await one.add_many(jobs(5))
    a, b = await one.claim(cid()), await two.claim(cid())
    assert a is not None
    assert b is not None
    await one.mark_ended(a.key, "finished")
    status = await one.status()
    assert status.counts == {"pending": 3, "starting": 1, "running": 0, "finished": 1, "failed": 0}
    counts = {w.worker: w.counts for w in status.workers}
    assert counts == {one.worker: {"finished": 1}, two.worker: {"starting": 1}}
    remaining = await one.remaining()
    assert remaining.pending == 3
    assert remaining.held_elsewhere == 1  # two's job, adoptable should two die
    assert remaining.next_check is not None
    assert remaining.next_check <= one.lease_seconds


async def test_a_waiting_worker_wakes_when_a_slot_frees(open_journal: Open) -> None:
    holder, waiter = await open_journal(max_running=1), await open_journal(max_running=1)
    await holder.add_many(jobs(2))
    row = await holder.claim(cid())
    assert row is not None
    await waiter.listen()
    assert await waiter.claim(cid()) is None
    assert await waiter.wait_for_slot(timeout=0.01) is False  # nothing happened
    waiting = asyncio.ensure_future(waiter.wait_for_slot(timeout=30))
    await holder.mark_ended(row.key, "finished")
    assert await waiting is True
    assert await waiter.claim(cid()) is not None


async def test_batches_share_a_database_without_mixing(open_journal: Open) -> None:
    evals, docs = await open_journal(batch="evals"), await open_journal(batch="docs")
    await evals.add_many(jobs(2))
    await docs.add_many(jobs(3))
    assert (await evals.counts())["pending"] == 2
    assert (await docs.counts())["pending"] == 3
    assert (await evals.claim(cid())) is not None
    assert (await docs.counts())["starting"] == 0


def test_account_labels_never_hold_the_key() -> None:
    key = "sk-oh-" + "x" * 40
    label = account_label(key, "https://app.all-hands.dev")
    assert label.startswith("acct-")
    assert "x" * 8 not in label
    assert label == account_label(key, "https://app.all-hands.dev")
    assert label != account_label(key + "y", "https://app.all-hands.dev")
    assert label != account_label(key, "http://127.0.0.1:3000")


def test_the_module_imports_without_psycopg() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import asyncio\n"
        "from openhands_async.lib.batch import postgres\n"
        "j = postgres.PostgresJournal('postgresql://x@127.0.0.1:1/db', batch_name='b',"
        " account='a', max_running=1)\n"
        "try:\n"
        "    asyncio.run(j.open())\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'openhands-async[postgres]'" in out.stdout


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_name": ""}, "batch_name"),
        ({"max_running": 0}, "max_running"),
        ({"max_running": True}, "max_running"),
        ({"lease_seconds": 0}, "lease_seconds"),
    ],
)
def test_bad_arguments_are_refused_up_front(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"batch_name": "b", "account": "a", "max_running": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        PostgresJournal("postgresql://x@127.0.0.1:1/db", **args)  # type: ignore[arg-type]


async def test_mark_starting_claims_a_pending_job_or_resends_a_held_one(open_journal: Open) -> None:
    one, two = await open_journal(max_running=1), await open_journal(max_running=1)
    await one.add_many(jobs(2))
    minted = cid()
    row = await one.mark_starting("k000", minted)
    assert row is not None
    assert row.conversation_id == minted
    assert await two.mark_starting("k000", cid()) is None  # no slot: cap 1
    assert await two.mark_starting("k001", cid()) is None
    # Sending again with the recorded id (the server never took it) keeps its slot.
    again = await one.mark_starting("k000", minted)
    assert again is not None
    assert again.attempts == 1
    assert await one.mark_starting("k000", cid()) is None  # never a second id for it
    running = await one.mark_running("k000", "task")
    assert running.state == "running"
    assert running.start_task_id == "task"


async def test_workers_opening_at_once_on_a_fresh_database_all_get_in(pg_dsn: str) -> None:
    # The schema is created under an advisory lock: concurrent CREATE ... IF NOT EXISTS
    # and CREATE OR REPLACE FUNCTION would otherwise fail for some of them.
    journals = [
        PostgresJournal(pg_dsn, batch_name="b", account=f"acct-{i % 2}", max_running=1)
        for i in range(6)
    ]
    await asyncio.gather(*(j.open() for j in journals))
    try:
        status = await journals[0].status()
        assert len(status.workers) == 6
        with pytest.raises(RuntimeError, match="open already"):
            await journals[0].open()
    finally:
        await asyncio.gather(*(j.close() for j in journals))


async def test_workers_reading_the_same_job_each_claim_a_different_one(open_journal: Open) -> None:
    # Workers feeding one list read the same next job: a fresh id goes to the first pending
    # job no other claim holds, so none of them loses a claim to the race.
    workers = [await open_journal(max_running=10) for _ in range(3)]
    await workers[0].add_many(jobs(6))
    claimed = await asyncio.gather(*(w.mark_starting("k000", cid()) for w in workers))
    keys = sorted(row.key for row in claimed if row is not None)
    assert keys == ["k000", "k001", "k002"]
    again = await asyncio.gather(*(w.mark_starting("k001", cid()) for w in workers))
    assert sorted(row.key for row in again if row is not None) == ["k003", "k004", "k005"]
    assert await workers[0].mark_starting("k001", cid()) is None  # none pending


async def test_a_recorded_id_is_sent_only_for_its_own_job(open_journal: Open) -> None:
    journal = await open_journal(max_running=10)
    await journal.add_many(jobs(3))
    minted = cid()
    first = await journal.mark_starting("k000", minted)
    assert first is not None
    await journal.mark_pending("k000")  # refused at the cap: the id stays k000's
    with pytest.raises(AssertionError, match="k001"):  # never another job's, even pending
        await journal.mark_starting("k001", minted)
    again = await journal.mark_starting("k000", minted)
    assert again is not None
    assert (again.key, again.conversation_id) == ("k000", minted)
