"""The lab's UPS output against a REAL upsd: dummy-ups 2.8.0 as it is, and NUT's clone driver on top.

What mko's power cycle relies on, checked on the real daemons: which instant commands each driver lists
and what upsd answers, that the clone driver really cuts its output after ``offdelay`` and brings it
back ``ondelay`` seconds after mains returned (``shutdown.return``), and that LOGIN as a secondary
monitor is counted by upsd (what a NUT primary waits for before it cuts the power).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from mko.lab.nut import NutServer, OutputTimers
from mko.platform.errors import NutResponseError
from mko.ups.nut import NutClient
from mko.ups.power_cycle import power_cycle
from mko.ups.service import UpsTarget

# Its tests share the module's upsd: one xdist worker runs them one after the other.
pytestmark = pytest.mark.xdist_group("nut_output")


@pytest.fixture(scope="module")
def nut(netns_privileges: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NutServer]:
    """One server for the module: each test leaves the UPS on line with its output on."""
    with NutServer.start(tmp_path_factory.mktemp("nut"), output=True, offdelay=2, ondelay=1) as server:
        yield server


def _client(nut: NutServer, **options: object) -> NutClient:
    return NutClient(nut.host, nut.port, username=nut.username, password=nut.password, timeout=3, **options)  # type: ignore[arg-type]


def test_dummy_ups_lists_load_off_and_refuses_shutdown_return_the_clone_lists_both_returns(
    nut: NutServer,
) -> None:
    async def ask() -> tuple[list[str], list[str], str, str]:
        client = _client(nut)
        try:
            deadline = time.monotonic() + 5
            while not (supply := await client.list_cmds(nut.supply_name)) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # upsd has the driver's commands a moment after its status
            output = await client.list_cmds(nut.ups_name)
            accepted = await client.instcmd(nut.supply_name, "load.off")
            try:
                await client.instcmd(nut.supply_name, "shutdown.return")
                refused = "accepted"
            except NutResponseError as exc:
                refused = exc.code
            return supply, output, accepted, refused
        finally:
            await client.logout()

    supply, output, accepted, refused = asyncio.run(ask())
    # dummy-ups 2.8.0: load.off is listed and upsd says OK, but the driver does nothing with it.
    assert (supply, accepted, refused) == (["load.off"], "OK", "CMD-NOT-SUPPORTED")
    deadline = time.monotonic() + 5
    while "instcmd: unknown command [load.off]" not in (nut.directory / "driver.log").read_text():
        assert time.monotonic() < deadline, "dummy-ups never logged the command it ignores"
        time.sleep(0.1)
    assert nut.served_status() == {"OL"}
    assert output == ["shutdown.return", "shutdown.stayoff"]


def test_shutdown_return_cuts_the_output_after_offdelay_and_restores_it_after_ondelay_on_mains(
    nut: NutServer,
) -> None:
    nut.set(status="OB DISCHRG", charge=30)
    nut.wait_for_status("OB DISCHRG")
    assert nut.read_output() == OutputTimers(-1, -1)

    async def command() -> str:
        client = _client(nut)
        try:
            return await client.instcmd(nut.ups_name, "shutdown.return")
        finally:
            await client.logout()

    sent = time.monotonic()
    assert asyncio.run(command()) == "OK"
    assert nut.read_var("ups.status") == "FSD OB DISCHRG"  # what secondaries see at once
    off_at = _wait(lambda: (t := nut.read_output()) is not None and t.shutdown < 0 and t.start >= 0, 8)
    assert 1.5 <= off_at - sent <= 5  # offdelay 2 s, counted at the driver's 1 s ticks
    time.sleep(2)  # still on battery: the start timer waits for mains
    assert (timers := nut.read_output()) is not None and timers.start == 1
    nut.set(status="OL CHRG")
    mains = nut.wait_for_status("OL CHRG", timeout=5)
    on_at = _wait(lambda: nut.read_output() == OutputTimers(-1, -1), 8)
    assert 0.5 <= on_at - mains <= 4  # ondelay 1 s on line
    assert nut.read_var("ups.status") == "OL CHRG"


def test_login_as_a_secondary_is_counted_by_upsd_until_released(nut: NutServer) -> None:
    async def session() -> list[int]:
        monitor = _client(nut, login=nut.ups_name)
        observer = _client(nut)
        try:
            await monitor.list_vars(nut.ups_name)
            counts = [await observer.num_logins(nut.ups_name)]
            await monitor.release_login()
            await monitor.list_vars(nut.ups_name)
            counts.append(await observer.num_logins(nut.ups_name))
            return counts
        finally:
            await monitor.logout()
            await observer.logout()

    assert asyncio.run(session()) == [1, 0]


def _wait(predicate: object, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return time.monotonic()


def test_mkos_power_cycle_never_fires_on_mains_checks_the_list_and_records_upsd_answers(
    nut: NutServer,
) -> None:
    target = UpsTarget(1, "rack", nut.ups_name, nut.host, nut.port, nut.username, nut.password)
    nut.set(status="OL CHRG")  # on mains, as another test of the module may or may not have left it
    nut.wait_for_status("OL CHRG")
    upsd_log = nut.directory / "upsd.log"
    before = upsd_log.read_text().count("Instant command")
    skipped = asyncio.run(power_cycle(target, 3))
    assert (skipped.outcome, skipped.status) == ("skipped", "OL CHRG")
    assert skipped.message.startswith("mains is back (OL CHRG): not power-cycling")
    supply = UpsTarget(2, "supply", nut.supply_name, nut.host, nut.port, nut.username, nut.password)
    nut.set(status="OB DISCHRG")
    nut.wait_for_status("OB DISCHRG")
    refused = asyncio.run(power_cycle(supply, 3))  # dummy-ups lists load.off only
    assert refused.outcome == "refused" and "(LIST CMD: load.off); nothing sent" in refused.message
    intruder = UpsTarget(3, "rack", nut.ups_name, nut.host, nut.port, "admin", "wrong")
    denied = asyncio.run(power_cycle(intruder, 3))
    assert denied.outcome == "failed" and denied.message.startswith(
        "INSTCMD shutdown.return: ERR ACCESS-DENIED"
    )
    assert upsd_log.read_text().count("Instant command") == before  # nothing reached the UPS yet
    sent = asyncio.run(power_cycle(target, 3))
    assert (sent.outcome, sent.listed) == ("sent", ["shutdown.return", "shutdown.stayoff"])
    assert sent.commands == [{"command": "shutdown.return", "answer": "OK"}]
    assert sent.delays == {"shutdown": 2, "start": 1}  # the UPS's own ups.delay.shutdown / start
    _wait(lambda: (t := nut.read_output()) is not None and t.shutdown < 0 and t.start >= 0, 8)
    nut.set(status="OL CHRG")  # leave the module's UPS on line with its output on
    _wait(lambda: nut.read_output() == OutputTimers(-1, -1), 10)
