"""The seed's two ansible-playbook commands, verbatim, against lab nodes running real sshd.

ansible-core comes from the project's dependencies; ansible-playbook runs in the lab's orch
namespace from a directory laid out like the repository root (the real playbooks, linked), after
`mko ansible inventory` wrote the inventory there. The playbooks' results land in the test database
through `mko ansible import-facts`, which the playbooks call themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.nodes import list_nodes
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import NodeSpec
from mko.nic.persistence import link_file, oneshot_unit
from mko.operations.records import list_operations
from mko.platform.db.models.inventory import Cluster, Node
from mko.platform.settings import Settings
from support.ansibleview import ansible_view, inert_hostvars

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
COLLECT = (
    "ansible-playbook -i ansible/inventory/dynamic_inventory.ini ansible/playbooks/collect_network_info.yml"
)
CONFIGURE = (
    "ansible-playbook -i ansible/inventory/dynamic_inventory.ini ansible/playbooks/configure_wake_on_lan.yml"
)


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    """A directory shaped like the repository root: the real playbooks, and room for the inventory."""
    root = tmp_path / "repo"
    (root / "ansible").mkdir(parents=True)
    (root / "ansible" / "playbooks").symlink_to(ROOT / "ansible" / "playbooks")
    return root


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A directory with a short path for ssh's control sockets: a Unix socket path must fit in 108 bytes,
    and ``tmp_path`` under pytest-xdist (``…/popen-gw0/test_…0/repo/``) plus ansible's hash does not."""
    short = Path(tempfile.mkdtemp(prefix="mkcp"))
    yield short
    shutil.rmtree(short, ignore_errors=True)


