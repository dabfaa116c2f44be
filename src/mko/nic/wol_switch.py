"""The node's own network card, over SSH: MAC collection and Wake-on-LAN enable/disable/read-back.

MAC collection (``wol collect-mac``) reads ``ip -j -d link``, ``ip -j addr`` and ``ip -j route show
default`` (JSON, never scraped text), picks the card that carries the node's inventory IP (else the
default route), looking through bridges, bonds and VLANs to the physical port underneath, and stores
its MAC, name and prefix length. Every interface found is stored too.

NIC Wake-on-LAN (``wol enable|disable``) runs ``ethtool -s IFACE wol g|d`` on the card whose MAC mko
sends magic packets to, makes the setting survive reboots, and reads ``ethtool IFACE`` back. How it
persists is detected on the node, in this order:

1. NetworkManager manages the card → ``nmcli connection modify CONN 802-3-ethernet.wake-on-lan magic``
2. systemd-networkd runs → a ``.link`` file ``/etc/systemd/network/50-mko-wol-IFACE.link``
3. systemd without either → a oneshot unit ``mko-wol-IFACE.service`` running ethtool at boot

Disabling writes the same places with Wake-on off (a persistent ``d``), since the driver's default
after a reboot may well be ``g``. Nothing in mko ever turns Wake-on-LAN off at shutdown: that is what
arms the card for the magic packet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from mko.inventory.nodes import get_node, update_node
from mko.inventory.schemas import WolConfigure
from mko.nic.ethtool import read_wol
from mko.nic.interfaces import choose_interface, read_interfaces
from mko.nic.persistence import persist
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import in_thread_session
from mko.platform.errors import MkoError, NicError, SshError, SshUnreachableError, UnsupportedActionError
from mko.platform.settings import Settings
from mko.power.base import Capability
from mko.power.registry import DRIVERS
from mko.ssh.client import SshSession, SshTarget, connect

if TYPE_CHECKING:
    from mko.nic.ethtool import EthtoolWol
    from mko.nic.interfaces import Interface

__all__ = ["WolChange", "set_nic_wol"]

log = logging.getLogger("mko.nic")


@dataclass
class WolChange:
    """The outcome of ``wol enable|disable``: the node as stored, and the operation that did it."""

    node: Node
    operation: Operation
    nic: dict[str, Any] | None


async def set_nic_wol(
    sessions: sessionmaker[Session],
    settings: Settings,
    node_id: int,
    *,
    enable: bool,
    actor: Actor,
    flag_only: bool = False,
) -> WolChange:
    """``wol enable|disable``: configure the node's card over SSH, persist, read back, then set the flag.

    Any failure (unreachable node, unknown host key, a card without magic-packet support, a read-back
    that disagrees) fails the operation and leaves the flag as it was; what was read from the card is
    still stored. ``flag_only`` changes only mko's flag, for a node that cannot be reached now.
    Database work runs in worker threads with short sessions of its own, never across the SSH waits.
    """
    verb = "enable" if enable else "disable"

    def begin(session: Session) -> tuple[Node, int]:
        node = get_node(session, node_id)
        operation = start_operation(
            session,
            kind=f"wol_{verb}",
            target_type="node",
            target_id=node.id,
            actor=actor,
            parameters={"wol_enabled": enable, "flag_only": flag_only},
            summary=f"{verb} Wake-on-LAN on {node.hostname}",
        )
        return node, operation.id

    node, operation_id = await in_thread_session(sessions, begin)
    if flag_only or node.wol_method not in DRIVERS.with_capability(Capability.WAKE_ONLY):
        why = (
            "flag only, as asked: the network card was not touched"
            if flag_only
            else f"method {node.wol_method}: the node is not woken by its network card"
        )
        return await in_thread_session(
            sessions,
            lambda session: _set_flag(session, operation_id, node_id, enable, why, nic=None, card={}),
        )
    target = SshTarget.of(node, settings)
    steps = _Steps(sessions, operation_id, node.id)
    nic: dict[str, Any] = {}
    card: dict[str, Any] = {}  # what was read from the network card, stored on the node in the end
    try:
        async with connect(target, settings) as remote:
            await steps.ok("connect", f"{target.user}@{target.address}, host key verified")
            await _arm(remote, sessions, steps, node, target.label, enable, nic, card)
    except (SshError, NicError, UnsupportedActionError) as exc:
        summary = f"{verb} failed, flag unchanged: {exc}"
        reason = str(exc)

        def fail(session: Session) -> None:
            _update_node(session, node_id, card)
            steps.record(session, "configure network card", OperationStatus.FAILED, reason)
            operation = session.get_one(Operation, operation_id)
            finish_operation(
                session, operation, status=OperationStatus.FAILED, summary=summary, result={"nic": nic}
            )

        await in_thread_session(sessions, fail)
        log.warning("node %s: wol %s failed: %s", node_id, verb, exc)
        message = f"{exc} (operation {operation_id})"
        if isinstance(exc, SshUnreachableError):
            message += (
                f"; is it on, with SSH on port {target.port}? (`mko node update {node_id} --ssh-port PORT`);"
                f" to change only mko's flag: `mko wol {verb} {node_id} --flag-only`"
                ' (API: {"flag_only": true})'
            )
        if isinstance(exc, UnsupportedActionError):
            raise UnsupportedActionError(message) from exc
        raise NicError(message) from exc
    why = nic.get("persistence_detail", "")
    return await in_thread_session(
        sessions, lambda session: _set_flag(session, operation_id, node_id, enable, why, nic=nic, card=card)
    )


async def _arm(
    remote: SshSession,
    sessions: sessionmaker[Session],
    steps: _Steps,
    node: Node,
    label: str,
    enable: bool,
    nic: dict[str, Any],
    card: dict[str, Any],
) -> None:
    """Find the node's card, read its Wake-on, and set it (``nic``, ``card``: what was found)."""
    interfaces = await read_interfaces(remote)
    interface, mac = _card_for(node, interfaces)
    other = await in_thread_session(sessions, lambda session: _mac_owner(session, mac, node.id))
    if other is not None:
        raise NicError(f"MAC {mac} of {interface.name} already belongs to node {other.id} ({other.hostname})")
    nic |= {"interface": interface.name, "mac": mac}
    await steps.ok(
        "find network card", f"{interface.name} has {mac}", {"interfaces": [i.as_dict() for i in interfaces]}
    )
    before, record = await read_wol(remote, interface.name)
    card |= _wol_fields(interface.name, before, None)
    nic |= {"supports_wake_on": before.supports, "wake_on_before": before.wake_on}
    await steps.ok("read Wake-on", f"Supports Wake-on: {before.supports}, Wake-on: {before.wake_on}", record)
    if enable and not before.magic_capable:
        shown = before.supports if before.supports is not None else "not reported by the driver"
        raise UnsupportedActionError(
            f"{label}: NIC {interface.name} cannot wake on magic packet (Supports Wake-on: {shown})"
        )
    if not enable and not before.supports:
        await steps.ok("nothing to disable", f"{interface.name} reports no Wake-on-LAN support")
    else:
        card |= await _configure_card(remote, steps, interface.name, mac, enable, nic)
    if node.wol_mac_address is None:
        card["wol_mac_address"] = mac  # what `wol collect-mac` would have stored


