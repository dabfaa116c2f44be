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
import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from mko.lab.netns import DEFAULT_SUBNET, Lab, LabNode, NodeSpec
from mko.lab.nodesys import LabSsh, NodeSystem, SshdService
from mko.lab.recorder import BootOnWake, MagicPacketRecorder
from mko.platform.errors import LabError

__all__ = ["DEFAULT_BOOT_PORT", "PowerRequests", "RunningLab", "RunningNode"]

log = logging.getLogger(__name__)

# The port a booted node "opens"; 2222 like the per-node sshd (docs/lab.md), so both can be swapped.
DEFAULT_BOOT_PORT = 2222


@dataclass(frozen=True)
class RunningNode:
    """One node of a running lab: its addresses, what its card received and its power state."""

    node: LabNode
    recorder: MagicPacketRecorder
    power: BootOnWake
    hostname: str = ""
    # With ssh=True: the node's sshd, stand-in commands and their state (see mko.lab.nodesys).
    system: NodeSystem | None = None

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


class PowerRequests:
    """Carries out what a node asks for from inside (``systemctl poweroff``, ``reboot``, …).

    A stand-in calls ``request_power("off" | "reboot")``, which leaves a file in the node's state
    directory; this watcher switches the node off (its sshd and every process die, as on a real power
    off) shortly after the command returned, and powers it on again for a reboot.
    """

    def __init__(self, nodes: Sequence[RunningNode], *, interval: float = 0.05, grace: float = 0.2) -> None:
        self.nodes = [n for n in nodes if n.system is not None]
        self.interval = interval
        self.grace = grace  # lets the requesting command return its exit status over SSH first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mko-lab-power-requests", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for node in self.nodes:
                assert node.system is not None
                action = node.system.take_power_request()
                if action is None:
                    continue
                if self._stop.wait(self.grace):
                    return
                try:
                    node.power.power_off()
                    if action == "reboot":
                        node.power.power_on()
                except Exception:
                    log.exception("%s: power request %r failed", node.netns, action)


class RunningLab:
    """A lab whose nodes record magic packets and boot on them; close() tears everything down."""

    def __init__(
        self, lab: Lab, nodes: list[RunningNode], stack: contextlib.ExitStack, ssh: LabSsh | None = None
    ) -> None:
        self.lab = lab
        self.nodes = nodes
        self.ssh = ssh
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
        ssh: bool = False,
        hostname_prefix: str = "lab-",
        root: Path | None = None,
    ) -> RunningLab:
        """Build the lab and start a recorder and a BootOnWake (initially off) on every node.

        With ``ssh=True`` a booted node runs a real sshd on ``boot_port`` (instead of a banner) with
        stand-in system commands, and its NIC's Wake-on state decides whether a magic packet boots it.
        Their files live in ``root`` (created, and removed again by close()), else in a fresh /tmp directory.
        """
        stack = contextlib.ExitStack()
        try:
            lab_ssh: LabSsh | None = None
            if ssh:
                files = root if root is not None else Path(tempfile.mkdtemp(prefix=f"mko-lab-{prefix}-"))
                # Registered first, so it runs last: after every sshd and namespace is gone.
                stack.callback(shutil.rmtree, files, True)
                lab_ssh = LabSsh.create(files, boot_port)
            lab = Lab.create(prefix, nodes, subnet)
            stack.callback(lab.destroy)
            hosts = [(lab.orch_ip, "orch")] + [
                (n.ip, f"{hostname_prefix}{n.name} {n.name}") for n in lab.nodes
            ]
            running: list[RunningNode] = []
            for node in lab.nodes:
                hostname = f"{hostname_prefix}{node.name}"
                system = None
                if lab_ssh is not None:
                    system = NodeSystem(
                        lab_ssh,
                        node,
                        hostname=hostname,
                        hosts=hosts,
                        nic_wol_supports=node.spec.nic_wol_supports,
                        nic_wake_on_default=node.spec.nic_wake_on_default,
                        network_service=node.spec.network_service,
                    )
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
                        service=SshdService(system) if system is not None else None,
                        armed=system.magic_armed if system is not None else None,
                    )
                )
                running.append(RunningNode(node, recorder, power, hostname, system))
            if lab_ssh is not None:
                stack.enter_context(PowerRequests(running))
        except BaseException:
            stack.close()
            raise
        return cls(lab, running, stack, lab_ssh)

    def power_on_all(self, timeout: float = 10.0) -> None:
        """Press every node's power button and wait until all are up (sshd answering, with ssh=True)."""
        for running in self.nodes:
            running.power.power_on()
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            booted = list(pool.map(lambda r: r.power.wait_booted(timeout), self.nodes))
        late = [r.name for r, ok in zip(self.nodes, booted, strict=True) if not ok]
        if late:
            raise LabError(f"nodes not up within {timeout} s: {', '.join(late)}")

    def known_hosts_lines(self) -> list[str]:
        """Return a known_hosts line per node (``[ip]:port key``); only with ssh=True."""
        if self.ssh is None:
            raise LabError("this lab was started without ssh=True")
        lines = []
        for running in self.nodes:
            assert running.system is not None
            lines.append(f"[{running.ip}]:{self.ssh.port} {running.system.host_public_key}")
        return lines

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
