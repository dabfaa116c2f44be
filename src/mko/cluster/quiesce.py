"""Storage quiesce: the Deployments and StatefulSets that mount PersistentVolumes, scaled to zero before
nodes go down and given their replicas back once every node is Ready; Longhorn volumes left attached.

What was scaled is stored (``scaled_workloads``, committed before ``kubectl scale`` runs): mko's own host
may lose power half-way, and the next recovery still knows what to restore. A restore scales with
``--current-replicas=0``, so a workload someone scaled meanwhile is left as they set it.

Workloads are found from ``kubectl get deploy,sts -A -o json`` (claims in the pod template's volumes, and
a StatefulSet's ``volumeClaimTemplates``, whose claims are ``TEMPLATE-STS-ORDINAL``) and ``kubectl get pvc
-A -o json`` (each claim's StorageClass). Longhorn volumes are ``volumes.longhorn.io`` objects whose
``status.state`` goes ``attached`` → ``detaching`` → ``detached`` once no pod uses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.cluster.options import K8sOptions
from mko.platform.db.models.outages import ScaledWorkload

__all__ = [
    "Workload",
    "attached_volumes",
    "pending_restores",
    "pv_workloads",
    "record_scaled",
    "scale_argv",
]


@dataclass
class Workload:
    """A Deployment or StatefulSet that mounts PersistentVolumeClaims."""

    namespace: str
    kind: str  # Deployment | StatefulSet
    name: str
    replicas: int
    claims: list[str] = field(default_factory=list)
    classes: set[str] = field(default_factory=set)

    @property
    def ref(self) -> str:
        """``default/StatefulSet/db``."""
        return f"{self.namespace}/{self.kind}/{self.name}"


def _claims(item: dict[str, Any]) -> tuple[list[str], dict[str, str | None]]:
    """Claim names a workload mounts, and the StorageClass its templates ask for (by claim)."""
    spec = item.get("spec", {})
    volumes = spec.get("template", {}).get("spec", {}).get("volumes") or []
    claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes if v.get("persistentVolumeClaim")]
    templated: dict[str, str | None] = {}
    if item.get("kind") == "StatefulSet":
        name = item.get("metadata", {}).get("name", "")
        replicas = int(spec.get("replicas", 1))
        for template in spec.get("volumeClaimTemplates") or []:
            base = template.get("metadata", {}).get("name", "")
            wanted = template.get("spec", {}).get("storageClassName")
            for ordinal in range(max(replicas, 1)):
                templated[f"{base}-{name}-{ordinal}"] = wanted
    return claims, templated


def pv_workloads(workloads_json: str, pvcs_json: str, options: K8sOptions) -> list[Workload]:
    """Workloads mounting PersistentVolumes, filtered by the options' StorageClasses (labels are
    filtered by kubectl's ``-l``), in a stable order."""
    classes: dict[tuple[str, str], str] = {}
    for pvc in json.loads(pvcs_json).get("items", []):
        meta = pvc.get("metadata", {})
        classes[(meta.get("namespace", ""), meta.get("name", ""))] = (
            pvc.get("spec", {}).get("storageClassName") or ""
        )
    wanted = set(options.quiesce_storage_classes)
    found = []
    for item in json.loads(workloads_json).get("items", []):
        kind = item.get("kind")
        if kind not in ("Deployment", "StatefulSet"):
            continue
        meta = item.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        claims, templated = _claims(item)
        used = {classes.get((namespace, c), "") for c in claims}
        used |= {classes.get((namespace, c)) or (wanted_class or "") for c, wanted_class in templated.items()}
        used.discard("")
        if not claims and not templated:
            continue
        if wanted and not used & wanted:
            continue
        replicas = int(item.get("spec", {}).get("replicas", 1))
        found.append(Workload(namespace, kind, name, replicas, claims + list(templated), used))
    return sorted(found, key=lambda w: (w.namespace, w.kind, w.name))


def scale_argv(kind: str, namespace: str, name: str, replicas: int, current: int | None = None) -> list[str]:
    """``microk8s kubectl scale statefulset/db --replicas=N [--current-replicas=M] -n NS``."""
    argv = ["microk8s", "kubectl", "scale", f"{kind.lower()}/{name}", f"--replicas={replicas}"]
    if current is not None:
        argv.append(f"--current-replicas={current}")
    return [*argv, "-n", namespace]


def record_scaled(session: Session, cluster_id: int, workload: Workload, operation_id: int | None) -> bool:
    """Store the replicas to give back (committed); False when a row from an earlier, interrupted shutdown
    already holds them (its count is the one to keep)."""
    existing = session.scalars(
        select(ScaledWorkload).where(
            ScaledWorkload.cluster_id == cluster_id,
            ScaledWorkload.namespace == workload.namespace,
            ScaledWorkload.kind == workload.kind,
            ScaledWorkload.name == workload.name,
        )
    ).first()
    if existing is not None:
        return False
    session.add(
        ScaledWorkload(
            cluster_id=cluster_id,
            namespace=workload.namespace,
            kind=workload.kind,
            name=workload.name,
            replicas=workload.replicas,
            operation_id=operation_id,
        )
    )
    session.commit()
    return True


def pending_restores(session: Session, cluster_id: int) -> list[ScaledWorkload]:
    """What shutdowns scaled to zero in this cluster and no recovery has restored yet."""
    return list(
        session.scalars(
            select(ScaledWorkload).where(ScaledWorkload.cluster_id == cluster_id).order_by(ScaledWorkload.id)
        )
    )


def attached_volumes(volumes_json: str) -> list[str]:
    """Longhorn volumes not yet detached: ``pvc-1 (pvc default/data-db-0) on lab-n3, state=detaching``."""
    out = []
    for item in json.loads(volumes_json).get("items", []):
        status = item.get("status", {})
        state = status.get("state", "")
        if state == "detached":
            continue
        k8s = status.get("kubernetesStatus") or {}
        claim = f" (pvc {k8s.get('namespace')}/{k8s.get('pvcName')})" if k8s.get("pvcName") else ""
        node = status.get("currentNodeID") or item.get("spec", {}).get("nodeID") or "?"
        out.append(f"{item.get('metadata', {}).get('name')}{claim} on {node}, state={state}")
    return out
