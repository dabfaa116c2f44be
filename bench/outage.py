"""Benchmark: from mains returning to every node Ready, with mko up, and with mko's host booting with mains.

For 3 and 20 lab nodes it builds the virtual lab twice (`mko lab up`, real sshd per node, a real upsd
with NUT's clone driver as the UPS output) and plays a long outage on it (`mko lab scenario
long-outage`, in-process): mains fails, the power-loss rule shuts the cluster down in order, mains
returns after the cut. The figure is the time from upsd serving OL to every node Ready and uncordoned
with the outage closed:

* **mko up**: mko is not on the UPS; it sees OL, waits for mains to hold (the restore rule's
  ``--stable-for``), wakes the nodes that were up and recovers them;
* **mko's host boots with mains** (``--orchestrator-on-ups``): the UPS power-cycled its load at the end
  of the shutdown and mko halted its own host; when mains returns the UPS gives its output back after
  its start delay, mko's host boots, finds mains back with the outage open, and restores it.

Lab timings (the lab's defaults): nodes boot 2 s after their magic packet, the restore rule waits for
mains to hold 2 s, the UPS's start delay is 3 s. Needs root. Never fails on time.
Run with ``python bench/outage.py [NODES …]`` (default: 3 20).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = [int(n) for n in sys.argv[1:]] or [3, 20]
MKO = [sys.executable, "-m", "mko", "lab"]


def lab(directory: Path, *args: str) -> str:
    result = subprocess.run(
        [*MKO, *args, "--dir", str(directory)], capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        raise SystemExit(f"mko lab {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def play(nodes: int, on_ups: bool) -> dict[str, float]:
    """One lab, one outage; return the scenario's milestones (seconds since mains failed)."""
    from mko.lab.control import LabControl, LabPaths, lab_settings
    from mko.lab.scenario import LongOutage
    from mko.platform.db.session import make_engine, make_session_factory
    from mko.platform.settings import Settings

    with tempfile.TemporaryDirectory(prefix="mko-bench-outage-") as tmp:
        directory = Path(tmp) / "lab"
        options = ["--nodes", str(nodes), "--control-planes", "3" if nodes >= 10 else "1"]
        options += ["--prefix", "mkobo", "--port", "18481", "--battery-runtime", "0", "--shutdown-delay", "1"]
        if on_ups:
            options.append("--orchestrator-on-ups")
        began = time.monotonic()
        lab(directory, "up", *options)
        where = ", mko on the UPS" if on_ups else ""
        print(f"  lab up ({nodes} nodes{where}): {time.monotonic() - began:.1f} s")
        paths = LabPaths.of(directory)
        engine = make_engine(lab_settings(paths, Settings()).database_url)
        try:
            scenario = LongOutage(
                LabControl(paths),
                make_session_factory(engine),
                lambda line: print(f"    {line}"),
                outage=15 + nodes / 2,  # long enough for the whole shutdown and the UPS's cut
            )
            return scenario.run()
        finally:
            engine.dispose()
            lab(directory, "down")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    figures: dict[tuple[int, bool], dict[str, float]] = {}
    for nodes in SIZES:
        for on_ups in (False, True):
            print(f"== {nodes} nodes, {'mko boots with mains' if on_ups else 'mko up'}")
            figures[(nodes, on_ups)] = play(nodes, on_ups)
    print()
    print("mains back (upsd serves OL) -> every node Ready, uncordoned, outage closed:")
    for (nodes, on_ups), seen in figures.items():
        back = seen["mains returned"]
        total = seen["cluster Ready"] - back
        parts = [
            f"{name} +{seen[key] - back:.1f} s"
            for key, name in (
                ("output on", "UPS output back"),
                ("mko booted", "mko serving"),
                ("wake", "wake started"),
            )
            if key in seen
        ]
        mode = "mko's host boots with mains" if on_ups else "mko up                     "
        print(f"  {nodes:>2} nodes, {mode}: {total:5.1f} s  ({', '.join(parts)})")


if __name__ == "__main__":
    main()
