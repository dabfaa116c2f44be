"""UPSes: add, list, show, remove; their stored events; their status read straight from upsd."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.platform import validation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.rules import PowerRule
from mko.platform.db.models.ups import UPS, PowerEvent, UpsEvent
from mko.platform.errors import ConflictError, InputError, NotFoundError, NutError
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings
from mko.ups.events import DetectedEvent
from mko.ups.nut import NutClient
from mko.ups.schemas import UpsCreate
from mko.ups.status import UpsReading

__all__ = [
    "UpsTarget",
    "create_ups",
    "delete_ups",
    "get_ups",
    "list_events",
    "list_ups",
    "parse_device",
    "read_status",
    "record_events",
    "set_power_cycle",
    "status_of",
    "target_of",
]

_UPS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_NUT_USER = re.compile(r"[A-Za-z0-9_.@-]{1,100}")
_DEVICE = re.compile(r"(?P<ups>[^@\s]+)(?:@(?P<host>\[[^\]]+\]|[^:\s]+)(?::(?P<port>\d+))?)?")


def parse_device(device: str) -> tuple[str, str | None, int | None]:
    """Split NUT's ``upsname[@host[:port]]`` notation (IPv6 hosts in brackets)."""
    match = _DEVICE.fullmatch(validation.check_text(device, "device", max_length=300).strip(" "))
    if match is None:
        raise InputError("device", f"{validation.quoted(device)} is not upsname[@host[:port]]")
    host = match["host"]
    if host is not None and host.startswith("["):
        host = host[1:-1]
    return match["ups"], host, int(match["port"]) if match["port"] else None


def _check_host(value: str) -> str:
    text = validation.check_text(value, "host", max_length=300).strip(" ")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return validation.validate_hostname(text, "host")


def _checked(data: UpsCreate) -> dict[str, Any]:
    name = validation.check_text(data.name, "name", max_length=100).strip(" ")
    if not name:
        raise InputError("name", "must not be empty")
    if not _UPS_NAME.fullmatch(data.ups_name):
        raise InputError(
            "ups_name",
            f"{validation.quoted(data.ups_name)} is not a NUT device name (letters, digits, _ . -)",
        )
    if data.username is not None and not _NUT_USER.fullmatch(data.username):
        raise InputError("username", f"{validation.quoted(data.username)} is not a upsd user name")
    password = data.password.get_secret_value() if data.password is not None else None
    if password is not None and (not password or validation.text_problem(password, template_ok=True)):
        raise InputError("password", "must be non-empty and on one line")
    if data.power_cycle and (data.username is None or password is None):
        raise InputError(
            "power_cycle", "a power cycle sends instant commands: give a upsd username and password"
        )
    return {
        "name": name,
        "ups_name": data.ups_name,
        "host": _check_host(data.host),
        "port": validation.validate_port(data.port, "port"),
        "username": data.username,
        "password": password,
        "description": data.description,
        "power_cycle": data.power_cycle,
    }


def create_ups(session: Session, settings: Settings, data: UpsCreate) -> UPS:
    """Add a UPS; names are unique, and so is the device (host, port, device name)."""
    values = _checked(data)
    password = values.pop("password")
    ups = UPS(**values)
    if password is not None:
        ups.password_encrypted = SecretBox.from_settings(settings).encrypt(password)
    session.add(ups)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if session.scalars(select(UPS).where(UPS.name == values["name"])).first() is not None:
            raise ConflictError(f"a UPS named {values['name']!r} already exists") from None
        raise ConflictError(
            f"{values['ups_name']}@{values['host']}:{values['port']} is already in the inventory"
        ) from None
    return ups


def get_ups(session: Session, ups_id: int) -> UPS:
    """The UPS with this id, or NotFoundError."""
    ups = session.get(UPS, ups_id)
    if ups is None:
        raise NotFoundError("UPS", ups_id)
    return ups


def list_ups(session: Session) -> list[UPS]:
    """All UPSes by id."""
    return list(session.scalars(select(UPS).order_by(UPS.id)))


