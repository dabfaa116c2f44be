"""A node's power settings: the method and its fields agree, the methods this version
drives, secrets encrypted and bound to where they go."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.platform import validation
from mko.platform.db.models.inventory import Cluster, Node, WolMethod
from mko.platform.errors import InputError
from mko.platform.secrets import SecretBox, check_secret_destination
from mko.power.base import LOCAL_SITE
from mko.power.fields import check_driver_settings, validate_secret
from mko.power.magic import LIMITED_BROADCAST, subnet_broadcast

__all__ = ["BUILT_METHODS"]


# Power methods whose driver exists in this version; the others are refused at configure time
# rather than accepted and failing at 3 a.m. when the power comes back.
BUILT_METHODS = frozenset(
    {WolMethod.ETHERNET, WolMethod.ETHERNET_RAW, WolMethod.PROXMOX, WolMethod.IPMI, WolMethod.REDFISH}
)
MAGIC_PACKET_METHODS = frozenset({WolMethod.ETHERNET, WolMethod.ETHERNET_RAW})


def _refuse_moving_secureon(session: Session, cluster: Cluster, site: str | None) -> None:
    holders = session.scalars(
        select(Node)
        .where(Node.cluster_id == cluster.id, Node.site.is_(None), Node.wol_secureon_encrypted.is_not(None))
        .order_by(Node.id)
    ).all()
    if holders:
        names = ", ".join(f"{n.id} ({n.hostname})" for n in holders)
        raise InputError(
            "site",
            f"moving cluster {cluster.id} to site {site or 'local'} would send the stored SecureOn"
            f" password of node(s) {names} to that site's wake agents: give each of them its own site"
            " together with its SecureOn password (wol_secureon) first, or have an admin make the change",
        )


def _encrypt_secrets(session: Session, changes: dict[str, Any]) -> dict[str, Any]:
    """Replace a plain ``bmc_password`` or ``wol_secureon`` by its ciphertext column; null clears it."""
    for field, check in (("bmc_password", validate_secret), ("wol_secureon", validation.normalize_secureon)):
        if field not in changes:
            continue
        secret = changes.pop(field)
        if secret is None:
            changes[f"{field}_encrypted"] = None
            continue
        plain = check(secret.get_secret_value() if isinstance(secret, SecretStr) else secret, field)
        changes[f"{field}_encrypted"] = SecretBox.for_session(session).encrypt(plain)
    return changes


# Where a node's stored secrets are sent: the BMC password to the BMC (by method), the SecureOn
# password in every magic packet, to the broadcast address, or to the wake agents of the node's site.
_BMC_DESTINATION = {
    WolMethod.IPMI: ("wol_method", "bmc_address", "bmc_port"),
    WolMethod.REDFISH: ("wol_method", "redfish_url", "bmc_verify_tls", "bmc_ca_file"),
}
_SECUREON_FIELDS = (
    "wol_method", "site", "cluster_id", "wol_broadcast_address", "wol_prefix_len", "ip_address",
)  # fmt: skip


def _bmc_destination(values: Mapping[str, Any]) -> dict[str, Any] | None:
    fields = _BMC_DESTINATION.get(WolMethod(values["wol_method"]))
    return None if fields is None else {field: values.get(field) for field in fields}


def _secureon_destination(session: Session, values: Mapping[str, Any]) -> dict[str, Any] | None:
    if WolMethod(values["wol_method"]) not in MAGIC_PACKET_METHODS:
        return None
    site = values.get("site")
    if site is None and values.get("cluster_id") is not None:
        cluster = session.get(Cluster, values["cluster_id"])
        site = cluster.site if cluster is not None else None
    if values.get("wol_broadcast_address"):
        address = values["wol_broadcast_address"]
    elif values.get("wol_prefix_len") is not None:
        address = subnet_broadcast(values["ip_address"], values["wol_prefix_len"])
    else:
        address = LIMITED_BROADCAST
    return {"site": None if site == LOCAL_SITE else site, "address": address}


def _check_secret_destinations(
    session: Session,
    what: str,
    current: Mapping[str, Any],
    merged: Mapping[str, Any],
    given: Mapping[str, Any],
    may_rebind: bool,
) -> None:
    check_secret_destination(
        what,
        "BMC password",
        "bmc_password",
        _bmc_destination(current),
        _bmc_destination(merged),
        reused=merged.get("bmc_password_encrypted") is not None and given.get("bmc_password") is None,
        may_rebind=may_rebind,
    )
    check_secret_destination(
        what,
        "SecureOn password",
        "wol_secureon",
        _secureon_destination(session, current),
        _secureon_destination(session, merged),
        reused=merged.get("wol_secureon_encrypted") is not None and given.get("wol_secureon") is None,
        may_rebind=may_rebind,
        fields=[f for f in _SECUREON_FIELDS if f in given and merged.get(f) != current.get(f)],
    )


def _check_power_method(values: dict[str, Any], explicit: set[str]) -> None:
    """Make physical/virtual and the method agree, and reject what could only fail at wake time."""
    method = WolMethod(values["wol_method"])
    if "wol_method" not in explicit and "is_virtual_node" in explicit:
        # `--virtual` alone means "started through Proxmox"; `--physical` alone means magic packets.
        if values["is_virtual_node"] and method in MAGIC_PACKET_METHODS:
            method = WolMethod.PROXMOX
        elif not values["is_virtual_node"] and method == WolMethod.PROXMOX:
            method = WolMethod.ETHERNET
    if method not in BUILT_METHODS:
        raise InputError(
            "wol_method", f"power method {method.value!r} is not available in this version of mko"
        )
    if method == WolMethod.PROXMOX:
        if "is_virtual_node" in explicit and not values["is_virtual_node"]:
            raise InputError("is_virtual_node", "method 'proxmox' starts virtual machines only")
        values["is_virtual_node"] = True
    elif values.get("is_virtual_node"):
        field = "wol_method" if "wol_method" in explicit else "is_virtual_node"
        raise InputError(field, f"a virtual node is started through Proxmox, not by {method.value}")
    values["wol_method"] = method
    if method == WolMethod.PROXMOX:
        if values.get("wol_enabled") and values.get("proxmox_vm_id") is None:
            raise InputError("proxmox_vm_id", "a virtual node needs its Proxmox VM id to be woken")
        return
    if method in (WolMethod.IPMI, WolMethod.REDFISH):
        check_driver_settings(method, values)
        return
    if method == WolMethod.ETHERNET_RAW and not values.get("wol_interface"):
        raise InputError("wol_interface", "raw Ethernet magic packets need the interface to send them on")
    if values.get("wol_enabled") and not values.get("wol_mac_address"):
        raise InputError("wol_mac_address", "Wake-on-LAN cannot be enabled without the node's MAC address")
