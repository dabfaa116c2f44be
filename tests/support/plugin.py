"""What every test process shares: markers, cheap password hashing, and the order of the tests.

* Tests under tests/integration/ are marked ``integration`` (so ``-m "not integration"`` runs the rest).
* A short base directory for ``tmp_path`` (``/tmp/mkt-XXXXXXXX``, removed after a run without failures;
  kept, and named at the end, after one with failures): the Unix sockets the peers make under it
  (dummy-ups, upsd, ssh, the lab daemon) must fit in 108 bytes, and pytest's default
  ``/tmp/pytest-of-root/pytest-N/`` plus xdist's ``popen-gwN/`` does not leave room for them.
* Password hashing is set cheap (argon2 with t=1, 8 KiB, p=1) for this process and every process it
  starts, through the ``MKO_PASSWORD_HASH_*`` settings: a hash records its own parameters, so logins
  verify exactly as they would with production's, only without spending ~0.3 s of CPU per hash.
  A test of the production defaults reads ``Settings.model_fields`` or clears the variables.
* Longest first: the tests are ordered by their duration in tests/support/durations.json, longest
  first (tests not listed there count as the median), so that pytest-xdist's workers start the
  minute-long lab tests at once instead of finding them last. Tests of one ``xdist_group`` stay
  together, in file order, and count as their sum: the group runs on one worker, one test after the
  other, sharing its module's fixtures. ``make test-durations`` refreshes the file. The worker tags a
  grouped test's id with ``@group`` itself (pytest-xdist 3.8's own tag is lost on pytest 9.2).
* Tests marked ``serial`` measure latency: the Makefile runs them in a second pytest run of their own,
  after the parallel one (``-m "not serial"``), so no other test of the suite competes with them.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
_INTEGRATION = _TESTS / "integration"
DURATIONS = Path(__file__).with_name("durations.json")

# Cheap argon2 for tests (production defaults: Settings.password_hash_*; see docs/configuration.md).
CHEAP_PASSWORD_HASHING = {
    "MKO_PASSWORD_HASH_TIME_COST": "1",
    "MKO_PASSWORD_HASH_MEMORY_COST": "8",
    "MKO_PASSWORD_HASH_PARALLELISM": "1",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help="write every test's duration (set-up + call + tear-down) to tests/support/durations.json",
    )


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path factory reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(CHEAP_PASSWORD_HASHING)
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        # xdist's workers get <this>/popen-gwN from the controller.
        config.option.basetemp = tempfile.mkdtemp(prefix="mkt-")
        config.stash[_own_basetemp] = Path(config.option.basetemp)


_own_basetemp = pytest.StashKey[Path]()


def pytest_unconfigure(config: pytest.Config) -> None:
    basetemp = config.stash.get(_own_basetemp, None)
    if basetemp is not None and config.stash.get(_failed, True) is False:
        shutil.rmtree(basetemp, ignore_errors=True)


_failed = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    config = terminalreporter.config
    config.stash[_failed] = exitstatus not in (0, 5)
    basetemp = config.stash.get(_own_basetemp, None)
    if basetemp is not None and config.stash[_failed]:
        terminalreporter.write_line(f"the failed tests' files are kept in {basetemp}")


def _group(item: pytest.Item) -> str:
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return item.nodeid
    return str(marker.args[0] if marker.args else marker.kwargs.get("name", "default"))


def _tag_group(item: pytest.Item, group: str) -> None:
    """Add ``@group`` to a grouped test's id, which is how ``--dist loadgroup`` knows the group.

    pytest-xdist 3.8 does it by setting ``item._nodeid``, which pytest 9.2 no longer reads (the id is
    ``item._id`` now): without this, the scheduler spreads a group's tests over every worker, and a
    test that relies on its module's shared peer (one upsd, one Chromium at a time) meets a fresh one.
    """
    tagged = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):
        item._id = type(item._id).parse(tagged)
    else:
        item._nodeid = tagged  # type: ignore[attr-defined]
    assert item.nodeid == tagged


def _untagged(nodeid: str) -> str:
    """The test's id without the ``@group`` an xdist worker adds (xdist's own rule for spotting it)."""
    return nodeid[: nodeid.rfind("@")] if nodeid.rfind("@") > nodeid.rfind("]") else nodeid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_INTEGRATION):
            item.add_marker(pytest.mark.integration)
    known: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    default = statistics.median(known.values()) if known else 0.0
    groups: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        groups[_group(item)].append(item)
    total = {name: sum(known.get(i.nodeid, default) for i in members) for name, members in groups.items()}
    # sorted() is stable: equal durations keep the collection order, identical on every xdist worker.
    ordered = sorted(groups, key=lambda name: -total[name])
    items[:] = [item for name in ordered for item in groups[name]]
    if hasattr(config, "workerinput") and config.getvalue("loadgroup"):
        for item in items:
            group = _group(item)
            if group != item.nodeid and not item.nodeid.endswith(f"@{group}"):
                _tag_group(item, group)


_measured: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _measured[_untagged(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("store_durations") or hasattr(config, "workerinput"):
        return  # only the process that saw every report (xdist's controller, or a serial run) writes
    if not _measured:
        return
    stored: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    stored.update({nodeid: round(seconds, 2) for nodeid, seconds in _measured.items()})
    DURATIONS.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")
