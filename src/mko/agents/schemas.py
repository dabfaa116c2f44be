"""What agents and mko say to each other over the API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mko.platform.validation import InputModel

__all__ = ["AgentHeartbeat", "AgentPublic", "ClaimRequest", "JobReport"]


class AgentHeartbeat(InputModel):
    """An agent saying it is alive, and where."""

    name: str = Field(min_length=1, max_length=100, description="the agent's name (default: its hostname)")
    site: str = Field(min_length=1, max_length=64, description="the site whose nodes it wakes")
    host: str = Field(default="", max_length=253, description="the machine it runs on")
    version: str = Field(default="", max_length=50)


class ClaimRequest(InputModel):
    """A claim: hand me a queued job of my site, waiting up to ``wait`` seconds for one."""

    name: str = Field(min_length=1, max_length=100)
    wait: float = Field(default=20.0, ge=0, le=120, description="long poll: seconds to wait for a job")


class ReportedOutcome(InputModel):
    """What happened to one node of a job, as the agent saw it."""

    model_config = ConfigDict(extra="ignore")

    node_id: int
    state: Literal["sent", "up", "not_up", "failed"]
    attempts: int = Field(default=0, ge=0)
    first_sent_after: float | None = None
    up_after: float | None = None
    error: str | None = Field(default=None, max_length=1000)
    verified_by: str | None = Field(default=None, max_length=100)


class JobReport(InputModel):
    """The result of a claimed job: one outcome per node, or an error for the whole job."""

    name: str = Field(min_length=1, max_length=100)
    nodes: list[ReportedOutcome] = []
    error: str | None = Field(default=None, max_length=1000)


class AgentPublic(BaseModel):
    """An agent as shown to people."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    site: str
    host: str
    version: str
    online: bool = False
    last_heartbeat_at: datetime
    seconds_since_heartbeat: float = 0.0
    registered_at: datetime
