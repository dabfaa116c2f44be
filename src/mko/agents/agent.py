"""``mko agent``: a wake agent, sending magic packets and probing nodes on its own LAN for the orchestrator.

It needs only the orchestrator's API and a token of role ``agent``. It registers with heartbeats,
long-polls ``/api/agents/claim`` for its site's wake jobs, runs each one locally through the same
schedule and Wake-on-LAN driver the orchestrator uses (:func:`mko.power.base.power_on`,
:class:`mko.power.drivers.wol.WolDriver`: packets leave from this machine, probes start here) and reports the
per-node outcomes. See docs/wake-agents.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from mko import __version__
from mko.agents.routing import snapshot_from_payload
from mko.platform.errors import AgentRefusedError
from mko.power.base import PowerDriver, WakeSchedule, power_on
from mko.power.drivers.wol import WolDriver

__all__ = ["AgentConfig", "WakeAgent"]

log = logging.getLogger("mko.agent")

_BACKOFF_MAX = 30.0
# How long a finished job's report is retried while the orchestrator cannot be reached.
_REPORT_PATIENCE = 300.0


@dataclass(frozen=True)
class AgentConfig:
    """Where the orchestrator is and who this agent is."""

    url: str
    token: str = field(repr=False)
    site: str
    name: str = field(default_factory=socket.gethostname)
    interface: str | None = None  # default source interface of magic packets (a node's own wins)
    ca_file: str | None = None  # CA of the orchestrator's certificate, when not a public one
    claim_wait: float = 20.0
    max_jobs: int = 8


class WakeAgent:
    """One agent process: heartbeats, claims and runs jobs until :meth:`stop`."""

    def __init__(self, config: AgentConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.heartbeat_interval = 10.0
        self.jobs_run = 0
        self._stop = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.max_jobs)
        self._client = httpx.AsyncClient(
            base_url=config.url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.token}", "User-Agent": f"mko-agent/{__version__}"},
            verify=config.ca_file or True,
            timeout=httpx.Timeout(10.0, read=config.claim_wait + 15.0),
            transport=transport,
        )
        if config.url.startswith("http://") and not _is_loopback_url(config.url):
            log.warning("the orchestrator URL is plain http: the agent token travels unencrypted")

    def stop(self) -> None:
        """Ask the agent to finish (callable from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Register, then claim and run jobs until stopped; raises AgentRefusedError when refused."""
        try:
            await self._register()
            beats = asyncio.create_task(self._heartbeats())
            claims = asyncio.create_task(self._claims())
            stopped = asyncio.create_task(self._stop.wait())
            try:
                done, _ = await asyncio.wait({beats, claims, stopped}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not stopped:
                        task.result()  # AgentRefusedError from a loop ends the agent
            finally:
                for task in (beats, claims, stopped):
                    task.cancel()
                await asyncio.gather(beats, claims, stopped, return_exceptions=True)
                # Jobs under way finish and report (their nodes are waiting for them), within bounds.
                if self._jobs:
                    await asyncio.wait(set(self._jobs), timeout=_REPORT_PATIENCE)
                for job in list(self._jobs):
                    job.cancel()
        finally:
            await self._client.aclose()

    # ------------------------------------------------------------ talking to the orchestrator

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = await self._client.post(path, json=body)
        if response.status_code in (401, 403):
            raise AgentRefusedError(
                f"the orchestrator refused the agent token ({response.status_code}): {_detail(response)};"
                " create one with `mko token create NAME --role agent`"
            )
        return response

    async def _heartbeat(self) -> None:
        body = {
            "name": self.config.name,
            "site": self.config.site,
            "host": socket.gethostname(),
            "version": __version__,
        }
        response = await self._post("/api/agents/heartbeat", body)
        if response.status_code in (409, 422):
            raise AgentRefusedError(f"the orchestrator refused this agent: {_detail(response)}")
        response.raise_for_status()
        self.heartbeat_interval = float(response.json().get("heartbeat_interval", self.heartbeat_interval))

    async def _register(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._heartbeat()
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                log.warning("cannot reach the orchestrator at %s: %s; retrying", self.config.url, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                if self._stop.is_set():
                    return
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            log.info("agent %s serving site %s for %s", self.config.name, self.config.site, self.config.url)
            return

    async def _heartbeats(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat()
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if not failing:
                    log.warning("heartbeat failed: %s", exc)
                failing = True
                continue
            if failing:
                log.info("heartbeats reach the orchestrator again")
            failing = False

    async def _claims(self) -> None:
        backoff = 1.0
        while True:
            async with self._slots:  # at most max_jobs at once; the next claim waits for a free slot
                pass
            try:
                response = await self._post(
                    "/api/agents/claim", {"name": self.config.name, "wait": self.config.claim_wait}
                )
            except httpx.TransportError as exc:
                log.warning("claim failed: %s; retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if response.status_code == 204:
                backoff = 1.0
                continue
            if response.status_code == 404:  # the orchestrator forgot us (e.g. a restored database)
                await self._register()
                continue
            if response.status_code != 200:
                log.warning("claim answered %s: %s", response.status_code, _detail(response))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = 1.0
            task = asyncio.create_task(self._job(response.json()))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    # ------------------------------------------------------------ running a job

    async def _job(self, job: dict[str, Any]) -> None:
        async with self._slots:
            job_id = int(job["job_id"])
            log.info(
                "job %s (operation %s): waking %d node(s) of site %s",
                job_id,
                job.get("operation_id"),
                len(job["nodes"]),
                job["site"],
            )
            report: dict[str, Any] = {"name": self.config.name}
            try:
                nodes = [snapshot_from_payload(entry, job["site"]) for entry in job["nodes"]]
                schedule = WakeSchedule(**job["schedule"])
                driver = WolDriver(self.config.interface, schedule.probe_timeout)

                def lookup(_node: object) -> PowerDriver:
                    return driver

                outcomes = await power_on(nodes, schedule, lookup)
                report["nodes"] = [outcome.as_dict() for outcome in outcomes]
                for outcome in outcomes:
                    log.info("job %s: %s %s", job_id, outcome.hostname, outcome.describe())
            except Exception as exc:  # a bad job must not end the agent; the orchestrator learns why
                log.exception("job %s failed", job_id)
                report["error"] = f"the agent could not run the job: {type(exc).__name__}: {exc}"
            await self._report(job_id, report, job.get("expires_at"))
            self.jobs_run += 1

    async def _report(self, job_id: int, report: dict[str, Any], expires_at: str | None) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _REPORT_PATIENCE
        if expires_at:
            remaining = (datetime.fromisoformat(expires_at) - datetime.now().astimezone()).total_seconds()
            give_up = loop.time() + max(remaining, 5.0)
        backoff = 0.5
        while True:
            try:
                response = await self._post(f"/api/agents/jobs/{job_id}/result", report)
            except httpx.TransportError as exc:
                if loop.time() + backoff > give_up:
                    log.error(
                        "job %s: result not delivered (%s); the orchestrator will give it up", job_id, exc
                    )
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if response.status_code == 200:
                return
            log.warning("job %s: result refused (%s): %s", job_id, response.status_code, _detail(response))
            return


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.reason_phrase or response.status_code)


def _is_loopback_url(url: str) -> bool:
    host = httpx.URL(url).host
    return host in ("localhost", "::1") or host.startswith("127.")
