"""Two real upsd + dummy-ups and a dual-supply node: on battery only when both of its UPSes are.

One lab of 4 nodes (sshd and the MicroK8s stand-ins): lab-n1 the control plane (no feed recorded),
lab-n2 a worker with two power supplies, one on UPS a and one on UPS b, lab-n3 fed by UPS a only, lab-n4
by UPS b only. Each UPS has a fed-nodes rule: power_loss → graceful_shutdown of the nodes it feeds. The
monitor and its rule engine run in the lab's orch namespace and read both upsd over real NUT.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session

from mko.inventory.nodes import update_node
from mko.inventory.schemas import NodeUpdate
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.microk8s import configure_microk8s
from mko.lab.nut import NutServer
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import ClusterAction, RuleTarget
from mko.platform.db.models.ups import PowerEvent
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups
from support.ups import MonitorThread, wait_until


@pytest.fixture
def two_ups_lab(
    netns_privileges: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningLab, NutServer, NutServer]]:
    running = RunningLab.start(f"mkf{os.getpid() % 10000}", 4, ssh=True, boot_delay=0.2)
    servers: list[NutServer] = []
    try:
        for name, port in (("upsa", 13493), ("upsb", 13494)):
            servers.append(
                NutServer.start(
                    tmp_path_factory.mktemp(name), netns=running.lab.orch, port=port, ups_name=name
                )
            )
        yield running, servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
        running.close()


def _off(running: RunningLab) -> set[str]:
    return {f"lab-{n.name}" for n in running.nodes if not n.power.is_on}


def _shutdowns(mon: MonitorThread, count: int) -> list[Operation]:
    def settled() -> list[Operation] | None:
        found = mon.operations(RULE_OPERATION_KIND)
        done = all(op.status not in (OperationStatus.PENDING, OperationStatus.RUNNING) for op in found)
        return found if len(found) == count and done else None

    return wait_until(settled, 30, what=f"{count} rule execution(s) settled")


def test_a_dual_supply_node_goes_down_only_when_both_of_its_ups_are_on_battery(
    two_ups_lab: tuple[RunningLab, NutServer, NutServer], settings: Settings, session: Session
) -> None:
    running, ups_a, ups_b = two_ups_lab
    cluster = configure_microk8s(running, control_planes=1)
    running.power_on_all()
    wait_until(lambda: all(n["ready"] for n in cluster.nodes().values()), 5, what="every node Ready")
    lab_cluster, nodes = register_lab(session, running, control_planes=1)
    settings.ssh_known_hosts.parent.mkdir(parents=True, exist_ok=True)
    settings.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
    ids = {}
    for server in (ups_a, ups_b):
        ups = create_ups(
            session,
            settings,
            UpsCreate(
                name=server.ups_name,
                ups_name=server.ups_name,
                host=server.host,
                port=server.port,
                username=server.username,
                password=SecretStr(server.password),
            ),
        )
        ids[server.ups_name] = ups.id
        create_rule(
            session,
            RuleCreate(
                ups_id=ups.id,
                cluster_id=lab_cluster.id,
                power_event=PowerEvent.POWER_LOSS,
                cluster_action=ClusterAction.GRACEFUL_SHUTDOWN,
                target=RuleTarget.FED_NODES,
            ),
        )
    by_name = {n.hostname: n.id for n in nodes}
    feeds = {"lab-n2": ["upsa", "upsb"], "lab-n3": ["upsa"], "lab-n4": ["upsb"]}
    for hostname, upses in feeds.items():
        update_node(session, by_name[hostname], NodeUpdate(fed_by=[ids[u] for u in upses]))
    fast = settings.model_copy(
        update={"ups_poll_interval": 0.2, "ups_reload_interval": 0.5, "probe_interval": 0.1}
    )
    with MonitorThread(fast, running.lab.orch) as mon:
        wait_until(
            lambda: mon.call(lambda: mon.monitor is not None and mon.monitor.snapshot(ids["upsb"])),
            10,
            what="UPS b read",
        )
        # UPS a on battery: lab-n3 has no other feed and goes down; lab-n2 stays on UPS b.
        ups_a.set(status="OB DISCHRG", charge=80)
        [first] = _shutdowns(mon, 1)
        assert first.status == OperationStatus.SUCCEEDED, first.summary
        wait_until(lambda: _off(running) == {"lab-n3"}, 10, what="lab-n3 off")
        [shutdown] = mon.operations("cluster_shutdown")
        assert shutdown.status == OperationStatus.SUCCEEDED, shutdown.summary
        plan = "\n".join(shutdown.parameters["plan"])
        assert "lab-n2 (2) still on mains through upsb" in plan, plan
        assert "staying up: lab-n1, lab-n2, lab-n4" in plan, plan
        # Then UPS b: lab-n4 (b only) and now lab-n2 (both on battery) go down; lab-n1 (no feed) stays.
        ups_b.set(status="OB DISCHRG", charge=70)
        _, second = _shutdowns(mon, 2)
        assert second.status == OperationStatus.SUCCEEDED, second.summary
        wait_until(lambda: _off(running) == {"lab-n2", "lab-n3", "lab-n4"}, 10, what="lab-n2 and lab-n4 off")
        shutdowns = mon.operations("cluster_shutdown")
    assert len(shutdowns) == 2 and shutdowns[1].status == OperationStatus.SUCCEEDED, shutdowns[1].summary
    drained = {s.name for s in shutdowns[1].steps if s.name.startswith("drain ")}
    assert drained == {"drain lab-n2", "drain lab-n4"}
    assert running.node("n1").power.is_on
    state = cluster.nodes()
    assert state["lab-n1"]["ready"] and not state["lab-n2"]["powered"]
