"""Proxmox hosts: the PVE API endpoints that start and stop virtual nodes. Add, list, change, remove, test.

A host authenticates with an API token (``token_id`` = ``user@realm!name`` plus its secret, the
recommended way) or a user and password. The secret is stored encrypted (:mod:`mko.platform.secrets`) and is
never returned. TLS is verified by default: against the system CAs, a given CA file (e.g. Proxmox's
own ``/etc/pve/pve-root-ca.pem``), or a pinned SHA-256 certificate fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.inventory.schemas import ProxmoxHostCreate, ProxmoxHostUpdate
from mko.inventory.snapshots import endpoint_of
from mko.platform import validation
from mko.platform.db.models.inventory import Node, ProxmoxHost
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.secrets import SecretBox, check_secret_destination
from mko.platform.settings import Settings
from mko.power.base import ProxmoxEndpoint
from mko.power.fields import (
    normalize_fingerprint,
    validate_ca_file,
    validate_host,
    validate_pve_user,
    validate_secret,
    validate_token_id,
)

__all__ = [
    "HostLogin",
    "check_host",
    "check_login",
    "create_host",
    "delete_host",
    "get_host",
    "host_login",
    "list_hosts",
    "node_counts",
    "update_host",
]


def get_host(session: Session, host_id: int) -> ProxmoxHost:
    """The Proxmox host with this id, or NotFoundError."""
    host = session.get(ProxmoxHost, host_id)
    if host is None:
        raise NotFoundError("Proxmox host", host_id)
    return host


def list_hosts(session: Session) -> list[ProxmoxHost]:
    """All Proxmox hosts by id."""
    return list(session.scalars(select(ProxmoxHost).order_by(ProxmoxHost.id)))


def node_counts(session: Session) -> dict[int, int]:
    """Number of nodes naming each Proxmox host."""
    rows = session.execute(
        select(Node.proxmox_host_id, func.count(Node.id))
        .where(Node.proxmox_host_id.is_not(None))
        .group_by(Node.proxmox_host_id)
    )
    return {host_id: count for host_id, count in rows if host_id is not None}


def create_host(session: Session, settings: Settings, data: ProxmoxHostCreate) -> ProxmoxHost:
    """Add a Proxmox host after checking every field; the secret is stored encrypted."""
    values = _checked(data.model_dump(exclude={"secret"}), explicit=set(data.model_fields_set))
    plain = validate_secret(data.secret.get_secret_value(), "secret")
    host = ProxmoxHost(**values, secret_encrypted=SecretBox.from_settings(settings).encrypt(plain))
    session.add(host)
    _commit(session, f"a Proxmox host named {values['name']!r} already exists")
    return host


def update_host(
    session: Session,
    settings: Settings,
    host_id: int,
    data: ProxmoxHostUpdate,
    *,
    may_rebind_secret: bool = False,
) -> ProxmoxHost:
    """Change the fields sent; switching between token and password needs the new secret too.

    Changing where the secret goes (host, port, TLS verification, CA file, pinned fingerprint) needs
    the secret again in the same request, unless ``may_rebind_secret`` (an admin) says otherwise.
    """
    host = get_host(session, host_id)
    changes = data.model_dump(exclude_unset=True, exclude={"secret"})
    current = {key: getattr(host, key) for key in _COLUMNS}
    merged = _checked(current | changes, explicit=set(changes))
    if data.secret is None and bool(merged["token_id"]) != bool(host.token_id):
        raise InputError("secret", "switching between token and password needs the new secret")
    check_secret_destination(
        f"Proxmox host {host_id}",
        "secret",
        "secret",
        {key: current[key] for key in _DESTINATION},
        {key: merged[key] for key in _DESTINATION},
        reused=data.secret is None and host.secret_encrypted is not None,
        may_rebind=may_rebind_secret,
    )
    for key, value in merged.items():
        setattr(host, key, value)
    if data.secret is not None:
        plain = validate_secret(data.secret.get_secret_value(), "secret")
        host.secret_encrypted = SecretBox.from_settings(settings).encrypt(plain)
    _commit(session, f"a Proxmox host named {host.name!r} already exists")
    return host


def delete_host(session: Session, host_id: int) -> None:
    """Remove a host no node uses; one still in use is a conflict naming its nodes."""
    host = get_host(session, host_id)
    users = session.scalars(select(Node).where(Node.proxmox_host_id == host_id).order_by(Node.id)).all()
    if users:
        names = ", ".join(f"{n.id} ({n.hostname})" for n in users)
        raise ConflictError(
            f"Proxmox host {host_id} is used by node(s) {names}; reconfigure them first"
            " (`mko wol configure ID --physical`, or `--proxmox-host-id OTHER`)"
        )
    session.delete(host)
    _commit(session, "Proxmox host is still referenced")


@dataclass(frozen=True)
class HostLogin:
    """What a check of a Proxmox host needs, read from the database (the secret decrypted)."""

    id: int
    name: str
    endpoint: ProxmoxEndpoint
    secret: str
    timeout: float


def host_login(session: Session, settings: Settings, host_id: int) -> HostLogin:
    """The host's endpoint and secret for :func:`check_login`."""
    host = get_host(session, host_id)
    if not host.secret_encrypted:
        raise InputError("secret", f"Proxmox host {host_id} has no secret stored")
    secret = SecretBox.from_settings(settings).decrypt(host.secret_encrypted)
    return HostLogin(host.id, host.name, endpoint_of(host), secret, settings.power_api_timeout)


