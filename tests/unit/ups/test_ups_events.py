"""Status tokens and the edge-triggered event state machine of one UPS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mko.ups.events import CommFailure, CommState, EventDetector
from mko.ups.status import UpsReading, describe_tokens, parse_status

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Feed:
    """Feeds readings and failures one second apart and collects event names."""

    def __init__(self, detector: EventDetector) -> None:
        self.detector = detector
        self.at = T0
        self.events: list[tuple[str, dict[str, object]]] = []
        self.messages: list[str] = []

    def read(self, status: str, charge: float | None = None, runtime: float | None = None) -> list[str]:
        self.at += timedelta(seconds=1)
        variables = {"ups.status": status}
        if charge is not None:
            variables["battery.charge"] = f"{charge:g}"
        if runtime is not None:
            variables["battery.runtime"] = f"{runtime:g}"
        found = self.detector.observe(UpsReading.from_variables(variables, self.at))
        self.events += [(e.event.value, e.detail) for e in found]
        self.messages += [e.message for e in found]
        return [e.event.value for e in found]

    def fail(self, error: str = "ERR DRIVER-NOT-CONNECTED") -> list[str]:
        self.at += timedelta(seconds=1)
        found = self.detector.failed(CommFailure(self.at, error))
        self.events += [(e.event.value, e.detail) for e in found]
        self.messages += [e.message for e in found]
        return [e.event.value for e in found]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def test_status_is_a_set_of_tokens_in_any_order_with_unknown_ones_tolerated() -> None:
    assert parse_status("OB  DISCHRG LB") == parse_status("lb ob discHRG") == {"OB", "DISCHRG", "LB"}
    assert parse_status(None) == parse_status("") == frozenset()
    assert describe_tokens(parse_status("CHRG OL")) == ["on line", "charging"]
    assert describe_tokens(parse_status("OB LB XYZ")) == ["on battery", "low battery", "unknown status 'XYZ'"]
    reading = UpsReading.from_variables(
        {"ups.status": "OL ECO", "battery.charge": "97.5", "battery.runtime": "n/a", "ups.load": "nan"}, T0
    )
    assert (reading.source, reading.charge, reading.runtime, reading.load) == ("mains", 97.5, None, None)
    # Mid-transfer a UPS may say both: on battery is the safe reading.
    assert UpsReading.from_variables({"ups.status": "OL OB"}, T0).source == "battery"


def test_ol_ob_ol_fires_each_event_once_however_many_polls() -> None:
    feed = Feed(EventDetector())
    assert feed.read("OL CHRG") == []  # the baseline
    assert feed.read("OL") == []
    assert feed.read("OB DISCHRG") == ["power_loss"]
    for _ in range(5):
        assert feed.read("OB DISCHRG") == []
    assert feed.read("OB") == []  # token changes without a source change are not events
    assert feed.read("OL CHRG") == ["power_restored"]
    assert feed.read("OL") == []
    assert feed.names == ["power_loss", "power_restored"]


def test_first_reading_is_a_baseline_even_on_battery() -> None:
    feed = Feed(EventDetector(thresholds=[50]))
    assert feed.read("OB DISCHRG LB", charge=30) == []
    assert feed.read("OB DISCHRG LB", charge=25) == []
    assert feed.read("OL CHRG", charge=26) == ["power_restored"]


def test_no_false_power_restored_after_comm_loss_while_on_battery() -> None:
    feed = Feed(EventDetector(comm_lost_after=2))
    feed.read("OL")
    feed.read("OB")
    assert feed.fail() == []  # one failure: not yet comm_lost
    assert feed.detector.comm == CommState.FAILING
    assert feed.fail() == ["comm_lost"]
    assert feed.fail("connection refused") == []  # declared once
    assert feed.read("WAIT") == []  # upsd restarting: still no status
    assert feed.read("") == []
    assert feed.detector.source == "battery"
    assert feed.read("OB DISCHRG") == ["comm_restored"]
    assert feed.names == ["power_loss", "comm_lost", "comm_restored"]
    # Mains that came back while the link was down is a real restoration, and says so.
    feed.fail()
    feed.fail()
    assert feed.read("OL") == ["comm_restored", "power_restored"]
    assert feed.events[-1][1]["after_comm_loss"] is True


def test_readings_without_ol_or_ob_keep_the_last_known_source() -> None:
    feed = Feed(EventDetector())
    feed.read("OB")
    assert feed.read("OFF") == ["ups_shutdown"]
    assert feed.read("OB") == []  # still on battery: no power_loss again
    assert feed.read("OL") == ["power_restored"]


def test_failures_before_any_reading_are_silent_for_a_minute() -> None:
    feed = Feed(EventDetector(comm_lost_after=1))
    assert feed.fail() == [] and feed.fail() == []
    assert feed.detector.comm == CommState.UNKNOWN
    assert feed.read("OL") == []  # the baseline, no comm_restored for a loss never declared
    assert feed.fail() == ["comm_lost"]


def test_a_ups_never_read_is_comm_lost_after_a_minute_once_then_restored() -> None:
    feed = Feed(EventDetector(never_read_after=60))
    assert [name for _ in range(60) for name in feed.fail("connection refused")] == []  # t = 1 … 60 s
    assert feed.fail("connection refused") == ["comm_lost"]  # 60 s after the first failure (t = 1 s)
    assert "not one reading in 60 s since mko started: connection refused" in feed.messages[-1]
    assert [name for _ in range(100) for name in feed.fail()] == []  # said once
    assert feed.read("OL") == ["comm_restored"]
    assert feed.read("OB") == ["power_loss"]  # the first reading was the baseline: edges work as ever


def test_low_battery_fires_once_per_threshold_crossing_with_hysteresis() -> None:
    feed = Feed(EventDetector(thresholds=[50, 20]))
    feed.read("OL", charge=100)
    assert feed.read("OL", charge=45) == []  # a low charge on mains is not a low battery
    assert feed.read("OB", charge=60) == ["power_loss"]
    assert feed.read("OB", charge=49) == ["low_battery"]
    assert feed.events[-1][1] == {"thresholds": [50], "lb": False}
    for charge in (50, 49, 51, 50, 48, 30):  # jitter around 50 never re-arms it (needs ≥ 53)
        assert feed.read("OB", charge=charge) == []
    assert feed.read("OB", charge=19) == ["low_battery"]
    assert feed.events[-1][1] == {"thresholds": [20], "lb": False}
    assert feed.read("OB LB", charge=15) == ["low_battery", "critical_battery"]
    assert feed.events[-2][1] == {"thresholds": [], "lb": True}
    assert feed.read("OL CHRG", charge=16) == ["power_restored"]
    # Back on mains re-arms every threshold: a new cut with the battery still low fires at once.
    assert feed.read("OB", charge=18) == ["power_loss", "low_battery"]
    assert feed.events[-1][1] == {"thresholds": [20, 50], "lb": False}


def test_lb_alone_concerns_rules_without_threshold_and_crosses_open_thresholds() -> None:
    feed = Feed(EventDetector(thresholds=[30]))
    feed.read("OB", charge=80)
    assert feed.read("OB LB", charge=70) == ["low_battery", "critical_battery"]
    assert feed.events[0][1] == {"thresholds": [30], "lb": True}
    assert feed.read("OL", charge=70) == ["power_restored"]


def test_new_threshold_starts_from_the_current_state() -> None:
    detector = EventDetector()
    feed = Feed(detector)
    feed.read("OB", charge=40)
    detector.set_thresholds([50])  # already below: no event for the past
    assert feed.read("OB", charge=39) == []
    detector.set_thresholds([50, 30])
    assert feed.read("OB", charge=29) == ["low_battery"]
    assert detector.thresholds == {50, 30}


def test_fsd_and_off_are_critical_and_shutdown_once() -> None:
    feed = Feed(EventDetector())
    feed.read("OB")
    assert feed.read("OB FSD") == ["critical_battery", "ups_shutdown"]
    assert feed.read("OB FSD LB") == ["low_battery"]
    assert feed.read("OFF") == []  # still shutting down: no second ups_shutdown


@pytest.mark.parametrize("limit", [0, -1])
def test_comm_lost_after_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventDetector(comm_lost_after=limit)


def test_runtime_low_fires_once_per_cluster_whose_shutdown_the_battery_will_not_carry() -> None:
    detector = EventDetector()
    detector.set_runtime_needs({1: 420.0, 2: 150.0})
    feed = Feed(detector)
    assert feed.read("OL", runtime=3000) == []
    assert feed.read("OB DISCHRG", runtime=900) == ["power_loss"]
    assert feed.read("OB DISCHRG", runtime=419) == ["runtime_low"]
    assert feed.events[-1][1] == {"clusters": [1], "needs": {"1": 420.0}, "runtime": 419.0}
    assert feed.messages[-1] == "battery runtime 419 s will not last the shutdown: cluster 1 needs 420 s"
    assert feed.read("OB DISCHRG", runtime=430) == []  # jitter around the need: not 10 % above
    assert feed.read("OB DISCHRG", runtime=400) == []
    assert feed.read("OB DISCHRG", runtime=149) == ["runtime_low"]
    assert feed.events[-1][1]["clusters"] == [2]
    assert feed.read("OB DISCHRG") == []  # no runtime reported: nothing to compare
    assert feed.read("OL CHRG", runtime=149) == ["power_restored"]  # mains re-arms, never fires
    assert feed.read("OB DISCHRG", runtime=140) == ["power_loss", "runtime_low"]
    assert feed.events[-1][1]["clusters"] == [1, 2]


def test_a_new_clusters_need_starts_from_the_current_state() -> None:
    detector = EventDetector()
    feed = Feed(detector)
    feed.read("OL")
    feed.read("OB DISCHRG", runtime=100)
    detector.set_runtime_needs({3: 300.0})  # a rule added while the battery is already short
    assert feed.read("OB DISCHRG", runtime=90) == []


def test_carrying_on_from_a_persisted_state_reports_what_happened_while_mko_was_down() -> None:
    before = EventDetector()
    before.set_runtime_needs({1: 420.0})
    feed = Feed(before)
    feed.read("OL", charge=100, runtime=3000)
    feed.read("OB DISCHRG", charge=80, runtime=900)
    state = before.export_state()
    assert state["status"] == "OB DISCHRG" and state["runtime_armed"] == {"1": True}
    after = EventDetector()
    after.set_runtime_needs({1: 420.0})
    after.restore(state)
    feed = Feed(after)
    feed.at = T0 + timedelta(hours=2)
    assert feed.read("OL CHRG", charge=12) == ["power_restored"]
    assert feed.messages == [
        "mains returned while mko was down (last seen OB DISCHRG at 2026-11-27 12:00:02 UTC)"
    ]
    assert feed.events[0][1]["while_down"] is True
    assert feed.events[0][1]["last_seen"] == {"status": "OB DISCHRG", "at": "2026-11-27T12:00:02+00:00"}
    assert feed.read("OB DISCHRG") == ["power_loss"]
    assert feed.messages[-1] == "on battery: mains power lost"  # only the first reading was "while down"


def test_the_charge_sparkline_keeps_one_sample_per_30_s_for_an_hour() -> None:
    from typing import Any, cast

    from mko.ups.monitor import _Watch
    from mko.web.pages.ups import sparkline_points

    watch = _Watch(target=cast(Any, None), detector=EventDetector(), client=cast(Any, None))
    for second in range(0, 2 * 3600, 5):  # two hours of readings, one every 5 s, draining 100 → 0
        charge = 100 - second / 72
        variables = {"ups.status": "OB", "battery.charge": f"{charge:g}"}
        watch.sample_charge(UpsReading.from_variables(variables, T0 + timedelta(seconds=second)))
    history = list(watch.charges)
    assert len(history) == 121  # the last hour, ends included, every 30 s
    assert (history[-1][0] - history[0][0]).total_seconds() == 3600
    points = sparkline_points(history).split()
    assert points[0] == "0.0,14.9" and points[-1] == "100.0,29.9"  # 50 % an hour ago (mid-height), ~0 % now
    assert sparkline_points(history[:1]) == ""
