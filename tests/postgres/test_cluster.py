"""The test cluster itself: a real server answering on loopback, as a non-root user."""

from __future__ import annotations


def test_cluster_answers_on_loopback(pg_dsn: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'), version()").fetchone()
    assert row is not None
    assert row[0] == "127.0.0.1"
    assert row[1].startswith("PostgreSQL")
