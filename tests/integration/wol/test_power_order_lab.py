"""A cluster wake in dependency levels with a stagger, proven by the magic packets the lab's virtual
network cards record: nothing of a level goes out before the level below is up, and within a level the
packets are the stagger apart."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from test_wol_lab import _wake

from mko.inventory.nodes import update_node
from mko.inventory.schemas import NodeUpdate
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.platform.db.models.operations import OperationStatus
from mko.platform.settings import Settings

STAGGER = 0.4


def test_levels_wait_for_the_level_below_and_power_ons_are_staggered(
    settings: Settings, session: Session, lab_factory: Any
) -> None:
    running: RunningLab = lab_factory(5)
    cluster, nodes = register_lab(session, running)
    cp, nas, proxy, w1, w2 = nodes  # node 0 is the control plane the lab registers first
    # The NAS first; a proxy that needs the NAS; two workers that need the proxy.
    update_node(session, proxy.id, NodeUpdate(depends_on=[nas.id]))
    update_node(session, w1.id, NodeUpdate(depends_on=[proxy.id]))
    update_node(session, w2.id, NodeUpdate(depends_on=[proxy.id, nas.id]))
    operation = _wake(settings, running, "cluster", cluster.id, retries=2, delay=0.5, stagger=STAGGER)
    assert operation.status == OperationStatus.SUCCEEDED, operation.summary
    by_id = {n.id: lab for n, lab in zip(nodes, running.nodes, strict=True)}

    def first_packet(node_id: int) -> float:
        lab = by_id[node_id]
        assert lab.recorder.wait_for(1, timeout=10, mac=lab.mac)
        return min(p.time for p in lab.recorder.packets_for(lab.mac))

    def booted(node_id: int) -> float:
        outcome = next(o for o in operation.result["nodes"] if o["node_id"] == node_id)
        assert outcome["state"] in ("up", "sent"), outcome
        return float(outcome["first_sent_after"])

    sent = {n.id: first_packet(n.id) for n in nodes}
    # Level 0 (cp, nas): control plane first, the NAS not before its turn, one stagger after the level's
    # start (the stagger is counted from the level's start, so a late first packet does not push it).
    assert sent[nas.id] > sent[cp.id] and booted(nas.id) >= STAGGER
    # Level 1 (proxy) only after the NAS was verified up; level 2 (w1, w2) after the proxy was.
    nas_up = next(o for o in operation.result["nodes"] if o["node_id"] == nas.id)["up_after"]
    proxy_up = next(o for o in operation.result["nodes"] if o["node_id"] == proxy.id)["up_after"]
    assert nas_up is not None and proxy_up is not None
    assert booted(proxy.id) >= nas_up and booted(w1.id) >= proxy_up and booted(w2.id) >= proxy_up
    assert sent[proxy.id] > sent[nas.id] and min(sent[w1.id], sent[w2.id]) > sent[proxy.id]
    # Within level 2, the second worker after the first, not before its turn.
    assert sent[w2.id] > sent[w1.id] and booted(w2.id) >= proxy_up + STAGGER
