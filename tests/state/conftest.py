"""Fixtures of the state backend tests: one real PostgreSQL for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.state.pgserver import PgServer, available


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server on a free loopback port, stopped and deleted at the end."""
    if not available():
        pytest.skip("PostgreSQL is not installed (make test-deps installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database of this test alone; the server is running again afterwards."""
    yield pg_server.create_database()
    pg_server.start()  # a test that stopped it leaves it usable for the next ones
