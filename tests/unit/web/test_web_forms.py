"""The web UI's pages and forms over HTTP: same rules as the API, errors next to the field."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mko.cluster.plan import plan_shutdown
from mko.platform.settings import Settings
from mko.ups import outages


def _node(client: TestClient, **fields: object) -> dict[str, object]:
    body = {"hostname": "cp1", "ip_address": "127.0.0.1"} | fields
    response = client.post("/api/nodes", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_every_page_renders(client: TestClient, web: Any) -> None:
    cluster = client.post("/api/clusters", json={"name": "home"}).json()
    node = _node(client, cluster_id=cluster["id"])
    for path in (
        "/",
        "/nodes",
        f"/nodes?cluster_id={cluster['id']}",
        f"/nodes/{node['id']}",
        "/clusters",
        f"/clusters/{cluster['id']}",
        "/operations",
        "/static/app.css",
        "/static/app.js",
    ):
        response = web.get(path)
        assert response.status_code == 200, path
    assert web.get("/nodes/99").status_code == 404


def test_add_node_form_and_field_errors(client: TestClient, web: Any) -> None:
    client.post("/api/clusters", json={"name": "home"})
    bad = web.form(
        "/nodes",
        data={
            "hostname": "cp1",
            "ip_address": "10.0.0.1",
            "cluster_id": "1",
            "role": "worker",
            "ssh_user": "ubuntu",
            "ssh_port": "22",
            "wol_mac_address": "zz:zz",
        },
    )
    assert bad.status_code == 422
    assert re.search(r'data-error-for="wol_mac_address">[^<]*not a MAC address', bad.text)
    assert 'value="cp1"' in bad.text  # what the person typed is kept
    assert client.get("/api/nodes").json() == []
    good = web.form(
        "/nodes",
        data={
            "hostname": "cp1",
            "ip_address": "10.0.0.1",
            "cluster_id": "1",
            "role": "control-plane",
            "ssh_user": "ubuntu",
            "ssh_port": "22",
            "wol_mac_address": "AA-BB-CC-DD-EE-01",
        },
        follow_redirects=False,
    )
    assert good.status_code == 303 and good.headers["location"] == "/nodes/1"
    assert client.get("/api/nodes/1").json()["wol_mac_address"] == "aa:bb:cc:dd:ee:01"
    duplicate = web.form(
        "/nodes", data={"hostname": "cp1", "ip_address": "10.0.0.2", "ssh_user": "u", "ssh_port": "22"}
    )
    assert duplicate.status_code == 409 and "already used" in duplicate.text


def test_configure_form_saves_every_field_or_nothing(client: TestClient, web: Any) -> None:
    node = _node(client)
    form = {
        "wol_enabled": "on",
        "kind": "physical",
        "wol_mac_address": "aa:bb:cc:dd:ee:01",
        "wol_method": "ethernet",
        "wol_port": "7",
        "wol_broadcast_address": "",
        "wol_interface": "",
        "wol_prefix_len": "24",
        "wol_secureon": "",
        "probe_port": "",
        "proxmox_vm_id": "",
        "proxmox_host_id": "",
    }
    saved = web.form(f"/nodes/{node['id']}/wol/configure", data=form, follow_redirects=False)
    assert saved.status_code == 303
    stored = client.get(f"/api/nodes/{node['id']}").json()
    assert (stored["wol_enabled"], stored["wol_port"], stored["wol_prefix_len"]) == (True, 7, 24)
    bad = web.form(
        f"/nodes/{node['id']}/wol/configure", data=form | {"wol_port": "70000", "wol_mac_address": "x"}
    )
    assert bad.status_code == 422
    assert 'data-error-for="wol_port"' in bad.text or 'data-error-for="wol_mac_address"' in bad.text
    assert client.get(f"/api/nodes/{node['id']}").json() == stored
    page = web.get(f"/nodes/{node['id']}")
    assert "wol_configure" in page.text  # the save is in the node's operation history


def test_wake_button_refused_when_disabled_and_redirects_when_allowed(client: TestClient, web: Any) -> None:
    node = _node(
        client, wol_mac_address="02:00:00:00:00:01", wol_broadcast_address="127.255.255.255", wol_port=9
    )
    refused = web.form(f"/nodes/{node['id']}/wol/wake", data={})
    assert refused.status_code == 409 and "disabled" in refused.text
    # Only mko's flag: enabling the card itself needs SSH to the node (tests/integration/nic/test_nic_lab.py).
    client.post(f"/api/nodes/{node['id']}/wol/enable", json={"flag_only": True})
    started = web.form(f"/nodes/{node['id']}/wol/wake", data={}, follow_redirects=False)
    assert started.status_code == 303
    operation_page = web.get(started.headers["location"])
    assert operation_page.status_code == 200 and "wol_wake_node" in operation_page.text


def test_ups_and_rules_pages_and_the_rule_form(client: TestClient, web: Any) -> None:
    cluster = client.post("/api/clusters", json={"name": "home"}).json()
    ups = client.post("/api/ups", json={"name": "rack", "ups_name": "myups", "host": "127.0.0.1"})
    assert ups.status_code == 201, ups.text
    page = web.get("/ups")
    assert page.status_code == 200 and "rack" in page.text and 'data-ups-status="1"' in page.text
    assert "rack" in web.get("/").text  # the dashboard's UPS tile
    form = {
        "name": "wake after power returns",
        "ups_id": "1",
        "cluster_id": str(cluster["id"]),
        "power_event": "power_restored",
        "cluster_action": "wake_on_lan",
        "action_delay": "0",
        "priority": "100",
        "enabled": "on",
        "recover_after_wake": "on",
    }
    bad = web.form("/rules", data=form | {"action_delay": "-5"})
    assert bad.status_code == 422 and 'data-error-for="action_delay"' in bad.text
    assert client.get("/api/ups/rules").json() == []
    assert web.form("/rules", data=form, follow_redirects=False).status_code == 303
    [rule] = client.get("/api/ups/rules").json()
    assert (rule["power_event"], rule["cluster_action"], rule["recover_after_wake"]) == (
        "power_restored",
        "wake_on_lan",
        True,
    )
    assert "wake after power returns" in web.get("/rules").text
    # A restore that waits for charge and for mains to hold, from the same form; a wrong one names its field.
    waiting = form | {"name": "wake into a charged battery", "min_charge": "50", "stable_for": "30"}
    bad = web.form("/rules", data=waiting | {"power_event": "power_loss"})
    assert bad.status_code == 422 and 'data-error-for="min_charge"' in bad.text
    assert web.form("/rules", data=waiting, follow_redirects=False).status_code == 303
    made = client.get("/api/ups/rules").json()[-1]
    assert (made["min_charge"], made["stable_for"]) == (50, 30) and rule["stable_for"] == 10
    assert "mains 30 s, charge 50 %" in web.get("/rules").text
    assert 'id="outages"' in web.get("/ups").text
    # Names, not ids; edit keeps the counters and refuses a wrong field; delete removes it.
    listed = web.get("/rules").text
    assert ">rack</a> → <a" in listed and ">home</a>" in listed
    editing = web.get(f"/rules?edit={made['id']}")
    assert editing.status_code == 200 and f'action="/rules/{made["id"]}"' in editing.text
    assert 'value="wake into a charged battery"' in editing.text
    bad = web.form(f"/rules/{made['id']}", data=waiting | {"priority": "-1"})
    assert bad.status_code == 422 and 'data-error-for="priority"' in bad.text
    edited = web.form(f"/rules/{made['id']}", data=waiting | {"name": "renamed", "priority": "5"})
    assert edited.status_code == 200  # followed the redirect to /rules
    changed = client.get(f"/api/ups/rules/{made['id']}").json()
    assert (changed["name"], changed["priority"], changed["min_charge"]) == ("renamed", 5, 50)
    assert web.form(f"/rules/{made['id']}/delete", data={}, follow_redirects=False).status_code == 303
    assert [r["id"] for r in client.get("/api/ups/rules").json()] == [rule["id"]]
    # The API's PUT does the same as the edit form.
    body = {"ups_id": 1, "cluster_id": cluster["id"], "power_event": "power_restored"}
    put = client.put(
        f"/api/ups/rules/{rule['id']}", json=body | {"cluster_action": "wake_on_lan", "priority": 7}
    )
    assert put.status_code == 200, put.text
    assert (put.json()["priority"], put.json()["name"]) == (7, "power_restored → wake_on_lan")


def test_the_rule_forms_fed_only_switch_is_the_clis_fed_only(client: TestClient, web: Any) -> None:
    cluster = client.post("/api/clusters", json={"name": "rack"}).json()
    for name in ("rack-a", "rack-b"):
        made = client.post("/api/ups", json={"name": name, "ups_name": name, "host": "127.0.0.1"})
        assert made.status_code == 201, made.text
    page = web.get("/rules").text
    assert 'name="fed_only"' in page and 'id="fed-only-help"' in page and "--fed-by" in page
    assert 'name="fed_only" id="f-fed_only" aria-describedby="fed-only-help" >' in page  # off by default
    form = {
        "name": "rack-a dark",
        "ups_id": "1",
        "cluster_id": str(cluster["id"]),
        "power_event": "power_loss",
        "cluster_action": "graceful_shutdown",
        "action_delay": "60",
        "priority": "100",
        "enabled": "on",
    }
    assert web.form("/rules", data=form | {"fed_only": "on"}, follow_redirects=False).status_code == 303
    assert web.form("/rules", data=form | {"name": "whole", "ups_id": "2"}).status_code == 200
    fed, whole = client.get("/api/ups/rules").json()
    assert (fed["target"], whole["target"]) == ("fed_nodes", "cluster")  # as `create-rule --fed-only`
    listed = web.get("/rules").text
    assert listed.count("data-fed-only") == 1 and "fed nodes of </span>" in listed
    # A form sent back with an error keeps the switch as it was set.
    bad = web.form("/rules", data=form | {"fed_only": "on", "action_delay": "-1"})
    assert bad.status_code == 422 and 'aria-describedby="fed-only-help" checked' in bad.text
    # The edit form shows it, and saving without it makes the rule a cluster rule again (and back).
    editing = web.get(f"/rules?edit={fed['id']}").text
    assert 'aria-describedby="fed-only-help" checked' in editing
    assert web.form(f"/rules/{fed['id']}", data=form).status_code == 200
    assert client.get(f"/api/ups/rules/{fed['id']}").json()["target"] == "cluster"
    assert web.form(f"/rules/{fed['id']}", data=form | {"fed_only": "on"}).status_code == 200
    assert client.get(f"/api/ups/rules/{fed['id']}").json()["target"] == "fed_nodes"


def test_human_error_sentences() -> None:
    from mko.web.pages.render import human_error

    assert (
        human_error("[Errno 111] Connect call failed ('127.0.0.1', 3493)") == "nothing answers on that port"
    )
    assert (
        human_error("upsd at 127.0.0.1:3493: ERR DATA-STALE")
        == "upsd's data is stale: its driver lost the UPS"
    )
    assert human_error("[Errno 99] Cannot assign requested address.") == "Cannot assign requested address"


def test_cluster_shutdown_is_confirmed_on_its_plan_first(client: TestClient, web: Any) -> None:
    cluster = client.post("/api/clusters", json={"name": "home"}).json()
    for name, role in (("cp1", "control-plane"), ("w1", "worker")):
        _node(client, hostname=name, cluster_id=cluster["id"], role=role, ssh_port=1)
    page = web.get(f"/clusters/{cluster['id']}/shutdown")
    assert page.status_code == 200
    plan = re.search(r'<pre id="shutdown-plan">(.*?)</pre>', page.text, re.S)
    assert plan and "graceful shutdown of cluster" in plan.group(1)
    assert plan.group(1).index("w1") < plan.group(1).index("cp1")  # workers before the control plane
    assert client.get("/api/operations").json() == []  # looking at the plan touches nothing
    started = web.form(f"/clusters/{cluster['id']}/shutdown", follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"].startswith("/operations/")
    [operation] = client.get("/api/operations").json()
    assert operation["kind"] == "cluster_shutdown" and operation["actor"] == "web:web-op"


def test_the_shutdown_page_shows_how_a_shutdown_for_a_ups_ends(
    client: TestClient, web: Any, settings: Settings, session: Session
) -> None:
    cluster = client.post("/api/clusters", json={"name": "home"}).json()
    _node(client, hostname="cp1", cluster_id=cluster["id"], role="control-plane", ssh_port=1)
    body = {"name": "rack", "ups_name": "myups", "username": "mko", "password": "pw", "power_cycle": True}
    assert client.post("/api/ups", json=body).status_code == 201
    rule = {"ups_id": 1, "cluster_id": cluster["id"], "power_event": "power_loss"}
    assert (
        client.post("/api/ups/rules", json=rule | {"cluster_action": "graceful_shutdown"}).status_code == 201
    )
    page = web.get(f"/clusters/{cluster['id']}/shutdown")
    plan = re.search(r'<pre id="shutdown-plan">(.*?)</pre>', page.text, re.S)
    assert plan is not None
    assert html.unescape(plan.group(1)).splitlines()[-2:] == [
        "2. then the UPS, once every node is confirmed off (for UPS rack: its rules, or --ups 1):",
        "   power-cycle    rack (INSTCMD shutdown.return, or load.off.delay with the UPS's delays;"
        " skipped if mains has returned)",
    ]
    # On a server whose own host is on that UPS, its shutdown command is the very last step.
    on_ups = settings.model_copy(
        update={"host_ups": "rack", "host_shutdown_command": ["/sbin/shutdown", "-h", "+0"]}
    )
    planned = asyncio.run(plan_shutdown(session, on_ups, cluster["id"], force=False, ups_id=1))
    marker = outages.marker_path(on_ups)
    assert marker.name == "powerdown.flag" and marker.parent == Path(settings.log_dir).parent
    assert planned.lines()[-4:] == [
        "2. then the UPS, once every node is confirmed off:",
        "   power-cycle    rack (INSTCMD shutdown.return, or load.off.delay with the UPS's delays;"
        " skipped if mains has returned)",
        "3. then mko's own host, the very last step:",
        f"   host shutdown  /sbin/shutdown -h +0 (after writing {marker})",
    ]
    assert planned.nodes_up == []  # cp1 answers nowhere: the outage would know it was down already


def test_the_node_form_offers_each_method_for_its_kind_from_the_drivers(client: TestClient, web: Any) -> None:
    from mko.power.registry import DRIVERS

    node = _node(client)
    page = web.get(f"/nodes/{node['id']}").text
    options = dict(re.findall(r'<option value="([\w-]+)" data-kind="\w+"([^>]*)>', page))
    assert set(options) == set(DRIVERS.names())  # every registered driver, none written in the page
    for name, attributes in options.items():
        kind = DRIVERS.driver(name).node_kind
        assert ("hidden disabled" in attributes) == (kind == "virtual"), name  # a physical node's page
    assert "Proxmox VM</dt>" not in page
    assert re.search(r'<div data-methods="proxmox" hidden>', page)  # proxmox_node only for VMs
    # A plug's settings come from its driver's model, and the status says which driver powers it.
    form = {
        "kind": "physical",
        "wol_method": "shelly",
        "wol_port": "9",
        "shelly_host": "10.0.0.40",
        "wol_mac_address": "",
        "wol_broadcast_address": "",
        "probe_port": "",
        "proxmox_vm_id": "",
        "proxmox_host_id": "",
    }
    saved = web.form(f"/nodes/{node['id']}/wol/configure", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    assert client.get(f"/api/nodes/{node['id']}").json()["shelly_host"] == "10.0.0.40"
    page = web.get(f"/nodes/{node['id']}").text
    assert "<dt>Power driver</dt><dd>Shelly</dd>" in page
    assert re.search(r'<div data-methods="shelly">', page)


def test_the_power_order_form_sets_depends_on_and_refuses_cycles(client: TestClient, web: Any) -> None:
    nas, vm_host, worker = (
        _node(client, hostname=n, ip_address=f"10.0.0.{i}")
        for i, n in enumerate(("nas", "pve", "w1"), start=1)
    )
    path = f"/nodes/{worker['id']}/depends-on"
    saved = web.form(path, data={"depends_on": f"{nas['id']}, {vm_host['id']}"}, follow_redirects=False)
    assert saved.status_code == 303
    assert client.get(f"/api/nodes/{worker['id']}").json()["depends_on"] == [nas["id"], vm_host["id"]]
    page = web.get(f"/nodes/{worker['id']}?depends_saved=1").text
    assert f'<a href="/nodes/{nas["id"]}">nas</a>' in page and "Power order saved." in page
    # The same checks as the API's: a cycle is named next to the field, and nothing changes.
    cycle = web.form(f"/nodes/{nas['id']}/depends-on", data={"depends_on": str(worker["id"])})
    assert cycle.status_code == 422
    assert re.search(
        r'data-error-for="depends_on">[^<]*dependency cycle: nas \(1\) → w1 \(3\) → nas',
        html.unescape(cycle.text),
    )
    assert client.get(f"/api/nodes/{nas['id']}").json()["depends_on"] == []
    for bad, why in (("3,x", "not a list of node ids"), ("99", "no node 99")):
        refused = web.form(path, data={"depends_on": bad})
        assert refused.status_code == 422 and why in html.unescape(refused.text), bad
    assert client.get(f"/api/nodes/{worker['id']}").json()["depends_on"] == [nas["id"], vm_host["id"]]
    cleared = web.form(path, data={"depends_on": ""}, follow_redirects=False)
    assert cleared.status_code == 303
    assert client.get(f"/api/nodes/{worker['id']}").json()["depends_on"] == []


def test_the_cluster_page_shows_the_wake_levels_and_sets_the_stagger(client: TestClient, web: Any) -> None:
    cluster = client.post("/api/clusters", json={"name": "rack"}).json()
    on = {"cluster_id": cluster["id"], "wol_enabled": True}
    nas = _node(client, hostname="nas", wol_mac_address="02:00:00:00:00:01", **on)
    worker = _node(
        client,
        hostname="w1",
        ip_address="127.0.0.2",
        wol_mac_address="02:00:00:00:00:02",
        depends_on=[nas["id"]],
        **on,
    )
    page = html.unescape(web.get(f"/clusters/{cluster['id']}").text)
    rows = re.findall(r"<tr><td>(\d)</td><td><a href=\"/nodes/(\d+)\">", page)
    assert rows == [("0", str(nas["id"])), ("1", str(worker["id"]))]  # the NAS first, its worker after
    saved = web.form(
        f"/clusters/{cluster['id']}/stagger", data={"power_stagger": "2.5"}, follow_redirects=False
    )
    assert saved.status_code == 303
    assert client.get(f"/api/clusters/{cluster['id']}").json()["power_stagger"] == 2.5
    bad = web.form(f"/clusters/{cluster['id']}/stagger", data={"power_stagger": "9000"})
    assert bad.status_code == 422 and 'data-error-for="power_stagger"' in bad.text
    assert client.get(f"/api/clusters/{cluster['id']}").json()["power_stagger"] == 2.5
    cleared = web.form(
        f"/clusters/{cluster['id']}/stagger", data={"power_stagger": ""}, follow_redirects=False
    )
    assert cleared.status_code == 303
    assert client.get(f"/api/clusters/{cluster['id']}").json()["power_stagger"] is None
