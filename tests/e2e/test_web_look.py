"""How the web UI looks and behaves in real headless Chromium: every page at 1280 px and 390 px, light
and dark, saved to test-artifacts/screenshots/; no sideways scrolling on a phone, Wake buttons on
screen, the dark theme applied, the menu out of a signed-out visitor's sight, /docs rendered with every
non-loopback request blocked, /redoc too, and a web app manifest Chromium can install from."""

from __future__ import annotations

import json
import struct
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.orm import Session

from mko.access.users import create_user
from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate
from mko.lab.harness import RunningLab
from mko.platform.db.models.access import Role
from mko.platform.db.models.ups import PowerEvent
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups

# One Chromium at a time (see test_web_ui.py).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420), pytest.mark.xdist_group("chromium")]

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
DARK_BACKGROUND = "rgb(18, 22, 28)"  # --bg of the dark theme (app.css)
LIGHT_BACKGROUND = "rgb(246, 248, 250)"


def _inventory(session: Session, settings: Settings, lab: RunningLab) -> None:
    cluster = create_cluster(session, ClusterCreate(name="garage", description="rack in the garage"))
    for number, node in enumerate(lab.nodes, start=1):
        data = NodeCreate(
            hostname=f"node-{number}-with-a-long-name" if number == 3 else f"node-{number}",
            ip_address=node.ip,
            cluster_id=cluster.id,
            role="control-plane" if number == 1 else "worker",
            wol_enabled=True,
            wol_mac_address=node.mac,
            wol_prefix_len=lab.lab.prefix_len,
            probe_port=2222,
        )
        create_node(session, data)
    # Nobody listens on port 9 of loopback: the dashboard must say so in words, not errno.
    ups = create_ups(session, settings, UpsCreate(name="rack", ups_name="myups", host="127.0.0.1", port=9))
    rule = RuleCreate(
        ups_id=ups.id,
        cluster_id=cluster.id,
        power_event=PowerEvent.POWER_RESTORED,
        cluster_action="wake_on_lan",
        name="Wake cluster after power restoration",
    )
    create_rule(session, rule)
    create_user(session, settings, "operator", "operator-pass", Role.OPERATOR)


