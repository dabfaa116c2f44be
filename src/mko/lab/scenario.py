"""``mko lab scenario long-outage``: a power cut that outlasts the battery, played end to end.

It drives a running lab only through what a person has (the lab's UPS commands, ``mko lab status`` and
the lab's database) and tells what happens, with the time of each step::

    mains fails → battery runs down → the cluster goes off in order → the UPS power-cycles its load →
    mko's host halts and dies with the output → mains returns → the output comes back → mko boots →
    mko restores the outage → every node Ready

Mains returns 10 s after the UPS's output went off (a power cycle, or an empty battery), or after
``outage`` seconds when given.
With ``mko lab up --orchestrator-on-ups`` mko's host is on the UPS; without it mko stays up and simply
restores the cluster when mains returns. ``bench/outage.py`` reads the same milestones for its figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.lab.control import LabControl
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation
from mko.platform.db.models.ups import PowerEvent, UpsEvent
from mko.platform.errors import ConflictError, ScenarioError
from mko.ups import outages

__all__ = ["LongOutage"]

_POLL = 0.2
_AFTER_CUT = 10.0  # mains returns this long after the UPS's output went off


@dataclass
class LongOutage:
    """Plays the outage on a lab; ``say`` receives each line of the transcript as it happens."""

    control: LabControl
    session_factory: sessionmaker[Session]
    say: Callable[[str], None]
    outage: float | None = None  # seconds of mains failure; None: until the battery is empty
    timeout: float = 600.0
    milestones: dict[str, float] = field(default_factory=dict)  # seconds since mains failed
    _began: float = 0.0
    _since: datetime = field(default_factory=utcnow)
    _seen: set[str] = field(default_factory=set)

    def run(self) -> dict[str, float]:
        """Play it; return the milestones (seconds since mains failed)."""
        status = self.control.status()
        self._check_ready(status)
        on_ups = bool((status.get("orchestrator") or {}).get("on_ups"))
        first_op = self._newest_operation_id()
        self._began = time.monotonic()
        self._since = utcnow()
        ups = self.control.power_fail()["ups"]
        self._note("mains failed", f"mains fails: UPS {ups['status']}, charge {ups['charge']:g} %")
        if not on_ups:
            self.say(
                "  (mko's host is not on the UPS here: `mko lab up --orchestrator-on-ups` puts it there)"
            )
        last_charge = float(ups["charge"])
        restored_at: float | None = None
        deadline = self._began + self.timeout
        while time.monotonic() < deadline:
            status = self.control.status()
            charge = float(status["ups"]["charge"])
            if restored_at is None and last_charge - charge >= 10:
                last_charge = charge
                self.say(self._line(f"battery at {charge:g} %, runtime {status['ups']['runtime']} s"))
            if restored_at is None and charge <= 0:
                self._note("battery empty", "the battery is empty")
            self._follow(status, first_op)
            since = time.monotonic() - self._began
            cut = self.milestones.get("output off")
            mains_due = (self.outage is not None and since >= self.outage) or (
                self.outage is None and cut is not None and since - cut >= _AFTER_CUT
            )
            if restored_at is None and mains_due:
                ups = self.control.power_restore()["ups"]
                restored_at = time.monotonic()
                self._note("mains returned", f"mains returns: upsd serves {ups['status']}")
            if restored_at is not None and self._done(status, first_op):
                took = self.milestones["cluster Ready"] - self.milestones["mains returned"]
                self.say(f"mains back → every node Ready in {took:.1f} s")
                return self.milestones
            time.sleep(_POLL)
        raise ScenarioError(
            f"the scenario did not end within {self.timeout:g} s; seen: {', '.join(self.milestones)}"
        )

    # ------------------------------------------------------------------ what happens

    def _follow(self, status: dict[str, Any], first_op: int) -> None:
        nodes = status["nodes"]
        for node in nodes:
            if node["power"] == "off" and "mains returned" not in self.milestones:
                role = str(node["role"]).replace("_", " ")
                self._note(f"{node['hostname']} off", f"{node['hostname']} ({role}) powered off")
            if node["power"] == "on" and "mains returned" in self.milestones:
                self._note(f"{node['hostname']} on", f"{node['hostname']} booted")
        orchestrator = status.get("orchestrator") or {}
        # A host that halted itself did so before the UPS cut its load: when one poll sees both, the
        # halt is told first. A host that lost power went down with the output, so after it.
        halted_itself = not orchestrator.get("running") and orchestrator.get("host") == "halted"
        if halted_itself:
            self._mko_down_or_booted(status, orchestrator)
        output = str(status["ups"].get("output", "on"))
        if ", off in" in output:
            self._note("power cycle", f"the UPS accepted the power cycle: output {output}")
        if output.startswith("off"):
            self._note("output off", f"the UPS cut its load: output {output}")
        if "output off" in self.milestones and output == "on":
            self._note("output on", "the UPS output is back on")
        if not halted_itself:
            self._mko_down_or_booted(status, orchestrator)
        with self.session_factory() as session:
            low = select(UpsEvent).where(
                UpsEvent.event.in_((PowerEvent.RUNTIME_LOW, PowerEvent.LOW_BATTERY)),
                UpsEvent.occurred_at >= self._since,
            )
            for event in session.scalars(low.order_by(UpsEvent.id)):
                self._note(f"event {event.id}", f"{event.event.value}: {event.message}")
            ops = session.scalars(select(Operation).where(Operation.id > first_op).order_by(Operation.id))
            for op in ops:
                self._operation(op)
            for outage in outages.list_outages(session, limit=1):
                if outage.closed_at is None and outage.phase.value == "restoring":
                    self._note("restoring", f"outage {outage.id}: {outage.summary}")

    def _mko_down_or_booted(self, status: dict[str, Any], orchestrator: dict[str, Any]) -> None:
        if not orchestrator.get("running"):
            how = {
                "halted": "mko's host is down: it shut itself down (its last step, marker written)",
                "lost power": "mko's host lost power with the UPS output (SIGKILL)",
            }.get(str(orchestrator.get("host")), f"mko is down ({orchestrator.get('host')})")
            self._note("mko down", how)
        elif "mko down" in self.milestones and status.get("server"):
            self._note("mko booted", "mko's host boots with the output: `mko serve --lab` runs again")

    def _operation(self, op: Operation) -> None:
        if op.kind in ("cluster_shutdown", "cluster_force_shutdown"):
            self._note("shutdown", f"mko ({op.actor}) shuts the cluster down in order (operation {op.id})")
            for step in op.steps:
                if step.name.startswith("power-cycle "):
                    self._note("power-cycle step", f"{step.name}: {step.message}")
        if op.kind.startswith("wol_wake"):
            self._note("wake", f"mko ({op.actor}) wakes the nodes that were up before (operation {op.id})")
        if op.kind == "cluster_recover" and op.finished_at is not None:
            self._note("recovered", f"recovery #{op.id} {op.status.value}: {op.summary}")

    def _done(self, status: dict[str, Any], first_op: int) -> bool:
        ready = all(n["power"] == "on" and n["ready"] and not n["cordoned"] for n in status["nodes"])
        if not ready or "recovered" not in self.milestones:
            return False
        with self.session_factory() as session:
            still = outages.find_open(session)
        if still:
            return False
        self._note("cluster Ready", "every node Ready and uncordoned; the outage is closed")
        return True

    # ------------------------------------------------------------------ helpers

    def _check_ready(self, status: dict[str, Any]) -> None:
        if not all(n["power"] == "on" and n["ready"] for n in status["nodes"]):
            raise ConflictError("every lab node must be up and Ready first (`mko lab status`)")
        if "OL" not in str(status["ups"]["status"]).split():
            raise ConflictError("the lab's UPS must be on line first: `mko lab power-restore`")
        if not status.get("server"):
            raise ConflictError("no orchestrator serves the lab: `mko lab start-server` or `mko serve --lab`")

    def _newest_operation_id(self) -> int:
        with self.session_factory() as session:
            newest = session.scalars(select(Operation.id).order_by(Operation.id.desc()).limit(1)).first()
        return newest or 0

    def _line(self, text: str) -> str:
        return f"[{time.monotonic() - self._began:6.1f} s] {text}"

    def _note(self, key: str, text: str) -> None:
        if key in self._seen:
            return
        self._seen.add(key)
        self.milestones[key] = time.monotonic() - self._began
        self.say(self._line(text))
