"""Waking nodes and clusters by each node's power method (the seed calls every wake "wol"): the wake
service, WoL status, one node's on/off/status, and reachability from the refresher's cache."""
