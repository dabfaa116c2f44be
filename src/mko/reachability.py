"""Is each node up right now? Concurrent TCP probes of the nodes' probe ports."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from mko.db.models import Node
from mko.probe import probe_many

__all__ = ["Reachability", "probe_nodes"]


class Reachability(BaseModel):
    """One node's probe result."""

    up: bool
    port: int
    latency_ms: float | None = None
    error: str | None = None


async def probe_nodes(nodes: Sequence[Node], timeout: float) -> dict[int, Reachability]:
    """Probe all ``nodes`` at once; keyed by node id."""
    targets = {node.id: (node.ip_address, node.probe_port or node.ssh_port) for node in nodes}
    results = await probe_many(targets.values(), timeout)
    answer = {}
    for node_id, target in targets.items():
        result = results[target]
        answer[node_id] = Reachability(
            up=result.ok,
            port=target[1],
            latency_ms=round(result.latency * 1000, 1) if result.ok else None,
            error=result.error,
        )
    return answer
