"""Benchmark: from mains returning on the UPS server to the first magic packet on a lab node's card.

Everything is real: upsd + dummy-ups (nut-server) inside a lab's ``orch`` network namespace, the mko
monitor with its DEFAULT 1 s poll and the seed's rule (power_restored → wake_on_lan) running there too,
and three lab nodes whose network cards record magic packets (AF_PACKET) and "boot" on them.

Per transition: the UPS goes on battery, a monitor is started at a random moment (so its poll phase
relative to the driver's 1 s update tick is random, as a real power return is), takes its baseline,
then the .dev file says OL. Measured:

* server → packet: from the moment upsd first serves ``ups.status: OL`` (seen by a 5 ms watcher) to the
  first magic packet received by any node: what mko adds (poll wait + detection + rule + wake);
* command → packet: from rewriting the .dev file, including dummy-ups's own ≤ 1 s re-read tick.

Target: ≤ 1.5 s median server → packet with the default 1 s poll. Needs root, iproute2 and nut-server.
A benchmark reports; it does not fail on a missed target. Run with ``python bench/ups_reaction.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import select

from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import enter_netns
from mko.lab.nut import NutServer
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups
from mko.wiring import Wiring, wire

TRANSITIONS = 12
TARGET_S = 1.5


class Monitor:
    """An UpsMonitor in its own thread and event loop inside the orch namespace."""

    def __init__(self, settings: Settings, netns: str, wiring: Wiring) -> None:
        self.settings, self.netns, self.wiring = settings, netns, wiring
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with enter_netns(self.netns):
            asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
        monitor, _rules = self.wiring.ups_monitor()
        await monitor.start()
        self.ready.set()
        await self.stop_event.wait()
        await monitor.stop()

    def __enter__(self) -> Monitor:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the monitor did not start")
        return self

    def __exit__(self, *_: object) -> None:
        assert self.loop is not None and self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    logging.getLogger("mko").setLevel(logging.ERROR)  # events are logged as warnings; keep the figures clean
    workdir = Path(tempfile.mkdtemp(prefix="mko-bench-ups-"))
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'mko.platform.db'}",
        log_dir=workdir / "logs",
        rule_wake_timeout=10.0,
    )
    print(f"poll interval {settings.ups_poll_interval:g}s (default), {TRANSITIONS} OB → OL transitions")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    wiring = wire(settings, engine=engine)
    factory = wiring.session_factory
    running = RunningLab.start(f"mkb{os.getpid() % 10000}", 3)
    with running, NutServer.start(workdir / "nut", netns=running.lab.orch) as nut, factory() as session:
        cluster, _ = register_lab(session, running)
        ups = create_ups(session, settings, UpsCreate(name="bench", ups_name=nut.ups_name, port=nut.port))
        create_rule(
            session,
            RuleCreate(
                ups_id=ups.id,
                cluster_id=cluster.id,
                power_event=PowerEvent.POWER_RESTORED,
                cluster_action=ClusterAction.WAKE_ON_LAN,
                name="Wake cluster after power restoration",
                recover_after_wake=False,  # measures the packets; these nodes run no sshd to recover
            ),
        )
        server_s, command_s = _measure(settings, running, nut, wiring)
    engine.dispose()
    _report("server → first packet", server_s)
    _report("command → first packet", command_s)
    median = statistics.median(server_s)
    verdict = "meets" if median <= TARGET_S else "MISSES"
    print(f"median server → packet {median:.3f}s {verdict} the {TARGET_S}s target")
    return 0


def _measure(
    settings: Settings, running: RunningLab, nut: NutServer, wiring: Wiring
) -> tuple[list[float], list[float]]:
    server_s: list[float] = []
    command_s: list[float] = []
    rng = random.Random(4)
    for index in range(TRANSITIONS):
        nut.set(status="OB DISCHRG")
        nut.wait_for("ups.status", "OB DISCHRG", timeout=5)
        time.sleep(rng.uniform(0, 1))  # the monitor's poll phase, relative to the driver's tick
        with Monitor(settings, running.lab.orch, wiring):
            time.sleep(1.3)  # baseline taken (on battery)
            running.clear()
            commanded = time.monotonic()
            nut.set(status="OL CHRG")
            served = nut.wait_for("ups.status", "OL CHRG", timeout=5, interval=0.005)
            first = _first_packet(running, after=commanded, timeout=10)
            _wait_rule_done(wiring.session_factory, index + 1)
        server_s.append(first - served)
        command_s.append(first - commanded)
        print(f"  transition {index + 1:2d}: server → packet {first - served:.3f}s")
    return server_s, command_s


def _first_packet(running: RunningLab, after: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = [p.time for node in running.nodes for p in node.recorder.packets if p.time >= after]
        if times:
            return min(times)
        time.sleep(0.002)
    raise RuntimeError("no magic packet arrived")


def _wait_rule_done(factory: object, executions: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with factory() as session:  # type: ignore[operator]
            ops = session.scalars(select(Operation).where(Operation.kind == RULE_OPERATION_KIND)).all()
            done = [o for o in ops if o.status not in (OperationStatus.PENDING, OperationStatus.RUNNING)]
        if len(done) >= executions:
            return
        time.sleep(0.05)
    raise RuntimeError("the rule's wake did not finish")


def _report(label: str, values: list[float]) -> None:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    print(
        f"{label}: median {statistics.median(values):.3f}s  mean {statistics.fmean(values):.3f}s"
        f"  p90 {p90:.3f}s  min {ordered[0]:.3f}s  max {ordered[-1]:.3f}s  (n={len(values)})"
    )


if __name__ == "__main__":
    sys.exit(main())
