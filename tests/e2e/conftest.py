"""End-to-end fixtures: `mko serve` in a lab's orchestrator namespace, and headless Chromium beside it.

The lab itself (``lab``) and the loopback-only namespace (``isolated_netns``) come from tests/support/lab.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mko.lab.harness import RunningLab
from mko.lab.netns import enter_netns
from mko.platform.settings import Settings
from support.serve import ServeProcess

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
def lab_server(
    settings: Settings, session: object, lab: RunningLab, tmp_path: Path
) -> Iterator[ServeProcess]:
    """`mko serve` inside the lab's orch namespace, on the test's database."""
    # The nodes are the lab's: the background probes the pages show reach only the lab's LAN.
    env = {"MKO_REACHABILITY_INTERVAL": "1"}
    with ServeProcess.start(lab.lab.orch, settings, tmp_path / "serve.log", env) as server:
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
def browser_page(lab: RunningLab) -> Iterator[object]:
    """A Chromium page whose network is the lab's orch namespace."""
    with _chromium(lab.lab.orch) as browser:
        yield browser.new_page(viewport={"width": 1200, "height": 900})


@pytest.fixture
def host_browser() -> Iterator[Any]:
    """A Chromium browser on this machine's own network, as a person at its keyboard would use."""
    with _chromium() as browser:
        yield browser


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """Save a full-page screenshot under test-artifacts/screenshots/ (kept as a CI artifact);
    ``full_page=False``: the window only (a page as long as the whole API reference)."""

    def take(page: Any, name: str, full_page: bool = True) -> Path:
        target = ARTIFACTS / "screenshots" / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=full_page)
        return target

    return take
