"""Database: models, engine/session factory, migrations."""

from mko.db.agent_models import Agent, WakeJob, WakeJobStatus
from mko.db.auth_models import ApiToken, AuthEvent, Role, User, WebSession
from mko.db.ha_models import Instance, UpsState
from mko.db.models import (
    UPS,
    Base,
    Cluster,
    ClusterAction,
    Node,
    NodeRole,
    Operation,
    OperationStatus,
    OperationStep,
    PowerEvent,
    PowerRule,
    ProxmoxHost,
    WolMethod,
)
from mko.db.outage_models import Outage, OutagePhase
from mko.db.session import make_engine, make_session_factory

__all__ = [
    "UPS",
    "Agent",
    "ApiToken",
    "AuthEvent",
    "Base",
    "Cluster",
    "ClusterAction",
    "Instance",
    "Node",
    "NodeRole",
    "Operation",
    "OperationStatus",
    "OperationStep",
    "Outage",
    "OutagePhase",
    "PowerEvent",
    "PowerRule",
    "ProxmoxHost",
    "Role",
    "UpsState",
    "User",
    "WakeJob",
    "WakeJobStatus",
    "WebSession",
    "WolMethod",
    "make_engine",
    "make_session_factory",
]
