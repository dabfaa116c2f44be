"""The LISTEN connection that wakes waiting agent claims on a REAL PostgreSQL: it rings on a NOTIFY, and
it is closed when its engine is disposed of (it is detached from the pool, so nothing else closes it)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from mko.agents.doorbell import NOTIFY_CHANNEL, _listen_for_jobs, jobs_queued
from mko.platform.db.session import make_engine, make_session_factory


def _listening(observer: Engine) -> int:
    with observer.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query = :listen"
                ),
                {"listen": f"LISTEN {NOTIFY_CHANNEL}"},
            ).scalar_one()
        )


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_jobs_listener_rings_and_ends_with_its_engine(pg_url: str) -> None:
    engine, observer = make_engine(pg_url), make_engine(pg_url)
    try:
        _listen_for_jobs(make_session_factory(engine))
        _listen_for_jobs(make_session_factory(engine))  # one listener per engine, however often asked
        _wait_for(lambda: _listening(observer) == 1, "the LISTEN connection")

        rung = threading.Event()

        def waiter() -> None:
            async def wait() -> None:
                await jobs_queued.wait(60)
                rung.set()

            asyncio.run(wait())

        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        with observer.begin() as connection:  # a job queued by another process
            connection.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        _wait_for(rung.is_set, "the doorbell")  # long before the waiter's own 60 s
        thread.join()

        engine.dispose()
        _wait_for(lambda: _listening(observer) == 0, "the LISTEN connection to be closed")
    finally:
        engine.dispose()
        observer.dispose()
