"""Which UPSes feed which nodes (``node_feeds``), and which nodes a UPS event leaves without mains.

A node's feeds are the UPSes its power supplies hang on. Like NUT's MINSUPPLIES with one supply per UPS,
a node is **on battery only when every one of its feeds is**: a dual-supply node fed by two UPSes keeps
running on the second while the first is on battery. A node with no feed recorded follows the UPS of the
rule acting on its cluster, as before feeds existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.platform.db.models.inventory import Node, NodeFeed
from mko.platform.db.models.ups import UPS
from mko.platform.errors import InputError

__all__ = ["FeedCheck", "check_feeds", "feeds_of", "nodes_fed_by", "set_feeds", "ups_feeds"]

#: Whether a UPS (by id) is on mains now: True on line, False on battery or unknown.
OnMains = Callable[[int], bool]


def feeds_of(session: Session, node_ids: Iterable[int] | None = None) -> dict[int, set[int]]:
    """node id → the ids of the UPSes feeding it, for these nodes (all when None), in one query."""
    query = select(NodeFeed.node_id, NodeFeed.ups_id)
    if node_ids is not None:
        query = query.where(NodeFeed.node_id.in_(list(node_ids)))
    feeds: dict[int, set[int]] = {}
    for node_id, ups_id in session.execute(query):
        feeds.setdefault(node_id, set()).add(ups_id)
    return feeds


def ups_feeds(session: Session, ups_ids: Iterable[int] | None = None) -> dict[int, list[tuple[int, str]]]:
    """UPS id → the (id, hostname) of every node it feeds, in one query (what the UPS page shows)."""
    query = (
        select(NodeFeed.ups_id, Node.id, Node.hostname)
        .join(Node, Node.id == NodeFeed.node_id)
        .order_by(NodeFeed.ups_id, Node.id)
    )
    if ups_ids is not None:
        query = query.where(NodeFeed.ups_id.in_(list(ups_ids)))
    fed: dict[int, list[tuple[int, str]]] = {}
    for ups_id, node_id, hostname in session.execute(query):
        fed.setdefault(ups_id, []).append((node_id, hostname))
    return fed


def nodes_fed_by(session: Session, ups_id: int) -> list[Node]:
    """The nodes a UPS feeds, by id."""
    return list(
        session.scalars(
            select(Node)
            .join(NodeFeed, NodeFeed.node_id == Node.id)
            .where(NodeFeed.ups_id == ups_id)
            .order_by(Node.id)
        )
    )


def set_feeds(session: Session, node: Node, ups_ids: Sequence[int]) -> None:
    """Replace the UPSes feeding ``node`` (not committed: the caller's change commits it)."""
    wanted = sorted(set(ups_ids))
    if wanted:
        found = set(session.scalars(select(UPS.id).where(UPS.id.in_(wanted))))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise InputError("fed_by", f"no UPS {', '.join(map(str, missing))} (ids: `mko ups list`)")
    kept = {f.ups_id: f for f in node.feeds}
    node.feeds = [kept.get(ups_id) or NodeFeed(ups_id=ups_id) for ups_id in wanted]


@dataclass
class FeedCheck:
    """Which nodes an event of one UPS leaves without mains, and which another UPS still carries."""

    ups_id: int
    losing: list[int] = field(default_factory=list)  # every feed on battery (or no feed: the rule's UPS)
    carried: dict[int, list[int]] = field(default_factory=dict)  # node → the UPSes on mains feeding it
    not_fed: list[int] = field(default_factory=list)  # not this UPS's (fed by others only, or not at all)
    ups_names: Mapping[int, str] = field(default_factory=dict)  # for messages

    def describe(self, names: Mapping[int, str]) -> str:
        """``w1 (3) still on mains through ups-b`` for each carried node, for the records."""
        return "; ".join(
            f"{names.get(n, '?')} ({n}) still on mains through "
            + ", ".join(self.ups_names.get(u, str(u)) for u in ups)
            for n, ups in sorted(self.carried.items())
        )


def check_feeds(
    nodes: Sequence[int], feeds: Mapping[int, set[int]], ups_id: int, on_mains: OnMains, *, fed_only: bool
) -> FeedCheck:
    """Sort ``nodes`` for an event of UPS ``ups_id``.

    A node without feeds is losing power (it follows the rule's UPS) unless ``fed_only``, when it is
    not this UPS's; a node fed by other UPSes only is not this UPS's either; a node fed by this UPS is
    losing power when none of its feeds is on mains, else carried by those that are.
    """
    result = FeedCheck(ups_id)
    for node in nodes:
        mine = feeds.get(node, set())
        if not mine:
            (result.not_fed if fed_only else result.losing).append(node)
        elif ups_id not in mine:
            result.not_fed.append(node)
        elif on_line := sorted(u for u in mine if u != ups_id and on_mains(u)):
            result.carried[node] = on_line
        else:
            result.losing.append(node)
    return result
