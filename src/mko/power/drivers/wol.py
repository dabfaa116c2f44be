"""The Wake-on-LAN driver: magic packets over UDP or raw Ethernet frames (EtherType 0x0842)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from mko.platform import validation
from mko.platform.errors import InputError, PowerError
from mko.power.base import AttemptError, Capability, NodeSnapshot, PowerDriver, PowerState
from mko.power.fields import integer_range
from mko.power.magic import LIMITED_BROADCAST, MagicPacketSender, WakeTarget, subnet_broadcast
from mko.power.params import DriverParams, RevealedSecret, StoredSecret, column, param, secret
from mko.power.probe import probe_tcp

if TYPE_CHECKING:
    from mko.platform.secrets import SecretBox
    from mko.platform.settings import Settings

__all__ = ["RawWolDriver", "RawWolParams", "WolDriver", "WolParams", "effective_broadcast", "wake_target"]

# Nodes whose packets are built, then sent, at a time: small enough that the first packet of a large
# wake leaves at once, large enough that the send loop stays tight.
SEND_CHUNK = 256


class WolParams(DriverParams):
    """Magic packets over UDP: the seed's fields (in the nodes table) and what mko adds."""

    wol_mac_address: str | None = column(
        help="MAC address of the node's network card", option="--mac-address", check=validation.normalize_mac
    )
    wol_port: int = column(9, help="UDP port of the magic packet (7 or 9)", option="--port",
                           check=validation.validate_port)  # fmt: skip
    wol_broadcast_address: str | None = column(
        help="broadcast address the packet is sent to",
        option="--broadcast",
        check=validation.validate_broadcast,
    )
    wol_interface: str | None = param(
        help="orchestrator-side interface to send from (needed by ethernet-raw)",
        option="--interface",
        check=validation.validate_interface,
    )
    wol_prefix_len: int | None = param(
        help="the node's subnet prefix length, for its subnet broadcast",
        option="--prefix-len",
        check=integer_range(0, 32, "a prefix length"),
    )
    wol_secureon: StoredSecret = secret(
        help="SecureOn password carried in every magic packet",
        option="--secureon",
        check=validation.normalize_secureon,
        binds=("wol_broadcast_address", "wol_prefix_len"),
    )

    required_when_enabled: ClassVar[tuple[str, ...]] = ("wol_mac_address",)


class RawWolParams(WolParams):
    """Raw Ethernet frames (EtherType 0x0842) on a named interface, like etherwake."""

    required: ClassVar[tuple[str, ...]] = ("wol_interface",)


def effective_broadcast(node: NodeSnapshot) -> str:
    """Where a UDP magic packet goes: the configured address, else the node's subnet broadcast, else
    the limited broadcast 255.255.255.255."""
    params = node.params
    assert isinstance(params, WolParams)
    if params.wol_broadcast_address:
        return params.wol_broadcast_address
    if params.wol_prefix_len is not None:
        return subnet_broadcast(node.ip_address, params.wol_prefix_len)
    return LIMITED_BROADCAST


def wake_target(
    node: NodeSnapshot, default_interface: str | None = None, box: Callable[[], SecretBox] | None = None
) -> WakeTarget:
    """The packet and path for one node; InputError when the node's settings cannot make one.

    ``box`` gives the key that decrypts a stored SecureOn password (only called when there is one).
    """
    params = node.params
    if not isinstance(params, WolParams) or not params.wol_mac_address:
        raise InputError("wol_mac_address", f"node {node.node_id} ({node.hostname}) has no MAC address")
    secureon: str | None = None
    if isinstance(params.wol_secureon, RevealedSecret):
        secureon = str(params.wol_secureon)
    elif params.wol_secureon is not None:
        if box is None:
            raise InputError("wol_secureon", f"{node.label}: no key to decrypt its SecureOn password")
        secureon = box().decrypt(str(params.wol_secureon))
    raw = node.method == RawWolDriver.name
    return WakeTarget(
        params.wol_mac_address,
        transport="ethernet" if raw else "udp",
        address=effective_broadcast(node),
        port=params.wol_port,
        interface=params.wol_interface or default_interface,
        secureon=secureon,
    )


class WolDriver(PowerDriver):
    """Sends magic packets in UDP datagrams (the seed's default); it cannot power off, and its "status"
    is only a TCP probe of the node."""

    name: ClassVar[str] = "ethernet"
    Params: ClassVar[type[DriverParams]] = WolParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.QUERY, Capability.WAKE_ONLY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "physical"
    label: ClassVar[str] = "Wake-on-LAN magic packets"
    badge: ClassVar[str] = "WoL"

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
        """One magic packet per node, in the order given, in tight loops of :data:`SEND_CHUNK` nodes: the
        first packets leave once the first chunk's packets are built, not all 10,000."""
        errors: dict[int, AttemptError | None] = {}
        for start in range(0, len(nodes), SEND_CHUNK):
            errors |= self._send_chunk(nodes[start : start + SEND_CHUNK])
        return errors

    def _send_chunk(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
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


class RawWolDriver(WolDriver):
    """Sends magic packets as raw Ethernet frames (EtherType 0x0842) on a named interface."""

    name: ClassVar[str] = "ethernet-raw"
    badge: ClassVar[str] = "WoL raw"
    Params: ClassVar[type[DriverParams]] = RawWolParams
