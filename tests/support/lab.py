"""Integration fixtures: a virtual LAN of network namespaces whose nodes record magic packets and boot.

``lab``          a started 3-node :class:`mko.lab.RunningLab` (n1-n3 at 10.213.0.11-13, orch at .1); every
                 node records magic packets and "boots" (opens TCP 2222) 0.3 s after one for its MAC.
``unique_prefix`` a function returning fresh lab prefixes, for tests that drive :class:`mko.lab.Lab` directly.
``lab_factory``  ``lab_factory(nodes=3, **RunningLab.start kwargs)`` for other shapes, e.g.
                 ``lab_factory([NodeSpec(), NodeSpec(wakeable=False)])``; all are torn down after the test.

Teardown fails the test if a namespace or a lab thread outlives it. Without root or iproute2 the tests
fail (never skip): a skipped test would hide a missing peer.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mko.lab.harness import RunningLab
from mko.lab.netns import NodeSpec, list_netns

LabFactory = Callable[..., RunningLab]

_HERE = Path(__file__).parent
_serial = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory as an integration test."""
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


def _unique_prefix() -> str:
    # pid-based so parallel test processes never share namespaces; short because names derive from it.
    return f"mkt{os.getpid() % 10000}x{next(_serial)}"


@pytest.fixture(scope="session")
def netns_privileges() -> None:
    """Fail (not skip) when this machine cannot build network namespaces."""
    if os.geteuid() != 0:
        pytest.fail("integration tests build network namespaces and must run as root (see TESTING.md)")
    if shutil.which("ip") is None:
        pytest.fail("integration tests need iproute2's 'ip' command: apt-get install -y iproute2")


@pytest.fixture
def unique_prefix(netns_privileges: None) -> Callable[[], str]:
    """Return a function giving lab prefixes no other test (or test process) uses."""
    return _unique_prefix


@pytest.fixture
def lab_factory(netns_privileges: None) -> Iterator[LabFactory]:
    """Build running labs on demand; destroy them all at teardown and check nothing leaked."""
    started: list[RunningLab] = []

    def make(nodes: Sequence[NodeSpec] | int = 3, **kwargs: Any) -> RunningLab:
        running = RunningLab.start(_unique_prefix(), nodes, **kwargs)
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
