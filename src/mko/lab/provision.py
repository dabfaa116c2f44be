"""Give a running lab its orchestrator side: cluster, nodes, trusted host keys, the UPS and the seed rules.

One implementation for ``mko lab up`` and the integration tests of the power cycle
(tests/integration/cluster/test_shutdown_ups.py): what a person rehearses is what the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy.orm import Session

from mko.lab.control import LAB_UPS
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.nodefiles import graceful_shutdown
from mko.lab.nut import NutServer
from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups

__all__ = ["LAB_CLUSTER", "LAB_UPS", "ProvisionedLab", "provision_lab"]

LAB_CLUSTER = "lab"


@dataclass(frozen=True)
class ProvisionedLab:
    """The ids ``provision_lab`` created."""

    cluster_id: int
    node_ids: list[int]
    ups_id: int
    shutdown_rule_id: int
    wake_rule_id: int


def provision_lab(
    session: Session,
    settings: Settings,
    running: RunningLab,
    nut: NutServer,
    *,
    control_planes: int = 1,
    shutdown_delay: int = 0,
    stable_for: int = 0,
    min_charge: int | None = None,
    power_cycle: bool = False,
    shutdown_on: PowerEvent = PowerEvent.POWER_LOSS,
) -> ProvisionedLab:
    """Register the lab in ``session``'s database, trust its host keys, watch its UPS, add the two rules.

    Every node gets kubelet's graceful node shutdown configured (mko.lab.nodefiles): the lab is a cluster
    that passes ``mko cluster check``.

    The rules are the seed's: power loss → graceful shutdown after ``shutdown_delay`` seconds (cancelled
    if power returns first), power restored → wake_on_lan followed by the recovery, once mains has held
    ``stable_for`` seconds and the charge is at least ``min_charge``. ``power_cycle``: the UPS cuts and
    restores its load at the end of a shutdown (the lab's UPS honours shutdown.return).
    """
    cluster, nodes = register_lab(session, running, cluster_name=LAB_CLUSTER, control_planes=control_planes)
    for node in running.nodes:
        if node.system is not None:  # kubelet's graceful node shutdown set up, as `mko cluster check` wants
            graceful_shutdown(node.system)
    settings.ssh_known_hosts.parent.mkdir(parents=True, exist_ok=True)
    settings.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
    ups = create_ups(
        session,
        settings,
        UpsCreate(
            name=LAB_UPS,
            ups_name=nut.ups_name,
            host=nut.host,
            port=nut.port,
            username=nut.username,
            password=SecretStr(nut.password),
            description="the lab's upsd + dummy-ups",
            power_cycle=power_cycle,
        ),
    )
    shutdown_rule = create_rule(
        session,
        RuleCreate(
            ups_id=ups.id,
            cluster_id=cluster.id,
            power_event=shutdown_on,
            cluster_action=ClusterAction.GRACEFUL_SHUTDOWN,
            action_delay=shutdown_delay if shutdown_on == PowerEvent.POWER_LOSS else 0,
        ),
    )
    wake_rule = create_rule(
        session,
        RuleCreate(
            ups_id=ups.id,
            cluster_id=cluster.id,
            power_event=PowerEvent.POWER_RESTORED,
            cluster_action=ClusterAction.WAKE_ON_LAN,  # recover_after_wake: the default
            stable_for=stable_for,
            min_charge=min_charge,
        ),
    )
    return ProvisionedLab(cluster.id, [n.id for n in nodes], ups.id, shutdown_rule.id, wake_rule.id)
