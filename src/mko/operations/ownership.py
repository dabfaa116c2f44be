"""Who runs an operation, whether that process still lives, and closing what dead processes left open.

Every operation records its **owner**, the process carrying it out (a CLI command, ``mko serve``,
``mko ups monitor``), in four columns of ``operations``:

* ``owner_host``: the host name, for people;
* ``owner_pid``: the process id;
* ``owner_start``: ``<start ticks>@<pid space>``: the process's start time in clock ticks since boot
  (``/proc/PID/stat`` field 22) and the space its pid means something in (the kernel's boot id and the
  pid namespace). A pid reused by another process has another start time; a rebooted host has another
  boot id;
* ``heartbeat_at``: refreshed every ``operation_heartbeat_interval`` seconds while the operation is open.

``operations.instance`` still names the serve instance under high availability (mko.ha).

An open (pending or running) operation is **orphaned** only when its owner is really gone:

* same pid space as the process asking (the same machine and pid namespace): that pid with that start
  time no longer runs (or is a zombie). This answer is exact and immediate;
* another pid space (another host, another container, or this host before a reboot): its heartbeat is
  older than ``operation_owner_timeout``;
* no owner recorded (rows written before owners were): silent, by heartbeat or start, for that long.

:func:`close_orphaned` closes them: a rule execution still waiting its delay as cancelled, anything else
as failed, "interrupted: owner pid 1234 on host X gone since …". Each close is a conditional UPDATE, so
two processes cleaning at once, or an owner finishing at that moment, never clash. Under high
availability (PostgreSQL) the operations of serve instances are left to mko.ha.failover, which resumes a
wake and never repeats a shutdown.

The heartbeat is one UPDATE per process per interval, whatever the number of operations it runs, made
by a daemon thread (:func:`keep_alive`) so it goes on while the event loop is busy and covers every kind
of operation without each runner taking part; it ends once the process owns no open operation.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from mko.operations.kinds import RULE_OPERATION_KIND
from mko.platform.db.models.agents import WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.session import make_engine
from mko.platform.settings import Settings

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_OWNER_TIMEOUT",
    "OPEN",
    "Orphan",
    "ProcessIdentity",
    "close_orphaned",
    "configure",
    "keep_alive",
    "owner_gone",
    "process_start",
    "stamp",
    "this_process",
]

log = logging.getLogger("mko.ownership")

OPEN = (OperationStatus.PENDING, OperationStatus.RUNNING)
# Ten seconds keeps the write load negligible (one UPDATE per process, even for 1,000 open
# operations) while a dead owner on another host is noticed within a minute: six missed beats absorb
# a busy SQLite file or a short database failover before anything is declared gone. Owners on this
# host are checked by pid and start time, so their death is noticed at once whatever these are.
DEFAULT_HEARTBEAT_INTERVAL = 10.0
DEFAULT_OWNER_TIMEOUT = 60.0

_timing = {"interval": DEFAULT_HEARTBEAT_INTERVAL, "timeout": DEFAULT_OWNER_TIMEOUT}


def configure(settings: Settings) -> None:
    """Take this process's heartbeat period and owner timeout from ``settings`` (the wiring points do)."""
    _timing["interval"] = settings.operation_heartbeat_interval
    _timing["timeout"] = settings.operation_owner_timeout


# ------------------------------------------------------------------------------------ identity


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as operations record it: host name, pid, and ``<start ticks>@<pid space>``."""

    host: str
    pid: int
    start: str | None  # None where /proc cannot tell (then only the heartbeat says it is alive)

    @property
    def space(self) -> str | None:
        """Where the pid means something: ``<boot id>/<pid namespace>``."""
        return _space_of(self.start)

    def describe(self) -> str:
        """``pid 1234 on host X``."""
        return f"pid {self.pid} on host {self.host}"


def _space_of(start: str | None) -> str | None:
    if not start or "@" not in start:
        return None
    return start.partition("@")[2] or None


@cache
def _pid_space() -> str | None:
    # NOTE: two containers of one host share the boot id but not the pid namespace; both are needed.
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}/{namespace}"


def process_start(pid: int) -> str | None:
    """The start time of a live process in clock ticks since boot; None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None  # a zombie is dead: it only waits for its parent to read its exit status
    return fields[19]  # field 22, starttime


