"""The lab's node-side programs (mko.lab.nodeside) without namespaces: each stand-in's run() in-process
on a temporary state directory, each module once under the system Python (-I -S: standard library
only), and the imports they are allowed."""

from __future__ import annotations

import ast
import importlib.resources
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mko.lab.microk8s import Microk8sCluster
from mko.lab.nodeside import ethtool, kubectl, microk8s, nmcli, shutdown, snap, systemctl
from mko.lab.nodeside.standin import Context
from mko.lab.nodesys import NODESIDE_DIR, PYTHON, STANDINS, StandIn, _copy_nodeside

PACKAGE = Path(microk8s.__file__).parent
Run = Callable[[Context, list[str]], int]
HOSTS = {"cp1": "10.213.0.11", "cp2": "10.213.0.12", "cp3": "10.213.0.13", "w1": "10.213.0.14"}


def _resolve(name: str) -> str:
    if name not in HOSTS:
        raise OSError(f"unknown host {name}")
    return HOSTS[name]


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    (tmp_path / "nodes" / "n" / "state").mkdir(parents=True)
    return tmp_path


def node(lab: Path, host: str = "cp1") -> Context:
    return Context(str(lab / "nodes" / "n" / "state"), str(lab), "test", host=host, resolve=_resolve)


def call(run: Run, ctx: Context, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run a stand-in in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = run(ctx, list(argv))
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cluster(lab: Path) -> Microk8sCluster:
    cluster = Microk8sCluster(lab)
    cluster.configure(["cp1", "cp2", "cp3"], ["w1"], ready_delay=0)
    for name in ("cp1", "cp2", "cp3", "w1"):
        cluster.booted(name)
    return cluster


# ----------------------------------------------------------------------------- microk8s and snap


def test_get_nodes_shows_a_powered_off_node_as_unknown(
    lab: Path, cluster: Microk8sCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.halted("cp3")
    code, out, _ = call(microk8s.run, node(lab), "kubectl", "get", "nodes", capsys=capsys)
    assert code == 0
    assert out.splitlines() == [
        "NAME   STATUS     ROLES    AGE   VERSION",
        "cp1    Ready      <none>   12d   v1.29.4",
        "cp2    Ready      <none>   12d   v1.29.4",
        "cp3    NotReady   <none>   12d   v1.29.4",
        "w1     Ready      <none>   12d   v1.29.4",
    ]
    code, out, _ = call(microk8s.run, node(lab), "kubectl", "get", "node", "cp3", "-o", "json", capsys=capsys)
    document = json.loads(out)
    ready = next(c for c in document["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")
    assert document["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.213.0.13"}
    assert {t["key"] for t in document["spec"]["taints"]} == {"node.kubernetes.io/unreachable"}


def test_a_drain_without_quorum_fails_as_kubectl_does(
    lab: Path, cluster: Microk8sCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.halted("cp2")
    cluster.halted("cp3")
    code, out, err = call(
        microk8s.run, node(lab), "kubectl", "drain", "w1", "--ignore-daemonsets", capsys=capsys
    )
    assert (code, out) == (1, "")
    assert err == (
        "Error from server (Timeout): the server was unable to return a response in the time allotted, but"
        " may still be processing the request (get nodes)\n"
    )
    assert not cluster.nodes()["w1"]["cordoned"]  # nothing changed


def test_a_drain_cordons_evicts_and_a_budget_blocks_until_the_timeout(
    lab: Path, cluster: Microk8sCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.update(fail_drain=["w1"], retry_delay=0.01)
    code, out, err = call(
        microk8s.run,
        node(lab),
        "kubectl",
        "drain",
        "w1",
        "--ignore-daemonsets",
        "--timeout=30ms",
        capsys=capsys,
    )
    assert code == 1
    assert out.splitlines()[0] == "node/w1 cordoned"
    assert err.startswith("Warning: ignoring DaemonSet-managed Pods: kube-system/calico-node-")
    assert "Cannot evict pod as it would violate the pod's disruption budget." in err
    assert err.rstrip().endswith("global timeout reached: 30ms")
    assert cluster.nodes()["w1"]["cordoned"]
    cluster.update(fail_drain=[])
    code, out, _ = call(
        microk8s.run, node(lab), "kubectl", "drain", "w1", "--ignore-daemonsets", capsys=capsys
    )
    assert code == 0
    assert out.splitlines()[0] == "node/w1 already cordoned"
    assert out.splitlines()[-1] == "node/w1 drained"


def test_stop_disables_and_status_says_so_on_stdout_with_exit_0(
    lab: Path, cluster: Microk8sCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = call(microk8s.run, node(lab), "status", capsys=capsys)
    assert code == 0
    assert out.splitlines()[:3] == [
        "microk8s is running",
        "high-availability: yes",
        "  datastore master nodes: 10.213.0.11:19001 10.213.0.12:19001 10.213.0.13:19001",
    ]
    assert call(microk8s.run, node(lab), "stop", capsys=capsys)[:2] == (0, "Stopped.\n")
    assert call(microk8s.run, node(lab), "status", capsys=capsys)[:2] == (
        0,
        "microk8s is not running, try microk8s start\n",
    )
    code, _, err = call(microk8s.run, node(lab), "kubectl", "get", "nodes", capsys=capsys)
    assert (code, err) == (1, "microk8s is not running, try microk8s start\n")
    cluster.halted("cp1")
    cluster.booted("cp1")  # still disabled: stays down after a reboot
    assert not cluster.nodes()["cp1"]["running"]


def test_a_worker_joined_with_worker_refuses_start_and_snap_works_there(
    lab: Path, cluster: Microk8sCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = node(lab, "w1")
    code, out, _ = call(microk8s.run, worker, "stop", capsys=capsys)
    assert (code, out.splitlines()[1]) == (0, "Use 'snap stop microk8s' to stop services on this node.")
    assert cluster.nodes()["w1"]["running"]
    assert call(snap.run, worker, "stop", "microk8s", "--disable", capsys=capsys)[:2] == (0, "Stopped.\n")
    assert not cluster.nodes()["w1"]["running"]
    assert not cluster.nodes()["w1"]["enabled"]
    assert call(snap.run, worker, "start", "microk8s", capsys=capsys)[:2] == (0, "Started.\n")
    assert not cluster.nodes()["w1"]["enabled"]  # started, not enabled: it stays down after a reboot
    code, _, err = call(snap.run, worker, "restart", "microk8s", capsys=capsys)
    assert (code, err) == (64, "mko lab snap stand-in: unsupported arguments: restart microk8s\n")


def test_dbctl_backup_writes_an_archive_of_keys(
    lab: Path, cluster: Microk8sCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    target = lab / "snapshot"
    code, out, err = call(microk8s.run, node(lab), "dbctl", "backup", "-o", str(target), capsys=capsys)
    assert (code, out) == (0, f"Backing up the datastore\nThe backup is: {target}.tar.gz\n")
    assert 'msg="Starting migrator"' in err
    with tarfile.open(f"{target}.tar.gz") as archive:
        names = archive.getnames()
        assert names[0] == "snapshot"
        key = archive.extractfile("snapshot/0.key")
        assert key is not None and key.read() == b"/registry/minions/cp1"
    code, out, _ = call(microk8s.run, node(lab, "w1"), "dbctl", "backup", capsys=capsys)
    assert (code, out) == (1, "This MicroK8s deployment is acting as a node in a cluster.\n")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.3, "300ms"), (1.5, "1.5s"), (120, "2m0s"), (3725, "1h2m5s")]
)
def test_durations_print_as_go_prints_them(seconds: float, text: str) -> None:
    assert kubectl.go_duration(seconds) == text
    assert kubectl.parse_duration(text) == pytest.approx(seconds)


# ----------------------------------------------------------------------------- the node's system


def test_shutdown_asks_the_lab_for_the_power_change(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = node(lab)
    assert call(shutdown.run, ctx, "-r", "now", capsys=capsys) == (0, "", "")
    assert (Path(ctx.state) / "power.request").read_text() == "reboot"
    assert call(shutdown.run, ctx, "-h", "now", capsys=capsys) == (0, "", "")
    assert (Path(ctx.state) / "power.request").read_text() == "off"
    code, _, err = call(shutdown.run, ctx, "-h", "+5", capsys=capsys)
    assert code == 64 and "only immediate shutdowns" in err


def test_ethtool_shows_and_sets_wake_on(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = node(lab)
    ctx.save("nic.json", {"lo": {"supports": "pumbg", "wake_on": "d", "default": "d"}})
    root = os.geteuid() == 0
    code, out, err = call(ethtool.run, ctx, "lo", capsys=capsys)
    assert code == 0 and out.startswith("Settings for lo:\n\tSupported ports: [ TP ]\n")
    if root:
        assert "\tSupports Wake-on: pumbg\n\tWake-on: d\n" in out
    else:  # ethtool without root: no Wake-on lines, netlink's refusal on stderr
        assert "Wake-on" not in out and err == "netlink error: Operation not permitted\n"
    code, _, err = call(ethtool.run, ctx, "-s", "lo", "wol", "g", capsys=capsys)
    if root:
        assert code == 0 and ctx.load("nic.json", {})["lo"]["wake_on"] == "g"
        assert call(ethtool.run, ctx, "-s", "lo", "wol", "s", capsys=capsys)[:1] == (1,)
    else:
        assert (code, err) == (1, "netlink error: Operation not permitted\n")
    code, _, err = call(ethtool.run, ctx, "-s", "no-such-nic0", "wol", "g", capsys=capsys)
    assert (code, err) == (1, "netlink error: no device matches name (No such device)\n")


def test_systemctl_answers_as_systemd_does(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = node(lab)
    ctx.save("services.json", {"active": ["ssh.service"], "enabled": ["ssh.service"]})
    assert call(systemctl.run, ctx, "is-active", "ssh", capsys=capsys) == (0, "active\n", "")
    assert call(systemctl.run, ctx, "is-active", "--quiet", "NetworkManager", capsys=capsys) == (3, "", "")
    assert call(systemctl.run, ctx, "stop", "ssh", capsys=capsys) == (0, "", "")
    assert call(systemctl.run, ctx, "is-active", "ssh", capsys=capsys) == (3, "inactive\n", "")
    assert call(systemctl.run, ctx, "is-enabled", "mko-no-such-unit", capsys=capsys) == (
        1,
        "",
        "Failed to get unit file state for mko-no-such-unit.service: No such file or directory\n",
    )
    assert call(systemctl.run, ctx, "start", "mko-no-such-unit", capsys=capsys)[::2] == (
        5,
        "Failed to start mko-no-such-unit.service: Unit mko-no-such-unit.service not found.\n",
    )
    assert call(systemctl.run, ctx, "poweroff", capsys=capsys) == (0, "", "")
    assert (Path(ctx.state) / "power.request").read_text() == "off"


def test_nmcli_reads_and_modifies_the_connection(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = node(lab)
    connection = "Wired connection 1"
    state = {
        "running": False,
        "devices": {"eth0": {"state": "100 (connected)", "connection": connection}},
        "connections": {connection: {"802-3-ethernet.wake-on-lan": "default"}},
    }
    ctx.save("nm.json", state)
    assert call(nmcli.run, ctx, "device", "show", "eth0", capsys=capsys) == (
        8,
        "",
        "Error: NetworkManager is not running.\n",
    )
    ctx.save("nm.json", state | {"running": True})
    fields = ["-t", "-f", "GENERAL.STATE,GENERAL.CONNECTION", "device", "show", "eth0"]
    assert call(nmcli.run, ctx, *fields, capsys=capsys) == (
        0,
        "GENERAL.STATE:100 (connected)\nGENERAL.CONNECTION:Wired connection 1\n",
        "",
    )
    modify = ["connection", "modify", connection, "802-3-ethernet.wake-on-lan"]
    assert call(nmcli.run, ctx, *modify, "magic", capsys=capsys) == (0, "", "")
    assert call(nmcli.run, ctx, *modify, "sometimes", capsys=capsys)[0] == 2
    get = ["-g", "802-3-ethernet.wake-on-lan", "connection", "show", connection]
    assert call(nmcli.run, ctx, *get, capsys=capsys) == (0, "magic\n", "")


# ----------------------------------------------------------------------------- on the node's own Python


def test_each_stand_in_runs_under_the_system_python_with_the_standard_library_only(tmp_path: Path) -> None:
    """The launchers the nodes run, with -S as well: no site-packages, so no mko and nothing third-party."""
    lab = tmp_path / "lab"
    state = lab / "nodes" / "n" / "state"
    state.mkdir(parents=True)
    _copy_nodeside(lab)
    (state / "nm.json").write_text(json.dumps({"running": False}))
    expected = {
        "ethtool": (["--bogus"], 64, "mko lab ethtool stand-in: unsupported arguments: --bogus\n"),
        "systemctl": (["is-active", "ssh"], 3, ""),
        "nmcli": (["device", "show", "eth0"], 8, "Error: NetworkManager is not running.\n"),
        "microk8s": (
            ["kubectl", "get", "nodes"],
            1,
            "The connection to the server 127.0.0.1:16443 was refused",
        ),
        "snap": (["start", "microk8s"], 0, ""),
        "shutdown": (["-r", "now"], 0, ""),
    }
    assert {s.name for s in STANDINS} == set(expected)
    for standin_ in STANDINS:
        launcher = tmp_path / standin_.name
        launcher.write_text(standin_.launcher(state, lab))
        argv, code, err = expected[standin_.name]
        done = subprocess.run(
            [PYTHON, "-I", "-S", str(launcher), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stderr[: len(err)]) == (code, err), standin_.name
    calls = [json.loads(line) for line in (state / "calls.log").read_text().splitlines()]
    assert [(c["cmd"], c["argv"]) for c in calls] == [(name, expected[name][0]) for name in expected]
    assert (state / "power.request").read_text() == "reboot"


def test_a_launcher_quotes_the_lab_paths_and_is_three_lines(tmp_path: Path) -> None:
    hostile = tmp_path / "lab'\"; import os; os.system('x') #\n\\"
    text = StandIn("microk8s", "microk8s").launcher(hostile / "state", hostile)
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0] == f"#!{PYTHON} -I"
    tree = ast.parse(text)
    constants = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert constants == [str(hostile / NODESIDE_DIR), str(hostile / "state"), str(hostile), "microk8s"]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert {ast.unparse(c.func) for c in calls} == {"sys.path.insert", "SystemExit", "standin.main"}
    with pytest.raises(ValueError, match="not a module name"):
        StandIn("x", "os; import y").launcher(tmp_path, tmp_path)


def test_the_package_ships_every_module_and_imports_only_the_standard_library() -> None:
    files = {
        e.name for e in importlib.resources.files("mko.lab.nodeside").iterdir() if e.name.endswith(".py")
    }
    shared = {"__init__.py", "standin.py", "cluster_state.py", "kubectl.py"}
    assert files == shared | {f"{s.module}.py" for s in STANDINS}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for item in ast.walk(tree):
            if isinstance(item, ast.Import):
                names = [alias.name for alias in item.names]
            elif isinstance(item, ast.ImportFrom) and item.level == 0:
                names = [item.module or ""]
            else:
                continue  # relative imports stay inside the package
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", f"{path.name} imports {name}"
