"""UPS status as NUT reports it: ``ups.status`` is a SET of tokens, never a string to compare whole.

``"OL CHRG"`` is on line and charging, ``"OB DISCHRG LB"`` on battery and low; tokens come in any order,
new drivers add new ones, and some readings carry neither OL nor OB (``WAIT`` while upsd starts, ``OFF``).
Code asks questions of the token set (``"OB" in reading.tokens``) and tolerates tokens it does not know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "TOKEN_WORDS",
    "PowerSource",
    "UpsReading",
    "describe_tokens",
    "parse_number",
    "parse_status",
]

# The tokens of NUT's ups.status (docs/developer-guide "Status data"), in words.
TOKEN_WORDS: dict[str, str] = {
    "OL": "on line",
    "OB": "on battery",
    "LB": "low battery",
    "HB": "high battery",
    "RB": "replace battery",
    "CHRG": "charging",
    "DISCHRG": "discharging",
    "BYPASS": "on bypass",
    "CAL": "calibrating",
    "OFF": "off",
    "OVER": "overloaded",
    "TRIM": "trimming voltage",
    "BOOST": "boosting voltage",
    "FSD": "forced shutdown",
    "ALARM": "alarm",
    "TEST": "testing",
    "WAIT": "waiting for the driver's data",
    "ECO": "eco mode",
}


class PowerSource:
    """What feeds the load, as far as the tokens say."""

    MAINS = "mains"
    BATTERY = "battery"
    UNKNOWN = "unknown"


def parse_status(value: str | None) -> frozenset[str]:
    """The set of tokens in an ``ups.status`` value (upper-cased; empty for None)."""
    if not value:
        return frozenset()
    return frozenset(token.upper() for token in value.split())


def describe_tokens(tokens: frozenset[str] | set[str]) -> list[str]:
    """Tokens in words, the known ones in NUT's order first, unknown ones as they came."""
    known = [TOKEN_WORDS[token] for token in TOKEN_WORDS if token in tokens]
    unknown = [f"unknown status {token!r}" for token in sorted(tokens) if token not in TOKEN_WORDS]
    return known + unknown


def parse_number(value: str | None) -> float | None:
    """A numeric NUT variable, or None when absent or not a number."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class UpsReading:
    """One successful read of a UPS: its tokens and the figures people look at."""

    at: datetime
    status: str
    tokens: frozenset[str]
    variables: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_variables(cls, variables: dict[str, str], at: datetime) -> UpsReading:
        """Build a reading from ``LIST VAR`` output."""
        status = variables.get("ups.status", "")
        return cls(at=at, status=" ".join(status.split()), tokens=parse_status(status), variables=variables)

    @property
    def source(self) -> str:
        """Mains or battery; unknown when the tokens carry neither OL nor OB (WAIT, OFF, empty)."""
        # NOTE: a UPS reporting both OL and OB is mid-transfer; on battery is the safe reading.
        if "OB" in self.tokens:
            return PowerSource.BATTERY
        if "OL" in self.tokens:
            return PowerSource.MAINS
        return PowerSource.UNKNOWN

    @property
    def charge(self) -> float | None:
        """battery.charge in percent."""
        return parse_number(self.variables.get("battery.charge"))

    @property
    def runtime(self) -> float | None:
        """battery.runtime in seconds."""
        return parse_number(self.variables.get("battery.runtime"))

    @property
    def load(self) -> float | None:
        """ups.load in percent."""
        return parse_number(self.variables.get("ups.load"))

    @property
    def input_voltage(self) -> float | None:
        """input.voltage in volts."""
        return parse_number(self.variables.get("input.voltage"))

    def summary(self) -> dict[str, Any]:
        """The figures shown by ``ups status``, JSON-ready."""
        return {
            "status": self.status,
            "tokens": sorted(self.tokens),
            "status_words": describe_tokens(self.tokens),
            "on_battery": self.source == PowerSource.BATTERY,
            "battery_charge": self.charge,
            "battery_runtime": self.runtime,
            "ups_load": self.load,
            "input_voltage": self.input_voltage,
            "last_update": self.at.isoformat(),
        }
