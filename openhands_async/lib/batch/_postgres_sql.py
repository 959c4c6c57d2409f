"""The shared journal's schema and statements (PostgreSQL 12+), kept apart from the code.

Every table is keyed by `batch_name`, so one database holds many batches. Times are the
database's own clock (`now()`): workers on several machines never compare their clocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import LiteralString

SCHEMA_VERSION = 1
# pg_advisory_xact_lock key: workers opening the journal at once create the schema in turn
# (concurrent CREATE ... IF NOT EXISTS / CREATE OR REPLACE FUNCTION can fail otherwise).
SCHEMA_LOCK = 0x6F68_6261_7463_68  # "ohbatch"

SCHEMA: LiteralString = """
CREATE TABLE IF NOT EXISTS openhands_batch_jobs (
    batch_name       text NOT NULL,
    key              text NOT NULL,
    seq              bigint NOT NULL,
    job              jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'starting', 'running', 'finished', 'failed')),
    -- The account label (a keyed hash of the API key, never the key) holding the job's slot.
    account          text,
    worker           text,
    lease_until      timestamptz,
    conversation_id  text,
    start_task_id    text,
    sandbox_status   text,
    execution_status text,
    error            text,
    attempts         integer NOT NULL DEFAULT 0,
    -- Earlier attempts, oldest first (a failed job retried gets a fresh id): each the
    -- fields `retry` cleared, like the SQLite journal's.
    history          jsonb NOT NULL DEFAULT '[]',
    -- Where the job was first read ("jobs.jsonl:2"), if known.
    source           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    running_at       timestamptz,
    ended_at         timestamptz,
    PRIMARY KEY (batch_name, key)
);
CREATE INDEX IF NOT EXISTS openhands_batch_jobs_pending
    ON openhands_batch_jobs (batch_name, seq, key) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS openhands_batch_jobs_active
    ON openhands_batch_jobs (batch_name, account) WHERE state IN ('starting', 'running');
-- A conversation id belongs to one job, ever: a second start with a known id breaks the
-- original conversation on the server.
CREATE UNIQUE INDEX IF NOT EXISTS openhands_batch_jobs_conversation
    ON openhands_batch_jobs (conversation_id) WHERE conversation_id IS NOT NULL;

ALTER TABLE openhands_batch_jobs ADD COLUMN IF NOT EXISTS source text;
-- Every conversation id ever minted, and its job: no id ever serves two jobs (a retried
-- job's old id included). Ids are the server's, so unique across batches too.
CREATE TABLE IF NOT EXISTS openhands_batch_conversations (
    conversation_id text PRIMARY KEY,
    batch_name      text NOT NULL,
    key             text NOT NULL
);
-- Inputs that are not jobs of their own (invalid lines, duplicate keys), by where read.
CREATE TABLE IF NOT EXISTS openhands_batch_rejects (
    batch_name  text NOT NULL,
    source      text NOT NULL,
    seq         bigint NOT NULL,
    state       text NOT NULL CHECK (state IN ('failed', 'skipped')),
    key         text,
    job         jsonb,
    error       text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_name, source)
);

-- One row per (batch, account): claims lock it, so slot counts are taken one at a time.
CREATE TABLE IF NOT EXISTS openhands_batch_accounts (
    batch_name text NOT NULL,
    account    text NOT NULL,
    PRIMARY KEY (batch_name, account)
);

CREATE TABLE IF NOT EXISTS openhands_batch_workers (
    batch_name  text NOT NULL,
    worker      text NOT NULL,
    account     text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    max_running integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz,
    PRIMARY KEY (batch_name, worker)
);

CREATE TABLE IF NOT EXISTS openhands_batch_schema (version integer NOT NULL);

-- Claim one pending job and a running slot of the account, atomically (one transaction,
-- one round trip). VOLATILE: each statement reads a fresh snapshot, so the count below
-- sees every claim committed before this one got the account's lock.
CREATE OR REPLACE FUNCTION openhands_batch_claim(
    p_batch text, p_account text, p_worker text, p_max_running integer,
    p_conversation_id text, p_lease double precision, p_key text
) RETURNS SETOF openhands_batch_jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    used integer;
    claimed text;
    holder record;
