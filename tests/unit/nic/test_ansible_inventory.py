"""The generated Ansible inventory (read back by ansible-inventory itself), its refresh, and fact import."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest.mock import patch

from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import create_node, get_node
from mko.inventory.schemas import ClusterCreate, NodeCreate
from mko.nic.ansible import InventorySummary, database_id, flush_refresh, write_inventory
from mko.platform.db.models.inventory import NodeRole
from mko.platform.settings import Settings
from mko.wiring import wire
from support.ansibleview import ansible_view, inert_hostvars


def _seed(session: Session) -> None:
    home = create_cluster(session, ClusterCreate(name="Home Lab!"))
    other = create_cluster(session, ClusterCreate(name="home-lab"))
    create_node(
        session,
        NodeCreate(
            hostname="cp-1",
            ip_address="192.168.1.10",
            role=NodeRole.CONTROL_PLANE,
            cluster_id=home.id,
            ssh_user="ubuntu",
            ssh_port=2222,
            ssh_key_path="/home/ops/my keys/id_ed25519",
            wol_mac_address="3C-EC-EF-00-00-10",
        ),
    )
    create_node(session, NodeCreate(hostname="worker-1", ip_address="192.168.1.11", cluster_id=home.id))
    create_node(session, NodeCreate(hostname="w-2", ip_address="192.168.2.12", cluster_id=other.id))
    create_node(session, NodeCreate(hostname="spare", ip_address="192.168.1.99"))


def test_inventory_has_groups_per_cluster_and_role_and_verifies_host_keys(
    settings: Settings, session: Session, cli: CliRunner
) -> None:
    _seed(session)
    result = cli.invoke(app, ["ansible", "inventory", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    path = settings.ansible_inventory_path
    assert summary["path"] == str(path) and summary["hosts"] == 4
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and path.read_text().startswith("#!/bin/sh\n")
    view = ansible_view(path)
    assert sorted(view["cluster_home_lab"]["hosts"]) == ["cp-1", "worker-1"]
    assert view["cluster_home_lab_2"]["hosts"] == ["w-2"]
    assert view["unassigned"]["hosts"] == ["spare"]
    assert view["control_plane"]["hosts"] == ["cp-1"]
    assert sorted(view["worker"]["hosts"]) == ["spare", "w-2", "worker-1"]
    assert sorted(view["clusters"]["children"]) == ["cluster_home_lab", "cluster_home_lab_2"]
    hostvars = inert_hostvars(view)
    cp1 = hostvars["cp-1"]
    assert cp1["ansible_host"] == "192.168.1.10" and cp1["ansible_port"] == 2222
    assert cp1["ansible_user"] == "ubuntu"
    assert cp1["ansible_ssh_private_key_file"] == "/home/ops/my keys/id_ed25519"
    assert cp1["mko_node_id"] == 1 and cp1["mko_mac"] == "3c:ec:ef:00:00:10"
    assert cp1["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile={settings.ssh_known_hosts.absolute()} -o StrictHostKeyChecking=yes"
    )
    assert cp1["mko_database_id"] == database_id(settings.database_url)
    assert cp1["mko_python"] == sys.executable
    assert cp1["ansible_pipelining"] is True
    assert "ansible_ssh_private_key_file" not in hostvars["spare"]
    assert "mko_mac" not in hostvars["spare"]


def _hosts(path: Path) -> dict[str, dict[str, Any]]:
    assert flush_refresh(10)
    return inert_hostvars(ansible_view(path))


def test_inventory_follows_node_changes_but_only_for_its_own_database(
    settings: Settings, session: Session, client: TestClient, cli: CliRunner
) -> None:
    assert cli.invoke(app, ["ansible", "inventory"]).exit_code == 0
    path = settings.ansible_inventory_path
    assert _hosts(path) == {}
    created = client.post("/api/nodes", json={"hostname": "new-node", "ip_address": "192.168.1.50"})
    assert created.status_code == 201
    assert _hosts(path)["new-node"]["ansible_host"] == "192.168.1.50"
    client.patch(f"/api/nodes/{created.json()['id']}", json={"ip_address": "192.168.1.51"})
    assert _hosts(path)["new-node"]["ansible_host"] == "192.168.1.51"
    client.delete(f"/api/nodes/{created.json()['id']}")
    assert "new-node" not in _hosts(path)
    # A file generated from another database is left alone (a test run must never rewrite it).
    foreign = path.read_text().replace(database_id(settings.database_url), "0123456789abcdef")
    path.write_text(foreign)
    client.post("/api/nodes", json={"hostname": "other", "ip_address": "192.168.1.52"})
    assert flush_refresh(10)
    assert path.read_text() == foreign


def test_a_burst_of_concurrent_changes_is_written_once_atomically_without_a_second_session(
    settings: Settings, session: Session, client: TestClient, cli: CliRunner
) -> None:
    """50 creates at once from 50 threads: every one is answered, the file ends with all of them, no
    temporary file is left, and a burst is written a few times rather than once per commit."""
    assert cli.invoke(app, ["ansible", "inventory"]).exit_code == 0
    path = settings.ansible_inventory_path
    writes: list[float] = []
    real_replace = os.replace

    def counting_replace(src: Any, dst: Any) -> None:
        if Path(dst) == path:
            writes.append(time.monotonic())
        real_replace(src, dst)

    def create(i: int) -> int:
        response = client.post("/api/nodes", json={"hostname": f"n{i}", "ip_address": f"10.9.0.{i + 1}"})
        return response.status_code

    with patch("mko.platform.files.os.replace", counting_replace), ThreadPoolExecutor(50) as pool:
        started = time.monotonic()
        statuses = list(pool.map(create, range(50)))
        answered = time.monotonic() - started
        assert flush_refresh(30)
    assert statuses == [201] * 50
    assert sorted(_hosts(path)) == sorted(f"n{i}" for i in range(50))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    # Debounced: far fewer writes than commits (one per burst, plus one per later straggler).
    assert 1 <= len(writes) < 25, len(writes)
    print(f"50 concurrent creates answered in {answered:.2f} s; inventory written {len(writes)} time(s)")


def test_import_facts_from_stdin_and_files_reports_each_entry(
    settings: Settings, session: Session, cli: CliRunner, tmp_path: Path
) -> None:
    _seed(session)
    link = json.dumps([{"ifname": "lo", "link_type": "loopback"}, {"ifname": "eno1", "link_type": "ether",
                       "address": "3c:ec:ef:00:00:11", "operstate": "UP"}])  # fmt: skip
    addr = json.dumps(
        [{"ifname": "eno1", "addr_info": [{"family": "inet", "local": "192.168.1.11", "prefixlen": 23}]}]
    )
    route = json.dumps([{"dst": "default", "dev": "eno1"}])
    facts = [
        {"kind": "network_info", "node_id": 2, "inventory_hostname": "worker-1",
         "ip": {"link": link, "addr": addr, "route": route}},
        {"kind": "network_info", "node_id": 3, "inventory_hostname": "not-w-2", "ip": {}},
        {"kind": "wake_on_lan", "node_id": 99},
        {"kind": "wake_on_lan", "node_id": 1, "inventory_hostname": "cp-1", "interface": "eno1",
         "mac": "3c:ec:ef:00:00:10", "supports": "pumbg", "wake_on": "g", "persistence": "systemd-networkd"},
    ]  # fmt: skip
    keep = tmp_path / "kept" / "facts.json"
    result = cli.invoke(
        app, ["ansible", "import-facts", "-", "--keep", str(keep), "--json"], input=json.dumps(facts)
    )
    assert result.exit_code == 1, result.stderr  # two entries are refused, two imported
    body = json.loads(result.stdout)
    assert body["status"] == "partial"
    states = [(row["source"], row["state"]) for row in body["facts"]]
    assert states == [
        ("facts.json[0]", "collected"),
        ("facts.json[1]", "failed"),
        ("facts.json[2]", "failed"),
        ("facts.json[3]", "armed"),
    ]
    assert "inventory is stale" in body["facts"][1]["error"]
    assert "node 99 not found" in body["facts"][2]["error"]
    assert json.loads(keep.read_text()) == facts
    session.expire_all()
    worker = get_node(session, 2)
    assert (worker.wol_mac_address, worker.nic_interface, worker.power_params["wol_prefix_len"]) == (
        "3c:ec:ef:00:00:11",
        "eno1",
        23,
    )
    cp1 = get_node(session, 1)
    assert (cp1.nic_wol_state, cp1.nic_wol_persistence, cp1.wol_enabled) == ("g", "systemd-networkd", True)

    again = cli.invoke(app, ["ansible", "import-facts", str(keep.parent)])
    assert again.exit_code == 1 and "2/4 fact(s) imported" in " ".join(again.stdout.split())
    wrong_db = cli.invoke(app, ["ansible", "import-facts", str(keep), "--database-id", "0" * 16])
    assert wrong_db.exit_code == 2 and "another mko database" in wrong_db.stderr
    missing = cli.invoke(app, ["ansible", "import-facts", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    garbage = cli.invoke(app, ["ansible", "import-facts", "-"], input="not json")
    assert garbage.exit_code == 2 and "not JSON" in garbage.stderr


def test_collect_mac_route_is_not_taken_for_a_node_id(client: TestClient) -> None:
    response = client.post("/api/nodes/wol/collect-mac", json={"node_ids": [42]})
    assert response.status_code == 404 and response.json()["detail"] == "node 42 not found"
    assert client.post("/api/nodes/wol/collect-mac").status_code == 409  # no nodes at all
    bad = client.post("/api/nodes/wol/collect-mac", json={"node_ids": []})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "node_ids"
    assert client.post("/api/nodes/wol/collect-mac", json={"node_ids": "1,2"}).status_code == 422


def test_a_commit_never_waits_for_a_second_connection_and_writers_never_share_a_temp_file(
    settings: Settings, session: Session, cli: CliRunner
) -> None:
    """With a pool of exactly one connection, a node change commits at once (the refresh runs later in
    its own thread); and 20 threads writing the inventory at the same time all succeed."""
    assert cli.invoke(app, ["ansible", "inventory"]).exit_code == 0
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0, pool_timeout=2)
    wiring = wire(settings, engine=engine)  # its sessions refresh the inventory, as everywhere in mko
    try:
        with wiring.session_factory() as tight:
            started = time.monotonic()
            create_node(tight, NodeCreate(hostname="solo", ip_address="10.9.1.1"))
            assert time.monotonic() - started < 1.5  # a second Session here would wait 2 s and fail
            assert flush_refresh(10)
    finally:
        wiring.close()
        engine.dispose()
    assert "solo" in _hosts(settings.ansible_inventory_path)

    def write(_: int) -> InventorySummary:
        with Session(session.get_bind()) as own:
            return write_inventory(own, settings)

    with ThreadPoolExecutor(20) as pool:
        summaries = list(pool.map(write, range(20)))
    assert {s.hosts for s in summaries} == {1}
    assert [p.name for p in settings.ansible_inventory_path.parent.iterdir()] == ["dynamic_inventory.ini"]
