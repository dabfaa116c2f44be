"""A database migrated once per test process and copied for each test (migrating anew takes ~1 s)."""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

from sqlalchemy.engine import make_url

from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade

__all__ = ["copy_migrated_database"]


@cache
def _template() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mko-test-template-")) / "mko.platform.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


def copy_migrated_database(database_url: str) -> None:
    """Put a database already at head where ``database_url`` points."""
    target = Path(str(make_url(database_url).database))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), target)
