"""What a node's power method needs is refused at configure time, not found missing during an outage:
a Proxmox host node needs what its own power method (its delegate) needs, exactly as a plain node of that
method does; fields that only work together (an SNMP version and its credentials, a webhook's secret
header and its value, SSH settings and their host) are refused alone. Nothing half-written stays."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mko.inventory.nodes import create_node, node_values, update_node
from mko.inventory.proxmox_hosts import create_host
from mko.inventory.schemas import NodeCreate, NodeUpdate, ProxmoxHostCreate, WolConfigure
from mko.platform.db.models.inventory import Node
from mko.platform.errors import InputError
from mko.platform.settings import Settings
from mko.power.registry import DRIVERS
from mko.wol.status import wol_status_sync

#: A complete, valid set of settings for each method a Proxmox host may be powered through (enabled, so
#: that what a power-on needs is needed too).
COMPLETE: dict[str, dict[str, Any]] = {
    "ethernet": {"wol_mac_address": "02:00:00:00:00:51"},
    "ethernet-raw": {"wol_mac_address": "02:00:00:00:00:52", "wol_interface": "eth0"},
    "ipmi": {"bmc_address": "10.0.1.5", "bmc_username": "admin", "bmc_password": "bmc-secret"},
    "redfish": {"redfish_url": "https://10.0.1.5", "bmc_username": "admin", "bmc_password": "bmc-secret"},
    "snmp_pdu": {"snmp_host": "pdu.lan", "snmp_outlet": 3, "snmp_community": "private"},
}
CASES = [(method, field) for method, values in COMPLETE.items() for field in values]


@pytest.fixture
def endpoint(session: Session, settings: Settings) -> int:
    """A Proxmox API endpoint the host nodes name."""
    data = ProxmoxHostCreate(name="pve", host="pve1.lan", token_id="mko@pve!power", secret="s3cr3t")
    return create_host(session, settings, data).id


def _plain(method: str, **values: Any) -> dict[str, Any]:
    return {"hostname": "plain", "ip_address": "10.0.0.5", "wol_method": method, "wol_enabled": True} | values


def _host(endpoint: int, method: str, **values: Any) -> dict[str, Any]:
    own = {"proxmox_host_id": endpoint, "proxmox_host_node": "pve1", "proxmox_host_power_method": method}
    return _plain("proxmox_host", hostname="pve1", **own) | values


def _refused(session: Session, work: Any) -> InputError:
    """The InputError ``work`` raises, checking that no node was added by it."""
    count = session.scalar(select(func.count()).select_from(Node))
    with pytest.raises(InputError) as caught:
        work()
    session.rollback()  # what the adapters do with a request's session: nothing may be pending
    assert session.scalar(select(func.count()).select_from(Node)) == count
    return caught.value


def test_every_delegate_of_the_host_driver_is_covered() -> None:
    assert set(DRIVERS.driver("proxmox_host").delegates) == set(COMPLETE)


@pytest.mark.parametrize(("method", "field"), CASES)
def test_a_host_needs_what_its_power_method_needs_exactly_as_a_plain_node(
    session: Session, endpoint: int, method: str, field: str
) -> None:
    given = {name: value for name, value in COMPLETE[method].items() if name != field}
    plain = _refused(session, lambda: create_node(session, NodeCreate(**_plain(method, **given))))
    host = _refused(session, lambda: create_node(session, NodeCreate(**_host(endpoint, method, **given))))
    assert plain.field == host.field == field
    option = DRIVERS.all_params_fields()[field][1].cli_option(field)
    assert plain.message.startswith(f"method '{method}' needs the ") and plain.message.endswith(f"({option})")
    assert host.message.startswith(f"method 'proxmox_host' powered on by '{method}' needs the ")
    assert host.message.split(" needs ")[1] == plain.message.split(" needs ")[1]
    # With the field, both are taken.
    create_node(session, NodeCreate(**_host(endpoint, method, **COMPLETE[method])))


def test_only_the_chosen_method_counts(session: Session, endpoint: int) -> None:
    """A host on a PDU outlet needs no BMC; a host powered by its BMC needs no outlet, nor a MAC."""
    pdu = create_node(session, NodeCreate(**_host(endpoint, "snmp_pdu", **COMPLETE["snmp_pdu"])))
    assert pdu.power_params["snmp_outlet"] == 3 and "bmc_address" not in pdu.power_params
    bmc = create_node(session, NodeCreate(**_host(endpoint, "ipmi", hostname="pve2", **COMPLETE["ipmi"])))
    assert bmc.wol_mac_address is None
    # Without a chosen method the host's own requirement speaks first.
    values = _host(endpoint, "ipmi", hostname="pve3") | {"proxmox_host_power_method": None}
    refused = _refused(session, lambda: create_node(session, NodeCreate(**values)))
    assert refused.field == "proxmox_host_power_method"


def test_a_magic_packet_host_needs_its_mac_only_when_enabled_like_a_plain_node(
    session: Session, endpoint: int
) -> None:
    refused = _refused(session, lambda: create_node(session, NodeCreate(**_host(endpoint, "ethernet"))))
    assert refused.field == "wol_mac_address"
    host = create_node(session, NodeCreate(**_host(endpoint, "ethernet", wol_enabled=False)))
    refused = _refused(session, lambda: update_node(session, host.id, WolConfigure(wol_enabled=True)))
    assert refused.field == "wol_mac_address" and "--mac-address" in refused.message


def test_a_partial_update_is_checked_against_the_merged_settings(session: Session, endpoint: int) -> None:
    host = create_node(session, NodeCreate(**_host(endpoint, "ethernet", **COMPLETE["ethernet"])))
    before = node_values(host)
    # Switching the power method alone: the BMC it would now need is missing.
    for change, field in (
        ({"proxmox_host_power_method": "ipmi"}, "bmc_address"),
        ({"proxmox_host_power_method": "ipmi", "bmc_address": "10.0.1.5"}, "bmc_username"),
        ({"proxmox_host_power_method": "snmp_pdu", "snmp_host": "pdu.lan"}, "snmp_outlet"),
        ({"proxmox_host_power_method": "ethernet-raw"}, "wol_interface"),
        ({"wol_mac_address": None}, "wol_mac_address"),
    ):
        refused = _refused(session, lambda change=change: update_node(session, host.id, NodeUpdate(**change)))
        assert refused.field == field, change
        assert node_values(session.get(Node, host.id)) == before  # nothing written
    switched = update_node(session, host.id, NodeUpdate(proxmox_host_power_method="ipmi", **COMPLETE["ipmi"]))
    assert switched.power_params["proxmox_host_power_method"] == "ipmi"
    # Then taking the BMC away is refused, and so is going back to magic packets without a MAC.
    refused = _refused(session, lambda: update_node(session, host.id, NodeUpdate(bmc_username=None)))
    assert refused.field == "bmc_username"
    update_node(session, host.id, NodeUpdate(wol_mac_address=None))  # not needed by IPMI
    refused = _refused(
        session, lambda: update_node(session, host.id, NodeUpdate(proxmox_host_power_method="ethernet"))
    )
    assert refused.field == "wol_mac_address"


def test_a_host_stored_before_this_check_is_not_called_wakeable(session: Session, endpoint: int) -> None:
    """A host saved by an older version without its BMC address: status and wakes say what to set."""
    host = create_node(session, NodeCreate(**_host(endpoint, "ipmi", **COMPLETE["ipmi"])))
    host.power_params = {k: v for k, v in host.power_params.items() if k != "bmc_address"}
    session.commit()
    status = wol_status_sync(session, host.id)
    assert status["configured"] is False and status["wakeable"] is False
    # Any change to it names what is missing, so it cannot stay broken unnoticed.
    refused = _refused(session, lambda: update_node(session, host.id, NodeUpdate(description="rack 2")))
    assert refused.field == "bmc_address"


def test_a_change_that_makes_a_vm_depend_on_its_own_dependant_is_refused(
    session: Session, endpoint: int, settings: Settings
) -> None:
    """A VM depends on its host node without being told: turning a node the VM already needs-first
    into that host, or moving the VM onto a host that needs it, is a cycle, refused before any write."""
    vm = create_node(
        session,
        NodeCreate(hostname="vm1", ip_address="10.0.0.31", wol_method="proxmox", is_virtual_node=True,
                   proxmox_vm_id=101, proxmox_host_id=endpoint, proxmox_node="pve1"),
    )  # fmt: skip
    nas = create_node(session, NodeCreate(hostname="nas", ip_address="10.0.0.32", depends_on=[vm.id]))
    before = node_values(nas)
    becomes_host = {"wol_method": "proxmox_host", "proxmox_host_id": endpoint, "proxmox_host_node": "pve1"}
    becomes_host |= {"proxmox_host_power_method": "ipmi", **COMPLETE["ipmi"]}
    refused = _refused(session, lambda: update_node(session, nas.id, NodeUpdate(**becomes_host)))
    assert refused.field == "wol_method" and "cycle" in refused.message
    assert f"vm1 ({vm.id})" in refused.message and f"nas ({nas.id})" in refused.message
    assert node_values(session.get(Node, nas.id)) == before
    # Another endpoint's host is no cycle; moving the VM onto it is.
    other = create_host(
        session, settings, ProxmoxHostCreate(name="pve-b", host="pve2.lan", token_id="mko@pve!b", secret="s")
    ).id
    update_node(session, nas.id, NodeUpdate(**becomes_host | {"proxmox_host_id": other}))
    refused = _refused(session, lambda: update_node(session, vm.id, WolConfigure(proxmox_host_id=other)))
    assert refused.field == "proxmox_host_id" and "cycle" in refused.message
    assert session.get(Node, vm.id).proxmox_host_id == endpoint  # type: ignore[union-attr]
    # Once the host depends on nothing, the VM may move; then the host may not depend on it.
    update_node(session, nas.id, NodeUpdate(depends_on=[]))
    update_node(session, vm.id, WolConfigure(proxmox_host_id=other))
    refused = _refused(session, lambda: update_node(session, nas.id, NodeUpdate(depends_on=[vm.id])))
    assert refused.field == "depends_on"


V3 = {"snmp_version": "3", "snmp_user": "mko"}
ALONE = [
    ("snmp_pdu", {}, "snmp_community"),  # v2c (the default) writes with the community
    ("snmp_pdu", {"snmp_version": "3"}, "snmp_user"),
    ("snmp_pdu", V3 | {"snmp_auth_protocol": "sha256"}, "snmp_auth_key"),
    ("snmp_pdu", V3 | {"snmp_priv_key": "priv-key-1"}, "snmp_auth_key"),  # privacy needs authentication
    ("snmp_pdu", V3 | {"snmp_auth_key": "auth-key-1", "snmp_priv_protocol": "aes256"}, "snmp_priv_key"),
    ("webhook", {"webhook_secret": "token"}, "webhook_secret_header"),
    ("webhook", {"webhook_secret_header": "X-Api-Key"}, "webhook_secret"),
    ("command", {"command_ssh_user": "mko"}, "command_ssh_host"),
    ("command", {"command_ssh_key_path": "/root/.ssh/id_ed25519"}, "command_ssh_host"),
]
TOGETHER = [
    ("snmp_pdu", {"snmp_host": "pdu.lan", "snmp_outlet": 1, "snmp_community": "private"}),
    ("snmp_pdu", {"snmp_host": "pdu.lan", "snmp_outlet": 2} | V3),
    ("snmp_pdu", {"snmp_host": "pdu.lan", "snmp_outlet": 3, "snmp_auth_key": "auth-key-1"} | V3),
    ("snmp_pdu", {"snmp_host": "pdu.lan", "snmp_outlet": 4, "snmp_auth_key": "auth-key-1"} | V3
     | {"snmp_priv_key": "priv-key-1"}),
    ("webhook", {"webhook_on_url": "https://hub.lan/on", "webhook_secret_header": "X-Api-Key",
                 "webhook_secret": "token"}),
    ("command", {"command_on_argv": ["wake"], "command_ssh_host": "jump.lan", "command_ssh_user": "mko"}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "given", "field"), ALONE)
def test_fields_that_only_work_together_are_refused_alone(
    session: Session, endpoint: int, method: str, given: dict[str, Any], field: str
) -> None:
    base = {
        "snmp_pdu": {"snmp_host": "pdu.lan", "snmp_outlet": 3},
        "webhook": {"webhook_on_url": "https://hub.lan/on"},
        "command": {"command_on_argv": ["wake", "nas"]},
    }[method]
    refused = _refused(session, lambda: create_node(session, NodeCreate(**_plain(method, **base, **given))))
    assert refused.field == field
    if method in DRIVERS.driver("proxmox_host").delegates:  # and the same for a host on that PDU
        values = _host(endpoint, method, **base, **given)
        assert _refused(session, lambda: create_node(session, NodeCreate(**values))).field == field


def test_the_working_combinations_are_taken(session: Session) -> None:
    for n, (method, values) in enumerate(TOGETHER):
        create_node(session, NodeCreate(**_plain(method, hostname=f"ok-{n}", **values)))
    # Another method's leftovers are kept and not judged: an IPMI node that once was a webhook's.
    node = create_node(session, NodeCreate(**_plain("ipmi", hostname="bmc", **COMPLETE["ipmi"])))
    update_node(session, node.id, NodeUpdate(webhook_secret_header="X-Api-Key"))


def test_an_enabled_vm_names_its_endpoint_once_mko_knows_several(
    session: Session, endpoint: int, settings: Settings
) -> None:
    """With one Proxmox host a VM may leave it out (the seed's form); with two, its start could only
    fail, so the VM is refused until it names one."""
    vm = {"hostname": "vm1", "ip_address": "10.0.0.41", "wol_method": "proxmox", "proxmox_vm_id": 101}
    one = create_node(session, NodeCreate(**vm, wol_enabled=True))
    second = ProxmoxHostCreate(name="pve-b", host="pve2.lan", token_id="mko@pve!b", secret="s")
    other = create_host(session, settings, second).id
    values = vm | {"hostname": "vm2", "ip_address": "10.0.0.42"}
    refused = _refused(session, lambda: create_node(session, NodeCreate(**values, wol_enabled=True)))
    assert refused.field == "proxmox_host_id" and "(--proxmox-host-id)" in refused.message
    create_node(session, NodeCreate(**values, wol_enabled=True, proxmox_host_id=other))
    create_node(session, NodeCreate(**values | {"hostname": "vm3"}))  # disabled: not started yet
    refused = _refused(session, lambda: update_node(session, one.id, NodeUpdate(description="a")))
    assert refused.field == "proxmox_host_id"
    update_node(session, one.id, WolConfigure(proxmox_host_id=endpoint))