def _mac_owner(session: Session, mac: str, node_id: int) -> Node | None:
    """Another node that already has ``mac``."""
    return session.scalars(select(Node).where(Node.wol_mac_address == mac, Node.id != node_id)).first()


async def _configure_card(
    remote: SshSession, steps: _Steps, interface: str, mac: str, enable: bool, nic: dict[str, Any]
) -> dict[str, Any]:
    """Set Wake-on now, make it persistent, and read it back; the node's fields to store."""
    modes = "g" if enable else "d"
    result = await remote.run(["ethtool", "-s", interface, "wol", modes], sudo=True)
    if not result.ok:
        raise NicError(f"`{result.command}` exited {result.exit_status}: {result.stderr.strip()[-300:]}")
    await steps.ok(f"ethtool -s {interface} wol {modes}", "applied", result.as_dict())
    method, description, commands = await persist(remote, interface, mac, enable)
    nic |= {"persistence": method, "persistence_detail": description}
    status = OperationStatus.SUCCEEDED if method != "none" else OperationStatus.PARTIAL
    await steps.add("persist", status, description, {"commands": commands})
    after, record = await read_wol(remote, interface)
    nic["wake_on"] = after.wake_on
    if after.magic_armed != enable:
        raise NicError(f"read back Wake-on: {after.wake_on} on {interface}, expected {modes}")
    await steps.ok("read back", f"Wake-on: {after.wake_on}", record)
    return _wol_fields(interface, after, method)