BEGIN
    -- Sending again the start of a job this worker holds, with its recorded id (the server
    -- provably never took it): it has its slot already.
    IF p_key IS NOT NULL THEN
        RETURN QUERY
        UPDATE openhands_batch_jobs AS j
           SET sent_at = now(), lease_until = now() + make_interval(secs => p_lease)
         WHERE j.batch_name = p_batch AND j.key = p_key AND j.state = 'starting'
           AND j.worker = p_worker AND j.conversation_id = p_conversation_id
        RETURNING j.*;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    PERFORM 1 FROM openhands_batch_accounts
        WHERE batch_name = p_batch AND account = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % is not registered for batch %', p_account, p_batch;
    END IF;
    SELECT count(*) INTO used FROM openhands_batch_jobs
        WHERE batch_name = p_batch AND account = p_account
          AND state IN ('starting', 'running');
    IF used >= p_max_running THEN
        RETURN;
    END IF;
    -- A fresh id may go to any pending job: the first in the batch's order that no other
    -- claim holds (SKIP LOCKED), not the job `p_key` this worker just read, which workers
    -- feeding the same list would all race for. An id already recorded (a start the server
    -- refused, sent again) stays with its own job.
    IF p_key IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM openhands_batch_conversations AS c
         WHERE c.conversation_id = p_conversation_id) THEN
        p_key := NULL;
    END IF;
    UPDATE openhands_batch_jobs AS j
       SET state = 'starting', account = p_account, worker = p_worker,
           conversation_id = p_conversation_id,
           lease_until = now() + make_interval(secs => p_lease),
           sent_at = now(), attempts = j.attempts + 1
     WHERE (j.batch_name, j.key) = (
           SELECT p.batch_name, p.key FROM openhands_batch_jobs AS p
            WHERE p.batch_name = p_batch AND p.state = 'pending'
              AND (p_key IS NULL OR p.key = p_key)
            ORDER BY p.seq, p.key
            LIMIT 1
              FOR UPDATE SKIP LOCKED)
    RETURNING j.key INTO claimed;
    IF claimed IS NULL THEN
        RETURN;
    END IF;
    -- The id is this job's for good; an id another job holds or held is never sent.
    INSERT INTO openhands_batch_conversations (conversation_id, batch_name, key)
        VALUES (p_conversation_id, p_batch, claimed) ON CONFLICT DO NOTHING;
    SELECT c.batch_name, c.key INTO holder FROM openhands_batch_conversations AS c
        WHERE c.conversation_id = p_conversation_id;
    IF holder.batch_name <> p_batch OR holder.key <> claimed THEN
        RAISE EXCEPTION USING ERRCODE = 'unique_violation', MESSAGE = format(
            'conversation id %s belongs to job %L of batch %L: it is never sent for job %L',
            p_conversation_id, holder.key, holder.batch_name, claimed);
    END IF;
    RETURN QUERY SELECT * FROM openhands_batch_jobs AS j
        WHERE j.batch_name = p_batch AND j.key = claimed;
END
$$;
"""

# The columns a row is read with (times as seconds since the epoch, like the SQLite journal).
COLUMNS: LiteralString = """
    key, seq, job, source, state, account, worker, conversation_id, start_task_id, sandbox_status,
    execution_status, error, attempts, history,
    extract(epoch FROM created_at)::float8 AS created_at,
    extract(epoch FROM sent_at)::float8 AS sent_at,
    extract(epoch FROM running_at)::float8 AS running_at,
    extract(epoch FROM ended_at)::float8 AS ended_at,
    extract(epoch FROM lease_until)::float8 AS lease_until
"""

REGISTER_WORKER: LiteralString = """
WITH account AS (
    INSERT INTO openhands_batch_accounts (batch_name, account) VALUES (%(batch)s, %(account)s)
    ON CONFLICT DO NOTHING
)
INSERT INTO openhands_batch_workers (batch_name, worker, account, host, pid, max_running)
VALUES (%(batch)s, %(worker)s, %(account)s, %(host)s, %(pid)s, %(max_running)s)
ON CONFLICT (batch_name, worker) DO UPDATE
    SET seen_at = now(), stopped_at = NULL, max_running = EXCLUDED.max_running
"""

# One job, and its row as the database has it (new, or what a key already held), in one
# round trip; a reject recorded at its source goes (the line is a job now).
ADD_ONE: LiteralString = (
    """