def _playbook(
    running: RunningLab, root: Path, sockets: Path, command: str, *extra: str, control: str = "cp"
) -> subprocess.CompletedProcess[str]:
    """Run an ansible-playbook command line as written, from ROOT, inside the orch namespace."""
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        # Per-test SSH control sockets and temp files: the same lab addresses recur across tests.
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(sockets / control),
        ANSIBLE_LOCAL_TEMP=str(root / ".tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    env.pop("ANSIBLE_CONFIG", None)
    argv = ["ip", "netns", "exec", running.lab.orch, *command.split(), *extra]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
    print(f"{command.rsplit('/', maxsplit=1)[-1]} {' '.join(extra)}: {time.monotonic() - started:.1f} s")
    return done


def _recap(output: str) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    for host, counts in re.findall(r"^(\S+)\s+: (ok=.*)$", output, re.MULTILINE):
        recap[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return recap


def _nodes(session: Session) -> dict[str, Node]:
    session.expire_all()
    return {n.hostname: n for n in list_nodes(session)}


def test_seed_playbooks_run_verbatim_and_their_results_land_in_the_database(
    settings: Settings,
    session: Session,
    cli: CliRunner,
    lab_factory: Any,
    repo_root: Path,
    sockets: Path,
    monkeypatch: Any,
) -> None:
    running = lab_factory(
        [
            NodeSpec(nic_wake_on_default="d"),
            NodeSpec(nic_wake_on_default="d", network_service="systemd-networkd"),
            NodeSpec(nic_wol_supports="pumb"),
        ],
        ssh=True,
        subnet="10.213.0.0/25",
    )
    _, nodes = register_lab(session, running, macs=False)
    running.power_on_all()
    settings.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
    # `mko ansible inventory` run from the repository root writes ansible/inventory/… there.
    monkeypatch.setenv(
        "MKO_ANSIBLE_INVENTORY_PATH", str(repo_root / "ansible/inventory/dynamic_inventory.ini")
    )
    monkeypatch.setenv("MKO_ANSIBLE_FACTS_DIR", str(repo_root / "ansible/facts"))
    from mko.platform.settings import get_settings

    get_settings.cache_clear()
    written = cli.invoke(app, ["ansible", "inventory", "--json"])
    assert written.exit_code == 0, written.stderr
    assert json.loads(written.stdout)["hosts"] == 3
    inventory_file = repo_root / "ansible/inventory/dynamic_inventory.ini"
    assert not any("mko_mac" in host for host in inert_hostvars(ansible_view(inventory_file)).values())

    collected = _playbook(running, repo_root, sockets, COLLECT)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "default route via veth0; veth0 02:13:00:00:00:11 10.213.0.11" in collected.stdout
    for lab_node in running.nodes:
        node = _nodes(session)[lab_node.hostname]
        assert (node.wol_mac_address, node.nic_interface, node.power_params["wol_prefix_len"]) == (
            lab_node.mac,
            "veth0",
            25,
        )
    imported = list_operations(session, kind="ansible_import_facts")[0]
    assert imported.status.value == "succeeded" and len(imported.steps) == 3
    facts = json.loads((repo_root / "ansible/facts/network_info.json").read_text())
    assert [f["node_id"] for f in facts] == [n.id for n in nodes]
    # The inventory followed the database: the MACs the import stored are in it now.
    hostvars = inert_hostvars(ansible_view(inventory_file))
    assert hostvars[running.nodes[0].hostname]["mko_mac"] == running.nodes[0].mac

    configured = _playbook(running, repo_root, sockets, CONFIGURE)
    output = configured.stdout + configured.stderr
    assert configured.returncode == 2, output  # lab-n3's card cannot wake on a magic packet
    recap = _recap(configured.stdout)
    assert (
        recap["lab-n1"]["failed"] == 0 and recap["lab-n2"]["failed"] == 0 and recap["lab-n3"]["failed"] == 1
    )
    assert "lab-n3: NIC veth0 cannot wake on magic packet (Supports Wake-on: pumb)" in " ".join(
        output.split()
    )
    n1, n2, n3 = (r.system for r in running.nodes)
    assert n1 is not None and n2 is not None and n3 is not None
    assert (n1.nic()["wake_on"], n2.nic()["wake_on"], n3.nic()["wake_on"]) == ("g", "g", "d")
    assert (n1.etc_system / "mko-wol-veth0.service").read_text() == oneshot_unit("veth0", True)
    assert "mko-wol-veth0.service" in n1.services()["enabled"]
    assert (n2.etc_network / "50-mko-wol-veth0.link").read_text() == link_file(running.nodes[1].mac, True)
    stored = _nodes(session)
    assert [
        (
            stored[r.hostname].nic_wol_state,
            stored[r.hostname].nic_wol_persistence,
            stored[r.hostname].wol_enabled,
        )
        for r in running.nodes
    ] == [("g", "systemd-unit", True), ("g", "systemd-networkd", True), ("d", None, False)]
    assert stored["lab-n3"].nic_wol_supported == "pumb"

    # Idempotent: a second run on the configured hosts changes nothing.
    again = _playbook(running, repo_root, sockets, CONFIGURE, "--limit", "lab-n1,lab-n2")
    assert again.returncode == 0, again.stdout + again.stderr
    recap = _recap(again.stdout)
    assert recap["lab-n1"]["changed"] == 0 and recap["lab-n2"]["changed"] == 0
    assert len([c for c in n1.calls("ethtool") if "-s" in c["argv"]]) == 1

    # Host keys are verified: a node presenting a key other than the recorded one is not contacted.
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    lines = running.known_hosts_lines()
    settings.ssh_known_hosts.write_text(f"[10.213.0.11]:2222 {impostor}\n" + "\n".join(lines[1:]) + "\n")
    calls = n1.calls()
    # (A new control path: an SSH master connection opened before the change would stay in use.)
    refused = _playbook(running, repo_root, sockets, COLLECT, "--limit", "lab-n1", control="cp-new")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert _recap(refused.stdout)["lab-n1"]["unreachable"] == 1
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stdout + refused.stderr
    assert n1.calls() == calls


def test_jinja_in_every_field_and_in_facts_runs_nothing_during_the_seed_playbooks(
    settings: Settings,
    session: Session,
    cli: CliRunner,
    lab_factory: Any,
    repo_root: Path,
    sockets: Path,
    monkeypatch: Any,
    tmp_path: Path,
) -> None:
    """Templates stored by an older mko (written here past every check, as such a database holds them)
    and interface names a node itself reports go through the guide's two commands; nothing runs.

    n1 is reachable and carries templates in the fields the playbooks use as data; n3 carries them in
    every connection field (so it cannot be reached, and nothing may run while trying); n2 reports a
    network interface whose name is a template. Every lookup would create a marker file.
    """
    running = lab_factory([NodeSpec(), NodeSpec(), NodeSpec()], ssh=True, subnet="10.213.0.0/25")
    cluster, nodes = register_lab(session, running, macs=False)
    running.power_on_all()
    settings.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
    marker = tmp_path / "marker"

    def jinja(tag: str) -> str:
        return f"{{{{ lookup('pipe', 'touch {marker}-{tag}') }}}}"

    n1, n2, n3 = nodes
    # A real interface on n2 whose name Ansible would evaluate to 49 if it templated facts.
    add = ["ip", "-n", running.nodes[1].netns, "link", "add", "{{7*7}}", "type", "veth", "peer", "name", "p0"]
    subprocess.run(add, check=True)

    def plant() -> None:
        session.execute(
            update(Node)
            .where(Node.id == n1.id)
            .values(nic_interface=jinja("n1-nic"), description=jinja("n1-description"))
        )
        session.execute(
            update(Node)
            .where(Node.id == n3.id)
            .values(
                ip_address=jinja("n3-host"),
                ssh_user=jinja("n3-user"),
                ssh_key_path=jinja("n3-key"),
                wol_mac_address=jinja("n3-mac"),
                nic_interface=jinja("n3-nic"),
            )
        )
        session.execute(update(Cluster).where(Cluster.id == cluster.id).values(name=jinja("cluster")))
        session.commit()
        written = cli.invoke(app, ["ansible", "inventory"])
        assert written.exit_code == 0, written.stderr

    monkeypatch.setenv(
        "MKO_ANSIBLE_INVENTORY_PATH", str(repo_root / "ansible/inventory/dynamic_inventory.ini")
    )
    monkeypatch.setenv("MKO_ANSIBLE_FACTS_DIR", str(repo_root / "ansible/facts"))
    from mko.platform.settings import get_settings

    get_settings.cache_clear()
    plant()
    inventory_file = repo_root / "ansible/inventory/dynamic_inventory.ini"
    hostvars = inert_hostvars(ansible_view(inventory_file))
    assert hostvars[n3.hostname]["ansible_user"] == jinja("n3-user")  # as stored, never evaluated
    assert hostvars[n1.hostname]["mko_nic_interface"] == jinja("n1-nic")

    collected = _playbook(running, repo_root, sockets, COLLECT)
    output = collected.stdout + collected.stderr
    # n3 is unreachable (Ansible itself refuses its user name), and the import, run once through n1,
    # exits 1 because it refused n2's facts: the playbook reports both.
    assert collected.returncode == 4, output  # (unreachable outranks failed in the exit code)
    recap = _recap(collected.stdout)
    assert recap[n2.hostname]["failed"] == 0 and recap[n1.hostname]["failed"] == 1, output
    assert recap[n3.hostname]["unreachable"] == 1
    assert "'{{7*7}}', which is not valid; nothing was stored" in output
    assert "{{7*7}}" in collected.stdout and " 49 " not in collected.stdout  # printed, not evaluated
    imported = list_operations(session, kind="ansible_import_facts")[0]
    steps = {step.node_id: step for step in imported.steps}
    assert steps[n1.id].status.value == "succeeded"
    assert steps[n2.id].status.value == "failed" and "interface named '{{7*7}}'" in steps[n2.id].message
    stored = _nodes(session)
    assert stored[n2.hostname].nic_interfaces is None and stored[n2.hostname].wol_mac_address is None
    assert stored[n1.hostname].wol_mac_address == running.nodes[0].mac

    plant()  # the import replaced n1's interface; put the template back before the second command
    configured = _playbook(running, repo_root, sockets, CONFIGURE)
    output = configured.stdout + configured.stderr
    assert configured.returncode == 4, output
    recap = _recap(configured.stdout)
    assert recap[n1.hostname]["failed"] == recap[n2.hostname]["failed"] == 0, output
    assert recap[n3.hostname]["unreachable"] == 1
    assert _nodes(session)[n1.hostname].nic_wol_state == "g"  # n1 was configured, by its MAC
    assert sorted(tmp_path.glob("marker*")) == []