def set_power_cycle(session: Session, ups_id: int, enabled: bool) -> UPS:
    """Have the UPS power-cycle its load at the end of a shutdown for it (or not)."""
    ups = get_ups(session, ups_id)
    if enabled and (ups.username is None or ups.password_encrypted is None):
        raise InputError(
            "power_cycle",
            f"UPS {ups_id} has no upsd username and password; a power cycle sends instant commands:"
            " add the UPS again with --username and --password (a user with instcmds in upsd.users)",
        )
    ups.power_cycle = enabled
    session.commit()
    return ups


def delete_ups(session: Session, ups_id: int, *, force: bool = False) -> None:
    """Remove a UPS and its event log; one that rules still use needs ``force`` (the rules go too)."""
    ups = get_ups(session, ups_id)
    rules = session.scalar(select(func.count(PowerRule.id)).where(PowerRule.ups_id == ups_id)) or 0
    if rules and not force:
        raise ConflictError(
            f"UPS {ups_id} is used by {rules} power rule(s); delete them first, or force the removal"
        )
    session.delete(ups)
    session.commit()


# ------------------------------------------------------------------------------------ events


def record_events(
    session: Session, ups_id: int, detected: Sequence[DetectedEvent], *, commit: bool = True
) -> list[UpsEvent]:
    """Store detected events, in order, in one transaction (the caller's, with ``commit=False``)."""
    rows = [
        UpsEvent(
            ups_id=ups_id,
            event=event.event,
            occurred_at=event.at,
            status_before=event.status_before,
            status_after=event.status_after,
            battery_charge=event.battery_charge,
            message=event.message,
            detail=event.detail,
        )
        for event in detected
    ]
    session.add_all(rows)
    if commit:
        session.commit()
    else:
        session.flush()
    return rows


def list_events(
    session: Session,
    *,
    ups_id: int | None = None,
    event: PowerEvent | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[UpsEvent]:
    """Newest events first, optionally of one UPS or one kind."""
    if not 1 <= limit <= 10_000:
        raise InputError("limit", f"{limit} is out of range (1-10000)")
    query = select(UpsEvent).order_by(UpsEvent.id.desc()).limit(limit)
    if ups_id is not None:
        get_ups(session, ups_id)
        query = query.where(UpsEvent.ups_id == ups_id)
    if event is not None:
        query = query.where(UpsEvent.event == event)
    if since is not None:
        query = query.where(UpsEvent.occurred_at >= since)
    return list(session.scalars(query))


# ------------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class UpsTarget:
    """What the monitor needs of a UPS row, detached from the session (the password in memory only)."""

    id: int
    name: str
    ups_name: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_error: str | None = None

    def client(self, timeout: float) -> NutClient:
        """A NUT client for this UPS's server."""
        return NutClient(
            self.host, self.port, username=self.username, password=self.password, timeout=timeout
        )


def target_of(ups: UPS, box: SecretBox | None) -> UpsTarget:
    """Snapshot a UPS row, decrypting its password."""
    password = error = None
    if ups.password_encrypted is not None and box is not None:
        try:
            password = box.decrypt(ups.password_encrypted)
        except Exception as exc:  # a changed key: report it, keep reading (reads need no login)
            error = str(exc)
    return UpsTarget(ups.id, ups.name, ups.ups_name, ups.host, ups.port, ups.username, password, error)


def status_of(
    target: UpsTarget, reading: UpsReading | None, error: str | None, **extra: Any
) -> dict[str, Any]:
    """The ``ups status`` document: identity, reachability and, when read, the figures in words."""
    status: dict[str, Any] = {
        "ups_id": target.id,
        "name": target.name,
        "device": f"{target.ups_name}@{target.host}:{target.port}",
        "reachable": reading is not None and error is None,
        "error": error,
        "status": None,
        "tokens": [],
        "status_words": [],
        "on_battery": None,
        "battery_charge": None,
        "battery_runtime": None,
        "ups_load": None,
        "input_voltage": None,
        "last_update": None,
    }
    if reading is not None:
        status.update(reading.summary())
    status.update(extra)
    return status


async def read_status(target: UpsTarget, timeout: float) -> dict[str, Any]:
    """Read a UPS once, straight from upsd; an unreachable server is reported, not raised."""
    client = target.client(timeout)
    try:
        variables = await client.list_vars(target.ups_name)
    except NutError as exc:
        return status_of(target, None, str(exc), source="direct")
    finally:
        await client.logout()
    return status_of(target, UpsReading.from_variables(variables, utcnow()), None, source="direct")
