"""A virtual LAN of network namespaces where magic packets reach real (virtual) network cards."""

from mko.lab.harness import DEFAULT_BOOT_PORT, RunningLab, RunningNode
from mko.lab.microk8s import Microk8sCluster, configure_microk8s
from mko.lab.netns import Lab, LabNode, NodeSpec, cleanup_stale, enter_netns
from mko.lab.nodesys import STANDINS, LabSsh, NodeSystem, StandIn
from mko.lab.recorder import BootOnWake, CapturedPacket, MagicPacketRecorder

__all__ = [
    "DEFAULT_BOOT_PORT",
    "STANDINS",
    "BootOnWake",
    "CapturedPacket",
    "Lab",
    "LabNode",
    "LabSsh",
    "MagicPacketRecorder",
    "Microk8sCluster",
    "NodeSpec",
    "NodeSystem",
    "RunningLab",
    "RunningNode",
    "StandIn",
    "cleanup_stale",
    "configure_microk8s",
    "enter_netns",
]
