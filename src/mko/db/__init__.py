"""Database: models, engine/session factory, migrations."""

from mko.db.auth_models import ApiToken, AuthEvent, Role, User, WebSession
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
from mko.db.session import make_engine, make_session_factory

__all__ = [
    "UPS",
    "ApiToken",
    "AuthEvent",
    "Base",
    "Cluster",
    "ClusterAction",
    "Node",
    "NodeRole",
    "Operation",
    "OperationStatus",
    "OperationStep",
    "PowerEvent",
    "PowerRule",
    "ProxmoxHost",
    "Role",
    "User",
    "WebSession",
    "WolMethod",
    "make_engine",
    "make_session_factory",
]
