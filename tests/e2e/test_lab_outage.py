"""The power cut that takes mko down too, in the lab, from the real CLI: the whole story and each race.

One lab serves the module (`mko lab up --orchestrator-on-ups`: mko's host is on the lab's UPS, a real
upsd with NUT's clone driver as its output, so `shutdown.return` really cuts the output and gives it
back). Every test starts from the same steady state — every node up, Ready and uncordoned, the UPS on
line with its output on, mko running, no outage open — and ends there again, so the races run in
sequence on one lab. The tests read only what `mko lab status --json`, the lab's database, the nodes'
call logs and upsd's own log say. Where a race is a matter of seconds, the test waits and acts through
the lab daemon's socket from its own process (what every `mko lab` command does), since starting the
CLI takes seconds on a busy machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from labcli import LabCli, free_port

from support.lab import new_prefix

# The races run in sequence on the module's one lab: one xdist worker runs them in file order.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("lab_outage")]

# The lab UPS's shutdown and start delays. The shutdown delay leaves mko's host room to halt itself
# before its load is cut, even when a busy machine takes seconds to start the halting process.
OFFDELAY, ONDELAY = 8, 1
WORKERS = ("lab-n2", "lab-n3")
CHARGE_WAIT = re.compile(r"waiting: charge (3\d|4\d) % of 60 %")  # set to 30 %; it charges on mains


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCli]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the lab needs root and iproute2 (see docs/lab.md)")
    tmp = tmp_path_factory.mktemp("outage")
    env = os.environ | {"MKO_CONFIG": str(tmp / "none.toml"), "MKO_LOG_DIR": str(tmp / "logs")}
    cli = LabCli(tmp / "lab", new_prefix("o"), free_port(), env)
    cli.up(
        "--orchestrator-on-ups",
        "--battery-runtime",
        "120",
        "--ups-offdelay",
        str(OFFDELAY),
        "--ups-ondelay",
        str(ONDELAY),
        "--stable-for",
        "1",
    )
    yield cli
    cli.run("down", check=False)


@dataclass
class Before:
    """What the lab looked like when a test began."""

    boots: dict[str, int]
    packets: dict[str, int]
    operation: int
    event: int
    outage: int
    commands: int
    restarts: int


def _steady(status: dict[str, Any]) -> bool:
    return (
        all(n["power"] == "on" and n["ready"] and not n["cordoned"] for n in status["nodes"])
        and status["ups"]["status"] == "OL CHRG"
        and status["ups"]["output"] == "on"
        and status["orchestrator"]["running"]
        and bool(status["server"])
        and not status["running"]
    )


@pytest.fixture
def before(lab: LabCli) -> Before:
    """The steady state, reached (a test leaves the lab there again) and noted."""
    status = lab.until(_steady, "every node Ready, the UPS on line, mko running", timeout=90)
    assert [o for o in lab.records("outages") if o["open"]] == []
    lab.cluster().update(delays={})
    lab.control().battery(100)
    return Before(
        boots={n["hostname"]: n["boots"] for n in status["nodes"]},
        packets={n["hostname"]: n["packets"] for n in status["nodes"]},
        operation=lab.newest("operations"),
        event=lab.newest("events"),
        outage=lab.newest("outages"),
        commands=len(lab.instant_commands()),
        restarts=status["orchestrator"]["restarts"],
    )


def _workers_off(status: dict[str, Any]) -> bool:
    return all(n["power"] == "off" for n in status["nodes"] if n["hostname"] in WORKERS)


def _operation(lab: LabCli, before: Before, kind: str) -> dict[str, Any]:
    """The first operation of this kind since the test began."""
    return next(op for op in lab.records("operations", before.operation) if op["kind"] == kind)


def _kinds(lab: LabCli, before: Before) -> list[str]:
    return [op["kind"] for op in lab.records("operations", before.operation)]


def _restored(lab: LabCli, before: Before) -> dict[str, Any]:
    """Wait for the cycle to end with everything back; return the one outage it recorded."""
    lab.until(_steady, "the cluster restored", timeout=90)
    [outage] = lab.records("outages", before.outage)
    assert (outage["phase"], outage["open"]) == ("restored", False), outage
    return outage


def test_a_restart_on_mains_with_everything_up_does_nothing(lab: LabCli, before: Before) -> None:
    assert "orchestrator killed" in lab.run("kill-server").stdout
    assert "orchestrator serving" in lab.run("start-server").stdout
    time.sleep(3)  # several polls of the UPS by the new mko
    status = lab.live()
    assert _steady(status) and status["orchestrator"]["restarts"] == before.restarts
    assert lab.records("operations", before.operation) == []  # no operation at all
    assert lab.records("events", before.event) == []
    assert {n["hostname"]: n["packets"] for n in status["nodes"]} == before.packets  # no packet
    assert {n["hostname"]: n["boots"] for n in status["nodes"]} == before.boots


def test_mains_returning_before_the_power_cycle_command_restores_without_sending_it(
    lab: LabCli, before: Before
) -> None:
    # The control plane's `microk8s stop` takes 8 s: mains returns while it is the last thing running.
    lab.cluster().update(delays={"stop": {"lab-n1": 8.0}})
    lab.run("power-fail")
    lab.until(_workers_off, "workers off")
    lab.control().power_restore()
    outage = _restored(lab, before)
    assert lab.instant_commands()[before.commands :] == []  # the UPS was never asked to cut its load
    assert outage["power_cycle"] == {} and outage["host_shutdown"] == {}
    shutdown = _operation(lab, before, "cluster_shutdown")
    assert shutdown["status"] == "cancelled" and "superseded by rule 2" in shutdown["summary"]
    assert not any(name.startswith("power-cycle") for name, _, _ in shutdown["steps"])
    status = lab.live()
    assert status["orchestrator"]["restarts"] == before.restarts  # mko never went down
    boots = {n["hostname"]: n["boots"] - before.boots[n["hostname"]] for n in status["nodes"]}
    assert boots == {"lab-n1": 0, "lab-n2": 1, "lab-n3": 1}  # the control plane was never powered off


def test_mko_killed_mid_shutdown_and_restarted_on_mains_wakes_only_what_is_off(
    lab: LabCli, before: Before
) -> None:
    lab.cluster().update(delays={"stop": {"lab-n1": 8.0}})
    lab.run("power-fail")
    lab.until(_workers_off, "workers off")
    deadline = time.monotonic() + 10
    while sorted(next(iter(lab.records("outages", before.outage)), {}).get("nodes_off", [])) != list(WORKERS):
        assert time.monotonic() < deadline, "mko never recorded the workers off"
        time.sleep(0.1)
    lab.control().kill_server()  # mko's host dies in the middle of the control plane's stop
    lab.run("power-restore")
    time.sleep(2)
    status = lab.live()
    assert [n["power"] for n in status["nodes"]] == ["on", "off", "off"]  # nobody woke them
    lab.run("start-server")  # mko boots on mains
    outage = _restored(lab, before)
    assert sorted(outage["nodes_up"]) == ["lab-n1", "lab-n2", "lab-n3"]
    assert sorted(outage["nodes_off"]) == list(WORKERS)  # what mko had confirmed off before it died
    [restored] = [e for e in lab.records("events", before.event) if e["event"] == "power_restored"]
    assert restored["message"].startswith("mains returned while mko was down (last seen OB DISCHRG at ")
    wake = _operation(lab, before, "wol_wake_cluster")
    assert {name for name, _, _ in wake["steps"]} == {"wake lab-n2", "wake lab-n3", "leave lab-n1"}
    status = lab.live()
    boots = {n["hostname"]: n["boots"] - before.boots[n["hostname"]] for n in status["nodes"]}
    packets = {n["hostname"]: n["packets"] - before.packets[n["hostname"]] for n in status["nodes"]}
    assert boots == {"lab-n1": 0, "lab-n2": 1, "lab-n3": 1}  # the running control plane was left as it was
    assert packets["lab-n1"] == 0 and packets["lab-n2"] > 0 and packets["lab-n3"] > 0
    recovery = _operation(lab, before, "cluster_recover")
    assert recovery["status"] == "succeeded" and recovery["summary"].startswith("3/3 started, 3/3 Ready")


def test_mains_returning_during_the_ups_shutdown_delay_still_cycles_the_load_and_mko_boots_with_it(
    lab: LabCli, before: Before
) -> None:
    lab.run("power-fail")
    lab.until(lambda s: ", off in" in s["ups"]["output"], "the UPS counting down to cut its load")
    lab.control().power_restore()  # mains is back, but the UPS carries the power cycle out all the same
    lab.until(lambda s: s["ups"]["output"].startswith("off"), "the load cut", timeout=OFFDELAY + 10)
    outage = _restored(lab, before)
    assert lab.instant_commands()[before.commands :] == ["shutdown.return"]
    assert outage["power_cycle"]["outcome"] == "sent" and outage["power_cycle"]["commands"] == [
        {"command": "shutdown.return", "answer": "OK"}
    ]
    assert outage["host_shutdown"]["ran"] is True
    status = lab.live()
    assert status["orchestrator"]["restarts"] == before.restarts + 1  # mko booted with the output
    # Mko may see mains return before its host is down; the event of its next start does the restore.
    *_, restored = [e for e in lab.records("events", before.event) if e["event"] == "power_restored"]
    assert restored["detail"]["while_down"] is True and restored["detail"]["outages"] == [outage["id"]]
    assert "mko shut its host down for power at" in restored["message"]  # the marker it left


def test_power_lost_again_while_waiting_for_charge_cancels_the_restore(lab: LabCli, before: Before) -> None:
    # The restore rule now waits for 60 %.
    lab.mko("ups", "delete-rule", "2")
    made = lab.mko(
        *["ups", "create-rule", "--ups-id", "1", "--cluster-id", "1", "--power-event", "power_restored"],
        *["--cluster-action", "wake_on_lan", "--min-charge", "60", "--stable-for", "1", "--json"],
    )
    rule = json.loads(made.stdout)["id"]
    try:
        lab.run("power-fail")
        lab.until(lambda s: s["ups"]["output"].startswith("off"), "the load cut")
        lab.run("battery", "30")
        lab.run("power-restore")
        lab.until(lambda s: s["orchestrator"]["running"] and bool(s["server"]), "mko booted")

        def waiting() -> dict[str, Any] | None:
            for op in lab.records("operations", before.operation):
                if op["kind"] == "power_rule" and op["status"] == "pending" and op["steps"]:
                    return op
            return None

        deadline = time.monotonic() + 30
        while (op := waiting()) is None or not CHARGE_WAIT.fullmatch(op["steps"][-1][2]):
            assert time.monotonic() < deadline, f"no restore waiting for charge: {op}"
            time.sleep(0.3)
        lab.run("power-fail")  # the next cut comes before the battery is charged
        lab.until(lambda s: s["ups"]["output"].startswith("off"), "the load cut again")
        [cancelled] = [o for o in lab.records("operations", before.operation) if o["id"] == op["id"]]
        assert cancelled["status"] == "cancelled" and "power_loss" in cancelled["summary"]
        name, state, message = cancelled["steps"][-1]
        assert (name, state) == ("wait for power", "cancelled") and CHARGE_WAIT.fullmatch(message), message
        assert "wol_wake_cluster" not in _kinds(lab, before)  # nothing was woken into the empty battery
        lab.run("battery", "70")
        lab.run("power-restore")
        outage = _restored(lab, before)
        assert outage["power_cycle"]["outcome"] == "sent"
        assert lab.instant_commands()[before.commands :] == ["shutdown.return", "shutdown.return"]
    finally:
        lab.mko("ups", "delete-rule", str(rule))
        lab.mko(
            *["ups", "create-rule", "--ups-id", "1", "--cluster-id", "1", "--power-event", "power_restored"],
            *["--cluster-action", "wake_on_lan", "--stable-for", "1"],
        )


def test_the_whole_long_outage_from_the_scenario_command(lab: LabCli, before: Before) -> None:
    played = lab.run("scenario", "long-outage", "--outage", str(OFFDELAY + 12), timeout=240)
    lines = played.stdout.splitlines()
    story = [
        "mains fails: UPS OB DISCHRG",
        "shuts the cluster down in order",
        "lab-n2 (worker) powered off",
        "lab-n1 (control plane) powered off",
        "power-cycle lab-ups: INSTCMD shutdown.return: upsd answered OK",
        "mko's host is down: it shut itself down",
        "the UPS cut its load",
        "mains returns: upsd serves OL CHRG",
        "the UPS output is back on",
        "mko's host boots with the output",
        "wakes the nodes that were up before",
        "recovery #",
        "every node Ready and uncordoned; the outage is closed",
    ]
    found = [next((i for i, line in enumerate(lines) if part in line), -1) for part in story]
    assert -1 not in found and found == sorted(found), played.stdout
    assert lines[-1].startswith("mains back → every node Ready in ")
    # Workers went off before the control plane, and all three came back.
    calls = lab.calls()
    poweroffs = [host for host, command in calls if command == "systemctl poweroff"][-3:]
    assert sorted(poweroffs[:2]) == list(WORKERS) and poweroffs[2] == "lab-n1"
    outage = _restored(lab, before)
    assert outage["nodes_off"] == outage["nodes_up"] == ["lab-n1", "lab-n2", "lab-n3"]
    assert lab.live()["orchestrator"]["restarts"] == before.restarts + 1
