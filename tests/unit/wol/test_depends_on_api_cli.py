"""depends_on and the cluster's stagger through the API and the CLI: stored, shown, cycles refused with
the cycle named, and ``wake-cluster --dry-run`` printing the levels without sending anything."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mko.cli.root import app


def _node(client: TestClient, name: str, cluster_id: int, mac: str, **extra: Any) -> int:
    created = client.post(
        "/api/nodes",
        json={
            "hostname": name,
            "ip_address": "127.0.0.1",
            "cluster_id": cluster_id,
            "wol_enabled": True,
            "wol_mac_address": mac,
            **extra,
        },
    )
    assert created.status_code in (200, 201), created.text
    node_id: int = created.json()["id"]
    return node_id


def test_dependencies_are_stored_shown_and_cycles_refused(client: TestClient, cli: CliRunner) -> None:
    cluster = client.post("/api/clusters", json={"name": "rack", "power_stagger": 2.5}).json()
    assert cluster["power_stagger"] == 2.5
    nas = _node(client, "nas", cluster["id"], "02:00:00:00:01:01")
    w1 = _node(client, "w1", cluster["id"], "02:00:00:00:01:02", depends_on=[nas])
    w2 = _node(client, "w2", cluster["id"], "02:00:00:00:01:03")
    assert client.get(f"/api/nodes/{w1}").json()["depends_on"] == [nas]
    cli_set = cli.invoke(app, ["node", "update", str(w2), "--depends-on", f"{w1}", "--json"])
    assert cli_set.exit_code == 0, cli_set.output
    assert json.loads(cli_set.stdout)["depends_on"] == [w1]
    # nas → w2 would close the loop nas ← w1 ← w2 ← nas: refused, naming the cycle, nothing stored.
    refused = client.patch(f"/api/nodes/{nas}", json={"depends_on": [w2]})
    assert refused.status_code == 422, refused.text
    assert "cycle" in refused.text and "nas" in refused.text and "w2" in refused.text
    assert client.get(f"/api/nodes/{nas}").json()["depends_on"] == []
    bad = cli.invoke(app, ["node", "update", str(nas), "--depends-on", str(nas)])
    assert bad.exit_code == 2 and "itself" in bad.stderr
    missing = client.patch(f"/api/nodes/{w2}", json={"depends_on": [999]})
    assert missing.status_code == 422 and "no node 999" in missing.text

    plan = cli.invoke(app, ["wol", "wake-cluster", str(cluster["id"]), "--dry-run", "--json"])
    assert plan.exit_code == 0, plan.output
    levels = json.loads(plan.stdout)["levels"]
    assert [[n["hostname"] for n in level["nodes"]] for level in levels] == [["nas"], ["w1"], ["w2"]]
    assert json.loads(plan.stdout)["stagger"] == 2.5  # the cluster's own
    table = cli.invoke(app, ["wol", "wake-cluster", str(cluster["id"]), "--dry-run", "--stagger", "4"])
    assert table.exit_code == 0 and "stagger 4 s" in table.stdout and "nothing sent" in table.stdout
    api_plan = client.get(f"/api/clusters/{cluster['id']}/wol/plan", params={"stagger": 1}).json()
    assert api_plan["levels"][2]["nodes"][0]["depends_on"] == [w1]
    assert client.get("/api/operations").json() is not None
    operations = client.get("/api/operations").json()
    items = operations["items"] if isinstance(operations, dict) else operations
    assert not [o for o in items if o["kind"].startswith("wol_wake")]  # a dry run records nothing
    # Clearing: '' on the CLI, [] in the API.
    cleared = cli.invoke(app, ["node", "update", str(w2), "--depends-on", "", "--json"])
    assert json.loads(cleared.stdout)["depends_on"] == []
