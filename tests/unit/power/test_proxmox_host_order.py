"""A VM depends on its Proxmox host node without being told (the wire-level test of the driver itself:
tests/integration/power/test_proxmox_host.py)."""

from __future__ import annotations

from mko.inventory.dependencies import find_cycle, implicit_edges


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
