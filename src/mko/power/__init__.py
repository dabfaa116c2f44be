"""Power drivers: the driver protocol and the one schedule every driver shares (send, re-send,
verify) in :mod:`mko.power.base`, the registry, settings checks, magic packets and TCP probes, and
one module per driver under :mod:`mko.power.drivers`."""
