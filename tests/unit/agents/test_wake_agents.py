"""Wake agents without packets: sites in the inventory, agent registration, jobs claimed and reported.

Real packets sent by a real `mko agent` in a second lab subnet:
tests/integration/agents/test_wake_agents_lab.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.access.tokens import create_token
from mko.cli.root import app as cli_app
from mko.operations.records import Actor, get_operation
from mko.platform.db.models.access import Role
from mko.platform.db.models.agents import Agent, WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.wol.wake import make_schedule, run_wake, start_wake


def _cluster(client: TestClient, name: str = "remote", **fields: Any) -> dict[str, Any]:
    response = client.post("/api/clusters", json={"name": name} | fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _node(client: TestClient, hostname: str, cluster_id: int, mac: str, **fields: Any) -> dict[str, Any]:
    body = {
        "hostname": hostname,
        "ip_address": "10.99.0.11",
        "cluster_id": cluster_id,
        "wol_enabled": True,
        "wol_mac_address": mac,
        "wol_prefix_len": 24,
    }
    response = client.post("/api/nodes", json=body | fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def agent_headers(session: Session) -> dict[str, str]:
    _, token = create_token(session, "agent-b", Role.AGENT)
    return {"Authorization": f"Bearer {token}"}


def _heartbeat(client: TestClient, headers: dict[str, str], name: str = "pi-b", site: str = "b") -> Any:
    return client.post("/api/agents/heartbeat", json={"name": name, "site": site}, headers=headers)


def test_sites_are_validated_inherited_and_overridable(client: TestClient, cli: CliRunner) -> None:
    bad = client.post("/api/clusters", json={"name": "x", "site": "no spaces"})
    assert bad.status_code == 422 and "site" in bad.text
    cluster = _cluster(client, site="B")
    assert cluster["site"] == "b"  # names are case-insensitive
    inherits = _node(client, "n1", cluster["id"], "02:99:00:00:00:11")
    own = _node(client, "n2", cluster["id"], "02:99:00:00:00:12", site="c")
    ours = _node(client, "n3", cluster["id"], "02:99:00:00:00:13", site="local")
    assert (inherits["site"], inherits["wake_site"]) == (None, "b")
    assert (own["site"], own["wake_site"]) == ("c", "c")
    assert (ours["site"], ours["wake_site"]) == ("local", None)
    refused = client.patch(f"/api/nodes/{own['id']}", json={"site": "a/b"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "site"
    assert client.get(f"/api/nodes/{own['id']}").json()["site"] == "c"  # nothing half-written
    cleared = client.patch(f"/api/nodes/{own['id']}", json={"site": None}).json()
    assert cleared["wake_site"] == "b"
    assert client.patch(f"/api/clusters/{cluster['id']}", json={"site": "local"}).json()["site"] is None
    # The CLI: one line on stderr naming the field, exit 2; '' clears.
    failed = cli.invoke(cli_app, ["node", "update", str(inherits["id"]), "--site", "bad site"])
    assert failed.exit_code == 2 and "site" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    moved = cli.invoke(cli_app, ["cluster", "update", str(cluster["id"]), "--site", "east", "--json"])
    assert moved.exit_code == 0 and json.loads(moved.stdout)["site"] == "east"
    shown = cli.invoke(cli_app, ["node", "show", str(inherits["id"]), "--json"])
    assert json.loads(shown.stdout)["wake_site"] == "east"
    # `wol status` says whose packets wake the node: the site's agents, or this orchestrator (None).
    assert client.get(f"/api/nodes/{inherits['id']}/wol/status").json()["site"] == "east"
    assert client.get(f"/api/nodes/{ours['id']}/wol/status").json()["site"] is None
    status = cli.invoke(cli_app, ["wol", "status", str(inherits["id"]), "--json"])
    assert json.loads(status.stdout)["site"] == "east"


def test_agents_register_show_online_and_offline(
    client: TestClient, session: Session, agent_headers: dict[str, str], cli: CliRunner
) -> None:
    response = _heartbeat(client, agent_headers)
    assert response.status_code == 200, response.text
    assert response.json()["heartbeat_interval"] == 10.0
    assert _heartbeat(client, agent_headers, site="Not A Site!").status_code == 422
    assert _heartbeat(client, agent_headers, site="local").status_code == 422
    # Another agent token cannot take the name over.
    _, other = create_token(session, "agent-other", Role.AGENT)
    taken = _heartbeat(client, {"Authorization": f"Bearer {other}"})
    assert taken.status_code == 409 and "another token" in taken.text
    # A token serves the one site it registered for, under any agent name.
    moved = _heartbeat(client, agent_headers, name="pi-b2", site="c")
    assert moved.status_code == 409 and "serves site 'b'" in moved.text
    assert _heartbeat(client, agent_headers, name="pi-b2", site="b").status_code == 200
    listed = client.get("/api/agents").json()
    assert [(a["name"], a["site"], a["online"]) for a in listed] == [
        ("pi-b", "b", True),
        ("pi-b2", "b", True),
    ]
    for agent in session.scalars(select(Agent)):
        agent.last_heartbeat_at = utcnow() - timedelta(minutes=5)
    session.commit()
    assert [a["online"] for a in client.get("/api/agents").json()] == [False, False]
    shown = cli.invoke(cli_app, ["agent", "list", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)[0]["online"] is False
    missing = cli.invoke(cli_app, ["agent", "--url", "http://127.0.0.1:9"])
    assert missing.exit_code == 2 and "site" in missing.stderr


def test_no_live_agent_fails_the_site_at_once_with_the_reason(
    client: TestClient, settings: Settings, session: Session, agent_headers: dict[str, str]
) -> None:
    cluster = _cluster(client, site="b")
    _node(client, "b1", cluster["id"], "02:99:00:00:00:21")
    _node(client, "b2", cluster["id"], "02:99:00:00:00:22", role="control-plane")
    assert _heartbeat(client, agent_headers).status_code == 200
    agent = session.scalars(select(Agent)).one()
    agent.last_heartbeat_at = utcnow() - timedelta(seconds=settings.agent_offline_after + 1)
    session.commit()
    started = time.monotonic()
    response = client.post(f"/api/clusters/{cluster['id']}/wol/wake", json={"wait": True, "timeout": 60})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    operation = client.get(f"/api/operations/{response.json()['operation_id']}").json()
    assert operation["status"] == "failed"
    assert elapsed < 30  # not the 60 s timeout (the figure itself is measured in bench/, not here)
    assert [s["message"] for s in operation["steps"]] == [
        "failed: no live agent for site b (site b)",
        "failed: no live agent for site b (site b)",
    ]
    assert all(s["name"].endswith("via site b") for s in operation["steps"])
    assert operation["result"]["nodes"][0]["hostname"] == "b2"  # control plane first, as local wakes
    assert session.scalars(select(WakeJob)).all() == []  # nothing queued for nobody


def _wait_for_operation(client: TestClient, operation_id: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (operation := client.get(f"/api/operations/{operation_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, operation
        time.sleep(0.05)
    return dict(operation)


def test_job_is_claimed_once_reported_once_and_lands_in_the_steps(
    client: TestClient, session: Session, agent_headers: dict[str, str]
) -> None:
    cluster = _cluster(client, site="b")
    b1 = _node(client, "b1", cluster["id"], "02:99:00:00:00:31", wol_secureon="01:02:03:04:05:06")
    b2 = _node(client, "b2", cluster["id"], "02:99:00:00:00:32", probe_port=2222)
    assert _heartbeat(client, agent_headers).status_code == 200
    # An agent of another site sees nothing.
    _, c_token = create_token(session, "agent-c", Role.AGENT)
    c_headers = {"Authorization": f"Bearer {c_token}"}
    assert _heartbeat(client, c_headers, name="pi-c", site="c").status_code == 200
    client.app.state.settings = client.app.state.settings.model_copy(update={"api_sync_wait": 0.0})  # type: ignore[attr-defined]
    accepted = client.post(f"/api/clusters/{cluster['id']}/wol/wake", json={"wait": True, "timeout": 30})
    assert accepted.status_code == 202, accepted.text
    operation_id = accepted.json()["operation_id"]
    claim = client.post("/api/agents/claim", json={"name": "pi-b", "wait": 5}, headers=agent_headers)
    assert claim.status_code == 200, claim.text
    job = claim.json()
    assert job["operation_id"] == operation_id and job["site"] == "b"
    by_id = {n["node_id"]: n for n in job["nodes"]}
    assert by_id[b1["id"]]["secureon"] == "01:02:03:04:05:06"  # resolved for the agent only now
    assert by_id[b2["id"]]["secureon"] is None and by_id[b2["id"]]["probe_port"] == 2222
    assert by_id[b1["id"]]["mac"] == "02:99:00:00:00:31" and by_id[b1["id"]]["prefix_len"] == 24
    assert job["schedule"]["wait"] is True and job["schedule"]["timeout"] == 30
    stored = session.scalars(select(WakeJob)).one()
    assert "01:02:03:04:05:06" not in json.dumps(stored.nodes)  # the queue holds only a reference
    assert (
        client.post("/api/agents/claim", json={"name": "pi-b", "wait": 0}, headers=agent_headers).status_code
        == 204
    )
    assert (
        client.post("/api/agents/claim", json={"name": "pi-c", "wait": 0}, headers=c_headers).status_code
        == 204
    )
    # Only the claiming agent may report; unknown nodes are refused.
    path = f"/api/agents/jobs/{job['job_id']}/result"
    report = {
        "name": "pi-b",
        "nodes": [
            {"node_id": b1["id"], "state": "up", "attempts": 2, "up_after": 1.5, "verified_by": "tcp/22"},
            {"node_id": b2["id"], "state": "not_up", "attempts": 9},
        ],
    }
    assert client.post(path, json=report | {"name": "pi-c"}, headers=c_headers).status_code == 409
    bogus = report | {"nodes": [{"node_id": 9999, "state": "up"}]}
    assert client.post(path, json=bogus, headers=agent_headers).status_code == 422
    assert client.post(path, json=report, headers=agent_headers).status_code == 200
    assert client.post(path, json=report, headers=agent_headers).status_code == 409  # once only
    operation = _wait_for_operation(client, operation_id)
    assert operation["status"] == "partial"
    steps = {s["node_id"]: s for s in operation["steps"]}
    assert steps[b1["id"]]["status"] == "succeeded"
    assert steps[b1["id"]]["message"] == "up after 1.5s (2 sent, tcp/22) (site b, agent pi-b)"
    assert steps[b1["id"]]["detail"]["agent"] == "pi-b" and steps[b1["id"]]["detail"]["site"] == "b"
    assert steps[b2["id"]]["status"] == "failed" and "not up before the timeout" in steps[b2["id"]]["message"]


def test_agent_that_goes_silent_mid_job_fails_the_job(
    settings: Settings, session: Session, client: TestClient, agent_headers: dict[str, str]
) -> None:
    cluster = _cluster(client, site="b")
    _node(client, "b1", cluster["id"], "02:99:00:00:00:41")
    assert _heartbeat(client, agent_headers).status_code == 200
    fast = settings.model_copy(update={"agent_offline_after": 1.5})
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    with factory() as own:
        prepared = start_wake(
            own,
            target_type="cluster",
            target_id=cluster["id"],
            schedule=make_schedule(fast, wait=True, timeout=60),
            actor=Actor("test"),
        )

    async def scenario() -> Any:
        assert _heartbeat(client, agent_headers).status_code == 200  # alive when the job is queued
        running = asyncio.create_task(run_wake(factory, fast, prepared))
        await asyncio.sleep(0.3)
        claim = client.post("/api/agents/claim", json={"name": "pi-b", "wait": 0}, headers=agent_headers)
        assert claim.status_code == 200
        return await asyncio.wait_for(running, 20)  # the agent never reports nor heartbeats again

    operation = asyncio.run(scenario())
    engine.dispose()
    assert operation.status.value == "failed"
    steps = get_operation(session, operation.id).steps
    assert "agent pi-b of site b went silent during the job" in steps[0].message
    job = session.scalars(select(WakeJob)).one()
    session.refresh(job)
    assert job.status == WakeJobStatus.FAILED
    # Its late report is refused; a job of a finished operation is never handed out.
    late = client.post(
        f"/api/agents/jobs/{job.id}/result", json={"name": "pi-b", "nodes": []}, headers=agent_headers
    )
    assert late.status_code == 409


def test_web_forms_set_sites_and_the_dashboard_shows_agents(
    client: TestClient, web: Any, agent_headers: dict[str, str]
) -> None:
    made = web.form("/clusters", data={"name": "branch", "site": "Branch-B"}, follow_redirects=False)
    assert made.status_code == 303
    cluster = client.get("/api/clusters").json()[0]
    assert cluster["site"] == "branch-b"
    refused = web.form("/clusters", data={"name": "other", "site": "no way"})
    assert refused.status_code == 422 and 'data-error-for="site"' in refused.text
    node = _node(client, "n1", cluster["id"], "02:99:00:00:00:51")
    form = {"wol_enabled": "on", "kind": "physical", "wol_mac_address": node["wol_mac_address"]}
    bad = web.form(f"/nodes/{node['id']}/wol/configure", data=form | {"site": "a b"})
    assert bad.status_code == 422 and 'data-error-for="site"' in bad.text
    saved = web.form(
        f"/nodes/{node['id']}/wol/configure", data=form | {"site": "local"}, follow_redirects=False
    )
    assert saved.status_code == 303
    assert client.get(f"/api/nodes/{node['id']}").json()["wake_site"] is None
    assert "branch-b" in web.get(f"/nodes/{node['id']}").text  # the cluster's site, as the placeholder
    assert _heartbeat(client, agent_headers, site="branch-b").status_code == 200
    page = web.get("/").text
    assert 'data-agent="pi-b"' in page and "online" in page
