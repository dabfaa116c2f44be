"""The generated Ansible inventory (read back by ansible-inventory itself), its refresh, and fact import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko import inventory
from mko.ansible_inventory import database_id
from mko.cli import app
from mko.db.models import NodeRole
from mko.schemas import ClusterCreate, NodeCreate
from mko.settings import Settings

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def _seed(session: Session) -> None:
    home = inventory.create_cluster(session, ClusterCreate(name="Home Lab!"))
    other = inventory.create_cluster(session, ClusterCreate(name="home-lab"))
    inventory.create_node(
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
    inventory.create_node(
        session, NodeCreate(hostname="worker-1", ip_address="192.168.1.11", cluster_id=home.id)
    )
    inventory.create_node(session, NodeCreate(hostname="w-2", ip_address="192.168.2.12", cluster_id=other.id))
    inventory.create_node(session, NodeCreate(hostname="spare", ip_address="192.168.1.99"))


def _ansible_view(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def test_inventory_has_groups_per_cluster_and_role_and_verifies_host_keys(
    settings: Settings, session: Session, cli: CliRunner
) -> None:
    _seed(session)
    result = cli.invoke(app, ["ansible", "inventory", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    path = settings.ansible_inventory_path
    assert summary["path"] == str(path) and summary["hosts"] == 4
    view = _ansible_view(path)
    assert sorted(view["cluster_home_lab"]["hosts"]) == ["cp-1", "worker-1"]
    assert view["cluster_home_lab_2"]["hosts"] == ["w-2"]
    assert view["unassigned"]["hosts"] == ["spare"]
    assert view["control_plane"]["hosts"] == ["cp-1"]
    assert sorted(view["worker"]["hosts"]) == ["spare", "w-2", "worker-1"]
    assert sorted(view["clusters"]["children"]) == ["cluster_home_lab", "cluster_home_lab_2"]
    cp1 = view["_meta"]["hostvars"]["cp-1"]
    assert cp1["ansible_host"] == "192.168.1.10" and cp1["ansible_port"] == 2222
    assert cp1["ansible_user"] == "ubuntu"
    assert cp1["ansible_ssh_private_key_file"] == "/home/ops/my keys/id_ed25519"
    assert cp1["mko_node_id"] == 1 and cp1["mko_mac"] == "3c:ec:ef:00:00:10"
    assert cp1["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile={settings.ssh_known_hosts.absolute()} -o StrictHostKeyChecking=yes"
    )
    assert cp1["mko_database_id"] == database_id(settings.database_url)
    assert cp1["mko_python"] == sys.executable
    assert "ansible_ssh_private_key_file" not in view["_meta"]["hostvars"]["spare"]
    assert "mko_mac" not in view["_meta"]["hostvars"]["spare"]


def test_inventory_follows_node_changes_but_only_for_its_own_database(
    settings: Settings, session: Session, client: TestClient, cli: CliRunner
) -> None:
    assert cli.invoke(app, ["ansible", "inventory"]).exit_code == 0
    path = settings.ansible_inventory_path
    assert "new-node" not in path.read_text()
    created = client.post("/api/nodes", json={"hostname": "new-node", "ip_address": "192.168.1.50"})
    assert created.status_code == 201
    assert "new-node ansible_host=192.168.1.50" in path.read_text()
    client.patch(f"/api/nodes/{created.json()['id']}", json={"ip_address": "192.168.1.51"})
    assert "new-node ansible_host=192.168.1.51" in path.read_text()
    client.delete(f"/api/nodes/{created.json()['id']}")
    assert "new-node" not in path.read_text()
    # A file generated from another database is left alone (a test run must never rewrite it).
    foreign = path.read_text().replace(database_id(settings.database_url), "0123456789abcdef")
    path.write_text(foreign)
    client.post("/api/nodes", json={"hostname": "other", "ip_address": "192.168.1.52"})
    assert path.read_text() == foreign


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
    worker = inventory.get_node(session, 2)
    assert (worker.wol_mac_address, worker.nic_interface, worker.wol_prefix_len) == (
        "3c:ec:ef:00:00:11",
        "eno1",
        23,
    )
    cp1 = inventory.get_node(session, 1)
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