_me: dict[int, ProcessIdentity] = {}


def this_process() -> ProcessIdentity:
    """The identity of the running process (recomputed after a fork)."""
    pid = os.getpid()
    found = _me.get(pid)
    if found is None:
        space, ticks = _pid_space(), process_start(pid)
        start = f"{ticks}@{space}" if space is not None and ticks is not None else None
        found = _me[pid] = ProcessIdentity(socket.gethostname(), pid, start)
    return found


def stamp(operation: Operation) -> None:
    """Record this process as the owner of ``operation``, with a first heartbeat now.

    Call :func:`keep_alive` once the operation is committed, so its heartbeat goes on.
    """
    me = this_process()
    operation.owner_host, operation.owner_pid, operation.owner_start = me.host, me.pid, me.start
    operation.heartbeat_at = utcnow()


def _owner_of(operation: Operation) -> ProcessIdentity | None:
    if operation.owner_pid is None:
        return None
    return ProcessIdentity(operation.owner_host or "?", operation.owner_pid, operation.owner_start)


def owner_gone(
    operation: Operation,
    *,
    now: datetime | None = None,
    timeout: float | None = None,
    me: ProcessIdentity | None = None,
) -> str | None:
    """Why the owner of an open operation is gone ("owner pid 1234 on host X gone since …"), or None."""
    now = now or utcnow()
    timeout = _timing["timeout"] if timeout is None else timeout
    me = me or this_process()
    owner = _owner_of(operation)
    last_seen = operation.heartbeat_at or operation.started_at or operation.created_at or now
    since = last_seen.isoformat(timespec="seconds")
    silent = (now - last_seen).total_seconds()
    if owner is None:
        if silent <= timeout:
            return None
        return f"owner unknown (recorded before owners were), silent since {since}"
    if owner.space is not None and owner.space == me.space:
        ticks = owner.start.partition("@")[0] if owner.start else None
        if process_start(owner.pid) == ticks:
            return None
        return f"owner {owner.describe()} gone since {since}"
    if silent <= timeout:
        return None
    return f"owner {owner.describe()} gone since {since} (no heartbeat for {silent:.0f} s)"


# ------------------------------------------------------------------------------------ closing


@dataclass(frozen=True)
class Orphan:
    """An operation closed because its owner was gone."""

    operation_id: int
    kind: str
    target_type: str
    target_id: int | None
    status: OperationStatus  # what it was closed as: failed, or cancelled for a rule still waiting
    reason: str  # "owner pid 1234 on host X gone since …"
    summary: str  # the operation's summary now


