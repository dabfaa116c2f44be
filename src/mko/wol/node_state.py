"""A node's state as a person reads it: off, booting, up or Ready, from what mko already knows.

Nothing here probes. The state is read from three stored facts: whether the node answers
(``Node.reachable`` and when it last changed: the background refresher's probes, and a recovery's SSH,
which stores it too), the node's newest wake step, and the newest Kubernetes readiness a recovery
recorded for it (its ``Ready <host>`` step):

- ``off``: the probes find it down, and no wake of it is under way;
- ``booting``: down, but a wake went out since it went down, less than ``booting_window`` seconds ago
  (a wake still running counts whatever its age);
- ``up``: it answers on its probe port;
- ``Ready``: it answers, and Kubernetes called it Ready after it came up;
- ``unknown``: never probed yet.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.operations.kinds import READY_STEP_PREFIX, RECOVER_KIND, WAKE_KIND_PREFIX
from mko.operations.records import last_steps_for_nodes
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import OperationStatus, OperationStep
from mko.platform.settings import Settings
from mko.wol.reachability import Reachability

__all__ = [
    "LiveState",
    "NodeLiveState",
    "StateFacts",
    "live_state",
    "node_states",
    "states_for",
    "with_states",
]

# A wake step in one of these says packets went out and nothing has said the node failed to come up.
_WAKING = {"pending", "sent", "up"}


class LiveState(enum.StrEnum):
    """What a node is doing, in the words the dashboard shows."""

    OFF = "off"
    BOOTING = "booting"
    UP = "up"
    READY = "Ready"
    UNKNOWN = "unknown"


class NodeLiveState(BaseModel):
    """A node's state with one line saying what it rests on, and its last wake (operation, outcome)."""

    state: LiveState
    note: str
    wake_operation_id: int | None = None
    wake_state: str | None = None


@dataclass(frozen=True)
class StateFacts:
    """What is stored about one node."""

    reachable: bool | None
    changed_at: datetime | None
    wake: OperationStep | None
    ready: OperationStep | None


def live_state(
    facts: StateFacts, now: datetime, probe_interval: float, booting_window: float
) -> NodeLiveState:
    """The state these facts add up to (see the module's docstring)."""
    if facts.reachable is None:
        return NodeLiveState(state=LiveState.UNKNOWN, note="not probed yet")
    changed = facts.changed_at
    if not facts.reachable:
        wake = facts.wake
        sent = wake.started_at if wake is not None else None
        if wake is not None and sent is not None and (changed is None or sent >= changed):
            running = wake.status in (OperationStatus.RUNNING, OperationStatus.PENDING)
            recent = (now - sent).total_seconds() < booting_window
            if running or (recent and str(wake.detail.get("state", "")) in _WAKING):
                since = sent.strftime("%H:%M:%S UTC")
                return NodeLiveState(state=LiveState.BOOTING, note=f"wake sent at {since}, not answering yet")
        return NodeLiveState(state=LiveState.OFF, note="does not answer on its probe port")
    ready = facts.ready
    # The refresher saw it come up at most one probe interval after it did: a readiness recorded after
    # that is about this time it is up, never about an earlier one.
    if ready is not None and ready.finished_at is not None:
        current = changed is None or ready.finished_at > changed - timedelta(seconds=probe_interval)
        at = ready.finished_at.strftime("%H:%M:%S UTC")
        if current and ready.status == OperationStatus.SUCCEEDED:
            return NodeLiveState(state=LiveState.READY, note=f"Kubernetes Ready at {at}")
        if current:
            return NodeLiveState(state=LiveState.UP, note=f"answers; Kubernetes not Ready at {at}")
    return NodeLiveState(state=LiveState.UP, note="answers; Kubernetes readiness not seen since it came up")


def node_states(
    session: Session, node_ids: Collection[int], probe_interval: float, booting_window: float
) -> dict[int, NodeLiveState]:
    """Each node's state from stored facts: three queries per 1,000 nodes, never a probe."""
    ids = sorted(set(node_ids))
    if not ids:
        return {}
    stored = session.execute(
        select(Node.id, Node.reachable, Node.reachability_changed_at).where(Node.id.in_(ids))
    ).all()
    wakes = last_steps_for_nodes(session, ids, WAKE_KIND_PREFIX)
    readiness = last_steps_for_nodes(session, ids, RECOVER_KIND, READY_STEP_PREFIX)
    now = utcnow()
    found = {}
    for node_id, reachable, changed_at in stored:
        wake = wakes.get(node_id)
        state = live_state(
            StateFacts(reachable, changed_at, wake, readiness.get(node_id)),
            now,
            probe_interval,
            booting_window,
        )
        if wake is not None:
            outcome = str(wake.detail.get("state") or wake.status.value)
            state = state.model_copy(update={"wake_operation_id": wake.operation_id, "wake_state": outcome})
        found[node_id] = state
    return found


def with_states(
    session: Session, settings: Settings, results: dict[int, Reachability]
) -> dict[int, Reachability]:
    """``results`` with each node's state and its note filled in (a wake counts as booting for
    ``wol_default_timeout`` seconds; the refresher probes every ``reachability_interval``)."""
    states = node_states(session, results, settings.reachability_interval, settings.wol_default_timeout)
    return {
        node_id: result.model_copy(
            update={
                "state": found.state.value,
                "state_note": found.note,
                "wake_operation_id": found.wake_operation_id,
                "wake_state": found.wake_state,
            }
        )
        if (found := states.get(node_id)) is not None
        else result
        for node_id, result in results.items()
    }


def states_for(session: Session, settings: Settings, node_ids: Collection[int]) -> dict[int, NodeLiveState]:
    """Each node's state, for pages that render it (settings as in :func:`with_states`)."""
    return node_states(session, node_ids, settings.reachability_interval, settings.wol_default_timeout)
