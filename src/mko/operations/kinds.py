"""Every operation kind name in one place (``operations.kind``): what the failover, the owners' reaper
and the metrics read to tell a wake from a rule, a shutdown or a recovery."""

from __future__ import annotations

__all__ = ["POWER_KIND_PREFIX", "RULE_OPERATION_KIND", "SHUTDOWN_KINDS"]


WAKE_KIND_PREFIX = "wol_wake"


POWER_KIND_PREFIX = "power"


RULE_OPERATION_KIND = "power_rule"


SHUTDOWN_KINDS = ("cluster_shutdown", "cluster_force_shutdown")


RECOVER_KIND = "cluster_recover"

# A recovery's step about one node's Kubernetes readiness is named "Ready <host>": the node states
# (mko.wol.node_state) read the newest one as the last known readiness.
READY_STEP_PREFIX = "Ready "


NODE_DRAIN_KIND = "node_drain"  # a single node's maintenance: drained, never past a PodDisruptionBudget


CHECK_KIND = "cluster_check"  # a preflight: SSH, sudo, graceful node shutdown, WoL, BMC restore policy
