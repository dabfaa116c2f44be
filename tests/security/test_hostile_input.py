"""Every classic payload through every string field of every write route, then every sink rendered.

The write routes and their string fields come from the live OpenAPI schema, so a new route is covered
as soon as it exists: the test fails until it has a valid example body below (a body whose only bad
value is the payload, so a refusal proves the field's rule and not a missing field). After the
payloads, the sinks are rendered and checked: the Ansible inventory as the real ``ansible-inventory
--list`` parses it, the log file, every web page, and the marker file that any executed payload would
have created. Nothing may answer 5xx.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.nic.ansible import write_inventory
from mko.platform.db.models.inventory import Cluster, Node
from mko.platform.db.models.operations import Operation
from mko.platform.logs import configure_logging
from mko.platform.settings import Settings
from mko.web.site import page_routers
from support.ansibleview import ansible_view, inert_hostvars
from support.hostile import Payload, check_log, payloads

# Fields whose text is a secret or a secret URL: template delimiters are allowed (never templated),
# control characters are not. Every other string field refuses both.
FREE_TEXT = {
    "password", "secret", "bmc_password", "notify_urls",
    # the power drivers' secrets (mko.power.drivers: fields declared with secret())
    "shelly_password", "tasmota_password", "webhook_secret",
    "snmp_community", "snmp_auth_key", "snmp_priv_key",
}  # fmt: skip
# The validation layer refuses a lone surrogate (tests/unit/platform/test_validation.py), but the API's 422
# handler still fails to render an answer that echoes one (a 500); that handler belongs to the other
# half of issue 17. Until it lands these payloads stay out of the HTTP requests; remove this then.
NOT_OVER_HTTP_YET = {"lone-surrogate"}
_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


@dataclass
class World:
    """Objects the example bodies refer to."""

    cluster: int
    node: int
    proxmox_host: int
    ups: int
    rule: int
    ca_file: str
    marker: Path


Example = Callable[[World], tuple[dict[str, Any] | None, set[int]]]


def _node_fields(world: World) -> dict[str, Any]:
    n = next(_counter)
    return {
        "hostname": f"node{n}",
        "ip_address": f"127.0.{n // 250}.{n % 250 + 2}",
        "ssh_user": "ubuntu",
        "ssh_key_path": "/etc/mko/id_ed25519",
        "description": "rack 2",
        "wol_mac_address": f"02:00:00:00:{n // 256:02x}:{n % 256:02x}",
        "wol_broadcast_address": "127.255.255.255",
        "wol_interface": "eth0",
        "proxmox_node": "pve1",
        "bmc_address": "127.0.0.1",
        "bmc_username": "admin",
        "redfish_url": "https://127.0.0.1",
        "redfish_system_id": "System.1",
        "bmc_ca_file": world.ca_file,
        "site": "local",
    }


# (method, path) -> a valid body for the route, and the statuses the valid body gets.
EXAMPLES: dict[tuple[str, str], Example] = {
    ("POST", "/api/clusters"): lambda w: ({"name": unique("c"), "description": "d", "site": "branch"}, {201}),
    ("PATCH", "/api/clusters/{cluster_id}"): lambda w: ({"name": unique("c"), "description": "d"}, {200}),
    ("POST", "/api/nodes/{node_id}/drain"): lambda w: (None, {202, 409}),
    ("PATCH", "/api/clusters/{cluster_id}/settings"): lambda w: (
        {"quiesce_storage_classes": ["longhorn"], "quiesce_labels": ["app.kubernetes.io/name=db"]},
        {200},
    ),
    ("POST", "/api/nodes"): lambda w: (
        _node_fields(w) | {"wol_secureon": "01:02:03:04:05:06", "bmc_password": "pw"},
        {201},
    ),
    ("PATCH", "/api/nodes/{node_id}"): lambda w: (
        _node_fields(w) | {"wol_secureon": "01:02:03:04:05:06", "bmc_password": "pw"},
        {200},
    ),
    ("PUT", "/api/nodes/{node_id}/wol/configure"): lambda w: (
        {
            k: v
            for k, v in _node_fields(w).items()
            if k not in ("hostname", "ip_address", "ssh_user", "ssh_key_path", "description")
        }
        | {"wol_secureon": "01:02:03:04:05:06", "bmc_password": "pw"},
        {200},
    ),
    # The node's SSH port is closed: a good fingerprint gets as far as the connection (502).
    ("POST", "/api/nodes/{node_id}/ssh/trust"): lambda w: ({"fingerprint": "SHA256:" + "A" * 43}, {502}),
    ("POST", "/api/nodes/{node_id}/power"): lambda w: ({"action": "on", "wait": False}, {200, 202}),
    ("POST", "/api/proxmox-hosts"): lambda w: (
        {
            "name": unique("pve"),
            "host": "127.0.0.1",
            "token_id": "mko@pve!power",
            "username": None,
            "secret": "s3cret",
            "ca_file": w.ca_file,
            "fingerprint": None,
        },
        {201},
    ),
    ("PATCH", "/api/proxmox-hosts/{host_id}"): lambda w: (
        {
            "name": unique("pve"),
            "secret": "s3cret",
            "host": "127.0.0.1",
            "token_id": "mko@pve!power",
            "username": None,
            "ca_file": w.ca_file,
            "fingerprint": None,
        },
        {200},
    ),
    ("POST", "/api/ups"): lambda w: (
        {
            "name": unique("ups"),
            "ups_name": unique("u"),
            "host": "127.0.0.1",
            "port": 1,
            "username": "monuser",
            "password": "pw",
            "description": "d",
        },
        {201},
    ),
    ("POST", "/api/ups/rules"): lambda w: (
        {
            "ups_id": w.ups,
            "cluster_id": w.cluster,
            "power_event": "power_loss",
            "cluster_action": "graceful_shutdown",
            "name": unique("rule"),
            "enabled": False,
        },
        {201},
    ),
    ("PUT", "/api/ups/rules/{rule_id}"): lambda w: (
        {
            "ups_id": w.ups,
            "cluster_id": w.cluster,
            "power_event": "power_loss",
            "cluster_action": "graceful_shutdown",
            "name": unique("rule"),
            "enabled": False,
        },
        {200},
    ),
    ("POST", "/api/schedules"): lambda w: (
        {
            "name": unique("s"),
            "action": "wake",
            "cron": "0 7 * * 1-5",
            "timezone": "UTC",
            "cluster_id": w.cluster,
            "notify_urls": ["json://127.0.0.1:1/x"],
            "enabled": False,
        },
        {201},
    ),
    ("POST", "/api/discover"): lambda w: ({"cidr": "127.0.0.1/32", "ports": [1], "resolve": False}, {200}),
    ("PUT", "/api/notifications/rules/{rule_id}"): lambda w: (
        {"notify_urls": ["json://127.0.0.1:1/x"]},
        {200},
    ),
    ("POST", "/api/notifications/test"): lambda w: ({"notify_urls": ["json://127.0.0.1:1/x"]}, {200}),
    ("POST", "/api/users"): lambda w: (
        {"username": unique("user"), "password": "password-1", "role": "viewer"},
        {201},
    ),
    ("DELETE", "/api/users/{username}"): lambda w: (None, {404}),
    ("POST", "/api/tokens"): lambda w: ({"name": unique("tok"), "role": "viewer"}, {201}),
    ("DELETE", "/api/tokens/{name}"): lambda w: (None, {404}),
    ("POST", "/api/agents/heartbeat"): lambda w: (
        {"name": "agent-1", "site": "branch", "host": "agent.lan", "version": "1.0"},
        {200},
    ),
    ("POST", "/api/agents/claim"): lambda w: ({"name": "agent-1", "wait": 0}, {200, 204}),
    ("POST", "/api/agents/jobs/{job_id}/result"): lambda w: (
        {
            "name": "agent-1",
            "nodes": [{"node_id": w.node, "state": "sent", "error": "e", "verified_by": "v"}],
            "error": "e",
        },
        {404},
    ),
}


@dataclass
class WriteRoute:
    """A route that changes state, with the places a string can go."""

    method: str
    path: str
    body_fields: list[tuple[Any, ...]] = field(default_factory=list)  # paths into the JSON body
    path_params: list[str] = field(default_factory=list)  # string path parameters


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _string_fields(
    spec: dict[str, Any], schema: dict[str, Any], prefix: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """Paths to every string in a body schema (through Optional, arrays and nested objects)."""
    schema = _resolve(spec, schema)
    options = [_resolve(spec, s) for s in schema.get("anyOf", [])] or [schema]
    found: list[tuple[Any, ...]] = []
    for option in options:
        kind = option.get("type")
        if kind == "string":
            return [prefix]
        if kind == "array":
            found += _string_fields(spec, option.get("items", {}), (*prefix, 0))
        if kind == "object" or "properties" in option:
            for name, sub in option.get("properties", {}).items():
                found += _string_fields(spec, sub, (*prefix, name))
    return found


def write_routes(spec: dict[str, Any]) -> list[WriteRoute]:
    """Every POST/PUT/PATCH/DELETE route of the OpenAPI schema that takes a string anywhere."""
    routes = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method.upper() not in ("POST", "PUT", "PATCH", "DELETE"):
                continue
            route = WriteRoute(method.upper(), path)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and _resolve(spec, parameter["schema"]).get("type") == "string":
                    route.path_params.append(parameter["name"])
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                route.body_fields = _string_fields(spec, body["schema"], ())
            if route.body_fields or route.path_params:
                routes.append(route)
    return routes


def _put(body: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    target: Any = body
    for step, following in itertools.pairwise(where):
        if isinstance(target, dict) and step not in target:
            target[step] = [] if isinstance(following, int) else {}
        if isinstance(target, list) and len(target) <= step:
            target.append([] if isinstance(following, int) else {})
        target = target[step]
    last = where[-1]
    if isinstance(target, list):
        if target:
            target[last] = value
        else:
            target.append(value)
    else:
        target[last] = value
    return body


def _url(route: WriteRoute, world: World, override: dict[str, str] | None = None) -> str:
    ids = {
        "cluster_id": world.cluster,
        "node_id": world.node,
        "host_id": world.proxmox_host,
        "rule_id": world.rule,
        "job_id": 999_999,
        "username": "nobody-here",
        "name": "no-such-token",
    }
    url = route.path
    for name, value in (ids | (override or {})).items():
        url = url.replace("{" + name + "}", quote(str(value), safe=""))
    assert "{" not in url, f"no example value for a path parameter of {route.path}"
    return url


@pytest.fixture
def world(client: TestClient, tmp_path: Path) -> World:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cluster = client.post("/api/clusters", json={"name": "home"}).json()["id"]
    node = client.post(
        "/api/nodes",
        json={
            "hostname": "victim",
            "ip_address": "127.0.0.2",
            "ssh_port": 1,
            "cluster_id": cluster,
            "wol_mac_address": "02:00:00:00:00:02",
            "wol_broadcast_address": "127.255.255.255",
        },
    ).json()["id"]
    host = client.post(
        "/api/proxmox-hosts",
        json={"name": "pve", "host": "127.0.0.1", "token_id": "mko@pve!t", "secret": "s"},
    ).json()["id"]
    ups = client.post("/api/ups", json={"name": "ups", "ups_name": "myups", "host": "127.0.0.1", "port": 1})
    rule = client.post(
        "/api/ups/rules",
        json={
            "ups_id": ups.json()["id"],
            "cluster_id": cluster,
            "power_event": "power_loss",
            "cluster_action": "graceful_shutdown",
            "enabled": False,
        },
    )
    return World(cluster, node, host, ups.json()["id"], rule.json()["id"], str(ca), tmp_path / "pwned")


@pytest.fixture
def logged(settings: Settings) -> Path:
    configure_logging(settings, console=False)
    return settings.log_file


def _send(client: TestClient, method: str, url: str, body: dict[str, Any] | None) -> Any:
    if body is None:
        return client.request(method, url)
    # Serialised here (ASCII, \\uXXXX escapes): a lone surrogate is valid JSON text, not valid UTF-8.
    content = json.dumps(body).encode()
    return client.request(method, url, content=content, headers={"content-type": "application/json"})


def test_every_write_route_has_a_valid_example(client: TestClient, world: World) -> None:
    """New write routes must be added to EXAMPLES, and each example must be accepted as it is."""
    routes = write_routes(client.get("/openapi.json").json())
    missing = [f"{r.method} {r.path}" for r in routes if (r.method, r.path) not in EXAMPLES]
    assert not missing, f"add a valid example body to EXAMPLES for: {missing}"
    for route in routes:
        body, accepted = EXAMPLES[(route.method, route.path)](world)
        response = _send(client, route.method, _url(route, world), body)
        assert response.status_code in accepted, (route.method, route.path, response.text[:500])


def test_every_payload_through_every_string_field_gets_nowhere(
    settings: Settings, session: Session, client: TestClient, web: Any, world: World, logged: Path
) -> None:
    spec = client.get("/openapi.json").json()
    routes = write_routes(spec)
    hostile = [p for p in payloads(world.marker) if p.name not in NOT_OVER_HTTP_YET]
    accepted: list[tuple[str, str, str]] = []
    sent = 0
    for route in routes:
        example = EXAMPLES[(route.method, route.path)]
        for where, payload in itertools.product(route.body_fields, hostile):
            body, _ = example(world)
            assert body is not None
            response = _send(client, route.method, _url(route, world), _put(body, where, payload.value))
            sent += 1
            _judge(
                route, str(where[-1] if isinstance(where[-1], str) else where[0]), payload, response, accepted
            )
        for name, payload in itertools.product(route.path_params, hostile):
            body, _ = example(world)
            # (httpx refuses URLs over 64 KiB; 60,000 characters are still far beyond any field.)
            response = _send(client, route.method, _url(route, world, {name: payload.value[:60_000]}), body)
            sent += 1
            assert response.status_code < 500, (route.path, name, payload.name, response.text[:300])
            assert response.status_code in (404, 422), (route.path, name, payload.name, response.status_code)
    print(f"{sent} hostile requests over {len(routes)} write routes; {len(accepted)} inert values accepted")
    assert sent > 1000
    # Free text kept what it may hold (shell metacharacters, HTML, paths are inert in every sink).
    assert ("POST", "description", "html-script") in {(m, f, p) for m, f, p in accepted}

    # The sinks. 1: the Ansible inventory, as ansible-inventory itself reads it.
    session.expire_all()
    summary = write_inventory(session, settings)
    view = ansible_view(summary.path)
    hostvars = inert_hostvars(view)
    nodes = list(session.scalars(select(Node)))
    assert sorted(hostvars) == sorted(n.hostname for n in nodes)
    for node in nodes:
        expected = {
            "ansible_host": node.ip_address,
            "ansible_port": node.ssh_port,
            "ansible_user": node.ssh_user,
            "mko_node_id": node.id,
            "mko_role": node.role.value,
        }
        if node.ssh_key_path:
            expected["ansible_ssh_private_key_file"] = node.ssh_key_path
        if node.wol_mac_address:
            expected["mko_mac"] = node.wol_mac_address
        got = {k: v for k, v in hostvars[node.hostname].items() if k in expected or k.startswith("mko_n")}
        assert got == expected, node.hostname
        for value in hostvars[node.hostname].values():
            assert "{{" not in str(value) and "{%" not in str(value)
    # 2: every web page, as a browser gets it.
    for url in _pages(session):
        page = web.get(url)
        assert page.status_code < 500, url
        assert "<script>alert(" not in page.text and "<img src=x" not in page.text, url
        assert "\x1b" not in page.text and "\x00" not in page.text, url
    # 3: the log: one record per line, nothing forged, nothing raw, nothing huge.
    check_log(logged)
    # 4: nothing ran anywhere.
    assert not world.marker.exists()


def _judge(
    route: WriteRoute, name: str, payload: Payload, response: Any, accepted: list[tuple[str, str, str]]
) -> None:
    where = f"{route.method} {route.path} {name}={payload.name}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    must_refuse = payload.kind == "refused" or (payload.kind == "template" and name not in FREE_TEXT)
    if must_refuse:
        assert 400 <= response.status_code < 500, f"{where} was accepted: {response.text[:300]}"
        if response.status_code == 422:
            text = json.dumps(response.json())
            assert name in text or "body" in text, f"{where}: the 422 does not name the field: {text[:300]}"
    elif response.status_code < 300:
        accepted.append((route.method, name, payload.name))


def _pages(session: Session) -> list[str]:
    """Every web page, with each id it can be called with (at most the last 30 operations)."""
    ids = {
        "node_id": list(session.scalars(select(Node.id))),
        "cluster_id": list(session.scalars(select(Cluster.id))),
        "operation_id": list(session.scalars(select(Operation.id).order_by(Operation.id.desc()).limit(30))),
    }
    urls = []
    for route in [route for router in page_routers() for route in router.routes]:
        path = getattr(route, "path_format", "")  # "/nodes/{node_id}", without the :int converter
        if "GET" not in getattr(route, "methods", set()):
            continue
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        assert all(p in ids for p in params), f"no ids for the web page {path}: add them to _pages"
        if not params:
            urls.append(path)
        for value in ids[params[0]] if params else []:
            urls.append(path.replace("{" + params[0] + "}", str(value)))
    return urls


def test_hostile_facts_are_refused_and_nothing_is_stored(
    settings: Settings, session: Session, client: TestClient, cli: CliRunner, world: World
) -> None:
    """Every string a playbook reports, with every payload, through `mko ansible import-facts`."""
    link = [
        {"ifname": "lo", "link_type": "loopback", "operstate": "UNKNOWN"},
        {
            "ifname": "eno1",
            "link_type": "ether",
            "address": "02:00:00:00:00:02",
            "operstate": "UP",
            "master": None,
        },
    ]
    addr = [{"ifname": "eno1", "addr_info": [{"family": "inet", "local": "127.0.0.2", "prefixlen": 8}]}]
    route = [{"dst": "default", "dev": "eno1"}]
    network = {"kind": "network_info", "node_id": world.node, "inventory_hostname": "victim"}
    wol = {
        "kind": "wake_on_lan",
        "node_id": world.node,
        "inventory_hostname": "victim",
        "interface": "eno1",
        "mac": "02:00:00:00:00:02",
        "supports": "pumbg",
        "wake_on": "g",
        "persistence": "systemd-unit",
    }
    # Where a hostile node can put text: (facts entry builder, place).
    places: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
        ("ifname", lambda v: network | {"ip": _ip([{**link[1], "ifname": v}], addr, route)}),
        ("link_type", lambda v: network | {"ip": _ip([{**link[1], "link_type": v}], addr, route)}),
        ("operstate", lambda v: network | {"ip": _ip([{**link[1], "operstate": v}], addr, route)}),
        ("master", lambda v: network | {"ip": _ip([{**link[1], "master": v}], addr, route)}),
        ("address", lambda v: network | {"ip": _ip([{**link[1], "address": v}], [], route)}),
        (
            "local",
            lambda v: (
                network
                | {
                    "ip": _ip(
                        link,
                        [{"ifname": "eno1", "addr_info": [{"family": "inet", "local": v, "prefixlen": 8}]}],
                        route,
                    )
                }
            ),
        ),
        ("addr ifname", lambda v: network | {"ip": _ip(link, [{**addr[0], "ifname": v}], route)}),
        ("route dev", lambda v: network | {"ip": _ip(link, addr, [{"dst": "default", "dev": v}])}),
        ("interface", lambda v: wol | {"interface": v}),
        ("mac", lambda v: wol | {"mac": v}),
        ("supports", lambda v: wol | {"supports": v}),
        ("wake_on", lambda v: wol | {"wake_on": v}),
        ("persistence", lambda v: wol | {"persistence": v}),
        ("inventory_hostname", lambda v: wol | {"inventory_hostname": v}),
        ("kind", lambda v: wol | {"kind": v}),
    ]
    client.patch(f"/api/nodes/{world.node}", json={"wol_mac_address": None})
    before = _nic_state(session, world.node)
    entries = [build(p.value) for (_, build), p in itertools.product(places, payloads(world.marker))]
    result = cli.invoke(app, ["ansible", "import-facts", "-", "--json"], input=json.dumps(entries))
    assert result.exit_code in (1, 2), result.stderr
    rows = json.loads(result.stdout)["facts"]
    assert len(rows) == len(entries)
    refused = [row for row in rows if row["state"] == "failed" and row["error"]]
    assert len(refused) == len(entries), [r for r in rows if r not in refused][:3]
    assert _nic_state(session, world.node) == before  # nothing of any of them was stored
    assert not world.marker.exists()


def _ip(link: list[Any], addr: list[Any], route: list[Any]) -> dict[str, str]:
    return {"link": json.dumps(link), "addr": json.dumps(addr), "route": json.dumps(route)}


def _nic_state(session: Session, node_id: int) -> tuple[Any, ...]:
    session.expire_all()
    node = session.get_one(Node, node_id)
    return (
        node.wol_mac_address,
        node.nic_interface,
        node.nic_wol_supported,
        node.nic_wol_state,
        node.nic_wol_persistence,
        json.dumps(node.nic_interfaces),
    )


def test_values_stored_before_the_checks_stay_inert_in_the_inventory(
    settings: Settings, session: Session, world: World
) -> None:
    """A database written by an older mko may hold anything: every value comes out as data, and a node
    whose host name is not one (a dictionary key, which Ansible cannot mark unsafe) is left out."""
    template = f"{{{{ lookup('pipe', 'touch {world.marker}') }}}}"
    session.execute(
        update(Node)
        .where(Node.id == world.node)
        .values(ssh_user=template, ssh_key_path=template, wol_mac_address=template, nic_interface=template)
    )
    session.add(Node(hostname=f"evil{template}", ip_address="127.0.0.9", ssh_user="root", description=""))
    session.execute(update(Cluster).where(Cluster.id == world.cluster).values(name=template))
    session.commit()
    summary = write_inventory(session, settings)
    assert [s.split(":")[0] for s in summary.skipped] == ["node 2"]
    assert "# left out: node 2" in summary.path.read_text()
    view = ansible_view(summary.path)
    hostvars = inert_hostvars(view)
    assert sorted(hostvars) == ["victim"]
    victim = hostvars["victim"]
    assert victim["ansible_user"] == victim["ansible_ssh_private_key_file"] == victim["mko_mac"] == template
    assert victim["mko_nic_interface"] == template
    assert "cluster_lookup_pipe_touch" in " ".join(view)  # the group name keeps letters only
    assert not world.marker.exists()


def test_booleans_are_not_numbers(client: TestClient, world: World) -> None:
    for body in ({"ssh_port": True}, {"wol_port": False}, {"probe_port": True}, {"wol_prefix_len": True}):
        response = client.patch(f"/api/nodes/{world.node}", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][-1] == next(iter(body))
    assert client.get(f"/api/nodes/{world.node}").json()["ssh_port"] == 1