async def check_login(login: HostLogin) -> dict[str, Any]:
    """Connect and log in as mko would: version, nodes and number of guests, or a PowerError."""
    from mko.power.proxmox_api import check_endpoint

    result = await check_endpoint(login.endpoint, login.secret, login.timeout)
    return {"id": login.id, "name": login.name, **result}


async def check_host(session: Session, settings: Settings, host_id: int) -> dict[str, Any]:
    """:func:`check_login` of host ``host_id``."""
    return await check_login(host_login(session, settings, host_id))


_COLUMNS = ("name", "host", "port", "token_id", "username", "verify_tls", "ca_file", "fingerprint")
# Where the secret is sent, and whom mko trusts to be that place.
_DESTINATION = ("host", "port", "verify_tls", "ca_file", "fingerprint")


def _checked(values: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """Normalise the fields given and check the combination (exactly one way to log in)."""
    result = {key: values.get(key) for key in _COLUMNS}
    name = (result["name"] or "").strip()
    if not name:
        raise InputError("name", "must not be empty")
    result["name"] = name
    if result["host"] is None:
        raise InputError("host", "is required")
    result["host"] = validate_host(result["host"], "host")
    result["port"] = validation.validate_port(result["port"] if result["port"] is not None else 8006, "port")
    if result["verify_tls"] is None:
        raise InputError("verify_tls", "must not be empty")
    checks: dict[str, Callable[[str, str], str]] = {
        "token_id": validate_token_id,
        "username": validate_pve_user,
        "ca_file": validate_ca_file,
        "fingerprint": normalize_fingerprint,
    }
    for key, check in checks.items():
        value = result[key]
        if value is not None and key in explicit:
            result[key] = check(str(value), key)
    if result["token_id"] and result["username"]:
        field = "username" if "username" in explicit else "token_id"
        raise InputError(field, "give either an API token id or a user name, not both")
    if not result["token_id"] and not result["username"]:
        raise InputError("token_id", "give an API token id (user@realm!name) or a user name (user@realm)")
    if result["fingerprint"] and result["ca_file"]:
        raise InputError("fingerprint", "give either a CA file or a fingerprint to pin, not both")
    return result


def _commit(session: Session, conflict_message: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(conflict_message) from None
    except BaseException:
        session.rollback()
        raise
