"""NUT's primary role: ask the UPS to cut its load and give it back when mains returns.

At the end of a shutdown for a UPS (every node confirmed off), mko does what a primary ``upsmon`` does
with ``upsdrvctl shutdown``, over the network: it reads the UPS now and, unless mains has already
returned, sends one instant command that switches the output off after the UPS's own shutdown delay
and on again once mains is back, so every machine set to "power on after AC loss" (mko's own host
first) boots by itself::

    GET status, delays     ->  on line?  -> skip: mains is back, the cluster is restored instead
    LIST CMD ups           ->  shutdown.return listed?             INSTCMD ups shutdown.return
                               else load.on.delay + load.off.delay  INSTCMD ups load.on.delay <start>
                                                                    INSTCMD ups load.off.delay <shutdown>
                               else                              -> refuse: nothing is sent

``load.on.delay`` goes first with a longer delay than ``load.off.delay`` (as NUT's usbhid-ups does for
``shutdown.return``), so the output comes back after it went off. Every answer of upsd is recorded.
The upsd user needs ``instcmds`` for these commands in upsd.users (docs/ups.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mko.platform.db.models.base import utcnow
from mko.platform.errors import NutError, NutResponseError
from mko.ups.service import UpsTarget
from mko.ups.status import PowerSource, UpsReading, parse_number

__all__ = ["DEFAULT_OFFDELAY", "DEFAULT_ONDELAY", "PowerCycle", "power_cycle"]

# Used when the UPS does not publish ups.delay.shutdown / ups.delay.start (NUT's usbhid-ups defaults).
DEFAULT_OFFDELAY = 20
DEFAULT_ONDELAY = 30


@dataclass
class PowerCycle:
    """What mko asked of the UPS and what it answered; ``sent`` only when upsd accepted every command."""

    outcome: str  # sent | skipped | refused | failed
    message: str
    status: str | None = None  # ups.status read just before deciding
    listed: list[str] = field(default_factory=list)  # LIST CMD
    commands: list[dict[str, str]] = field(default_factory=list)  # [{"command", "answer"}]
    delays: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> bool:
        """upsd accepted the power cycle."""
        return self.outcome == "sent"

    def as_dict(self) -> dict[str, Any]:
        """For the outage record and the operation step."""
        return {
            "outcome": self.outcome,
            "message": self.message,
            "status": self.status,
            "listed": self.listed,
            "commands": self.commands,
            "delays": self.delays,
            "at": utcnow().isoformat(),
        }


def _delay(variables: dict[str, str], name: str, default: int) -> int:
    value = parse_number(variables.get(name))
    return int(value) if value is not None and value >= 0 else default


async def power_cycle(target: UpsTarget, timeout: float) -> PowerCycle:
    """Ask the UPS to power-cycle its load, unless mains has returned; never raises for upsd's answers."""
    if target.username is None or target.password is None:
        return PowerCycle(
            "refused",
            f"UPS {target.name} has no upsd user and password: a power cycle needs a user allowed"
            " instcmds (mko ups add … --username --password); nothing sent",
        )
    client = target.client(timeout)
    result = PowerCycle("failed", "")
    attempt = "reading the UPS"
    try:
        variables = await client.list_vars(target.ups_name)
        reading = UpsReading.from_variables(variables, utcnow())
        result.status = reading.status
        if reading.source != PowerSource.BATTERY:
            result.outcome = "skipped"
            result.message = (
                f"mains is back ({reading.status or 'no status'}): not power-cycling;"
                " the cluster is restored instead"
                if reading.source == PowerSource.MAINS
                else f"the UPS does not say it is on battery ({reading.status!r}): nothing sent"
            )
            return result
        result.listed = await client.list_cmds(target.ups_name)
        off = _delay(variables, "ups.delay.shutdown", DEFAULT_OFFDELAY)
        on = _delay(variables, "ups.delay.start", DEFAULT_ONDELAY)
        if "shutdown.return" in result.listed:
            plan: list[tuple[str, str | None]] = [("shutdown.return", None)]
        elif {"load.off.delay", "load.on.delay"} <= set(result.listed):
            on = max(on, off + 10)  # back on only after it went off
            plan = [("load.on.delay", str(on)), ("load.off.delay", str(off))]
        else:
            result.outcome = "refused"
            result.message = (
                f"UPS {target.name} lists neither shutdown.return nor load.off.delay with load.on.delay"
                f" (LIST CMD: {', '.join(result.listed) or 'nothing'}); nothing sent"
            )
            return result
        result.delays = {"shutdown": off, "start": on}
        for command, value in plan:
            attempt = f"INSTCMD {command}"
            answer = await client.instcmd(target.ups_name, command, value)
            result.commands.append({"command": f"{command} {value}" if value else command, "answer": answer})
        result.outcome = "sent"
        result.message = (
            f"INSTCMD {', '.join(c['command'] for c in result.commands)}: upsd answered"
            f" {', '.join(c['answer'] for c in result.commands)}; the output goes off in about {off} s"
            f" and comes back {on} s after mains returns"
        )
    except NutResponseError as exc:
        hint = (
            f"; give user {target.username!r} instcmds for it in upsd.users"
            if exc.code == "ACCESS-DENIED"
            else ""
        )
        result.message = f"{attempt}: ERR {exc.code}{hint}"
    except NutError as exc:
        result.message = f"{attempt}: {exc}; nothing more sent"
    finally:
        await client.logout()
    return result
