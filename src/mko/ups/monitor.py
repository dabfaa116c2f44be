"""The UPS monitor: the one coordinator that talks to upsd, detects events, stores them, runs rules.

One task per UPS keeps a persistent NUT connection and reads ``LIST VAR`` every
``ups_poll_interval`` seconds (1 s by default, on a fixed cadence). Each reading or failure goes to that
UPS's :class:`~mko.ups.events.EventDetector`; the events it returns are stored (``ups_events``) and
handed, in order, to the monitor's :class:`EventSink`: the rule engine (``mko.rules.engine``), which
``mko.wiring`` plugs in (a monitor built without a sink stores and notifies events, and runs no rule).
Everything else (API status, web tiles) reads the monitor's state instead of opening its own
connections.

A broken connection is retried at once on a fresh socket; after that, attempts back off exponentially
from the poll interval up to ``ups_reconnect_max``. ``ERR DRIVER-NOT-CONNECTED`` / ``DATA-STALE`` are
answers from a reachable upsd, so they are polled at the normal cadence (and count towards comm_lost).

The UPS list and the low-battery thresholds of the rules are re-read every ``ups_reload_interval``
seconds (and at once when the API changes them), so ``mko ups add`` in another process is picked up.
Only one monitor may run rules for a database on a host: a lock file named for the database
(``<database file>.ups-monitor.lock``) keeps a
second ``mko ups monitor`` (or ``mko serve``) from executing every rule twice.

The detector's state is **persisted** per UPS (``ups_state``, written with a compare-and-set on its
version, in the transaction that stores the events it caused), with one instance as with several. A
monitor that starts carries on from that state instead of taking a fresh baseline, so a power cut or a
return of mains while mko was down is still an event ("mains returned while mko was down (last seen
OB DISCHRG at …)"). At the first reading of each UPS it also compares the UPS with the open outages
(mko.ups.outages): mains on with a cluster down for this UPS gives one ``power_restored`` (the restore
runs once); on battery with a shutdown left unfinished, the event that started it is repeated. Such
start-up events concern only the clusters of the open outages: a plain restart on mains with nothing
down sends no packet and starts no operation.

With high availability (``ha=True``: PostgreSQL, only on the elected leader, see mko.ha) the leader
election replaces the lock file, and events stored but not yet handed to the rules are handed over at
start; the rule engine claims each event atomically, so it is acted on once.

A good NUT citizen: with a user and password, each connection LOGINs to its UPS as a secondary
monitor, so a NUT primary on the UPS's host waits for mko (HOSTSYNC) before cutting the power; the
login is released once a forced shutdown (FSD) has nothing left for mko to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mko.operations.identity import current_instance
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.ha import UpsState
from mko.platform.db.models.outages import OutagePhase
from mko.platform.db.models.ups import UPS, PowerEvent, UpsEvent
from mko.platform.db.session import in_thread_session
from mko.platform.errors import (
    MonitorLockedError,
    NutConnectionError,
    NutError,
    NutResponseError,
)
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings
from mko.ups import outages
from mko.ups.events import CommFailure, DetectedEvent, EventDetector, last_seen
from mko.ups.nut import NutClient
from mko.ups.service import UpsTarget, list_ups, record_events, status_of, target_of
from mko.ups.status import PowerSource, UpsReading

__all__ = ["EventSink", "NullSink", "Thresholds", "UpsMonitor", "lock_file_path", "start_monitor"]

log = logging.getLogger("mko.ups.monitor")

CHARGE_SAMPLE_SECONDS = 30.0  # the charge sparkline: 120 samples an hour

LOCK_FILE_NAME = "ups-monitor.lock"
EventHook = Callable[[UpsTarget, UpsEvent], None]


def lock_file_path(settings: Settings) -> Path:
    """The configured lock file, else one named for the database: ``<file>.ups-monitor.lock`` beside a
    SQLite database, ``data/ups-monitor-<digest of the URL without password>.lock`` for another.

    Named for the database, not its directory: two databases in one directory get a monitor each, and
    two spellings of one SQLite path (relative, absolute) share one lock.
    """
    if settings.ups_monitor_lock_file is not None:
        return settings.ups_monitor_lock_file
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(str(url.database)).resolve()
        return database.with_name(f"{database.name}.{LOCK_FILE_NAME}")
    identity = url.set(password=None, drivername=url.get_backend_name()).render_as_string()
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Path("data") / f"{Path(LOCK_FILE_NAME).stem}-{digest}.lock"


@dataclass(frozen=True)
class Thresholds:
    """What the event detectors watch for the sink, per UPS id."""

    low_battery: dict[int, set[int]]  # battery percentages that raise low_battery
    runtime_needs: dict[int, dict[int, float]]  # per cluster id: seconds of runtime its shutdown needs


class EventSink(Protocol):
    """Where the monitor hands the events it stored, in order (the rule engine, wired by mko.wiring)."""

    def recover(self) -> int:
        """Close what a previous run of this process left waiting or running; how many."""
        ...

    async def handle(self, event: UpsEvent, ups_name: str) -> object:
        """Act on one stored event."""
        ...

    async def close(self, *, handover: bool = False) -> None:
        """Stop; ``handover``: leave open executions to the next leader."""
        ...

    def shutting_down(self, ups_id: int) -> bool:
        """Whether a shutdown for this UPS's clusters is still waiting or running."""
        ...

    def pending(self) -> list[dict[str, Any]]:
        """What the sink is waiting for or running now (``GET /api/ups/monitor``)."""
        ...

    def thresholds(self, session: Session) -> Thresholds:
        """The levels the detectors must watch for this sink."""
        ...


