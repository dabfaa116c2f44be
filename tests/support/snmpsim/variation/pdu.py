"""snmpsim variation module: a switched PDU whose outlets are shared between the vendor's writable
command OIDs and read-only state OIDs, like the real units (APC rPDU/rPDU2/MasterSwitch, Eaton, Raritan).

Record syntax in a .snmprec file: ``OID|2:pdu|ROLE``; the outlet number is the OID's last sub-identifier.
A reboot (cycle) reads off for ``reboot`` seconds, then on. Options:
``--variation-module-options=pdu:reboot=1,initial=on``. snmpsim injects ``moduleContext`` (per module)
and ``agentContext`` (per data file, i.e. per PDU) as globals of this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pyasn1.type import univ
from pysnmp.proto import rfc1902
from pysnmp.smi import error

moduleContext: dict[str, Any] = {}
agentContext: dict[str, Any] = {}

ON, OFF, CYCLE, KEEP = "on", "off", "cycle", "keep"
Writer = Callable[[int], str | None]


def _apc_cmd_write(v: int) -> str | None:  # rPDUOutletControlOutletCommand 1 on 2 off 3 reboot, 4-7 keep
    return {1: ON, 2: OFF, 3: CYCLE, 4: KEEP, 5: KEEP, 6: KEEP, 7: KEEP}.get(v)


def _apc2_cmd_write(v: int) -> str | None:  # rPDU2OutletSwitchedControlCommand 1/2/3, 5-8 delayed/cancel
    return {1: ON, 2: OFF, 3: CYCLE, 5: KEEP, 6: KEEP, 7: KEEP, 8: KEEP}.get(v)


def _spdu_write(v: int) -> str | None:  # sPDUOutletCtl 1 on, 2 off, 3 reboot, 5-7 with delay
    return {1: ON, 2: OFF, 3: CYCLE, 5: KEEP, 6: KEEP, 7: KEEP}.get(v)


def _eaton(action: str) -> Writer:  # outletControl{Off,On,Reboot}Cmd: 0 now, n>0 delay (kept), -1 cancel
    return lambda v: action if v == 0 else (KEEP if -1 <= v <= 99999 else None)


def _raritan_write(v: int) -> str | None:  # switchingOperation off(0) on(1) cycle(2)
    return {0: OFF, 1: ON, 2: CYCLE}.get(v)


ROLES: dict[str, tuple[Callable[[bool], int], Writer | None]] = {
    "apc_rpdu_cmd": (lambda on: 1 if on else 2, _apc_cmd_write),
    "apc_rpdu_state": (lambda on: 1 if on else 2, None),
    "apc_rpdu2_cmd": (lambda on: 1 if on else 2, _apc2_cmd_write),
    "apc_rpdu2_state": (lambda on: 2 if on else 1, None),  # off(1) on(2): inverted, as on the real units
    "apc_spdu_ctl": (lambda on: 1 if on else 2, _spdu_write),
    "eaton_status": (lambda on: 1 if on else 0, None),
    "eaton_off": (lambda on: -1, _eaton(OFF)),
    "eaton_on": (lambda on: -1, _eaton(ON)),
    "eaton_reboot": (lambda on: -1, _eaton(CYCLE)),
    "raritan_op": (lambda on: 1 if on else 0, _raritan_write),
    "raritan_state": (lambda on: 7 if on else 8, None),  # SensorStateEnumeration on(7) off(8)
}


def init(**context: Any) -> None:
    options = dict(x.split("=", 1) for x in (context["options"] or "").split(",") if "=" in x)
    moduleContext["reboot"] = float(options.get("reboot", "2"))
    moduleContext["initial"] = options.get("initial", "on") == "on"


def _outlet(n: int) -> list[Any]:
    outlet: list[Any] = agentContext.setdefault("outlets", {}).setdefault(n, [moduleContext["initial"], None])
    if outlet[1] is not None and time.monotonic() >= outlet[1]:
        outlet[:] = [True, None]  # the reboot's off period is over
    return outlet


def variate(oid: Any, tag: Any, value: Any, **context: Any) -> tuple[Any, Any, Any]:
    if not context["nextFlag"] and not context["exactMatch"]:
        return context["origOid"], tag, context["errorStatus"]
    read, write = ROLES[value.strip()]
    outlet = _outlet(int(oid[-1]))
    if context["setFlag"]:
        idx = max(0, context["varsTotal"] - context["varsRemaining"] - 1)
        if write is None:
            raise error.NotWritableError(name=oid, idx=idx)
        new = context["origValue"]
        if not isinstance(new, univ.Integer):
            raise error.WrongTypeError(name=oid, idx=idx)
        action = write(int(new))
        if action is None:
            raise error.WrongValueError(name=oid, idx=idx)
        if action == ON:
            outlet[:] = [True, None]
        elif action == OFF:
            outlet[:] = [False, None]
        elif action == CYCLE:
            outlet[:] = [False, time.monotonic() + moduleContext["reboot"]]
        agentContext.setdefault("log", []).append((str(oid), int(new)))
        return oid, tag, new
    return oid, tag, rfc1902.Integer32(read(outlet[0]))


def shutdown(**context: Any) -> None:
    return None
