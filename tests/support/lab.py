"""Lab fixtures: a virtual LAN of network namespaces whose nodes record magic packets and boot.

``lab``          a started 3-node :class:`mko.lab.RunningLab` (n1-n3 at 10.213.0.11-13, orch at .1); every
                 node records magic packets and "boots" (opens TCP 2222) 0.3 s after one for its MAC.
``unique_prefix`` a function returning fresh lab prefixes, for tests that drive :class:`mko.lab.Lab` directly.
``lab_factory``  ``lab_factory(nodes=3, **RunningLab.start kwargs)`` for other shapes, e.g.
                 ``lab_factory([NodeSpec(), NodeSpec(wakeable=False)])``; all are torn down after the test.
``isolated_netns`` a namespace with nothing but loopback, for a module whose server must reach no LAN.

Teardown fails the test if a namespace or a lab thread outlives it. Without root or iproute2 the tests
fail (never skip): a skipped test would hide a missing peer.

Names are unique per process (:func:`new_prefix`), so parallel test workers (pytest-xdist) and other
test runs on the same machine never share a namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from mko.lab.harness import RunningLab
from mko.lab.netns import NodeSpec, list_netns

__all__ = ["LabFactory", "new_prefix", "require_netns"]

LabFactory = Callable[..., RunningLab]

_serial = itertools.count()
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = _DIGITS[rest] + digits
        if not number:
            return digits


def new_prefix(kind: str = "t") -> str:
    """A lab prefix no other live process uses: ``mk`` + ``kind`` + this pid + a serial, in base 36.

    The whole pid (not pid % 10000) keeps two live processes apart; base 36 keeps the prefix within
    the lab's 12 characters (a pid of 4194304 is 5 digits, 1,296 labs per process take 2 more).
    """
    return f"mk{kind}{_base36(os.getpid())}x{_base36(next(_serial))}"


def require_netns() -> None:
    """Fail (not skip) when this machine cannot build network namespaces."""
    if os.geteuid() != 0:
        pytest.fail("lab tests build network namespaces and must run as root (see docs/lab.md)")
    if shutil.which("ip") is None:
        pytest.fail("lab tests need iproute2's 'ip' command: apt-get install -y iproute2")


@pytest.fixture(scope="session")
def netns_privileges() -> None:
    """Fail (not skip) when this machine cannot build network namespaces."""
    require_netns()


@pytest.fixture
def unique_prefix(netns_privileges: None) -> Callable[[], str]:
    """Return a function giving lab prefixes no other test (or test process) uses."""
    return new_prefix


@pytest.fixture
def lab_factory(netns_privileges: None) -> Iterator[LabFactory]:
    """Build running labs on demand; destroy them all at teardown and check nothing leaked."""
    started: list[RunningLab] = []

    def make(nodes: Sequence[NodeSpec] | int = 3, **kwargs: Any) -> RunningLab:
        running = RunningLab.start(new_prefix(), nodes, **kwargs)
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        running.close()
    leftovers = [ns for running in started for ns in running.lab.namespaces if ns in list_netns()]
    threads = [t.name for t in threading.enumerate() if t.name.startswith("mko-lab-")]
    assert not leftovers, f"lab namespaces left behind: {leftovers}"
    assert not threads, f"lab threads left behind: {threads}"


@pytest.fixture
def lab(lab_factory: LabFactory) -> RunningLab:
    """A started 3-node lab (building one takes well under a second, so one per test)."""
    return lab_factory(3)


@pytest.fixture(scope="module")
def isolated_netns(netns_privileges: None) -> Iterator[str]:
    """A network namespace with nothing but loopback: whatever runs there cannot reach a real LAN."""
    name = new_prefix("f")
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    pids = subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", name], check=False)
