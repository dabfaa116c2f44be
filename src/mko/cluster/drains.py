"""What blocks a ``kubectl drain``: its eviction errors parsed, and the PodDisruptionBudgets that match.

kubectl (1.28-1.32, drain.go) retries an eviction the API refuses with 429 every 5 s, printing on stderr
``error when evicting pods/"POD" -n "NS" (will retry after 5s): Cannot evict pod as it would violate the
pod's disruption budget.``, and at ``--timeout`` ends with ``error when evicting pods/"POD" -n "NS": global
timeout reached: 2m0s`` (exit 1). The budget's name is not in kubectl's output: it is found by matching
the pods' labels against ``kubectl get pdb -A -o json`` (policy/v1; an empty selector matches every pod of
its namespace), as the eviction API itself does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BlockingBudget", "DrainErrors", "blocking_budgets", "parse_drain", "selector_matches"]

_RETRY = re.compile(
    r'^error when evicting pods/"(?P<pod>[^"]+)" -n "(?P<ns>[^"]+)" \(will retry after \S+\): (?P<msg>.*)$'
)
_GIVEN_UP = re.compile(r'^error when evicting pods/"(?P<pod>[^"]+)" -n "(?P<ns>[^"]+)": (?P<msg>.*)$')
_BUDGET = "disruption budget"


@dataclass
class DrainErrors:
    """The pods a drain could not evict, with the API's reason for each (``ns/pod``: message)."""

    refused: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False

    @property
    def by_budget(self) -> list[str]:
        """``ns/pod`` of the pods a PodDisruptionBudget protected."""
        return [pod for pod, why in self.refused.items() if _BUDGET in why]


def parse_drain(stderr: str) -> DrainErrors:
    """Read kubectl drain's stderr (the retry lines, then the error tail)."""
    found = DrainErrors()
    for line in stderr.splitlines():
        if match := _RETRY.match(line):
            found.refused[f"{match['ns']}/{match['pod']}"] = match["msg"]
        elif (match := _GIVEN_UP.match(line)) is not None:
            key = f"{match['ns']}/{match['pod']}"
            found.timed_out = found.timed_out or "global timeout reached" in match["msg"]
            found.refused.setdefault(key, match["msg"])
    return found


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions); ``{}`` matches all, None none."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_expression_holds(e, labels) for e in selector.get("matchExpressions") or [])


def _expression_holds(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator", "")
    present, values = key in labels, expression.get("values") or []
    return {
        "In": present and labels.get(key) in values,
        "NotIn": not (present and labels.get(key) in values),
        "Exists": present,
        "DoesNotExist": not present,
    }.get(operator, False)


@dataclass
class BlockingBudget:
    """A PodDisruptionBudget that allows no disruption, and the pods of the drain it protects."""

    namespace: str
    name: str
    rule: str  # minAvailable=2 | maxUnavailable=0
    healthy: int
    expected: int
    allowed: int
    pods: list[str]

    def describe(self) -> str:
        """``default/web-pdb (minAvailable=2, healthy 2/2, allowed 0) protects default/web-1``."""
        return (
            f"{self.namespace}/{self.name} ({self.rule}, healthy {self.healthy}/{self.expected},"
            f" allowed {self.allowed}) protects {', '.join(self.pods)}"
        )


def blocking_budgets(pods_json: list[str], pdbs_json: str) -> list[BlockingBudget]:
    """The budgets matching the refused pods (each ``kubectl get pod -n NS NAME -o json``)."""
    pods = []
    for text in pods_json:
        item = json.loads(text)
        meta = item.get("metadata", {})
        pods.append((meta.get("namespace", ""), meta.get("name", ""), meta.get("labels") or {}))
    budgets: list[BlockingBudget] = []
    for item in json.loads(pdbs_json).get("items", []):
        meta, spec, status = item.get("metadata", {}), item.get("spec", {}), item.get("status", {})
        namespace = meta.get("namespace", "")
        protected = [
            f"{ns}/{name}"
            for ns, name, labels in pods
            if ns == namespace and selector_matches(spec.get("selector"), labels)
        ]
        if not protected:
            continue
        rule = (
            f"minAvailable={spec['minAvailable']}"
            if "minAvailable" in spec
            else f"maxUnavailable={spec.get('maxUnavailable', '?')}"
        )
        budgets.append(
            BlockingBudget(
                namespace,
                meta.get("name", ""),
                rule,
                int(status.get("currentHealthy", 0)),
                int(status.get("expectedPods", 0)),
                int(status.get("disruptionsAllowed", 0)),
                protected,
            )
        )
    return budgets
