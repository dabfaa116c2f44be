"""Edge-triggered power events from a stream of readings and failures of one UPS.

:class:`EventDetector` keeps the last KNOWN state of a UPS and emits an event only when that state
changes, never because a condition still holds on the next poll:

* ``power_loss`` / ``power_restored``: the power source changes mains → battery / battery → mains. The
  source is known only from a reading carrying OL or OB; a failed read, ``WAIT``, ``DATA-STALE`` or a
  status without either token leaves the last known source in place. So after a comm loss while on
  battery nothing but a real OL reading can produce ``power_restored`` (if mains came back while the
  link was down, it fires on the first reading after ``comm_restored``, and says so).
* ``low_battery``: for each threshold T of the UPS's rules, "low" means LB, or on battery with
  ``battery.charge`` < T. It fires when that becomes true; it re-arms when the UPS is back on mains or
  the charge is ≥ T + 3 (so 49/50/49 jitter does not fire twice). The LB token alone is the threshold
  ``None`` (rules without ``--battery-threshold``). One event carries every threshold it crossed.
* ``runtime_low``: for each cluster C whose rules react to it, "short" means on battery with
  ``battery.runtime`` below what C needs to shut down (:meth:`EventDetector.set_runtime_needs`: its last
  measured shutdown times a factor, plus a margin). It fires when that becomes true for any cluster (the
  event names them all) and re-arms on mains or once the runtime is 10 % above the need again.
* ``critical_battery`` when LB or FSD appears; ``ups_shutdown`` when FSD or OFF appears.
* ``comm_lost`` after ``comm_lost_after`` failed reads in a row (server unreachable, connection lost,
  ``ERR DRIVER-NOT-CONNECTED``, ``ERR DATA-STALE``, ``WAIT``); ``comm_restored`` on the next good read.
  A UPS not read once since mko started is ``comm_lost`` after ``never_read_after`` seconds (60), once.

The first good reading is the baseline: it emits nothing (a UPS found on battery by a monitor that
knows nothing of it does not look like a fresh power cut). Failures before any good reading emit
nothing either; they show as "unreachable" in the status. A monitor that carries on from a persisted
state (:meth:`EventDetector.restore`) compares the first reading with it instead, so a power cut or a
return of mains while mko was down is still an event, and says so ("while mko was down (last seen …)").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mko.platform.db.models.ups import PowerEvent
from mko.ups.status import PowerSource, UpsReading

__all__ = [
    "LOW_BATTERY_HYSTERESIS",
    "RUNTIME_HYSTERESIS",
    "CommFailure",
    "CommState",
    "DetectedEvent",
    "EventDetector",
    "last_seen",
]

LOW_BATTERY_HYSTERESIS = 3.0
RUNTIME_HYSTERESIS = 1.1  # runtime_low re-arms once the runtime is 10 % above the need again


class CommState(enum.StrEnum):
    """Whether the UPS can be read."""

    UNKNOWN = "unknown"  # no good reading yet (baseline not taken)
    OK = "ok"
    FAILING = "failing"  # reads fail, but fewer than comm_lost_after in a row
    LOST = "lost"  # comm_lost emitted


@dataclass(frozen=True)
class CommFailure:
    """A read that gave no usable status: why, and when."""

    at: datetime
    error: str


@dataclass(frozen=True)
class DetectedEvent:
    """A power event as detected, before it is stored."""

    event: PowerEvent
    at: datetime
    status_before: str | None
    status_after: str | None
    battery_charge: float | None
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def matches_threshold(self, threshold: int | None) -> bool:
        """Whether a low_battery rule with ``threshold`` (None: the LB token) is concerned."""
        if threshold is None:
            return bool(self.detail.get("lb"))
        return threshold in self.detail.get("thresholds", [])


class EventDetector:
    """The event state machine of ONE UPS; feed it with :meth:`observe` and :meth:`failed`."""

    def __init__(
        self, *, comm_lost_after: int = 2, thresholds: Iterable[int] = (), never_read_after: float = 60.0
    ) -> None:
        if comm_lost_after < 1:
            raise ValueError("comm_lost_after must be at least 1")
        self.comm_lost_after = comm_lost_after
        # A UPS never read since mko started gets this long (it may be starting with the machine) before
        # its silence is a comm_lost, said once: never 19 minutes of nothing in the log.
        self.never_read_after = never_read_after
        self._unread_since: datetime | None = None
        self.comm = CommState.UNKNOWN
        self.failures = 0
        self.last_error: str | None = None
        self.last_reading: UpsReading | None = None
        self.source: str = PowerSource.UNKNOWN  # last KNOWN source; survives failures and WAIT
        self._critical = False
        self._shutdown = False
        self._thresholds: set[int] = set(thresholds)
        self._armed: dict[int | None, bool] = {}
        self._needs: dict[int, float] = {}  # cluster id -> seconds of runtime its shutdown needs
        self._runtime_armed: dict[int, bool] = {}
        self._resumed: UpsReading | None = None  # the persisted reading carried on from (restore)

    @property
    def thresholds(self) -> frozenset[int]:
        """The low-battery thresholds watched."""
        return frozenset(self._thresholds)

    def set_thresholds(self, thresholds: Iterable[int]) -> None:
        """Watch these thresholds; a new one starts from the current state (no event for the past)."""
        self._thresholds = set(thresholds)
        for key in [k for k in self._armed if k is not None and k not in self._thresholds]:
            del self._armed[key]
        reading = self.last_reading
        for threshold in self._thresholds:
            if threshold not in self._armed and reading is not None:
                self._armed[threshold] = not self._is_low(reading, threshold)

    @property
    def runtime_needs(self) -> dict[int, float]:
        """Seconds of battery runtime each watched cluster needs to shut down."""
        return dict(self._needs)

    def set_runtime_needs(self, needs: dict[int, float]) -> None:
        """Watch these clusters' needs; a new one starts from the current state (no event for the past)."""
        self._needs = dict(needs)
        for key in [k for k in self._runtime_armed if k not in self._needs]:
            del self._runtime_armed[key]
        reading = self.last_reading
        for cluster_id, need in self._needs.items():
            if cluster_id not in self._runtime_armed and reading is not None:
                self._runtime_armed[cluster_id] = not self._is_short(reading, need)

    # ------------------------------------------------------------------ inputs

    def observe(self, reading: UpsReading) -> list[DetectedEvent]:
        """A good read; returns the events it causes, in order (comm, power, battery, shutdown)."""
        if not reading.tokens or "WAIT" in reading.tokens:
            # upsd has no status from the driver yet: as good as no reading.
            return self.failed(CommFailure(reading.at, f"no status yet (ups.status={reading.status!r})"))
        previous = self.last_reading
        before = previous.status if previous is not None else None
        was_lost = self.comm == CommState.LOST
        self.failures = 0
        self.last_error = None
        self.last_reading = reading
        if previous is None or self.comm == CommState.UNKNOWN:
            return self._first(reading, was_lost)
        self.comm = CommState.OK
        events: list[DetectedEvent] = []
        resumed, self._resumed = self._resumed, None
        down = f" while mko was down ({last_seen(resumed)})" if resumed is not None else ""

        def emit(event: PowerEvent, message: str, **detail: Any) -> None:
            events.append(
                DetectedEvent(event, reading.at, before, reading.status, reading.charge, message, detail)
            )

        if was_lost:
            emit(PowerEvent.COMM_RESTORED, f"communication restored; status {reading.status}")
        source = reading.source
        if source not in (PowerSource.UNKNOWN, self.source):
            late = " (seen when communication came back)" if was_lost and not down else ""
            extra: dict[str, Any] = {"after_comm_loss": was_lost}
            if resumed is not None:
                extra |= {
                    "while_down": True,
                    "last_seen": {"status": resumed.status, "at": resumed.at.isoformat()},
                }
            if self.source == PowerSource.MAINS and source == PowerSource.BATTERY:
                emit(PowerEvent.POWER_LOSS, f"on battery: mains power lost{down or late}", **extra)
            elif self.source == PowerSource.BATTERY and source == PowerSource.MAINS:
                what = f"mains returned{down}" if down else f"back on mains: power restored{late}"
                emit(PowerEvent.POWER_RESTORED, what, **extra)
            self.source = source
        crossed = self._crossed(reading)
        if crossed:
            numbers = sorted(t for t in crossed if t is not None)
            lb = None in crossed
            why = "LB (low battery) reported" if lb else f"charge {reading.charge:g}% below {numbers[0]}%"
            emit(PowerEvent.LOW_BATTERY, f"battery low: {why}", thresholds=numbers, lb=lb)
        short = self._runtime_crossed(reading)
        if short:
            needs = {str(c): round(self._needs[c], 1) for c in short}
            named = ", ".join(f"cluster {c} needs {self._needs[c]:.0f} s" for c in short)
            emit(
                PowerEvent.RUNTIME_LOW,
                f"battery runtime {reading.runtime:.0f} s will not last the shutdown: {named}",
                clusters=short,
                needs=needs,
                runtime=reading.runtime,
            )
        critical = bool({"LB", "FSD"} & reading.tokens)
        if critical and not self._critical:
            emit(
                PowerEvent.CRITICAL_BATTERY,
                "battery critical: " + " and ".join(sorted({"LB", "FSD"} & reading.tokens)),
            )
        self._critical = critical
        shutdown = bool({"FSD", "OFF"} & reading.tokens)
        if shutdown and not self._shutdown:
            emit(
                PowerEvent.UPS_SHUTDOWN,
                "UPS shutting down: " + " and ".join(sorted({"FSD", "OFF"} & reading.tokens)),
            )
        self._shutdown = shutdown
        return events

    def failed(self, failure: CommFailure) -> list[DetectedEvent]:
        """A read that failed; returns [comm_lost] when this failure crosses the limit."""
        self.failures += 1
        self.last_error = failure.error
        if self.comm == CommState.LOST:
            return []
        if self.comm == CommState.UNKNOWN:
            self._unread_since = self._unread_since or failure.at
            waited = (failure.at - self._unread_since).total_seconds()
            if waited < self.never_read_after:
                return []
            self.comm = CommState.LOST
            return [
                DetectedEvent(
                    PowerEvent.COMM_LOST,
                    failure.at,
                    None,
                    None,
                    None,
                    f"communication lost: not one reading in {waited:.0f} s since mko started:"
                    f" {failure.error}",
                    {"error": failure.error, "failures": self.failures, "never_read": True},
                )
            ]
        if self.failures < self.comm_lost_after:
            self.comm = CommState.FAILING
            return []
        self.comm = CommState.LOST
        before = self.last_reading.status if self.last_reading is not None else None
        charge = self.last_reading.charge if self.last_reading is not None else None
        return [
            DetectedEvent(
                PowerEvent.COMM_LOST,
                failure.at,
                before,
                None,
                charge,
                f"communication lost: {failure.error}",
                {"error": failure.error, "failures": self.failures, "last_source": self.source},
            )
        ]

    # ------------------------------------------------------------------ persistence (mko.ups.monitor)

    def export_state(self) -> dict[str, Any]:
        """The edge-detection state as JSON, so another process can carry on where this one stopped."""
        reading = self.last_reading
        return {
            "comm": self.comm.value,
            "source": self.source,
            "critical": self._critical,
            "shutdown": self._shutdown,
            "armed": {"lb" if k is None else str(k): v for k, v in sorted(self._armed.items(), key=str)},
            "runtime_armed": {str(k): v for k, v in sorted(self._runtime_armed.items())},
            "status": reading.status if reading is not None else None,
            # Only what the edges depend on: the charge (thresholds); voltages would rewrite it every poll.
            "variables": {
                k: v for k, v in (reading.variables if reading else {}).items() if k == "battery.charge"
            },
            "at": reading.at.isoformat() if reading is not None else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Carry on from an exported state: the next reading is compared with it, not taken as a baseline.

        A UPS that went on battery while no process watched it thus still gives ``power_loss``, and mains
        that returned while mko was down gives ``power_restored`` saying so.
        """
        status, at = state.get("status"), state.get("at")
        if not status or not at:
            return  # nothing good was ever read: the next reading is the baseline, as usual
        variables = dict(state.get("variables") or {}) | {"ups.status": status}
        self.last_reading = UpsReading.from_variables(variables, datetime.fromisoformat(at))
        # A link lost before counts as still lost (comm_restored comes with the next good read).
        self.comm = CommState.LOST if state.get("comm") == CommState.LOST.value else CommState.OK
        self.failures = 0
        self.source = str(state.get("source") or PowerSource.UNKNOWN)
        self._critical = bool(state.get("critical"))
        self._shutdown = bool(state.get("shutdown"))
        armed = state.get("armed") or {}
        self._armed = {None if k == "lb" else int(k): bool(v) for k, v in armed.items()}
        for threshold in self._thresholds:
            if threshold not in self._armed:
                self._armed[threshold] = not self._is_low(self.last_reading, threshold)
        runtime_armed = state.get("runtime_armed") or {}
        self._runtime_armed = {int(k): bool(v) for k, v in runtime_armed.items() if int(k) in self._needs}
        for cluster_id, need in self._needs.items():
            self._runtime_armed.setdefault(cluster_id, not self._is_short(self.last_reading, need))
        self._resumed = self.last_reading

    # ------------------------------------------------------------------ internals

    def _first(self, reading: UpsReading, was_lost: bool) -> list[DetectedEvent]:
        """The first reading: the baseline, and comm_restored when its silence had been declared lost."""
        self._baseline(reading)
        if not was_lost:
            return []
        message = f"communication restored; first reading since mko started: status {reading.status}"
        return [
            DetectedEvent(PowerEvent.COMM_RESTORED, reading.at, None, reading.status, reading.charge, message)
        ]

    def _baseline(self, reading: UpsReading) -> None:
        self.comm = CommState.OK
        if reading.source != PowerSource.UNKNOWN:
            self.source = reading.source
        self._critical = bool({"LB", "FSD"} & reading.tokens)
        self._shutdown = bool({"FSD", "OFF"} & reading.tokens)
        self._armed = {t: not self._is_low(reading, t) for t in (*self._thresholds, None)}
        self._runtime_armed = {c: not self._is_short(reading, need) for c, need in self._needs.items()}

    def _is_low(self, reading: UpsReading, threshold: int | None) -> bool:
        if "LB" in reading.tokens:
            return True
        if threshold is None:
            return False
        charge = reading.charge
        on_battery = reading.source == PowerSource.BATTERY or (
            reading.source == PowerSource.UNKNOWN and self.source == PowerSource.BATTERY
        )
        return on_battery and charge is not None and charge < threshold

    def _crossed(self, reading: UpsReading) -> set[int | None]:
        crossed: set[int | None] = set()
        charge = reading.charge
        for threshold in (*self._thresholds, None):
            armed = self._armed.get(threshold, True)
            if armed and self._is_low(reading, threshold):
                crossed.add(threshold)
                self._armed[threshold] = False
            elif not armed and "LB" not in reading.tokens:
                # Re-arm on mains, or once the charge is clearly back above the threshold.
                recharged = threshold is None or (
                    charge is not None and charge >= threshold + LOW_BATTERY_HYSTERESIS
                )
                if self.source == PowerSource.MAINS or recharged:
                    self._armed[threshold] = True
        return crossed

    def _is_short(self, reading: UpsReading, need: float) -> bool:
        runtime = reading.runtime
        on_battery = reading.source == PowerSource.BATTERY or (
            reading.source == PowerSource.UNKNOWN and self.source == PowerSource.BATTERY
        )
        return on_battery and runtime is not None and runtime < need

    def _runtime_crossed(self, reading: UpsReading) -> list[int]:
        crossed = []
        for cluster_id, need in sorted(self._needs.items()):
            armed = self._runtime_armed.get(cluster_id, True)
            if armed and self._is_short(reading, need):
                crossed.append(cluster_id)
                self._runtime_armed[cluster_id] = False
            elif not armed:
                runtime = reading.runtime
                if self.source == PowerSource.MAINS or (
                    runtime is not None and runtime >= need * RUNTIME_HYSTERESIS
                ):
                    self._runtime_armed[cluster_id] = True
        return crossed


def last_seen(reading: UpsReading) -> str:
    """``last seen OB DISCHRG at 2026-11-29 03:12:09 UTC``: what a monitor carried on from."""
    return f"last seen {reading.status} at {reading.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
