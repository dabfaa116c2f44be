"""A VM depends on its Proxmox host node without being told, and the host node is powered through the
run's own driver of its power method (the wire-level test of the driver itself:
tests/integration/power/test_proxmox_host.py)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from mko.inventory.dependencies import find_cycle, implicit_edges
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.inventory.snapshots import snapshots
from mko.platform.settings import Settings
from mko.power.base import PowerDriver
from mko.power.drivers.snmp_pdu import SnmpPduParams
from mko.power.registry import DRIVERS


def test_a_vm_depends_on_the_host_node_of_its_endpoint_and_pve_node() -> None:
    rows = [
        (1, "proxmox_host", 7, {"proxmox_host_node": "pve1"}),
        (2, "proxmox_host", 7, {"proxmox_host_node": "pve2"}),
        (3, "proxmox", 7, {"proxmox_node": "pve2"}),  # named: only its own host
        (4, "proxmox", 7, {}),  # not named: every host of the endpoint
        (5, "proxmox", 8, None),  # an endpoint no host node serves: nothing implied
        (6, "ethernet", 7, {}),
        (9, "proxmox", None, {}),
    ]
    assert implicit_edges(rows) == {3: {2}, 4: {1, 2}}
    # A host made to depend on its own VM is a cycle, which set_dependencies refuses.
    assert find_cycle(implicit_edges(rows) | {2: {3}}) == [2, 3, 2]


def test_a_host_is_powered_through_the_runs_own_driver_of_its_method(
    session: Session, settings: Settings
) -> None:
    """The composite driver imports no other driver: the inventory hands it the host as its power
    method's driver sees it, and the run hands it that driver, shared with the run's other nodes."""
    outlet = {"wol_method": "snmp_pdu", "snmp_host": "pdu.lan", "snmp_community": "private"}
    host = create_node(
        session,
        NodeCreate.model_validate(
            outlet
            | {"hostname": "pve1", "ip_address": "10.0.0.5", "snmp_outlet": 3, "wol_method": "proxmox_host"}
            | {"proxmox_host_node": "pve1", "proxmox_host_power_method": "snmp_pdu"}
        ),
    )
    nas = create_node(
        session,
        NodeCreate.model_validate(outlet | {"hostname": "nas", "ip_address": "10.0.0.6", "snmp_outlet": 4}),
    )
    wol = create_node(
        session, NodeCreate(hostname="w1", ip_address="10.0.0.7", wol_mac_address="02:00:00:00:00:07")
    )
    as_host, as_nas, as_wol = snapshots(session, [host, nas, wol])

    assert as_host.delegate is not None and as_nas.delegate is None and as_wol.delegate is None
    assert (as_host.delegate.node_id, as_host.delegate.method) == (host.id, "snmp_pdu")
    assert type(as_host.delegate.params) is SnmpPduParams and as_host.delegate.params.snmp_outlet == 3
    # The host node's settings model is its own joined with its methods' (one form, one validation).
    assert {"proxmox_host_node", "snmp_outlet", "bmc_address", "wol_mac_address"} <= set(
        DRIVERS.params("proxmox_host").model_fields
    )

    lookup = DRIVERS.lookup(settings)
    composite, pdu = lookup(as_host), lookup(as_nas)
    assert isinstance(composite, PowerDriver) and isinstance(pdu, PowerDriver)
    assert composite.peers is lookup and lookup(as_host.delegate) is pdu  # the run's one SNMP driver
    # So the host's outlet and the NAS's take turns on one PDU (a wake's per-device gap, one lock).
    assert composite.device_key(as_host) == pdu.device_key(as_nas) == "snmp:pdu.lan:161"
