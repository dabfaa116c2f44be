"""One UPS monitor per database: the lock file is named for the database, not for its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from mko.platform.errors import MonitorLockedError
from mko.platform.settings import Settings
from mko.ups.monitor import _Lock, lock_file_path


def _lock_of(url: str) -> Path:
    return lock_file_path(Settings(database_url=url, ups_monitor_lock_file=None))


def test_two_databases_in_one_directory_get_a_monitor_each(tmp_path: Path) -> None:
    first, second = _lock_of(f"sqlite:///{tmp_path}/a.db"), _lock_of(f"sqlite:///{tmp_path}/b.db")
    assert first == tmp_path / "a.db.ups-monitor.lock"
    assert second == tmp_path / "b.db.ups-monitor.lock"
    held = [_Lock(first), _Lock(second)]
    for lock in held:
        lock.acquire()  # neither refuses the other
    for lock in held:
        lock.release()


def test_one_database_spelled_two_ways_shares_one_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative, absolute = _lock_of("sqlite:///data/mko.db"), _lock_of(f"sqlite:///{tmp_path}/data/mko.db")
    assert relative == absolute
    holder = _Lock(relative)
    holder.acquire()
    try:
        with pytest.raises(MonitorLockedError, match="already runs the rules of this database"):
            _Lock(absolute).acquire()
    finally:
        holder.release()
    successor = _Lock(absolute)
    successor.acquire()  # free again once the first monitor is gone
    successor.release()


def test_postgresql_lock_is_named_for_the_database_not_its_password() -> None:
    base = "postgresql+psycopg://mko:{}@db.example:5432/{}"
    one = _lock_of(base.format("secret", "mko"))
    assert one == _lock_of(base.format("other-secret", "mko"))
    assert one == _lock_of("postgresql://mko:secret@db.example:5432/mko")
    assert one != _lock_of(base.format("secret", "mko_staging"))
    assert one.parent == Path("data") and "secret" not in one.name


def test_a_configured_lock_file_wins(tmp_path: Path) -> None:
    chosen = tmp_path / "my.lock"
    settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db", ups_monitor_lock_file=chosen)
    assert lock_file_path(settings) == chosen
