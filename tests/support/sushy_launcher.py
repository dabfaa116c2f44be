"""Start sushy-emulator with its fake driver's random 1-11 s power-change delay cut to at most 1 s.

The fake driver applies a power change at ``int(time.time()) + random.randint(1, 11)``; returning 1
keeps a short, real delay (the change shows up on a later read, so the driver base must re-query)
without making tests wait up to 11 s. With ``SUSHY_RESET_LOG`` set, every reset the emulated system
receives is appended to that file as ``<system id> <ResetType>``. With ``SUSHY_POWER_RESTORE_POLICY``
set (``AlwaysOn``, ``LastState``, ``AlwaysOff``), a system's GET answers carry that
``PowerRestorePolicy``, as a BMC exposing the BIOS's "power on after AC loss" does (sushy-tools 2.2's
ComputerSystem template has no such property).
"""

import os
import sys

from sushy_tools.emulator.resources.systems import fakedriver

fakedriver.random.randint = lambda _low, _high: 1

_reset_log = os.environ.get("SUSHY_RESET_LOG")
_set_power_state = fakedriver.FakeDriver.set_power_state


def _recording_set_power_state(self, identity, state):
    if _reset_log:
        with open(_reset_log, "a", encoding="utf-8") as log:
            log.write(f"{identity} {state}\n")
    return _set_power_state(self, identity, state)


fakedriver.FakeDriver.set_power_state = _recording_set_power_state

import json  # noqa: E402

from sushy_tools.emulator import main  # noqa: E402

_policy = os.environ.get("SUSHY_POWER_RESTORE_POLICY")
if _policy:

    @main.app.after_request
    def _restore_policy(response):  # type: ignore[no-untyped-def]
        from flask import request

        parts = request.path.rstrip("/").split("/")
        if request.method == "GET" and len(parts) == 5 and parts[:4] == ["", "redfish", "v1", "Systems"]:
            body = json.loads(response.get_data())
            body["PowerRestorePolicy"] = _policy
            response.set_data(json.dumps(body))
        return response


sys.exit(main.main())
