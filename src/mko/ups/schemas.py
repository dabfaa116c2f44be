"""Pydantic families of UPSes, their events and power rules (shared by the API, the CLI and the web)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from mko.platform.db.models.ups import PowerEvent
from mko.platform.validation import InputModel

__all__ = ["UpsCreate", "UpsEventPublic", "UpsPublic"]


class UpsCreate(InputModel):
    """A UPS: the device name on a NUT server (``upsname@host:port`` in NUT's own notation)."""

    name: str = Field(min_length=1, max_length=100, description="mko's name for this UPS")
    ups_name: str = Field(min_length=1, max_length=100, description="the device name in upsd, e.g. myups")
    host: str = Field(default="127.0.0.1", description="host name or address of upsd")
    port: int = Field(default=3493, description="upsd's TCP port")
    username: str | None = Field(default=None, description="upsd user (upsd.users), optional")
    password: SecretStr | None = Field(default=None, description="upsd password; write-only")
    description: str = ""
    power_cycle: bool = Field(
        default=False,
        description="at the end of a shutdown for this UPS, once every node is confirmed off, have it"
        " cut and restore its load (INSTCMD shutdown.return; needs username/password with instcmds)",
    )


class UpsPublic(BaseModel):
    """A UPS as shown to people; the password is reported as set or not, never shown."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    ups_name: str
    host: str
    port: int
    username: str | None
    password_set: bool = False
    description: str
    power_cycle: bool
    created_at: datetime
    device: str = ""
    feeds: list[str] = Field(default_factory=list, description="host names of the nodes it feeds")
    fed_node_ids: list[int] = Field(default_factory=list, description="ids of the nodes it feeds")

    @classmethod
    def of(cls, ups: Any, feeds: Sequence[tuple[int, str]] = ()) -> UpsPublic:
        """Build from a UPS row and the (id, hostname) of the nodes it feeds."""
        public = cls.model_validate(ups)
        public.fed_node_ids = [node_id for node_id, _ in feeds]
        public.feeds = [hostname for _, hostname in feeds]
        public.password_set = ups.password_encrypted is not None
        host = f"[{ups.host}]" if ":" in ups.host else ups.host
        public.device = f"{ups.ups_name}@{host}:{ups.port}"
        return public


class UpsEventPublic(BaseModel):
    """One stored power event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    ups_id: int
    event: PowerEvent
    occurred_at: datetime
    status_before: str | None
    status_after: str | None
    battery_charge: float | None
    message: str
    detail: dict[str, Any]
