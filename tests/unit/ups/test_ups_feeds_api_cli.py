"""Which UPSes feed which nodes: the MINSUPPLIES rule, and the feeds through the API, the CLI and the UPS
page (the real two-UPS shutdown: tests/integration/ups/test_ups_feeds.py)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.feeds import check_feeds

A, B, C = 1, 2, 3


def test_a_node_is_losing_mains_only_when_every_feed_is_off_mains() -> None:
    feeds = {10: {A}, 11: {A, B}, 12: {B}, 13: set(), 14: {A, B, C}}
    on_mains = {A: False, B: True, C: False}.__getitem__
    by_cluster = check_feeds([10, 11, 12, 13, 14], feeds, A, on_mains, fed_only=False)
    # 13 has no feed: it follows the rule's UPS, as before feeds existed.
    assert by_cluster.losing == [10, 13]
    assert by_cluster.carried == {11: [B], 14: [B]} and by_cluster.not_fed == [12]
    fed = check_feeds([10, 11, 12, 13, 14], feeds, A, on_mains, fed_only=True)
    assert fed.losing == [10] and fed.not_fed == [12, 13]
    # B goes too: the dual-supply nodes lose mains; the event's own UPS never counts as carrying.
    both_off = check_feeds([10, 11, 14], feeds, B, lambda _u: False, fed_only=True)
    assert both_off.losing == [11, 14] and both_off.not_fed == [10]
    assert check_feeds([11], feeds, A, lambda u: u == A, fed_only=True).losing == [11]
    by_cluster.ups_names = {B: "ups-b"}
    assert by_cluster.describe({11: "w1", 14: "w2"}) == (
        "w1 (11) still on mains through ups-b; w2 (14) still on mains through ups-b"
    )


def _ups(client: TestClient, name: str) -> int:
    made = client.post("/api/ups", json={"name": name, "ups_name": name, "host": "127.0.0.1", "port": 1})
    assert made.status_code == 201, made.text
    ups_id: int = made.json()["id"]
    return ups_id


def test_feeds_through_the_api_the_cli_and_the_ups_page(client: TestClient, cli: CliRunner, web: Any) -> None:
    cluster = client.post("/api/clusters", json={"name": "rack"}).json()
    a, b = _ups(client, "ups-a"), _ups(client, "ups-b")
    body = {"hostname": "dual", "ip_address": "127.0.0.1", "cluster_id": cluster["id"], "fed_by": [b, a]}
    dual = client.post("/api/nodes", json=body)
    assert dual.status_code in (200, 201), dual.text
    node = dual.json()["id"]
    assert client.get(f"/api/nodes/{node}").json()["fed_by"] == [a, b]
    listed = {u["name"]: u for u in client.get("/api/ups").json()}
    assert (listed["ups-a"]["feeds"], listed["ups-a"]["fed_node_ids"]) == (["dual"], [node])
    assert client.get(f"/api/ups/{b}").json()["feeds"] == ["dual"]
    # A UPS that does not exist: 422 naming the field, and the node keeps its feeds.
    missing = client.patch(f"/api/nodes/{node}", json={"fed_by": [a, 99], "description": "x"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"][-1] == "fed_by", missing.text
    assert "no UPS 99" in missing.text
    kept = client.get(f"/api/nodes/{node}").json()
    assert (kept["fed_by"], kept["description"]) == ([a, b], "")
    page = web.get("/ups")
    assert page.status_code == 200 and f'data-ups-feeds="{a}"' in page.text
    assert f'<a href="/nodes/{node}">dual</a>' in page.text
    # The CLI: --fed-by sets and clears, `ups list` shows what each UPS feeds, --fed-only makes a rule
    # that acts on the fed nodes only; the seed's create-rule stays a cluster rule.
    single = cli.invoke(app, ["node", "update", str(node), "--fed-by", str(a), "--json"])
    assert single.exit_code == 0, single.output
    assert json.loads(single.stdout)["fed_by"] == [a]
    ups_list = {u["name"]: u["feeds"] for u in json.loads(cli.invoke(app, ["ups", "list", "--json"]).stdout)}
    assert ups_list == {"ups-a": ["dual"], "ups-b": []}
    assert "dual" in cli.invoke(app, ["ups", "show", str(a)]).stdout
    bad = cli.invoke(app, ["node", "update", str(node), "--fed-by", "a,b"])
    assert bad.exit_code == 2 and "--fed-by" in bad.stderr
    cleared = cli.invoke(app, ["node", "update", str(node), "--fed-by", "", "--json"])
    assert json.loads(cleared.stdout)["fed_by"] == []
    seed = ["ups", "create-rule", "--ups-id", str(a), "--cluster-id", str(cluster["id"])]
    seed += ["--power-event", "power_loss", "--cluster-action", "graceful_shutdown", "--json"]
    assert json.loads(cli.invoke(app, seed).stdout)["target"] == "cluster"
    fed_rule = cli.invoke(app, [*seed, "--fed-only"])
    assert fed_rule.exit_code == 0, fed_rule.output
    assert json.loads(fed_rule.stdout)["target"] == "fed_nodes"
    over_api = client.post(
        "/api/ups/rules",
        json={
            "ups_id": b,
            "cluster_id": cluster["id"],
            "power_event": "power_restored",
            "cluster_action": "wake_on_lan",
            "target": "fed_nodes",
        },
    )
    assert over_api.status_code == 201 and over_api.json()["target"] == "fed_nodes", over_api.text
    assert client.post("/api/ups/rules", json=over_api.json() | {"target": "rack"}).status_code == 422
