"""Database: models, engine/session factory, migrations."""

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
    "WolMethod",
    "make_engine",
    "make_session_factory",
]
