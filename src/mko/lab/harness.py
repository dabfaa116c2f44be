"""A running lab: the namespaces plus, per node, a packet recorder and a power simulation.

Shared by the integration-test fixtures and ``mko lab up``::

    with RunningLab.start("demo", 3) as running:
        with enter_netns(running.lab.orch):
            ...send a magic packet to running.lab.broadcast...
        assert running.nodes[0].recorder.wait_for(1, timeout=5)
        assert running.nodes[0].power.wait_booted(timeout=5)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from mko.lab.netns import DEFAULT_SUBNET, Lab, LabNode, NodeSpec
from mko.lab.recorder import BootOnWake, MagicPacketRecorder

__all__ = ["DEFAULT_BOOT_PORT", "RunningLab", "RunningNode"]

# The port a booted node "opens"; 2222 like the per-node sshd of TESTING.md, so both can be swapped.
DEFAULT_BOOT_PORT = 2222


@dataclass(frozen=True)
class RunningNode:
    """One node of a running lab: its addresses, what its card received and its power state."""

    node: LabNode
    recorder: MagicPacketRecorder
    power: BootOnWake

    @property
    def name(self) -> str:
        """Return the node's short name (n1, n2, …)."""
        return self.node.name

    @property
    def netns(self) -> str:
        """Return the node's namespace."""
        return self.node.netns

    @property
    def ip(self) -> str:
        """Return the node's IPv4 address."""
        return self.node.ip

    @property
    def mac(self) -> str:
        """Return the node's MAC address."""
        return self.node.mac


class RunningLab:
    """A lab whose nodes record magic packets and boot on them; close() tears everything down."""

    def __init__(self, lab: Lab, nodes: list[RunningNode], stack: contextlib.ExitStack) -> None:
        self.lab = lab
        self.nodes = nodes
        self._stack = stack

    @classmethod
    def start(
        cls,
        prefix: str,
        nodes: Sequence[NodeSpec] | int,
        *,
        subnet: str = DEFAULT_SUBNET,
        boot_port: int = DEFAULT_BOOT_PORT,
        boot_delay: float = 0.3,
    ) -> RunningLab:
        """Build the lab and start a recorder and a BootOnWake (initially off) on every node."""
        stack = contextlib.ExitStack()
        try:
            lab = Lab.create(prefix, nodes, subnet)
            stack.callback(lab.destroy)
            running: list[RunningNode] = []
            for node in lab.nodes:
                recorder = stack.enter_context(MagicPacketRecorder(node.netns, node.interface, node.mac))
                power = stack.enter_context(
                    BootOnWake(
                        node.netns,
                        node.ip,
                        boot_port,
                        node.mac,
                        boot_delay=boot_delay,
                        wakeable=node.wakeable,
                        interface=node.interface,
                        recorder=recorder,
                    )
                )
                running.append(RunningNode(node, recorder, power))
        except BaseException:
            stack.close()
            raise
        return cls(lab, running, stack)

    def node(self, name: str) -> RunningNode:
        """Return the running node called NAME (or whose namespace is NAME)."""
        for running in self.nodes:
            if name in (running.name, running.netns):
                return running
        raise KeyError(name)

    def clear(self) -> None:
        """Forget recorded packets and switch every node off, e.g. between tests sharing a lab."""
        for running in self.nodes:
            running.power.power_off()
            running.recorder.clear()

    def close(self) -> None:
        """Stop every recorder and power simulation, then destroy the lab; safe to call twice."""
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
