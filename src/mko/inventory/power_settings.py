"""A node's power settings: the method and its settings agree, secrets encrypted and bound to where they
go. Everything method-specific is read from the driver's settings model (:mod:`mko.power.params`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.platform.db.models.inventory import DEFAULT_POWER_METHOD, Cluster, Node
from mko.platform.errors import InputError
from mko.platform.secrets import SecretBox, check_secret_destination
from mko.power.base import LOCAL_SITE, Capability
from mko.power.magic import LIMITED_BROADCAST, subnet_broadcast
from mko.power.params import EncryptedSecret
from mko.power.registry import DRIVERS

__all__ = [
    "check_param_fields",
    "check_power_settings",
    "check_secret_destinations",
    "encrypt_secrets",
    "refuse_moving_secureon",
    "secret_fields",
]

#: Where a magic packet's SecureOn password goes besides the node's own fields: its site's agents.
_PACKET_FIELDS = ("wol_method", "site", "cluster_id", "ip_address")


def secret_fields() -> dict[str, str]:
    """Every secret driver setting and its help text."""
    return {name: meta.help for name, (_info, meta) in DRIVERS.all_params_fields().items() if meta.secret}


def check_param_fields(values: dict[str, Any], explicit: set[str]) -> None:
    """Normalise every driver setting a person gave (any method's), with its field's own check."""
    for name, (_info, meta) in DRIVERS.all_params_fields().items():
        value = values.get(name)
        if name in explicit and value is not None and meta.check is not None and not meta.secret:
            values[name] = meta.check(value, name)


def encrypt_secrets(session: Session, changes: dict[str, Any]) -> dict[str, Any]:
    """Replace each plain secret setting given by its ciphertext; null clears it."""
    checks = {name: meta.check for name, (_i, meta) in DRIVERS.all_params_fields().items() if meta.secret}
    for name, check in checks.items():
        if name not in changes or changes[name] is None:
            continue
        value = changes[name]
        plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if check is not None:
            plain = check(plain, name)
        changes[name] = EncryptedSecret(SecretBox.for_session(session).encrypt(plain))
    return changes


def refuse_moving_secureon(session: Session, cluster: Cluster, site: str | None) -> None:
    """Refuse to move a cluster to another site while its nodes' SecureOn passwords would follow."""
    holders = [
        node
        for node in session.scalars(
            select(Node).where(Node.cluster_id == cluster.id, Node.site.is_(None)).order_by(Node.id)
        )
        if (node.power_params or {}).get("wol_secureon") is not None
    ]
    if holders:
        names = ", ".join(f"{n.id} ({n.hostname})" for n in holders)
        raise InputError(
            "site",
            f"moving cluster {cluster.id} to site {site or 'local'} would send the stored SecureOn"
            f" password of node(s) {names} to that site's wake agents: give each of them its own site"
            " together with its SecureOn password (wol_secureon) first, or have an admin make the change",
        )


def _destination(session: Session, values: Mapping[str, Any], secret: str) -> dict[str, Any] | None:
    """Where the node's driver sends this secret: the method and the fields it is bound to; for a magic
    packet, the broadcast address or the wake agents of the node's site. None: it is not sent."""
    cls = DRIVERS.get(values["wol_method"])
    if cls is None:
        return None
    model = DRIVERS.params(values["wol_method"])  # a composite driver's: its delegates' settings too
    if secret not in model.model_fields:
        return None
    if Capability.WAKE_ONLY in cls.capabilities:
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
    binds = model.fields_meta()[secret].binds
    return {"wol_method": values["wol_method"]} | {
        field: values.get(field) for field in binds if field in model.model_fields
    }


def check_secret_destinations(
    session: Session,
    what: str,
    current: Mapping[str, Any],
    merged: Mapping[str, Any],
    given: Mapping[str, Any],
    may_rebind: bool,
) -> None:
    """Refuse a change that would send a stored secret somewhere new unless it is given again."""
    for secret, help_text in secret_fields().items():
        before, after = _destination(session, current, secret), _destination(session, merged, secret)
        moved: list[str] = []
        cls = DRIVERS.get(merged["wol_method"])
        if cls is not None and Capability.WAKE_ONLY in cls.capabilities and secret in cls.Params.model_fields:
            binds = _PACKET_FIELDS + cls.Params.fields_meta()[secret].binds
            moved = [f for f in binds if f in given and merged.get(f) != current.get(f)]
        check_secret_destination(
            what,
            help_text.split(": ", 1)[-1],
            secret,
            before,
            after,
            reused=merged.get(secret) is not None and given.get(secret) is None,
            may_rebind=may_rebind,
            fields=moved,
        )


def check_power_settings(values: dict[str, Any], explicit: set[str]) -> None:
    """Make physical/virtual and the method agree, and reject what could only fail at wake time."""
    method = str(values.get("wol_method") or DEFAULT_POWER_METHOD)
    if method not in DRIVERS:
        raise InputError("wol_method", f"power method {method!r} is not available in this version of mko")
    kind = DRIVERS.driver(method).node_kind
    if "wol_method" not in explicit and "is_virtual_node" in explicit:
        # `--virtual` alone means "started through Proxmox"; `--physical` alone means magic packets.
        if values["is_virtual_node"] and kind == "physical":
            method = "proxmox"
        elif not values["is_virtual_node"] and kind == "virtual":
            method = DEFAULT_POWER_METHOD
    cls = DRIVERS.driver(method)
    if cls.node_kind == "virtual":
        if "is_virtual_node" in explicit and not values["is_virtual_node"]:
            raise InputError("is_virtual_node", f"method {method!r} starts virtual machines only")
        values["is_virtual_node"] = True
    elif cls.node_kind == "physical" and values.get("is_virtual_node"):
        field = "wol_method" if "wol_method" in explicit else "is_virtual_node"
        raise InputError(field, f"a virtual node is started through Proxmox, not by {method}")
    values["wol_method"] = method
    try:
        params = DRIVERS.params(method).model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "power_params"
        raise InputError(field, str(error["msg"])) from None
    for name in params.missing(enabled=bool(values.get("wol_enabled"))):
        help_text = type(params).fields_meta()[name].help.split(": ", 1)[-1]
        raise InputError(name, f"method {method!r} needs the {help_text} ({name})")
