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
from mko.power.base import LOCAL_SITE, Capability, PowerDriver
from mko.power.magic import LIMITED_BROADCAST, subnet_broadcast
from mko.power.params import DriverParams, EncryptedSecret
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


Sender = tuple[str, type[PowerDriver], type[DriverParams]]


def _sender(values: Mapping[str, Any]) -> Sender | None:
    """The method that uses the node's secrets, its driver and its settings model: the node's own, or
    for a composite driver's node (a Proxmox host) the method it is powered through. None: no driver."""
    method = values["wol_method"]
    cls = DRIVERS.get(method)
    if cls is None:
        return None
    if cls.delegate_setting is not None:
        chosen = DRIVERS.params(method).model_validate(values).delegate()
        if chosen is None:
            return None  # no method chosen yet: the host's secrets go nowhere
        method = chosen[0]
        cls = DRIVERS.driver(method)
    return method, cls, DRIVERS.params(method)


def _destination(
    session: Session, values: Mapping[str, Any], sender: Sender | None, secret: str
) -> dict[str, Any] | None:
    """Where the node's driver (``sender``) sends this secret: the method and the fields it is bound to;
    for a magic packet, the broadcast address or the wake agents of the node's site. None: not sent."""
    if sender is None:
        return None
    method, cls, model = sender
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
    return {"wol_method": method} | {
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
    was, now = _sender(current), _sender(merged)
    # What a person may have changed to move a secret, named in the message: where a magic packet goes,
    # or the method (a Proxmox host's: its power method), and the secret's bound fields.
    composite = DRIVERS.get(merged["wol_method"])
    deciding = ("wol_method", composite.delegate_setting if composite else None)
    for secret, help_text in secret_fields().items():
        before = _destination(session, current, was, secret)
        after = _destination(session, merged, now, secret)
        moved: list[str] = []
        if now is not None and secret in now[2].model_fields:
            packet = _PACKET_FIELDS if Capability.WAKE_ONLY in now[1].capabilities else deciding
            binds = (*packet, *now[2].fields_meta()[secret].binds)
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
    # A composite driver's node (a Proxmox host) needs, besides its own, what its power method needs.
    chosen = params.delegate()
    for name in params.missing(enabled=bool(values.get("wol_enabled"))):
        meta = type(params).fields_meta()[name]
        by = "" if chosen is None or name in cls.Params.model_fields else f" powered on by {chosen[0]!r}"
        what, option = meta.help.split(": ", 1)[-1], meta.cli_option(name)
        raise InputError(name, f"method {method!r}{by} needs the {what}: set {name} ({option})")
