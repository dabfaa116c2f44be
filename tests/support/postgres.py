"""PostgreSQL fixtures: one throwaway server per test process, a fresh database per test.

``postgres``  a :class:`mko.lab.postgres.PostgresServer` of this test process (each pytest-xdist worker
              starts its own: a private directory and Unix socket, no TCP port), stopped at the end.
``pg_url``    the URL of a new database at head: a copy (``CREATE DATABASE … TEMPLATE``) of one migrated
              once per process, since migrating anew takes seconds.

Both fail, never skip, when PostgreSQL is not installed (``make test-system-deps`` installs it).
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator

import pytest

from mko.lab.postgres import PostgresServer
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade

__all__: list[str] = []

_databases = itertools.count()
_TEMPLATE = "mko_at_head"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test process (fails, never skips, when PostgreSQL is missing)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def _migrated_template(postgres: PostgresServer) -> str:
    engine = make_engine(postgres.create_database(_TEMPLATE))
    upgrade(engine)
    engine.dispose()  # a template must have no connections when it is copied
    return _TEMPLATE


@pytest.fixture
def pg_url(postgres: PostgresServer, _migrated_template: str) -> Iterator[str]:
    """A new database at head."""
    yield postgres.create_database(f"test_{next(_databases)}", template=_migrated_template)
    # A connection the test left open is reported now, against this test, rather than whenever the
    # garbage collector happens to meet it during some later test of this worker.
    gc.collect()
