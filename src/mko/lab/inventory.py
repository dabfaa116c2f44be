"""Register a running lab in an mko database: one cluster, its nodes with MACs, ready to wake."""

from __future__ import annotations

from sqlalchemy.orm import Session

from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate
from mko.lab.harness import RunningLab
from mko.platform.db.models.inventory import Cluster, Node, NodeRole

__all__ = ["register_lab"]


def register_lab(
    session: Session,
    running: RunningLab,
    *,
    cluster_name: str = "lab",
    control_planes: int = 1,
    probe_port: int = 2222,
    macs: bool = True,
) -> tuple[Cluster, list[Node]]:
    """Add the lab's cluster and nodes (first ``control_planes`` nodes are control planes), WoL enabled.

    ``macs=False`` registers them as a new inventory would be: no MAC, prefix or WoL yet (for
    collect-mac). A lab started with ssh=True gives every node its client key.
    """
    cluster = create_cluster(session, ClusterCreate(name=cluster_name, description="virtual lab"))
    key = str(running.ssh.client_key) if running.ssh is not None else None
    nodes = []
    for index, node in enumerate(running.nodes):
        data = NodeCreate.model_validate(
            {
                "hostname": f"{cluster_name}-{node.name}",
                "ip_address": node.ip,
                "role": NodeRole.CONTROL_PLANE if index < control_planes else NodeRole.WORKER,
                "cluster_id": cluster.id,
                "ssh_user": "root",
                "ssh_port": probe_port,
                "ssh_key_path": key,
                "wol_enabled": macs,
                "wol_mac_address": node.mac if macs else None,
                "wol_prefix_len": running.lab.prefix_len if macs else None,
                "probe_port": probe_port,
            }
        )
        nodes.append(create_node(session, data))
    return cluster, nodes