def _card_for(node: Node, interfaces: list[Interface]) -> tuple[Interface, str]:
    """Return the card with the node's MAC (or, with no MAC stored yet, the one collect-mac picks)."""
    if node.wol_mac_address is not None:
        for interface in interfaces:
            if interface.mac == node.wol_mac_address:
                return interface, node.wol_mac_address
        found = ", ".join(f"{i.name}={i.mac}" for i in interfaces if i.mac) or "none"
        raise NicError(
            f"no interface of the node has the stored MAC {node.wol_mac_address} (found {found}); "
            f"run `wol collect-mac --node-ids {node.id} --overwrite` if the card was replaced"
        )
    choice = choose_interface(interfaces, node.ip_address)
    return choice.interface, choice.mac


def _wol_fields(interface: str, wol: EthtoolWol, persistence: str | None) -> dict[str, Any]:
    """The node's NIC fields for what ethtool reported."""
    fields = {
        "nic_interface": interface,
        "nic_wol_supported": wol.supports if wol.supports is not None else "",
        "nic_wol_state": wol.wake_on if wol.wake_on is not None else "",
        "nic_checked_at": utcnow(),
    }
    if persistence is not None:
        fields["nic_wol_persistence"] = persistence
    return fields


def _update_node(session: Session, node_id: int, fields: dict[str, Any]) -> Node:
    node = get_node(session, node_id)
    for name, value in fields.items():
        setattr(node, name, value)
    session.commit()
    return node


def _set_flag(
    session: Session,
    operation_id: int,
    node_id: int,
    enable: bool,
    why: str,
    *,
    nic: dict[str, Any] | None,
    card: dict[str, Any],
) -> WolChange:
    node = _update_node(session, node_id, card)
    operation = session.get_one(Operation, operation_id)
    try:
        update_node(session, node.id, WolConfigure(wol_enabled=enable))
    except MkoError as exc:
        record_step(session, operation, name="orchestrator flag", status=OperationStatus.FAILED,
                    node_id=node.id, message=str(exc))  # fmt: skip
        finish_operation(session, operation, status=OperationStatus.FAILED, summary=str(exc))
        raise
    partial = nic is not None and nic.get("persistence") == "none"
    record_step(
        session,
        operation,
        name="orchestrator flag",
        status=OperationStatus.SUCCEEDED,
        node_id=node.id,
        message=f"wol_enabled={str(enable).lower()}",
    )
    state = "enabled" if enable else "disabled"
    summary = f"Wake-on-LAN {state} on {node.hostname}" + (f"; {why}" if why else "")
    finish_operation(
        session,
        operation,
        status=OperationStatus.PARTIAL if partial else OperationStatus.SUCCEEDED,
        summary=summary,
        result={"wol_enabled": enable, "nic": nic},
    )
    # With its cluster loaded: callers show the node (its wake site) after this session is closed.
    node = session.get_one(Node, node_id, options=[joinedload(Node.cluster)], populate_existing=True)
    return WolChange(node, operation, nic)


class _Steps:
    """Records the steps of a NIC configuration as they happen, each in a worker thread of its own."""

    def __init__(self, sessions: sessionmaker[Session], operation_id: int, node_id: int) -> None:
        self.sessions = sessions
        self.operation_id = operation_id
        self.node_id = node_id
        self.started = utcnow()

    def record(
        self,
        session: Session,
        name: str,
        status: OperationStatus,
        message: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a step in ``session``."""
        operation = session.get_one(Operation, self.operation_id)
        record_step(session, operation, name=name, status=status, node_id=self.node_id,
                    message=message, detail=detail, started_at=self.started)  # fmt: skip
        self.started = utcnow()

    async def add(
        self, name: str, status: OperationStatus, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        """Record a step now."""
        await in_thread_session(
            self.sessions, lambda session: self.record(session, name, status, message, detail)
        )

    async def ok(self, name: str, message: str, detail: dict[str, Any] | None = None) -> None:
        """Record a step that succeeded."""
        await self.add(name, OperationStatus.SUCCEEDED, message, detail)