class NullSink:
    """A sink that acts on nothing: events are stored and notified, no rule runs."""

    def recover(self) -> int:
        """Nothing to close."""
        return 0

    async def handle(self, event: UpsEvent, ups_name: str) -> None:
        """Ignore the event."""

    async def close(self, *, handover: bool = False) -> None:
        """Nothing to stop."""

    def shutting_down(self, ups_id: int) -> bool:
        """Never."""
        return False

    def pending(self) -> list[dict[str, Any]]:
        """Nothing."""
        return []

    def thresholds(self, session: Session) -> Thresholds:
        """No levels beyond the detector's own."""
        return Thresholds({}, {})


class _Lock:
    """An exclusive, non-blocking flock held for the monitor's lifetime; released when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise MonitorLockedError(
                f"another UPS monitor (pid {holder}) already runs the rules of this database"
                f" (lock {self.path}); stop it first, or set MKO_UPS_MONITOR_ENABLED=false for `mko serve`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


@dataclass
class _Watch:
    """The monitor's state for one UPS."""

    target: UpsTarget
    detector: EventDetector
    client: NutClient
    task: asyncio.Task[None] | None = None
    last_attempt: datetime | None = None
    reads: int = 0
    version: int | None = None  # of the persisted ups_state row; None: no row yet
    persisted: dict[str, Any] | None = None  # what that row holds, minus the time stamp
    resumed: UpsReading | None = None  # the persisted reading this watch carried on from
    checked: bool = False  # the first reading was compared with the open outages
    # The battery charge over the last hour, one sample every CHARGE_SAMPLE_SECONDS (the dashboard's
    # sparkline); kept in memory only: a restarted mko starts a new line.
    charges: deque[tuple[datetime, float]] = field(default_factory=deque)

    def sample_charge(self, reading: UpsReading) -> None:
        """Keep ``reading``'s charge when the last sample is old enough; forget samples over an hour."""
        if reading.charge is None:
            return
        if self.charges and (reading.at - self.charges[-1][0]).total_seconds() < CHARGE_SAMPLE_SECONDS:
            return
        self.charges.append((reading.at, reading.charge))
        while (reading.at - self.charges[0][0]).total_seconds() > 3600:
            self.charges.popleft()


