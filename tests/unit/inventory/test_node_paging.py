"""Node lists at scale: filters and pages mean the same in the API and the web, the total comes back,
and no list runs a query per row (counted with SQLAlchemy's statement events, never timed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.records import last_step_for_node, last_steps_for_nodes
from mko.platform.db.models.inventory import Cluster, Node, NodeRole
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.web.pages.dashboard import CARDS_PER_CLUSTER


def _inventory(session: Session, count: int) -> tuple[Cluster, Cluster]:
    """``count`` nodes in two clusters: every third a control plane; up, down and never probed in turn."""
    east, west = Cluster(name="east"), Cluster(name="west")
    session.add_all([east, west])
    session.flush()
    for i in range(1, count + 1):
        session.add(
            Node(
                hostname=f"node-{i:03d}" if i != 7 else "odd_100%",
                ip_address=f"10.0.{i // 250}.{i % 250 + 1}",
                cluster_id=(east if i % 2 else west).id,
                role=NodeRole.CONTROL_PLANE if i % 3 == 0 else NodeRole.WORKER,
                reachable=(True, False, None)[i % 3],
            )
        )
    session.commit()
    return east, west


def _wake(session: Session, node_ids: list[int], status: OperationStatus) -> Operation:
    operation = Operation(
        kind=f"{WAKE_KIND_PREFIX}nodes", target_type="nodes", target_id=None, actor="t", status=status
    )
    session.add(operation)
    session.flush()
    for seq, node_id in enumerate(node_ids):
        session.add(
            OperationStep(operation_id=operation.id, seq=seq, node_id=node_id, name="wake", status=status)
        )
    session.commit()
    return operation


def _about_nodes(statements: list[str]) -> list[str]:
    return [s.split("WHERE")[0] for s in statements if "nodes" in s or "operation_steps" in s]


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_api_lists_every_node_by_default_with_the_total(client: TestClient, session: Session) -> None:
    _inventory(session, 12)
    response = client.get("/api/nodes")
    assert response.status_code == 200
    assert [node["id"] for node in response.json()] == list(range(1, 13))
    assert response.headers["X-Total-Count"] == "12"


def test_api_pages_and_filters(client: TestClient, session: Session) -> None:
    east, _west = _inventory(session, 30)
    page = client.get("/api/nodes", params={"limit": 5, "offset": 5})
    assert [node["id"] for node in page.json()] == [6, 7, 8, 9, 10]
    assert page.headers["X-Total-Count"] == "30"
    past_the_end = client.get("/api/nodes", params={"limit": 5, "offset": 100})
    assert past_the_end.json() == [] and past_the_end.headers["X-Total-Count"] == "30"

    def ids(**params: object) -> list[int]:
        response = client.get("/api/nodes", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["X-Total-Count"] == str(len(response.json()))
        return [node["id"] for node in response.json()]

    assert ids(cluster_id=east.id) == list(range(1, 31, 2))
    assert ids(role="control-plane") == list(range(3, 31, 3))
    assert ids(state="up") == list(range(3, 31, 3))
    assert ids(state="down") == list(range(1, 31, 3))
    assert ids(state="unknown") == list(range(2, 31, 3))
    assert ids(search="NODE-02") == [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
    assert ids(search="10.0.0.13") == [12]
    # % and _ are literal characters, not LIKE wildcards.
    assert ids(search="_100%") == [7]
    assert ids(search="%") == [7]
    assert ids(cluster_id=east.id, role="control-plane", state="up") == [3, 9, 15, 21, 27]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10**30}, "offset"),
        ({"role": "boss"}, "role"),
        ({"state": "sideways"}, "state"),
        ({"search": "x" * 254}, "search"),
    ],
)
def test_api_bad_paging_or_filter_is_a_422_naming_it(
    client: TestClient, params: dict[str, object], field: str
) -> None:
    response = client.get("/api/nodes", params=params)
    assert response.status_code == 422
    assert field in response.text


def test_api_unknown_cluster_filter_is_404(client: TestClient) -> None:
    assert client.get("/api/nodes", params={"cluster_id": 99}).status_code == 404


def test_last_wake_per_node_is_one_query_and_the_newest(session: Session) -> None:
    _inventory(session, 6)
    _wake(session, [1, 2, 3], OperationStatus.SUCCEEDED)
    failed = _wake(session, [2, 3], OperationStatus.FAILED)
    session.add(Operation(kind="shutdown", target_type="cluster", target_id=1, actor="t"))
    session.commit()
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    with _statements(engine) as seen:
        last = last_steps_for_nodes(session, range(1, 7), WAKE_KIND_PREFIX)
    assert len(seen) == 1
    assert sorted(last) == [1, 2, 3]
    assert last[1].status == OperationStatus.SUCCEEDED
    assert last[2].operation_id == failed.id and last[2].status == OperationStatus.FAILED
    assert last_step_for_node(session, 3, WAKE_KIND_PREFIX) == last[3]
    assert last_step_for_node(session, 4, WAKE_KIND_PREFIX) is None


def test_last_wake_query_uses_the_node_index(session: Session) -> None:
    plan = session.execute(
        text(
            "EXPLAIN QUERY PLAN SELECT max(id) FROM operation_steps WHERE node_id IN (1, 2) GROUP BY node_id"
        )
    ).all()
    assert any("ix_operation_steps_node_id" in str(row[-1]) for row in plan), plan


def test_web_nodes_page_costs_the_same_queries_at_any_size(web: Any, session: Session) -> None:
    _inventory(session, 150)
    _wake(session, list(range(1, 151)), OperationStatus.SUCCEEDED)
    engine = web.app.state.engine
    with _statements(engine) as seen:
        first = web.get("/nodes")
    assert first.status_code == 200
    rows = re.findall(r'name="node_id" value="(\d+)"', first.text)
    assert rows == [str(i) for i in range(1, 101)]
    assert "showing 1–100 of 150" in first.text
    assert 'href="/nodes?offset=100" rel="next"' in first.text
    small = len(seen)
    with _statements(engine) as seen:
        second = web.get("/nodes", params={"offset": 100})
    assert re.findall(r'name="node_id" value="(\d+)"', second.text) == [str(i) for i in range(101, 151)]
    assert "showing 101–150 of 150" in second.text and 'rel="next"' not in second.text
    # One page of 100 rows with their last wakes costs no more statements than a page of 50.
    assert len(seen) <= small


def test_dashboard_shows_the_first_cards_of_each_cluster_and_links_to_the_rest(
    web: Any, session: Session
) -> None:
    east, west = _inventory(session, 2 * CARDS_PER_CLUSTER + 10)  # 105 nodes in each cluster
    _wake(session, list(range(1, 2 * CARDS_PER_CLUSTER + 11)), OperationStatus.SUCCEEDED)
    engine = web.app.state.engine
    with _statements(engine) as seen:
        page = web.get("/")
    assert page.status_code == 200
    cards = [int(i) for i in re.findall(r'data-node-card="(\d+)"', page.text)]
    assert len(cards) == 2 * CARDS_PER_CLUSTER
    assert cards == sorted(
        [i for i in range(1, 2 * CARDS_PER_CLUSTER + 11) if i % 2][:CARDS_PER_CLUSTER]
    ) + sorted([i for i in range(1, 2 * CARDS_PER_CLUSTER + 11) if not i % 2][:CARDS_PER_CLUSTER])
    total = CARDS_PER_CLUSTER + 5
    assert page.text.count(f"{total} node(s)") == 2
    assert f"showing the first {CARDS_PER_CLUSTER} of {total}" in page.text
    assert (
        f'href="/nodes?cluster_id={east.id}"' in page.text
        and f'href="/nodes?cluster_id={west.id}"' in page.text
    )
    many = list(seen)
    session.execute(text("DELETE FROM nodes WHERE id > 20"))
    session.commit()
    with _statements(engine) as seen:
        small = web.get("/")
    assert "showing the first" not in small.text
    assert len(re.findall(r'data-node-card="(\d+)"', small.text)) == 20
    # The same queries about nodes and their steps at 20 nodes and at 210 (a session's own bookkeeping,
    # e.g. its sliding expiry, may add a statement to either view).
    assert _about_nodes(many) == _about_nodes(seen)


def test_web_nodes_page_filters_on_the_server(web: Any, session: Session) -> None:
    east, _west = _inventory(session, 30)
    page = web.get("/nodes", params={"cluster_id": east.id, "role": "control-plane", "state": "up"})
    assert re.findall(r'name="node_id" value="(\d+)"', page.text) == ["3", "9", "15", "21", "27"]
    assert "showing 1–5 of 5" in page.text
    searched = web.get("/nodes", params={"search": "node-01", "cluster_id": ""})
    assert re.findall(r'name="node_id" value="(\d+)"', searched.text) == [str(i) for i in range(10, 20)]
    nothing = web.get("/nodes", params={"search": "no-such-node"})
    assert "No node matches these filters." in nothing.text
    assert web.get("/nodes", params={"role": "boss"}).status_code == 422


def test_reachability_serves_the_cache_for_the_rows_asked(client: TestClient, session: Session) -> None:
    _inventory(session, 9)
    answer = client.get("/api/nodes/reachability", params=[("node_id", 1), ("node_id", 2), ("node_id", 3)])
    assert answer.status_code == 200
    data = answer.json()
    assert sorted(data) == ["1", "2", "3"]
    assert data["1"]["up"] is None  # reachable set, but never checked: not probed yet
    assert len(client.get("/api/nodes/reachability").json()) == 9


def test_operation_lists_load_no_steps_or_results(session: Session, web: Any) -> None:
    _inventory(session, 5)
    _wake(session, [1, 2, 3, 4, 5], OperationStatus.SUCCEEDED)
    session.expunge_all()
    from sqlalchemy import inspect

    from mko.operations.records import list_operations

    [brief] = list_operations(session, details=False)
    assert {"steps", "result", "parameters"} <= inspect(brief).unloaded
    session.expunge_all()
    [full] = list_operations(session)
    assert "steps" not in inspect(full).unloaded and len(full.steps) == 5
    for page in ("/", "/operations"):  # the pages that list operations render from the brief form
        assert web.get(page).status_code == 200


def test_cli_node_list_filters_and_pages(session: Session, cli: Any) -> None:
    from mko.cli.root import app

    _inventory(session, 30)
    table = cli.invoke(app, ["node", "list", "--state", "up", "--role", "control-plane", "--limit", "3"])
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "hostname", "ip_address"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "6", "9"]
    assert "showing 1–3 of 10" in table.stderr  # the count goes to stderr: stdout stays the table
    second = cli.invoke(app, ["node", "list", "--state", "up", "--offset", "3", "--limit", "3", "--json"])
    assert [node["id"] for node in json.loads(second.stdout)] == [12, 15, 18]
    searched = cli.invoke(app, ["node", "list", "--search", "odd_100%"])
    assert [line.split()[1] for line in searched.stdout.splitlines()[1:]] == ["odd_100%"]
    bad = cli.invoke(app, ["node", "list", "--state", "sideways"])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
