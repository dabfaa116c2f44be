"""The dashboard lives without a reload, in real headless Chromium against `mko serve` in the lab: a wake
started elsewhere appears under *Running now* with its summary, the nodes go off → booting → up, and
the finished operation moves to *Latest operations*, all in the same document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session
from test_web_look import DESKTOP, PHONE, _inventory

from mko.lab.harness import RunningLab
from mko.platform.settings import Settings
from support.serve import ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300), pytest.mark.xdist_group("chromium")]

BOOT_SECONDS = 10.0  # long enough to see the nodes booting and photograph it, on a loaded machine too


@pytest.fixture
def lab(lab_factory: Any) -> RunningLab:
    """Three nodes that take BOOT_SECONDS to answer after their magic packet."""
    running: RunningLab = lab_factory(3, boot_delay=BOOT_SECONDS)
    return running


@pytest.fixture
def lab_server(
    settings: Settings, session: object, lab: RunningLab, tmp_path: Path
) -> Iterator[ServeProcess]:
    """`mko serve` whose API wakes answer 202 at once (the wake goes on in the background)."""
    env = {"MKO_REACHABILITY_INTERVAL": "1", "MKO_API_SYNC_WAIT": "0"}
    with ServeProcess.start(lab.lab.orch, settings, tmp_path / "serve.log", env) as server:
        yield server


def test_running_operations_and_node_states_update_without_a_reload(
    lab_server: Any, browser_page: Any, lab: RunningLab, session: Session, settings: Settings, screenshot: Any
) -> None:
    base = lab_server.url
    _inventory(session, settings, lab)
    page = browser_page
    page.goto(f"{base}/login")
    page.fill("#username", "operator")
    page.fill("#password", "operator-pass")
    page.click("#sign-in")
    page.wait_for_url(f"{base}/")
    assert page.locator("[data-running-card]").is_hidden()  # nothing runs yet
    page.wait_for_selector("[data-reach-node='1'] .pill.state-off", timeout=20_000)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    # Someone else wakes the cluster and waits for it (the API answers 202 and goes on).
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    started = page.request.post(
        f"{base}/api/clusters/1/wol/wake",
        data={"wait": True, "timeout": 120},
        headers={"X-CSRF-Token": csrf or ""},
    )
    assert started.status == 202, started.text()
    operation_id = started.json()["operation_id"]

    running = page.locator(f"[data-running-operation='{operation_id}']")
    running.wait_for(timeout=15_000)
    assert running.inner_text().startswith(f"wol_wake_cluster #{operation_id}")
    page.wait_for_selector("[data-reach-node='1'] .pill.state-booting", timeout=15_000)
    note = page.locator("[data-reach-node='1'] .pill").get_attribute("title") or ""
    assert note.startswith("wake sent at ")
    # The card's last wake follows too: this wake, linked.
    page.locator(f"[data-last-wake='1'] a[href='/operations/{operation_id}']").wait_for(timeout=10_000)
    screenshot(page, "dashboard-running-1280-light")
    browser = page.context.browser
    state = page.context.storage_state()
    for name, viewport, scheme in (("1280-dark", DESKTOP, "dark"), ("390-light", PHONE, "light")):
        context = browser.new_context(viewport=viewport, color_scheme=scheme, storage_state=state)
        view = context.new_page()
        view.goto(f"{base}/")
        view.locator(f"[data-running-operation='{operation_id}']").wait_for(timeout=5_000)
        screenshot(view, f"dashboard-running-{name}")
        context.close()

    # Every node answers: up; the wake ends; it leaves Running now for Latest operations.
    for node_id in (1, 2, 3):
        page.wait_for_selector(f"[data-reach-node='{node_id}'] .pill.state-up", timeout=60_000)
    page.locator("[data-running-card]").wait_for(state="hidden", timeout=30_000)
    row = page.locator(
        "[data-operations-table] tr", has=page.locator(f"a[href='/operations/{operation_id}']")
    )
    row.locator(".pill.succeeded").wait_for(timeout=10_000)
    assert page.evaluate("window.sameDocument") is True
