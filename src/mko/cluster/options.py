"""A cluster's Kubernetes-aware shutdown options: the datastore backup, drains past a blocking
PodDisruptionBudget, the storage quiesce, and whether a failed preflight stops a scheduled shutdown.
Stored in ``clusters.k8s`` (only what an operator set).

StorageClass names and label selectors reach ``kubectl``'s argument vector, log lines and pages, so they
are checked against Kubernetes' own grammar here (DNS-1123 subdomains, label keys and values) and refused
with the field named, never cleaned up.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationError, create_model, field_validator
from sqlalchemy.orm import Session

from mko.inventory.clusters import get_cluster
from mko.platform.errors import InputError
from mko.platform.validation import InputModel, quoted

__all__ = ["K8sOptions", "K8sOptionsUpdate", "get_options", "label_selector", "update_options"]

# Kubernetes' grammar (k8s.io/apimachinery/pkg/util/validation): DNS-1123 subdomain, label name and value.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def _storage_class(value: str) -> str:
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{quoted(value)} is not a StorageClass name"
            " (lower-case letters, digits, '-' and '.'; at most 253)"
        )
    return value


def _label(value: str) -> str:
    """``key=value`` or ``key`` (the label exists), with Kubernetes' label key and value grammar."""
    key, equals, wanted = value.partition("=")
    prefix, slash, name = key.rpartition("/")
    good_key = (
        0 < len(name) <= 63
        and _LABEL_NAME.fullmatch(name) is not None
        and (not slash or (0 < len(prefix) <= 253 and _SUBDOMAIN.fullmatch(prefix) is not None))
    )
    good_value = not equals or wanted == "" or (len(wanted) <= 63 and _LABEL_NAME.fullmatch(wanted))
    if not good_key or not good_value:
        raise ValueError(
            f"{quoted(value)} is not a label selector: key=value or key, with a Kubernetes label key"
            " ([prefix/]name, name at most 63 of letters, digits, '-', '_', '.') and value"
        )
    return value


class K8sOptions(InputModel):
    """How mko shuts a MicroK8s cluster down and brings it back (defaults apply to what is not set)."""

    backup: bool = Field(
        default=True, description="take a dqlite datastore backup on the first control plane before it stops"
    )
    backup_keep: int = Field(default=5, ge=1, le=1000, description="backups kept per cluster on mko's host")
    backup_timeout: float = Field(
        default=300.0, ge=5, le=7200, description="seconds `microk8s dbctl backup` may take (it can hang)"
    )
    backup_required: bool = Field(
        default=False,
        description="a failed, empty or hung backup stops the shutdown before anything is stopped"
        " (false: reported, and the shutdown goes on)",
    )
    drain_grace: float | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="seconds a drain waits on evictions (kubectl drain --timeout); null: MKO_DRAIN_TIMEOUT",
    )
    eviction_fallback: bool = Field(
        default=True,
        description="a whole-cluster power-off deletes the pods a PodDisruptionBudget still protects after"
        " the drain grace (kubectl drain --disable-eviction); a single node's maintenance never does",
    )
    quiesce: bool = Field(
        default=True,
        description="scale Deployments and StatefulSets that mount PersistentVolumes to zero before nodes"
        " go down; the recovery restores their replicas once every node is Ready",
    )
    quiesce_storage_classes: list[str] = Field(
        default=[], max_length=50, description="only workloads whose volumes use these StorageClasses"
    )
    quiesce_labels: list[str] = Field(
        default=[], max_length=20, description="only workloads with these labels (key=value or key)"
    )
    detach_timeout: float = Field(
        default=300.0, ge=0, le=3600, description="seconds to wait for Longhorn volumes to detach"
    )
    preflight_required: bool = Field(
        default=False,
        description="a scheduled shutdown refuses to start when a preflight check (mko cluster check)"
        " fails; a shutdown for power loss never waits for the checks nor stops because of them",
    )

    @field_validator("quiesce_storage_classes")
    @classmethod
    def _classes(cls, values: list[str]) -> list[str]:
        return [_storage_class(v) for v in values]

    @field_validator("quiesce_labels")
    @classmethod
    def _labels(cls, values: list[str]) -> list[str]:
        return [_label(v) for v in values]


def _optional(annotation: Any) -> Any:
    return annotation | None


# Every field optional: a change names only what it changes (null: back to the default). The checks are
# K8sOptions' own, run on the whole once the change is applied (update_options).
K8sOptionsUpdate = create_model(  # type: ignore[call-overload]
    "K8sOptionsUpdate",
    __base__=InputModel,
    __doc__="Options of a cluster to change; fields not sent stay as they are (null: the default).",
    **{name: (_optional(field.annotation), None) for name, field in K8sOptions.model_fields.items()},
)


def label_selector(options: K8sOptions) -> str:
    """``kubectl -l`` form of the label filter (empty: none)."""
    return ",".join(options.quiesce_labels)


def get_options(session: Session, cluster_id: int) -> K8sOptions:
    """The cluster's options, defaults filled in (NotFoundError: no such cluster)."""
    return K8sOptions.model_validate(get_cluster(session, cluster_id).k8s or {})


def update_options(session: Session, cluster_id: int, changes: dict[str, Any]) -> K8sOptions:
    """Apply CHANGES (field: value; None: back to the default), validate the whole, store, return it."""
    cluster = get_cluster(session, cluster_id)
    stored = dict(cluster.k8s or {})
    for name, value in changes.items():
        if name not in K8sOptions.model_fields:
            raise InputError(name, "is not a cluster option")
        if value is None:
            stored.pop(name, None)
        else:
            stored[name] = value
    try:
        options = K8sOptions.model_validate(stored)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "k8s"
        raise InputError(field, str(error["msg"]).removeprefix("Value error, ")) from None
    cluster.k8s = options.model_dump(include=set(stored))
    session.commit()
    return options