def close_orphaned(
    session: Session,
    *,
    now: datetime | None = None,
    timeout: float | None = None,
    me: ProcessIdentity | None = None,
) -> list[Orphan]:
    """Close every open operation whose owner is gone (see the module docstring); what was closed.

    With PostgreSQL the operations of serve instances are skipped: mko.ha.failover takes those over.
    """
    now = now or utcnow()
    query = select(Operation).where(Operation.status.in_(OPEN)).order_by(Operation.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.where(Operation.instance.is_(None))
    closed = []
    for operation in session.scalars(query).all():
        reason = owner_gone(operation, now=now, timeout=timeout, me=me)
        if reason is not None and (orphan := _close(session, operation, reason, now)) is not None:
            closed.append(orphan)
    if closed:
        session.commit()  # one transaction for all: a start after a crash may find many
        for orphan in closed:
            log.warning("operation %s (%s) %s", orphan.operation_id, orphan.kind, orphan.summary)
    return closed


def _close(session: Session, operation: Operation, reason: str, now: datetime) -> Orphan | None:
    """Close one orphan in the session's transaction (the caller commits); None if it changed meanwhile."""
    waiting = operation.kind == RULE_OPERATION_KIND and operation.status == OperationStatus.PENDING
    status = OperationStatus.CANCELLED if waiting else OperationStatus.FAILED
    summary = f"cancelled before the delay ended: {reason}" if waiting else f"interrupted: {reason}"
    owner = _owner_of(operation)
    interrupted: dict[str, Any] = {
        "reason": reason,
        "owner": None if owner is None else {"host": owner.host, "pid": owner.pid, "start": owner.start},
        "last_heartbeat": operation.heartbeat_at.isoformat() if operation.heartbeat_at else None,
        "closed_by": this_process().describe(),
        "closed_at": now.isoformat(),
    }
    # Only if nobody (the owner, a failover, another cleaner) changed it since it was read.
    result = session.execute(
        update(Operation)
        .where(
            Operation.id == operation.id,
            Operation.status == operation.status,
            _same(Operation.owner_pid, operation.owner_pid),
            _same(Operation.owner_start, operation.owner_start),
            _same(Operation.instance, operation.instance),
        )
        .values(
            status=status,
            summary=summary,
            finished_at=now,
            result={**(operation.result or {}), "interrupted": interrupted},
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None  # changed meanwhile: nothing was written for it
    session.execute(
        update(OperationStep)
        .where(OperationStep.operation_id == operation.id, OperationStep.status.in_(OPEN))
        .values(status=status, finished_at=now, message=summary)
        .execution_options(synchronize_session=False)
    )
    # Wake jobs queued for agents: no agent starts them now, and a late report is refused.
    session.execute(
        update(WakeJob)
        .where(
            WakeJob.operation_id == operation.id,
            WakeJob.status.in_([WakeJobStatus.QUEUED, WakeJobStatus.CLAIMED]),
        )
        .values(status=WakeJobStatus.FAILED, error=summary, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    orphan = Orphan(
        operation.id, operation.kind, operation.target_type, operation.target_id, status, reason, summary
    )
    session.expire(operation)  # its row changed behind the ORM's back
    return orphan


def _same(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


# ------------------------------------------------------------------------------------ heartbeat


class _Heartbeat:
    """Refreshes ``heartbeat_at`` of the open operations this process owns in one database.

    It connects through an engine of its own, without a pool (a connection per beat, closed after it),
    never through the engine of the code that started the operation: that engine's owner disposes of it
    when done (a CLI command's first engine, a server shutting down, a test), while the beat goes on
    until no operation is open; a disposed engine silently opens a new pool at its next use, and that
    pool's connection would then stay open with nobody left to close it.
    """

    def __init__(self, engine: Engine, key: str) -> None:
        self.url = engine.url
        self.key = key
        self.generation = 0  # bumped by keep_alive(): a new operation may be open, keep beating
        self.thread = threading.Thread(target=self._run, name="mko-operation-heartbeat", daemon=True)

    def _beat(self, engine: Engine) -> int:
        me = this_process()
        with engine.begin() as connection:
            result = connection.execute(
                update(Operation)
                .where(
                    Operation.status.in_(OPEN),
                    Operation.owner_pid == me.pid,
                    Operation.owner_host == me.host,
                    _same(Operation.owner_start, me.start),
                )
                .values(heartbeat_at=utcnow())
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def _run(self) -> None:
        engine = make_engine(self.url.render_as_string(hide_password=False), pooled=False)
        try:
            self._beat_until_nothing_is_open(engine)
        finally:
            engine.dispose()

    def _beat_until_nothing_is_open(self, engine: Engine) -> None:
        failing_since: float | None = None
        while True:
            with _lock:
                seen = self.generation
            time.sleep(_timing["interval"])
            try:
                owned = self._beat(engine)
                failing_since = None
            except Exception as exc:  # the database is away: try again, for as long as a remote owner waits
                # Once per outage: a database down for minutes must not fill the log.
                log.log(
                    logging.DEBUG if failing_since else logging.WARNING, "operation heartbeat failed: %s", exc
                )
                failing_since = failing_since or time.monotonic()
                owned = 0 if time.monotonic() - failing_since > _timing["timeout"] else -1
            with _lock:
                if owned == 0 and self.generation == seen:
                    # Nothing open is ours, and nothing was started since this beat began: done.
                    del _beats[self.key]
                    return


_lock = threading.Lock()
_beats: dict[str, _Heartbeat] = {}


def keep_alive(session: Session) -> None:
    """Make sure a heartbeat runs for the operations this process owns in the session's database."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    # One thread per database: a CLI command that opens a second engine on it shares the first's beat.
    key = f"{os.getpid()}:{engine.url.render_as_string(hide_password=True)}"
    with _lock:
        beat = _beats.get(key)
        if beat is not None:
            beat.generation += 1
            return
        beat = _beats[key] = _Heartbeat(engine, key)
    beat.thread.start()
