"""The Wake-on-LAN driver: magic packets over UDP or raw Ethernet frames (EtherType 0x0842)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

from mko.platform.db.models.inventory import WolMethod
from mko.platform.errors import InputError, PowerError
from mko.power.base import STATUS, AttemptError, NodeSnapshot, PowerDriver, PowerState
from mko.power.magic import LIMITED_BROADCAST, MagicPacketSender, WakeTarget, subnet_broadcast
from mko.power.probe import probe_tcp

if TYPE_CHECKING:
    from mko.platform.secrets import SecretBox
    from mko.platform.settings import Settings

__all__ = ["WolDriver", "effective_broadcast", "wake_target"]


def effective_broadcast(node: NodeSnapshot) -> str:
    """Where a UDP magic packet goes: the configured address, else the node's subnet broadcast, else
    the limited broadcast 255.255.255.255."""
    if node.broadcast:
        return node.broadcast
    if node.prefix_len is not None:
        return subnet_broadcast(node.ip_address, node.prefix_len)
    return LIMITED_BROADCAST


def wake_target(
    node: NodeSnapshot, default_interface: str | None = None, box: Callable[[], SecretBox] | None = None
) -> WakeTarget:
    """The packet and path for one node; InputError when the node's settings cannot make one.

    ``box`` gives the key that decrypts a stored SecureOn password (only called when there is one).
    """
    if not node.mac:
        raise InputError("wol_mac_address", f"node {node.node_id} ({node.hostname}) has no MAC address")
    secureon = node.secureon
    if secureon is None and node.secureon_encrypted is not None:
        if box is None:
            raise InputError("wol_secureon", f"{node.label}: no key to decrypt its SecureOn password")
        secureon = box().decrypt(node.secureon_encrypted)
    raw = node.method == WolMethod.ETHERNET_RAW
    return WakeTarget(
        node.mac,
        transport="ethernet" if raw else "udp",
        address=effective_broadcast(node),
        port=node.wol_port,
        interface=node.interface or default_interface,
        secureon=secureon,
    )


class WolDriver(PowerDriver):
    """Sends magic packets; it cannot power off, and its "status" is only a TCP probe of the node."""

    methods: ClassVar[tuple[WolMethod, ...]] = (WolMethod.ETHERNET, WolMethod.ETHERNET_RAW)
    actions: ClassVar[frozenset[str]] = frozenset({"on", STATUS})
    label: ClassVar[str] = "Wake-on-LAN magic packets"

    def __init__(
        self,
        default_interface: str | None = None,
        probe_timeout: float = 1.0,
        box: Callable[[], SecretBox] | None = None,
    ) -> None:
        self._default_interface = default_interface
        self._probe_timeout = probe_timeout
        self._box = box
        self._sender = MagicPacketSender()
        self._targets: dict[int, WakeTarget | AttemptError] = {}

    @classmethod
    def create(cls, settings: Settings) -> WolDriver:
        """A driver sending from the settings' default interface."""
        from mko.platform.secrets import SecretBox

        return cls(
            settings.wol_default_interface, settings.probe_timeout, lambda: SecretBox.from_settings(settings)
        )

    async def query(self, node: NodeSnapshot) -> PowerState:
        """On when the node answers on its probe port; a sleeping machine cannot be asked anything else."""
        result = await probe_tcp(node.ip_address, node.probe_port, self._probe_timeout)
        return PowerState.ON if result.ok else PowerState.OFF

    def _target(self, node: NodeSnapshot) -> WakeTarget | AttemptError:
        # Built once per node: later rounds only re-send the precomputed packet.
        if node.node_id not in self._targets:
            try:
                self._targets[node.node_id] = wake_target(node, self._default_interface, self._box)
            except (InputError, PowerError) as exc:
                self._targets[node.node_id] = AttemptError(str(exc), retryable=False)
        return self._targets[node.node_id]

    async def send_on(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
        """One magic packet per node, in the order given, in one tight loop."""
        errors: dict[int, AttemptError | None] = {}
        sendable: list[tuple[int, WakeTarget]] = []
        for node in nodes:
            target = self._target(node)
            if isinstance(target, AttemptError):
                errors[node.node_id] = target
            else:
                sendable.append((node.node_id, target))
        try:
            results = self._sender.send([target for _, target in sendable])
        except PowerError as exc:  # pragma: no cover - send() reports per target; kept as a safety net
            return errors | {node_id: AttemptError(str(exc), retryable=False) for node_id, _ in sendable}
        for (node_id, _), result in zip(sendable, results, strict=True):
            errors[node_id] = None if result.ok else AttemptError(str(result.error), result.retryable)
        return errors

    def close(self) -> None:
        """Close the cached sockets."""
        self._sender.close()