def _fits(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def _on_screen(page: Any, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    width = page.viewport_size["width"]
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def test_every_page_at_desktop_and_phone_width_light_and_dark(
    lab_server: Any,
    browser_page: Any,
    lab: RunningLab,
    session: Session,
    settings: Settings,
    screenshot: Any,
) -> None:
    base = lab_server.url
    _inventory(session, settings, lab)
    page = browser_page

    # Signed out: the login page and nothing of the menu.
    page.goto(f"{base}/")
    page.wait_for_url(f"{base}/login?next=/")
    assert page.locator("nav").count() == 0 and page.locator("text=Operations").count() == 0
    page.fill("#username", "operator")
    page.fill("#password", "operator-pass")
    page.click("#sign-in")
    page.wait_for_url(f"{base}/")

    # One wake of the cluster from the dashboard, so the pages have an operation to show.
    page.click("[data-wake-cluster='1']")
    page.wait_for_url(f"{base}/operations/*")
    page.wait_for_selector("#operation [data-op-status].succeeded", timeout=30_000)
    finished = page.locator("[data-op-finished]").inner_text()
    assert finished != "—" and finished.startswith("20")  # filled as the operation ends
    operation_path = urlsplit(page.url).path
    state = page.context.storage_state()

    pages = {
        "dashboard": "/",
        "nodes": "/nodes",
        "node-detail": "/nodes/1",
        "clusters": "/clusters",
        "cluster-detail": "/clusters/1",
        "cluster-backups": "/clusters/1/backups",
        "shutdown-confirm": "/clusters/1/shutdown",
        "ups": "/ups",
        "rules": "/rules",
        "rule-edit": "/rules?edit=1",
        "schedules": "/schedules",
        "operations": "/operations",
        "operation": operation_path,
    }
    browser = page.context.browser
    for width_name, viewport in (("1280", DESKTOP), ("390", PHONE)):
        for scheme in ("light", "dark"):
            signed_out = browser.new_context(viewport=viewport, color_scheme=scheme)
            login = signed_out.new_page()
            login.goto(f"{base}/login")
            screenshot(login, f"login-{width_name}-{scheme}")
            background = login.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == (DARK_BACKGROUND if scheme == "dark" else LIGHT_BACKGROUND), "login"
            assert viewport is not PHONE or _fits(login), f"login scrolls sideways at 390 px ({scheme})"
            signed_out.close()
            context = browser.new_context(viewport=viewport, color_scheme=scheme, storage_state=state)
            view = context.new_page()
            try:
                for name, path in pages.items():
                    view.goto(f"{base}{path}")
                    view.wait_for_load_state("networkidle")
                    if name == "dashboard":
                        view.wait_for_selector("[data-reach-node='1'] .pill.state-up", timeout=20_000)
                    screenshot(view, f"{name}-{width_name}-{scheme}")
                    background = view.evaluate("getComputedStyle(document.body).backgroundColor")
                    assert background == (DARK_BACKGROUND if scheme == "dark" else LIGHT_BACKGROUND), name
                    if viewport is PHONE:
                        assert _fits(view), f"{name} scrolls sideways at 390 px ({scheme})"
                if viewport is PHONE:
                    # The phone's menu: one line until opened; Wake buttons on screen.
                    view.goto(f"{base}/nodes")
                    assert not view.locator("#menu").is_visible()
                    view.click("[data-menu-toggle]")
                    assert view.locator("#menu a[href='/rules']").is_visible()
                    screenshot(view, f"menu-open-390-{scheme}")
                    assert _on_screen(view, "button[formaction='/nodes/3/wol/wake']")
                    view.goto(f"{base}/")
                    assert _on_screen(view, "[data-wake-node='3']")
            finally:
                context.close()

    # The UPS nobody answers for: a sentence, with the raw error on demand.
    page.goto(f"{base}/")
    tile = page.locator("[data-ups-status='1']")
    tile.locator("text=mko cannot read it").wait_for(timeout=20_000)
    assert "Errno" not in tile.locator("p").inner_text()

    # The theme toggle wins over the system's choice and is remembered by this browser.
    context = browser.new_context(viewport=DESKTOP, color_scheme="light", storage_state=state)
    view = context.new_page()
    view.goto(f"{base}/nodes")
    view.click("[data-theme-toggle]")
    view.reload()
    assert view.evaluate("getComputedStyle(document.body).backgroundColor") == DARK_BACKGROUND
    context.close()


# Every Content-Security-Policy refusal on a page, kept where the test can read it.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push({ directive: event.effectiveDirective, blocked: event.blockedURI });
});
"""


def test_docs_render_with_every_non_loopback_request_blocked(
    lab_server: Any, browser_page: Any, screenshot: Any
) -> None:
    base = lab_server.url
    page = browser_page
    blocked: list[str] = []

    def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost", "::1"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(f"{base}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    assert page.locator(".opblock").count() > 50  # every operation of the API, rendered
    assert page.get_by_text("/api/nodes/{node_id}/wol/wake", exact=True).count() >= 1
    assert page.evaluate("window.cspViolations") == []

    # ReDoc: every operation rendered and styled under a policy whose scripts are 'self' only.
    answer = page.goto(f"{base}/redoc")
    assert answer is not None
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy
    operations = page.locator("[data-section-id^='operation/']")
    operations.first.wait_for(timeout=60_000)
    assert operations.count() > 50
    assert page.locator("h2", has_text="Wake Node").count() >= 1
    # ReDoc's own styles applied (its generated <style> carries the nonce): the menu has its colour.
    menu = page.evaluate("getComputedStyle(document.querySelector('.menu-content')).backgroundColor")
    assert menu == "rgb(250, 250, 250)"
    # Its search runs (the index is built in a worker): a query lists the wake operations.
    page.fill("input[placeholder='Search...']", "wake node")
    page.locator("[data-role='search:results'] >> text=Wake Node").first.wait_for(timeout=20_000)
    # The policy refused nothing of ReDoc; only its "API docs by Redocly" logo, which sits on the
    # internet (ReDoc drops the image when it cannot load).
    refused = page.evaluate("window.cspViolations")
    assert all(v["directive"] == "img-src" and "127.0.0.1" not in v["blocked"] for v in refused), refused

    # Both at 1280 and 390 px, light and dark (dark as the rest of the UI: Swagger UI's own dark stylesheet,
    # ReDoc with a dark theme), each within its policy: rendered, nothing wider than a phone's screen.
    browser = page.context.browser
    for width_name, viewport in (("1280", DESKTOP), ("390", PHONE)):
        for scheme in ("light", "dark"):
            context = browser.new_context(viewport=viewport, color_scheme=scheme)
            context.route("**/*", only_loopback)
            context.add_init_script(RECORD_VIOLATIONS)
            view = context.new_page()
            try:
                for name, ready in (("docs", ".opblock"), ("redoc", "[data-section-id^='operation/']")):
                    view.goto(f"{base}/{name}")
                    view.locator(ready).first.wait_for(timeout=60_000)
                    screenshot(view, f"{name}-{width_name}-{scheme}", full_page=False)
                    assert _docs_colours(view, name) == DOCS_COLOURS[name, scheme], (name, scheme)
                    if viewport is PHONE:
                        assert _fits(view), f"/{name} scrolls sideways at 390 px ({scheme})"
                    refused = view.evaluate("window.cspViolations")
                    assert all(v["directive"] == "img-src" for v in refused), (name, scheme, refused)
            finally:
                context.close()
    # The theme a person chose in the web UI wins over the system's, here too.
    context = browser.new_context(viewport=DESKTOP, color_scheme="light")
    context.route("**/*", only_loopback)
    context.add_init_script("localStorage.setItem('mko-theme', 'dark')")
    view = context.new_page()
    try:
        for name, ready in (("docs", ".opblock"), ("redoc", "[data-section-id^='operation/']")):
            view.goto(f"{base}/{name}")
            view.locator(ready).first.wait_for(timeout=60_000)
            assert _docs_colours(view, name) == DOCS_COLOURS[name, "dark"], name
    finally:
        context.close()
    assert blocked == []  # and nothing was even asked of the internet


# What /docs and /redoc look like, light and dark: the page's background, a panel's background and the
# title's colour. Swagger UI's own dark theme (swagger-ui.css under html.dark-mode: #1c2022, #d2d6d7);
# ReDoc's from redoc.js and api-docs.css (the web UI's dark colours: app.css).
DOCS_COLOURS = {
    ("docs", "light"): ("rgba(0, 0, 0, 0)", "rgba(0, 0, 0, 0)", "rgb(59, 65, 81)"),
    ("docs", "dark"): ("rgb(28, 32, 34)", "rgb(28, 32, 34)", "rgb(210, 214, 215)"),
    ("redoc", "light"): ("rgba(0, 0, 0, 0)", "rgb(250, 250, 250)", "rgb(51, 51, 51)"),
    ("redoc", "dark"): (DARK_BACKGROUND, "rgb(26, 32, 41)", "rgb(227, 232, 239)"),
}


def _docs_colours(page: Any, name: str) -> tuple[str, str, str]:
    """The page's background, a panel's (Swagger UI's root, ReDoc's menu) and the API title's colour."""
    panel, title = (".swagger-ui", ".swagger-ui .info .title") if name == "docs" else (".menu-content", "h1")
    colours: list[str] = page.evaluate(
        """([panel, title]) => {
            const style = (selector) => getComputedStyle(document.querySelector(selector));
            const html = style("html").backgroundColor, body = style("body").backgroundColor;
            const page = html !== "rgba(0, 0, 0, 0)" ? html : body;
            return [page, style(panel).backgroundColor, style(title).color];
        }""",
        [panel, title],
    )
    return colours[0], colours[1], colours[2]


def test_the_web_app_manifest_is_installable(lab_server: Any, browser_page: Any) -> None:
    base = lab_server.url
    page = browser_page
    page.goto(f"{base}/login")
    href = page.locator("link[rel=manifest]").get_attribute("href")
    answer = page.request.get(f"{base}{href}")
    assert answer.ok and answer.headers["content-type"].startswith("application/manifest+json")
    manifest = json.loads(answer.text())
    assert manifest["name"] and manifest["short_name"] == "mko"
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    sizes = {}
    for icon in manifest["icons"]:
        image = page.request.get(f"{base}{icon['src']}")
        assert image.ok and image.headers["content-type"] == icon["type"], icon["src"]
        if icon["type"] == "image/png":
            body = image.body()
            assert body[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = struct.unpack(">II", body[16:24])
            assert f"{width}x{height}" == icon["sizes"]
            sizes[icon["sizes"]] = icon
    # What Chromium asks of an installable app: a 192 px and a 512 px icon.
    assert {"192x192", "512x512"} <= set(sizes)
