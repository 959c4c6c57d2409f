"""A real PostgreSQL for the shared-journal tests: one cluster per session, a fresh
database per test. Skipped only when no server binaries are found (and then a failure
when OPENHANDS_REQUIRE_POSTGRES is set, as .ci/run does)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from .cluster import Cluster, find_bindir, postgres_required

_databases = itertools.count()


def _unavailable(reason: str) -> None:
    if postgres_required():
        pytest.fail(f"PostgreSQL is required here but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    bindir = find_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server binaries found (apt-get install postgresql)")
    assert bindir is not None
    with Cluster(bindir) as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(pg_cluster: Cluster) -> Iterator[str]:
    """The DSN of a database created for this test alone (dropped after it)."""
    import psycopg

    name = f"t{next(_databases)}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.dsn(name)
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
