"""End-to-end fixtures: `mko serve` in a lab's orchestrator namespace, and headless Chromium beside it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mkoserve import ServeProcess

from mko.lab.harness import RunningLab
from mko.lab.netns import enter_netns
from mko.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def e2e_lab() -> Iterator[RunningLab]:
    """A 3-node lab (fails, never skips, without root)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("end-to-end lab tests need root and iproute2 (see TESTING.md)")
    with RunningLab.start(f"mke{os.getpid() % 10000}", 3) as running:
        yield running


@pytest.fixture(scope="module")
def isolated_netns() -> Iterator[str]:
    """A network namespace with nothing but loopback: whatever runs there cannot reach a real LAN."""
    if os.geteuid() != 0:
        pytest.fail("this test isolates mko in a network namespace and must run as root")
    name = f"mkf{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    pids = subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def lab_server(
    settings: Settings, session: object, e2e_lab: RunningLab, tmp_path: Path
) -> Iterator[ServeProcess]:
    """`mko serve` inside the lab's orch namespace, on the test's database."""
    # The nodes are the lab's: the background probes the pages show reach only the lab's LAN.
    env = {"MKO_REACHABILITY_INTERVAL": "1"}
    with ServeProcess.start(e2e_lab.lab.orch, settings, tmp_path / "serve.log", env) as server:
        yield server


@contextlib.contextmanager
def _chromium(netns: str | None = None) -> Iterator[Any]:
    """A headless Chromium browser; in ``netns`` when given (the driver is forked from inside it)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium")
    with contextlib.ExitStack() as inside:
        if netns is not None:
            inside.enter_context(enter_netns(netns))
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture
def browser_page(e2e_lab: RunningLab) -> Iterator[object]:
    """A Chromium page whose network is the lab's orch namespace."""
    with _chromium(e2e_lab.lab.orch) as browser:
        yield browser.new_page(viewport={"width": 1200, "height": 900})


@pytest.fixture
def host_browser() -> Iterator[Any]:
    """A Chromium browser on this machine's own network, as a person at its keyboard would use."""
    with _chromium() as browser:
        yield browser


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    """Save a full-page screenshot under test-artifacts/screenshots/ (kept as a CI artifact)."""

    def take(page: Any, name: str) -> Path:
        target = ARTIFACTS / "screenshots" / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
        return target

    return take