class UpsMonitor:
    """Watches every UPS of the inventory and runs the power rules; start() / stop(), or run_forever()."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        sink: EventSink | None = None,
        on_event: EventHook | None = None,
        ha: bool = False,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.ha = ha
        self.sink: EventSink = sink or NullSink()
        self.on_event = on_event
        self.powerdown: dict[str, Any] | None = None  # the marker a power-down of mko's host left
        self._watches: dict[int, _Watch] = {}
        self._lock = _Lock(lock_file_path(settings))
        self._reload = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._started = False
        self._notifier: EventHook | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Take the lock, close executions a previous run left open, and start watching every UPS."""
        if self._started:
            return
        if not self.ha:
            self._lock.acquire()
        try:
            self.powerdown = outages.take_marker(self.settings)
            if self.ha:
                # Events a previous leader stored but did not hand over yet (claimed atomically).
                await self._replay_unhandled()
            else:
                self.sink.recover()
                self._skip_unhandled()
            await self.reload()
        except BaseException:
            self._lock.release()
            raise
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._supervisor = asyncio.create_task(self._supervise(), name="mko-ups-monitor")
        log.info(
            "UPS monitor started: %d UPS(es), poll every %gs",
            len(self._watches),
            self.settings.ups_poll_interval,
        )

    async def stop(self, *, handover: bool = False) -> None:
        """Stop watching, cancel waiting and running rule executions, close connections, drop the lock.

        ``handover``: leadership was lost; executions are left open for the next leader (RuleEngine.close).
        """
        if not self._started:
            return
        self._started = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for ups_id in list(self._watches):
            await self._drop(ups_id)
        await self.sink.close(handover=handover)
        self._lock.release()
        log.info("UPS monitor stopped")

    async def run_forever(self) -> None:
        """Start, then run until cancelled (Ctrl-C), then stop."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def request_reload(self) -> None:
        """Re-read the UPS list and rule thresholds now (after the API changed them); any thread."""
        # API routes run in worker threads; an asyncio.Event may only be set from its loop's thread.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._reload.set)

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._started

    # -------------------------------------------------------------- state for readers

    def watched(self) -> list[int]:
        """Ids of the UPSes being watched."""
        return sorted(self._watches)

    def latest_reading(self, ups_id: int) -> UpsReading | None:
        """The last good reading of a watched UPS (None when not watched or never read)."""
        watch = self._watches.get(ups_id)
        return watch.detector.last_reading if watch is not None else None

    def charge_history(self, ups_id: int) -> list[tuple[datetime, float]]:
        """The battery charge of the last hour, oldest first (empty when not watched)."""
        watch = self._watches.get(ups_id)
        return list(watch.charges) if watch is not None else []

    def snapshot(self, ups_id: int) -> dict[str, Any] | None:
        """The monitor's view of one UPS (None when it is not watched or not read yet)."""
        watch = self._watches.get(ups_id)
        if watch is None or watch.last_attempt is None:
            return None
        detector = watch.detector
        error = detector.last_error if detector.failures else None
        return status_of(
            watch.target,
            detector.last_reading,
            error,
            source="monitor",
            comm=detector.comm.value,
            consecutive_failures=detector.failures,
            last_attempt=watch.last_attempt.isoformat(),
            power_source=detector.source,
            logged_in=watch.client.logged_in,
            login_error=watch.client.login_error,
        )

    # -------------------------------------------------------------- internals

    async def _supervise(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow stop()'s cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.ups_reload_interval):
                    await self._reload.wait()
            self._reload.clear()
            try:
                await self.reload()
            except Exception:  # the database may be briefly unavailable; try again next time
                log.exception("could not re-read the UPS list")

    async def reload(self) -> None:
        """Start watching new UPSes, stop removed ones, restart changed ones, refresh thresholds."""

        def read(
            session: Session,
        ) -> tuple[dict[int, UpsTarget], dict[int, set[int]], dict[int, dict[int, float]]]:
            rows = list_ups(session)
            levels = self.sink.thresholds(session)
            box = SecretBox.from_settings(self.settings) if any(r.password_encrypted for r in rows) else None
            return {row.id: target_of(row, box) for row in rows}, levels.low_battery, levels.runtime_needs

        # In a worker thread: the monitor shares the server's event loop with requests.
        targets, thresholds, needs = await in_thread_session(self.session_factory, read)
        for ups_id, watch in list(self._watches.items()):
            if targets.get(ups_id) != watch.target:
                await self._drop(ups_id)
        for ups_id, target in targets.items():
            if ups_id not in self._watches:
                await self._add(target)
            self._watches[ups_id].detector.set_thresholds(thresholds.get(ups_id, ()))
            self._watches[ups_id].detector.set_runtime_needs(needs.get(ups_id, {}))

    async def _add(self, target: UpsTarget) -> None:
        if target.password_error:
            log.error("UPS %s: %s; reading it without logging in", target.name, target.password_error)
        settings = self.settings
        client = target.client(settings.ups_timeout)
        client.login_ups = target.ups_name if client.username and target.password else None
        watch = _Watch(
            target=target,
            detector=EventDetector(comm_lost_after=settings.ups_comm_lost_after),
            client=client,
        )
        await anyio.to_thread.run_sync(self._restore, watch)
        watch.task = asyncio.create_task(self._watch(watch), name=f"mko-ups-{target.id}")
        self._watches[target.id] = watch
        log.info("watching UPS %s (%s@%s:%s)", target.name, target.ups_name, target.host, target.port)

    async def _drop(self, ups_id: int) -> None:
        watch = self._watches.pop(ups_id)
        if watch.task is not None:
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)
        await watch.client.logout()

    async def _watch(self, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        period = self.settings.ups_poll_interval
        next_at = loop.time()
        connection_failures = 0
        while True:
            try:
                reading, error, unreachable = await self._read(watch)
                watch.last_attempt = utcnow()
                watch.reads += 1
                if reading is not None:
                    watch.sample_charge(reading)
                    detected = watch.detector.observe(reading)
                    if not watch.checked and watch.detector.last_reading is reading:
                        watch.checked = True
                        detected = await anyio.to_thread.run_sync(self._at_start, watch, reading, detected)
                else:
                    detected = watch.detector.failed(CommFailure(utcnow(), error or "no reading"))
                    log.debug("UPS %s: %s", watch.target.name, error)
                # In a worker thread, like every database read and write of the monitor.
                rows = await anyio.to_thread.run_sync(self._persist, watch, detected)
                if rows:
                    await self._handle(watch, rows)
                if reading is not None:
                    await self._mind_login(watch, reading)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad poll stop the watch of a UPS
                log.exception("UPS %s: poll failed", watch.target.name)
                unreachable = False
            connection_failures = connection_failures + 1 if unreachable else 0
            now = loop.time()
            if connection_failures:
                pause = min(period * 2 ** (connection_failures - 1), self.settings.ups_reconnect_max)
                next_at = now + pause
            else:
                next_at += period
                if next_at < now:  # fell behind (slow server, busy loop): keep the cadence from now
                    next_at = now + period
            await asyncio.sleep(max(0.0, next_at - now))

    async def _read(self, watch: _Watch) -> tuple[UpsReading | None, str | None, bool]:
        """One read: (reading, None, False), or (None, why, whether upsd itself was unreachable)."""
        client, name = watch.client, watch.target.ups_name
        for attempt in (1, 2):
            was_connected = client.connected
            try:
                variables = await client.list_vars(name)
            except NutConnectionError as exc:
                if was_connected and attempt == 1:
                    continue  # a stale persistent connection: one immediate retry on a fresh one
                return None, str(exc), True
            except NutResponseError as exc:
                if exc.code == "UNKNOWN-UPS":
                    return (
                        None,
                        f"upsd at {client.address} has no UPS named {name!r} (ERR UNKNOWN-UPS)",
                        False,
                    )
                return None, f"upsd at {client.address}: ERR {exc.code}", False
            except NutError as exc:
                return None, str(exc), False
            return UpsReading.from_variables(variables, utcnow()), None, False
        return None, "unreachable", True  # pragma: no cover - the loop always returns

    def _at_start(
        self, watch: _Watch, reading: UpsReading, detected: list[DetectedEvent]
    ) -> list[DetectedEvent]:
        """The first reading since start, against the open outages of this UPS (module docstring)."""
        with self.session_factory() as session:
            open_ = outages.find_open(session, ups_id=watch.target.id)
            described = [(o.id, o.cluster_id, o.phase, o.event) for o in open_]
        # Mains that returned while mko was down restores what is down for this UPS, and nothing else
        # (a power cut that happened meanwhile is acted on as any other).
        returned = [
            d for d in detected if d.event == PowerEvent.POWER_RESTORED and d.detail.get("while_down")
        ]
        ids = [o for o, *_ in described]
        clusters = sorted({c for _, c, *_ in described})
        words = outages.marker_words(self.powerdown)
        detected = [
            replace(d, message=f"{d.message}; {words}") if words and d.detail.get("while_down") else d
            for d in detected
        ]
        detected = [
            _for_clusters(d, ids, clusters)
            if d.event == PowerEvent.POWER_RESTORED and d.detail.get("while_down")
            else d
            for d in detected
        ]
        if returned and not described:
            log.info("UPS %s: %s; no cluster is down for it", watch.target.name, returned[0].message)
        if not described or any(
            d.event in (PowerEvent.POWER_RESTORED, PowerEvent.POWER_LOSS) for d in detected
        ):
            return detected
        resumed = watch.resumed
        seen = f" ({last_seen(resumed)})" if resumed is not None else ""
        names = ", ".join(f"outage {o} of cluster {c} ({phase.value})" for o, c, phase, _ in described)
        if reading.source == PowerSource.MAINS:
            message = f"mko restarted with {names} open; the UPS is on mains{seen}"
            if words:
                message += f"; {words}"
            kind = PowerEvent.POWER_RESTORED
        elif reading.source == PowerSource.BATTERY:
            unfinished = [d for d in described if d[2] == OutagePhase.SHUTTING_DOWN]
            if not unfinished:
                return detected  # down for power and still on battery: waiting for mains, as before
            kind = outages.restart_event_kind(unfinished[0][3])
            ids = [o for o, *_ in unfinished]
            clusters = sorted({c for _, c, *_ in unfinished})
            message = f"mko restarted on battery during the shutdown of {names}: shutting down what is left"
        else:
            return detected
        event = DetectedEvent(
            kind,
            reading.at,
            resumed.status if resumed is not None else None,
            reading.status,
            reading.charge,
            message,
            {"while_down": True, "lb": True, "thresholds": sorted(watch.detector.thresholds)},
        )
        log.warning("UPS %s: %s", watch.target.name, message)
        return [*detected, _for_clusters(event, ids, clusters)]

    async def _mind_login(self, watch: _Watch, reading: UpsReading) -> None:
        """Keep the LOGIN while mko has a shutdown to do under FSD; release it after (HOSTSYNC)."""
        client = watch.client
        if client.login_ups is None:
            return
        if "FSD" in reading.tokens:
            if client.logged_in and not self.sink.shutting_down(watch.target.id):
                log.warning(
                    "UPS %s: FSD and nothing left to shut down: logging out of upsd", watch.target.name
                )
                await client.release_login()
        elif client.login_released:
            client.resume_login()

    async def _handle(self, watch: _Watch, rows: list[UpsEvent]) -> None:
        for row in rows:
            log.warning("UPS %s: %s — %s", watch.target.name, row.event.value, row.message)
            for hook in (self._notify_hook(), self.on_event):
                if hook is None:
                    continue
                try:
                    hook(watch.target, row)
                except Exception:  # a notification or hook must never stop the rules
                    log.exception("event hook failed")
            await self.sink.handle(row, watch.target.name)

    # -------------------------------------------------------------- persisted state

    def _restore(self, watch: _Watch) -> None:
        """Carry on from the state persisted before (by this mko before it stopped, or another leader)."""
        with self.session_factory() as session:
            row = session.get(UpsState, watch.target.id)
            if row is None:
                return
            watch.version = row.version
            watch.persisted = _comparable(row.state)
            watch.detector.restore(row.state)
            watch.resumed = watch.detector.last_reading
        log.info("UPS %s: carrying on from its persisted status %r", watch.target.name, row.status)

    def _persist(self, watch: _Watch, detected: list[DetectedEvent]) -> list[UpsEvent]:
        """Write the detector's state when it changed, with the events it caused, as one compare-and-set.

        Returns the stored events; none when another instance wrote the state first (it acts, not us).
        """
        detector = watch.detector
        state = detector.export_state()
        comparable = _comparable(state)
        if not detected and comparable == watch.persisted:
            return []
        if detector.last_reading is None and watch.version is None:
            return []  # nothing good read yet: there is no state worth keeping
        with self.session_factory() as session:
            values = {
                "status": detector.last_reading.status if detector.last_reading is not None else None,
                "state": state,
                "updated_at": utcnow(),
                "updated_by": current_instance(),
            }
            try:
                if watch.version is None:
                    session.add(UpsState(ups_id=watch.target.id, version=1, **values))
                    session.flush()
                    written = True
                else:
                    result = session.execute(
                        update(UpsState)
                        .where(UpsState.ups_id == watch.target.id, UpsState.version == watch.version)
                        .values(version=UpsState.version + 1, **values)
                    )
                    written = getattr(result, "rowcount", 0) == 1
            except IntegrityError:
                written = False
            if not written:
                session.rollback()
                log.warning(
                    "UPS %s: its state was written by another instance; not acting on %s",
                    watch.target.name,
                    [d.event.value for d in detected] or "the change",
                )
                watch.version, watch.persisted = None, None
                self._restore(watch)
                return []
            rows = record_events(session, watch.target.id, detected, commit=False)
            session.commit()
        watch.version = (watch.version or 0) + 1
        watch.persisted = comparable
        return rows

    async def _replay_unhandled(self) -> None:
        """Hand the rules the events a previous leader stored but did not act on, oldest first."""
        with self.session_factory() as session:
            names = {row.id: row.name for row in session.scalars(select(UPS))}
            pending = list(
                session.scalars(select(UpsEvent).where(UpsEvent.handled_at.is_(None)).order_by(UpsEvent.id))
            )
        for row in pending:
            log.warning("event %s (%s) was stored but not acted on yet: acting now", row.id, row.event.value)
            await self.sink.handle(row, names.get(row.ups_id, str(row.ups_id)))

    def _skip_unhandled(self) -> None:
        """Single instance: events left unhandled by a crash are not replayed after a restart (as before)."""
        with self.session_factory() as session:
            session.execute(
                update(UpsEvent)
                .where(UpsEvent.handled_at.is_(None))
                .values(handled_at=utcnow(), handled_by="not replayed: mko restarted")
            )
            session.commit()

    def _notify_hook(self) -> EventHook | None:
        """mko.notify's UPS-event notification, loaded on first use (apprise is slow to import)."""
        if self._notifier is None:
            try:
                from mko.notify.messages import ups_event_hook

                self._notifier = ups_event_hook(self.settings)
            except Exception:
                log.exception("UPS event notifications are unavailable")
                self._notifier = lambda _target, _event: None
        return self._notifier


def _comparable(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "at"}


def _for_clusters(event: DetectedEvent, outage_ids: list[int], clusters: list[int]) -> DetectedEvent:
    """A start-up event concerns the clusters of the open outages only (none: no rule acts on it)."""
    return replace(event, detail=event.detail | {"outages": outage_ids, "clusters": clusters})


async def start_monitor(monitor: UpsMonitor) -> UpsMonitor | None:
    """Start the monitor of `mko serve`: None when disabled by settings or when another one holds the lock.

    ``mko.wiring.Wiring.ups_monitor`` builds it, with the rule engine as its sink.
    """
    if not monitor.settings.ups_monitor_enabled:
        log.info("UPS monitor disabled (MKO_UPS_MONITOR_ENABLED=false)")
        return None
    try:
        await monitor.start()
    except MonitorLockedError as exc:
        log.warning("not monitoring UPSes in this process: %s", exc)
        return None
    return monitor
