"""`mko lab`: a whole power cut and recovery of the virtual lab, from the real CLI and from Chromium.

Every command runs as a person would run it (a subprocess of the real `mko`); the lab daemon it starts
builds namespaces, one sshd per node, a real upsd + dummy-ups and `mko serve --lab`. The test reads only
what `mko lab status --json`, the lab's files and the machine itself (namespaces, processes) say.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labcli import MKO, ROOT, LabCli, free_port

from support.lab import new_prefix

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab_cli(tmp_path: Path) -> Iterator[LabCli]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the lab needs root and iproute2 (see docs/lab.md)")
    env = os.environ | {"MKO_CONFIG": str(tmp_path / "none.toml"), "MKO_LOG_DIR": str(tmp_path / "logs")}
    cli = LabCli(tmp_path / "lab", new_prefix("l"), free_port(), env)
    yield cli
    if (cli.directory / "lab.json").exists():  # the test failed half-way: leave nothing behind anyway
        cli.run("down", check=False)


def _all(status: dict[str, Any], **wanted: Any) -> bool:
    return all(all(node[key] == value for key, value in wanted.items()) for node in status["nodes"])


def _last(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((op for op in status["operations"] if op["kind"] == kind), None)


def _settled(status: dict[str, Any], kind: str) -> bool:
    op = _last(status, kind)
    return op is not None and op["status"] not in ("pending", "running") and not status["running"]


def test_lab_up_power_fail_restore_down_from_the_cli(lab_cli: LabCli) -> None:
    up = lab_cli.up("--battery-runtime", "100")  # on battery the charge falls 1 % a second
    assert "lab admin password:" in up.stdout and f"http://127.0.0.1:{lab_cli.port}" in up.stdout
    state = json.loads((lab_cli.directory / "lab.json").read_text())
    pids = [state["pid"], state["server"]["pid"]]
    status = lab_cli.status()
    assert [(n["hostname"], n["role"]) for n in status["nodes"]] == [
        ("lab-n1", "control_plane"),
        ("lab-n2", "worker"),
        ("lab-n3", "worker"),
    ]
    assert _all(status, power="on", microk8s="running", ready=True, cordoned=False)
    assert status["ups"]["status"] == "OL CHRG"
    # A second lab in the same directory is refused while this one is up.
    again = lab_cli.run("up", check=False)
    assert again.returncode == 2 and "already up" in again.stderr

    # A person watching the whole cycle with `mko lab status --watch`.
    watcher = subprocess.Popen(
        [*MKO, "lab", "status", "--watch", "--dir", str(lab_cli.directory)],
        env=lab_cli.env | {"COLUMNS": "150"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    # Mains fails: after the rule's 1 s delay, workers are drained and powered off, the control plane last.
    assert "OB DISCHRG" in lab_cli.run("power-fail").stdout
    status = lab_cli.wait(lambda s: _settled(s, "cluster_shutdown"), "the shutdown rule")
    assert 50 < status["ups"]["charge"] < 100, status["ups"]  # the battery drains while on battery
    assert _last(status, "cluster_shutdown")["status"] == "succeeded"  # type: ignore[index]
    assert _all(status, power="off", microk8s="stopped", ready=False)
    calls = lab_cli.calls()
    poweroffs = [host for host, command in calls if command == "systemctl poweroff"]
    assert sorted(poweroffs[:2]) == ["lab-n2", "lab-n3"] and poweroffs[2:] == ["lab-n1"]
    drains = [c for c in calls if c[1].startswith("microk8s kubectl drain")]
    assert {host for host, _ in drains} == {"lab-n1"}  # drains run on the control plane
    assert calls.index(drains[-1]) < calls.index(("lab-n2", "systemctl poweroff"))

    # Mains returns: magic packets boot every node, MicroK8s starts, every node Ready and uncordoned.
    assert "OL CHRG" in lab_cli.run("power-restore").stdout
    status = lab_cli.wait(
        lambda s: _settled(s, "cluster_recover") and _all(s, power="on", ready=True, cordoned=False),
        "the wake and the recovery",
    )
    recovery = _last(status, "cluster_recover")
    assert recovery is not None and recovery["status"] == "succeeded", recovery
    assert recovery["summary"] == "3/3 started, 3/3 Ready, 2 uncordoned"
    assert _all(status, power="on", microk8s="running", ready=True, cordoned=False, boots=2)
    assert _last(status, "wol_wake_cluster")["status"] == "succeeded"  # type: ignore[index]

    # Mains flapping (off, on after 2 s) may interrupt the next shutdown; it ends with the cluster up.
    assert "flap over: UPS OL CHRG" in lab_cli.run("flap", "3", "--period", "2").stdout
    status = lab_cli.wait(
        lambda s: (
            _last(s, "cluster_recover")["id"] > recovery["id"]  # type: ignore[index]
            and _settled(s, "cluster_recover")
            and _all(s, power="on", ready=True, cordoned=False)
        ),
        "the recovery after the flap",
    )
    assert _last(status, "cluster_recover")["status"] == "succeeded"  # type: ignore[index]
    assert "charge 40 %" in lab_cli.run("battery", "40").stdout
    bad = lab_cli.run("battery", "140", check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: percent: must be between 0 and 100"

    down = lab_cli.run("down")
    assert "every lab process gone" in down.stdout
    watched, _ = watcher.communicate(timeout=30)  # it ends by itself when the lab goes down
    assert watcher.returncode == 0 and watched.rstrip().endswith("the lab went down"), watched
    assert "last: cluster_recover" in watched and "lab-n3" in watched
    assert lab_cli.leftovers(pids) == []
    assert (lab_cli.directory / "lab.db").exists()  # kept for reading after the rehearsal
    assert "no lab is up" in lab_cli.run("down").stdout
    gone = lab_cli.run("status", check=False)
    assert gone.returncode == 69 and "no lab is up" in gone.stderr  # EX_UNAVAILABLE


@pytest.mark.xdist_group("chromium")  # one Chromium at a time (see test_web_ui.py)
def test_lab_cycle_from_the_web_ui_in_chromium(lab_cli: LabCli, host_browser: Any, screenshot: Any) -> None:
    from playwright.sync_api import expect

    lab_cli.up("--battery-runtime", "0")  # a battery that never drains: the charge below is exact
    password = (lab_cli.directory / "admin-password").read_text().strip()
    base = f"http://127.0.0.1:{lab_cli.port}"
    browser = host_browser
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/lab")
    page.fill("#username", "admin")
    page.fill("#password", password)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/lab")
    rows = page.locator("#lab-nodes [data-lab-node]")
    expect(rows).to_have_count(3)
    expect(page.locator("[data-lab-ups=status]")).to_have_text("OL CHRG")
    # A second tab watches the dashboard: it must show the rule's operations without anyone reloading.
    dashboard = context.new_page()  # the same signed-in session
    dashboard.goto(base)

    page.click("#lab-power-fail")
    expect(page.locator("[data-lab-ups=status]")).to_have_text("OB DISCHRG")
    for row in rows.all():
        expect(row.locator("[data-field=power]")).to_have_text("off", timeout=30_000)
    expect(dashboard.get_by_text("cluster_shutdown").first).to_be_visible(timeout=10_000)
    screenshot(page, "lab-power-cut")

    page.click("#lab-power-restore")
    expect(page.locator("[data-lab-ups=status]")).to_have_text("OL CHRG")
    for row in rows.all():
        expect(row.locator("[data-field=power]")).to_have_text("on", timeout=30_000)
        expect(row.locator("[data-field=ready]")).to_have_text("Ready", timeout=30_000)
        expect(row.locator("[data-field=cordoned]")).to_have_text("no", timeout=30_000)
    expect(page.locator("[data-lab-operations]")).to_contain_text("cluster_recover", timeout=30_000)
    expect(dashboard.get_by_text("cluster_recover").first).to_be_visible(timeout=10_000)
    screenshot(page, "lab-recovered")

    # The browser refuses 250 %; without its check the server refuses it next to the field, changing nothing.
    page.locator("#f-percent").evaluate("field => field.removeAttribute('max')")
    page.fill("#f-percent", "250")
    page.click("#lab-battery")
    expect(page.locator("[data-error-for=percent]")).to_have_text("must be between 0 and 100")
    expect(page.locator("[data-lab-ups=status]")).to_have_text("OL CHRG")
    status = lab_cli.status()
    assert _all(status, power="on", microk8s="running", ready=True, cordoned=False, boots=2)
    assert status["ups"]["charge"] == 100
    lab_cli.run("down")
    assert lab_cli.leftovers([]) == []


def test_lab_up_as_another_user_is_refused_in_one_line_and_builds_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, *MKO, "lab", "up", "--dir", str(directory)],
        env=os.environ | {"MKO_CONFIG": str(tmp_path / "none.toml"), "MKO_LOG_DIR": str(tmp_path / "logs")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr
        == "error: mko lab needs root: it builds network namespaces and runs sshd and upsd (try sudo)\n"
    )
    assert not directory.exists()
