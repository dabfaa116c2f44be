"""UPS monitoring over NUT: the protocol client, status tokens, event detection, the monitor.

* :mod:`mko.ups.nut`      a small asyncio client of upsd's line protocol (why not aionut: see there)
* :mod:`mko.ups.status`   ``ups.status`` as a set of tokens, in words
* :mod:`mko.ups.events`   edge-triggered events per UPS (power_loss, power_restored, low_battery, …)
* :mod:`mko.ups.service`  UPS inventory, the event log, one-off status reads
* :mod:`mko.ups.monitor`  the coordinator: polls every UPS, stores events, runs :mod:`mko.rules`
"""

from mko.ups.events import CommFailure, CommState, DetectedEvent, EventDetector
from mko.ups.nut import NutClient, NutConnectionError, NutError, NutProtocolError, NutResponseError
from mko.ups.status import UpsReading, describe_tokens, parse_status

__all__ = [
    "CommFailure",
    "CommState",
    "DetectedEvent",
    "EventDetector",
    "NutClient",
    "NutConnectionError",
    "NutError",
    "NutProtocolError",
    "NutResponseError",
    "UpsReading",
    "describe_tokens",
    "parse_status",
]