WITH ins AS (
    INSERT INTO openhands_batch_jobs (batch_name, key, seq, job, source)
    VALUES (%(batch)s, %(key)s, %(seq)s, %(job)s::jsonb, %(source)s)
    ON CONFLICT (batch_name, key) DO NOTHING
    RETURNING *
), dropped AS (
    DELETE FROM openhands_batch_rejects
     WHERE batch_name = %(batch)s AND source = %(source)s
)
SELECT """
    + COLUMNS
    + """ FROM ins
UNION ALL
SELECT """
    + COLUMNS
    + """ FROM openhands_batch_jobs
 WHERE batch_name = %(batch)s AND key = %(key)s AND NOT EXISTS (SELECT 1 FROM ins)
"""
)

ADD: LiteralString = """
INSERT INTO openhands_batch_jobs (batch_name, key, seq, job)
SELECT %(batch)s, k, s, j FROM unnest(%(keys)s::text[], %(seqs)s::bigint[], %(jobs)s::jsonb[])
    AS t(k, s, j)
ON CONFLICT (batch_name, key) DO NOTHING
"""

CLAIM: LiteralString = (
    "SELECT "
    + COLUMNS
    + " FROM openhands_batch_claim(%(batch)s, %(account)s, %(worker)s, %(max_running)s,"
    " %(conversation_id)s, %(lease)s, %(key)s)"
)

# Jobs of this account whose holder's lease lapsed (dead or cut off): now this worker's.
ADOPT: LiteralString = (
    """
WITH lapsed AS (
    SELECT batch_name AS b, key AS k FROM openhands_batch_jobs
     WHERE batch_name = %(batch)s AND account = %(account)s
       AND state IN ('starting', 'running') AND lease_until < now()
       FOR UPDATE SKIP LOCKED
)
UPDATE openhands_batch_jobs AS j
   SET worker = %(worker)s, lease_until = now() + make_interval(secs => %(lease)s)
  FROM lapsed
 WHERE j.batch_name = lapsed.b AND j.key = lapsed.k
RETURNING """
    + COLUMNS
)

RENEW: LiteralString = """
WITH seen AS (
    UPDATE openhands_batch_workers SET seen_at = now()
     WHERE batch_name = %(batch)s AND worker = %(worker)s
)
UPDATE openhands_batch_jobs SET lease_until = now() + make_interval(secs => %(lease)s)
 WHERE batch_name = %(batch)s AND worker = %(worker)s AND state IN ('starting', 'running')
RETURNING key
"""

# On a clean stop: what this worker still follows is up for adoption at once.
RELEASE: LiteralString = """
WITH stopped AS (
    UPDATE openhands_batch_workers SET stopped_at = now(), seen_at = now()
     WHERE batch_name = %(batch)s AND worker = %(worker)s
)
UPDATE openhands_batch_jobs SET lease_until = now()
 WHERE batch_name = %(batch)s AND worker = %(worker)s AND state IN ('starting', 'running')
"""

# Every transition below is fenced by `worker`: a worker that lost a job's lease cannot
# write over its new owner's record. Ends and refusals free a slot: tell the waiters.
MARK_RUNNING: LiteralString = (
    """
UPDATE openhands_batch_jobs SET state = 'running', start_task_id = %(start_task_id)s,
       running_at = now()
 WHERE batch_name = %(batch)s AND key = %(key)s AND worker = %(worker)s
   AND state IN ('starting', 'running')
