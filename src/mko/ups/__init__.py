"""UPSes over NUT: the protocol client, status tokens, the edge-triggered detector, the UPS service,
the power-cycle command, and the monitor (the one coordinator that reads UPSes and acts on events)."""
