"""Outages: a cluster powered down because of a UPS, remembered until mko has brought it back.

An outage is opened when a rule (or a person naming the UPS) shuts a cluster down for a UPS, *before*
anything is touched, with the nodes that answered then (``nodes_up``). Each power-off mko confirms is
added to ``nodes_off`` as it happens, and the phase moves on in the database — so a power cut, a
``kill -9`` or a reboot of mko's own host loses none of it::

    shutting_down ──► down ──► restoring ──► restored | restore_failed      (closed_at set)
         │                         ▲
         └── power race ───────────┘   (mains returned during the shutdown: the wake supersedes it)

The restore (the power_restored rule's wake and recovery, mko.rules.engine) wakes only ``nodes_up`` that do
not answer now: a node an operator had switched off stays off, a node still running is left as it is.
On every start the UPS monitor compares each UPS with its persisted state and the open outages
(:func:`restart_events`): mains back with an outage open gives one ``power_restored`` event, which
runs the restore once.

mko's own host, last: before the host shutdown command runs, :func:`write_marker` leaves a marker file
(like upsmon's POWERDOWNFLAG); the next start reads it (:func:`take_marker`) and says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.outages import Outage, OutagePhase
from mko.platform.db.models.ups import PowerEvent
from mko.platform.errors import NotFoundError
from mko.platform.files import write_atomic
from mko.platform.settings import Settings, beside_database
from mko.power.probe import probe_tcp

__all__ = [
    "MARKER_NAME",
    "OPEN_PHASES",
    "answering",
    "close",
    "close_for_cluster",
    "find_open",
    "get_outage",
    "list_outages",
    "mark_off",
    "marker_path",
    "open_outage",
    "outage_doc",
    "restart_event_kind",
    "set_phase",
    "take_marker",
    "write_marker",
]

log = logging.getLogger("mko.outages")

OPEN_PHASES = (OutagePhase.SHUTTING_DOWN, OutagePhase.DOWN, OutagePhase.RESTORING)
MARKER_NAME = "powerdown.flag"


def find_open(session: Session, *, cluster_id: int | None = None, ups_id: int | None = None) -> list[Outage]:
    """Open outages, oldest first, optionally of one cluster and/or one UPS."""
    query = select(Outage).where(Outage.closed_at.is_(None)).order_by(Outage.id)
    if cluster_id is not None:
        query = query.where(Outage.cluster_id == cluster_id)
    if ups_id is not None:
        query = query.where(Outage.ups_id == ups_id)
    return list(session.scalars(query))


def open_outage(
    session: Session,
    *,
    ups_id: int,
    cluster_id: int,
    event: str,
    event_id: int | None,
    reason: str,
    nodes_up: Iterable[int],
) -> Outage:
    """Record that the cluster goes down for this UPS (committed before anything is touched).

    An outage of the same cluster and UPS still open (mko restarted during its shutdown, a second
    shutdown rule fired, or power failed again during the restore) is carried on: its ``nodes_up`` —
    what was up before the *first* shutdown — is kept, since nodes that went down since were up before.
    """
    for outage in find_open(session, cluster_id=cluster_id, ups_id=ups_id):
        outage.phase = OutagePhase.SHUTTING_DOWN
        outage.updated_at = utcnow()
        outage.summary = f"shutting down again: {reason}"
        session.commit()
        return outage
    outage = Outage(
        ups_id=ups_id,
        cluster_id=cluster_id,
        event=event,
        event_id=event_id,
        phase=OutagePhase.SHUTTING_DOWN,
        reason=reason,
        nodes_up=sorted(set(nodes_up)),
        nodes_off=[],
        power_cycle={},
        host_shutdown={},
        summary="shutting down",
    )
    session.add(outage)
    session.commit()
    log.info("outage %s opened: cluster %s for UPS %s (%s)", outage.id, cluster_id, ups_id, reason)
    return outage


def mark_off(session_factory: sessionmaker[Session], outage_id: int, node_id: int) -> None:
    """Add a node mko confirmed off (durable at once: a restart must know it)."""
    with session_factory() as session:
        outage = session.get(Outage, outage_id)
        if outage is None or node_id in outage.nodes_off:
            return
        outage.nodes_off = sorted({*outage.nodes_off, node_id})
        outage.updated_at = utcnow()
        session.commit()


def set_phase(session: Session, outage: Outage, phase: OutagePhase, summary: str, **fields: Any) -> Outage:
    """Move an outage on (``fields``: e.g. ``restore_operation_id``, ``power_cycle``)."""
    outage.phase = phase
    outage.summary = summary
    for name, value in fields.items():
        setattr(outage, name, value)
    outage.updated_at = utcnow()
    if phase not in OPEN_PHASES and outage.closed_at is None:
        outage.closed_at = outage.updated_at
    session.commit()
    log.info("outage %s %s: %s", outage.id, phase.value, summary)
    return outage


def close(session: Session, outage: Outage, phase: OutagePhase, summary: str) -> Outage:
    """Close an outage (restored, restore_failed or closed)."""
    if phase in OPEN_PHASES:
        raise ValueError(f"{phase} is not a closing phase")
    return set_phase(session, outage, phase, summary)


def close_for_cluster(session: Session, cluster_id: int, summary: str) -> list[int]:
    """Close every open outage of a cluster brought back another way (a person's recovery)."""
    closed = []
    for outage in find_open(session, cluster_id=cluster_id):
        close(session, outage, OutagePhase.CLOSED, summary)
        closed.append(outage.id)
    return closed


def get_outage(session: Session, outage_id: int) -> Outage:
    """The outage with this id, or NotFoundError."""
    outage = session.get(Outage, outage_id)
    if outage is None:
        raise NotFoundError("outage", outage_id)
    return outage


def list_outages(
    session: Session, *, cluster_id: int | None = None, open_only: bool = False, limit: int = 50
) -> list[Outage]:
    """Newest outages first."""
    query = select(Outage).order_by(Outage.id.desc()).limit(limit)
    if cluster_id is not None:
        query = query.where(Outage.cluster_id == cluster_id)
    if open_only:
        query = query.where(Outage.closed_at.is_(None))
    return list(session.scalars(query))


def outage_doc(session: Session, outage: Outage) -> dict[str, Any]:
    """An outage for people: node names instead of ids."""
    ids = {*outage.nodes_up, *outage.nodes_off}
    names = {n.id: n.hostname for n in session.scalars(select(Node).where(Node.id.in_(ids)))}
    return {
        "id": outage.id,
        "ups_id": outage.ups_id,
        "cluster_id": outage.cluster_id,
        "event": outage.event,
        "event_id": outage.event_id,
        "phase": outage.phase.value,
        "open": outage.closed_at is None,
        "reason": outage.reason,
        "nodes_up": [names.get(i, str(i)) for i in outage.nodes_up],
        "nodes_off": [names.get(i, str(i)) for i in outage.nodes_off],
        "shutdown_operation_id": outage.shutdown_operation_id,
        "restore_operation_id": outage.restore_operation_id,
        "power_cycle": outage.power_cycle,
        "host_shutdown": outage.host_shutdown,
        "summary": outage.summary,
        "started_at": outage.started_at.isoformat(),
        "updated_at": outage.updated_at.isoformat(),
        "closed_at": outage.closed_at.isoformat() if outage.closed_at else None,
    }


async def answering(nodes: Sequence[Node], settings: Settings) -> set[int]:
    """Ids of the nodes whose probe port (SSH unless set) accepts a connection now."""
    results = await asyncio.gather(
        *(probe_tcp(n.ip_address, n.probe_port or n.ssh_port, settings.probe_timeout) for n in nodes)
    )
    return {n.id for n, result in zip(nodes, results, strict=True) if result.ok}


# ------------------------------------------------------------------------------------ at start


def restart_event_kind(event: str) -> PowerEvent:
    """The event a restart on battery repeats for an unfinished shutdown (what started it)."""
    try:
        return PowerEvent(event)
    except ValueError:  # a person's shutdown ("manual"): the power loss is what a rule would see
        return PowerEvent.POWER_LOSS


# ------------------------------------------------------------------------------------ the marker


def marker_path(settings: Settings) -> Path:
    """MKO_POWERDOWN_FLAG, else ``powerdown.flag`` beside the SQLite database (data/ otherwise)."""
    if settings.powerdown_flag is not None:
        return settings.powerdown_flag
    return beside_database(settings.database_url, MARKER_NAME)


def write_marker(settings: Settings, document: dict[str, Any]) -> Path:
    """Write the marker durably (fsync'd, atomically) before mko's host is shut down for power."""
    path = marker_path(settings)
    write_atomic(path, json.dumps(document, indent=1, default=str).encode())
    return path


def take_marker(settings: Settings) -> dict[str, Any] | None:
    """Read and remove the marker a previous run left before shutting its host down; None without one."""
    path = marker_path(settings)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the power-down marker %s: %s", path, exc)
        return None
    try:
        document: dict[str, Any] = json.loads(text)
    except ValueError:
        document = {"unreadable": text[:200]}
    path.unlink(missing_ok=True)
    at = document.get("at")
    log.warning("mko shut its host down for power at %s (marker %s); checking the UPSes", at, path)
    return document


def marker_words(marker: dict[str, Any] | None) -> str:
    """``mko shut its host down for power at …`` for event messages; empty without a marker."""
    if not marker or not marker.get("at"):
        return ""
    try:
        at = datetime.fromisoformat(str(marker["at"]))
    except ValueError:
        return "mko shut its host down for power"
    return f"mko shut its host down for power at {at:%Y-%m-%d %H:%M:%S} UTC"