RETURNING """
    + COLUMNS
)

MARK_PENDING: LiteralString = """
WITH freed AS (
    UPDATE openhands_batch_jobs
       SET state = 'pending', conversation_id = NULL, sent_at = NULL, worker = NULL,
           account = NULL, lease_until = NULL
     WHERE batch_name = %(batch)s AND key = %(key)s AND worker = %(worker)s
       AND state = 'starting'
    RETURNING key
)
SELECT key, pg_notify('openhands_batch', %(batch)s) FROM freed
"""

MARK_ENDED: LiteralString = """
WITH ended AS (
    UPDATE openhands_batch_jobs
       SET state = %(state)s, sandbox_status = %(sandbox_status)s,
           execution_status = %(execution_status)s, error = %(error)s, ended_at = now(),
           lease_until = NULL
     WHERE batch_name = %(batch)s AND key = %(key)s AND worker = %(worker)s
       AND state IN ('starting', 'running')
    RETURNING key
)
SELECT key, pg_notify('openhands_batch', %(batch)s) FROM ended
"""

# A failed job goes back to pending for another attempt; the attempt's fields move to
# `history` (its conversation id stays this job's in openhands_batch_conversations).
_RETRY_SET: LiteralString = """
   SET state = 'pending',
       history = history || jsonb_build_array(jsonb_build_object(
           'state', state, 'conversation_id', conversation_id, 'start_task_id', start_task_id,
           'sandbox_status', sandbox_status, 'execution_status', execution_status,
           'error', error, 'sent_at', extract(epoch FROM sent_at)::float8,
           'running_at', extract(epoch FROM running_at)::float8,
           'ended_at', extract(epoch FROM ended_at)::float8)),
       conversation_id = NULL, start_task_id = NULL, sandbox_status = NULL,
       execution_status = NULL, error = NULL, sent_at = NULL, running_at = NULL,
       ended_at = NULL, worker = NULL, account = NULL
"""

RETRY_FAILED: LiteralString = (
    "UPDATE openhands_batch_jobs"
    + _RETRY_SET
    + " WHERE batch_name = %(batch)s AND state = 'failed' RETURNING key"
)

RETRY: LiteralString = (
    "UPDATE openhands_batch_jobs"
    + _RETRY_SET
    + " WHERE batch_name = %(batch)s AND key = %(key)s AND state = 'failed' RETURNING "
    + COLUMNS
)

KEY_OF: LiteralString = """
SELECT batch_name, key FROM openhands_batch_conversations WHERE conversation_id = %(cid)s
"""

REJECT: LiteralString = """
INSERT INTO openhands_batch_rejects (batch_name, source, seq, state, key, job, error)
VALUES (%(batch)s, %(source)s, %(seq)s, %(state)s, %(key)s, %(job)s::jsonb, %(error)s)
ON CONFLICT (batch_name, source) DO UPDATE
    SET seq = EXCLUDED.seq, state = EXCLUDED.state, key = EXCLUDED.key, job = EXCLUDED.job,
        error = EXCLUDED.error, recorded_at = now()
"""

REJECTS: LiteralString = """
SELECT source, seq, state, key, job, error, extract(epoch FROM recorded_at)::float8
  FROM openhands_batch_rejects WHERE batch_name = %(batch)s ORDER BY seq, source
"""

GET: LiteralString = (
    "SELECT "
    + COLUMNS
    + " FROM openhands_batch_jobs WHERE batch_name = %(batch)s AND key = %(key)s"
)

ROWS: LiteralString = (
    "SELECT " + COLUMNS + " FROM openhands_batch_jobs WHERE batch_name = %(batch)s"
    " AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[])) ORDER BY seq, key"
)

COUNTS: LiteralString = """
SELECT state, count(*) FROM openhands_batch_jobs WHERE batch_name = %(batch)s GROUP BY state
"""

# What keeps a worker of this account from being done: pending jobs (anyone's to claim),
# and this account's jobs other workers hold (adopted here if their lease lapses).
REMAINING: LiteralString = """
SELECT count(*) FILTER (WHERE state = 'pending'),
       count(*) FILTER (WHERE state IN ('starting', 'running') AND account = %(account)s
                        AND worker IS DISTINCT FROM %(worker)s),
       extract(epoch FROM min(lease_until - now()) FILTER (
           WHERE state IN ('starting', 'running') AND account = %(account)s
             AND worker IS DISTINCT FROM %(worker)s))::float8
  FROM openhands_batch_jobs WHERE batch_name = %(batch)s
"""

STATUS_WORKERS: LiteralString = """
SELECT w.worker, w.account, w.host, w.pid, w.max_running,
       extract(epoch FROM w.started_at)::float8, extract(epoch FROM w.seen_at)::float8,
       extract(epoch FROM w.stopped_at)::float8,
       extract(epoch FROM now() - w.seen_at)::float8
  FROM openhands_batch_workers AS w WHERE w.batch_name = %(batch)s ORDER BY w.started_at
"""

STATUS_JOBS: LiteralString = """
SELECT worker, state, count(*) FROM openhands_batch_jobs WHERE batch_name = %(batch)s
 GROUP BY worker, state
"""
