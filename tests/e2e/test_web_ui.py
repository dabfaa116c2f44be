"""The web UI in real headless Chromium against `mko serve` in the lab: clicks that send real packets."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mko.access.users import create_user
from mko.inventory.clusters import create_cluster
from mko.inventory.schemas import ClusterCreate
from mko.lab.harness import RunningLab
from mko.platform.db.models.access import Role
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.rules import PowerRule, RuleTarget
from mko.platform.settings import Settings
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups

# One Chromium at a time (~300 MB each): every browser test is in the xdist group "chromium".
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("chromium")]


def _sign_in_as_operator(page: Any, base: str, path: str, session: Session, settings: Settings) -> None:
    """An operator signed in through the login form that an anonymous visit of ``path`` lands on."""
    create_user(session, settings, "operator", "operator-pass", Role.OPERATOR)
    page.goto(f"{base}{path}")
    page.wait_for_url(f"{base}/login?next={path}")
    page.fill("#username", "operator")
    page.fill("#password", "operator-pass")
    page.click("#sign-in")
    page.wait_for_url(f"{base}{path}")


def test_add_configure_and_wake_a_node_then_a_cluster(
    lab_server: Any,
    browser_page: Any,
    lab: RunningLab,
    settings: Settings,
    session: Session,
    screenshot: Any,
) -> None:
    page = browser_page
    base = lab_server.url
    target = lab.nodes[1]

    # Sign in (an anonymous visit lands on the login form), then a cluster and a node through the UI.
    _sign_in_as_operator(page, base, "/clusters", session, settings)
    page.fill("#f-name", "garage")
    page.click("text=Add cluster")
    page.wait_for_url(f"{base}/clusters/1")

    page.goto(f"{base}/nodes")
    page.fill("#f-hostname", "worker-2")
    page.fill("#f-ip_address", target.ip)
    page.select_option("#f-cluster_id", "1")
    page.fill("#f-ssh_port", "2222")
    page.click("text=Add node")
    page.wait_for_url(f"{base}/nodes/1")

    # A bad MAC in the node's Wake-on-LAN section: the error sits next to the field, nothing is stored.
    page.check("input[name=wol_enabled]")
    page.fill("#f-wol_mac_address", "aa:bb:cc:dd:ee")
    page.click("#save-wol")
    error = page.locator("[data-error-for=wol_mac_address]")
    error.wait_for()
    assert "not a MAC address" in error.inner_text()
    session.expire_all()
    assert session.scalar(select(Node.wol_mac_address).where(Node.id == 1)) is None
    assert session.scalar(select(func.count()).select_from(Node)) == 1

    # Configure for real: the node's MAC, its subnet prefix so packets go to the subnet broadcast.
    page.fill("#f-wol_mac_address", target.mac.upper().replace(":", "-"))
    page.fill("#f-wol_prefix_len", str(lab.lab.prefix_len))
    page.fill("#f-probe_port", "2222")
    page.click("#save-wol")
    page.wait_for_url(f"{base}/nodes/1?saved=1")
    assert target.mac in page.locator("#wol-status").inner_text()
    screenshot(page, "node-detail")

    # Send wake packet and wait until it is up: the operation page follows it live.
    page.check("#wake-form input[name=wait]")
    page.click("#send-wake")
    page.wait_for_url(f"{base}/operations/*")
    page.wait_for_selector("#operation [data-op-status].succeeded", timeout=20_000)
    assert target.recorder.wait_for(1, timeout=5, mac=target.mac)
    assert {p.ip_dst for p in target.recorder.packets_for(target.mac)} == {lab.lab.broadcast}
    assert target.power.is_on
    assert "up after" in page.locator("[data-op-steps]").inner_text()
    screenshot(page, "operation")

    # Two more nodes through the API, then the whole cluster from its page.
    for lab_node, name in ((lab.nodes[0], "cp-1"), (lab.nodes[2], "worker-3")):
        body = {
            "hostname": name,
            "ip_address": lab_node.ip,
            "cluster_id": 1,
            "role": "control-plane" if name == "cp-1" else "worker",
            "wol_enabled": True,
            "wol_mac_address": lab_node.mac,
            "wol_prefix_len": lab.lab.prefix_len,
            "probe_port": 2222,
        }
        csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
        created = page.request.post(f"{base}/api/nodes", data=body, headers={"X-CSRF-Token": csrf or ""})
        assert created.status == 201, created.text()
    page.goto(f"{base}/clusters/1")
    page.click("#wake-cluster")
    page.wait_for_url(f"{base}/operations/*")
    page.wait_for_selector("#operation [data-op-status].succeeded", timeout=20_000)
    for lab_node in lab.nodes:
        assert lab_node.recorder.wait_for(3, timeout=5, mac=lab_node.mac)

    page.goto(f"{base}/nodes")
    page.wait_for_selector("[data-reach-node] .pill.state-up")
    screenshot(page, "nodes")
    page.goto(f"{base}/")
    screenshot(page, "dashboard")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/nodes/1")
    screenshot(page, "node-detail-phone")
    # Phone width: nothing wider than the screen but the scrollable tables.
    assert page.evaluate("document.documentElement.scrollWidth") <= 400


def test_a_rule_acts_on_the_fed_nodes_only_when_its_form_says_so(
    lab_server: Any, browser_page: Any, session: Session, settings: Settings, screenshot: Any
) -> None:
    """The rule form's "fed only" switch (the CLI's --fed-only, the API's target fed_nodes), added and
    taken away again in the edit form, with its help text tied to it."""
    page = browser_page
    base = lab_server.url
    cluster = create_cluster(session, ClusterCreate(name="rack"))
    for name in ("rack-a", "rack-b"):  # nothing answers on port 9: the rules do not need upsd
        create_ups(session, settings, UpsCreate(name=name, ups_name=name, host="127.0.0.1", port=9))
    _sign_in_as_operator(page, base, "/rules", session, settings)

    switch = page.locator("#f-fed_only")
    assert not switch.is_checked()
    help_text = page.locator("#" + (switch.get_attribute("aria-describedby") or "missing"))
    assert help_text.is_visible() and "--fed-by" in help_text.inner_text()
    page.fill("#f-name", "rack-a dark")
    page.select_option("#f-ups_id", "1")
    page.select_option("#f-cluster_id", str(cluster.id))
    page.select_option("#f-power_event", "power_loss")
    page.select_option("#f-cluster_action", "graceful_shutdown")
    page.fill("#f-action_delay", "60")
    page.click("label:has(#f-fed_only)")  # the label's words toggle it, as a person would click
    assert switch.is_checked()
    screenshot(page, "rule-form-fed-only")
    page.click("text=Add rule")
    page.wait_for_url(f"{base}/rules")
    row = page.locator("tr[data-rule='1']")
    assert "fed nodes of" in row.inner_text()
    session.expire_all()
    assert session.scalar(select(PowerRule.target).where(PowerRule.id == 1)) == RuleTarget.FED_NODES

    row.locator("text=Edit").click()
    page.wait_for_url(f"{base}/rules?edit=1#rule-form")
    assert page.locator("#f-fed_only").is_checked()
    page.uncheck("#f-fed_only")
    page.click("text=Save rule")
    page.wait_for_url(f"{base}/rules")
    assert "fed nodes of" not in page.locator("tr[data-rule='1']").inner_text()
    session.expire_all()
    assert session.scalar(select(PowerRule.target).where(PowerRule.id == 1)) == RuleTarget.CLUSTER
