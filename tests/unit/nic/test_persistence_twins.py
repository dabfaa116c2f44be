"""mko's Wake-on persistence (mko.nic.persistence, over SSH) and the Ansible module's copy of it
(ansible/playbooks/library/mko_wake_on_lan.py, which Ansible copies to the node and so cannot import
mko) make the same choice, say the same thing and leave the node in the same state, backend by backend.

Both run against one scripted node per case: what `systemctl` and `nmcli` answer (their real output
and exit codes, as the lab's stand-ins print them), the files `tee` and the module write, the units
enabled and the connection's wake-on-lan property. The Ansible module checks before it changes
(idempotence), so the commands differ; the outcome must not.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mko.nic import persistence
from mko.ssh.client import CommandResult

ROOT = Path(__file__).resolve().parents[3]
CONNECTION = "Wired connection 1"


def _ansible_module() -> ModuleType:
    path = ROOT / "ansible/playbooks/library/mko_wake_on_lan.py"
    spec = importlib.util.spec_from_file_location("mko_wake_on_lan_twin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ScriptedNode:
    """A node's systemd and NetworkManager as the persistence code sees them."""

    def __init__(self, active: set[str], *, systemd: bool = True, nm_device: str = "100 (connected)") -> None:
        self.active = active
        self.systemd = systemd
        self.nm_device = nm_device
        self.nm_wake_on_lan = "default"
        self.files: dict[str, str] = {}
        self.enabled: set[str] = set()

    def run(self, argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:  # noqa: PLR0911
        """Exit code, stdout and stderr of one command, as the real tools (or a shell without them) answer."""
        if argv[0] == "systemctl" and not self.systemd:
            return 127, "", "bash: line 1: systemctl: command not found\n"
        match argv:
            case ["systemctl", "is-active", unit]:
                return (0, "active\n", "") if unit in self.active else (3, "inactive\n", "")
            case ["systemctl", "daemon-reload"]:
                return 0, "", ""
            case ["systemctl", "enable", unit]:
                self.enabled.add(unit)
                return 0, "", f"Created symlink /etc/systemd/system/multi-user.target.wants/{unit}.\n"
            case ["systemctl", "is-enabled", unit]:
                return (0, "enabled\n", "") if unit in self.enabled else (1, "disabled\n", "")
            case ["nmcli", "-t", "-f", "GENERAL.STATE,GENERAL.CONNECTION", "device", "show", _]:
                connection = "" if "unmanaged" in self.nm_device else CONNECTION
                return 0, f"GENERAL.STATE:{self.nm_device}\nGENERAL.CONNECTION:{connection}\n", ""
            case ["nmcli", "-g", "802-3-ethernet.wake-on-lan", "connection", "show", name] if (
                name == CONNECTION
            ):
                return 0, self.nm_wake_on_lan + "\n", ""
            case ["nmcli", "connection", "modify", name, "802-3-ethernet.wake-on-lan", value] if (
                name == CONNECTION
            ):
                self.nm_wake_on_lan = value
                return 0, "", ""
            case ["tee", path]:
                self.files[path] = stdin or ""
                return 0, stdin or "", ""
        raise AssertionError(f"the scripted node does not know {argv}")

    def outcome(self) -> dict[str, Any]:
        return {"files": self.files, "enabled": self.enabled, "wake-on-lan": self.nm_wake_on_lan}


class _Session:
    """mko's side: an SshSession whose commands the scripted node answers."""

    def __init__(self, node: ScriptedNode) -> None:
        self.node = node

    async def run(self, argv: list[str], *, sudo: bool = False, input: str | None = None) -> CommandResult:
        code, out, err = self.node.run(list(argv), input)
        return CommandResult(tuple(argv), code, out, err, 0.0)


class _Failed(Exception):
    pass


class _AnsibleModule:
    """The Ansible side: AnsibleModule.run_command as ansible-core runs it, over the scripted node."""

    check_mode = False

    def __init__(self, node: ScriptedNode) -> None:
        self.node = node

    def run_command(self, argv: list[str], handle_exceptions: bool = True) -> tuple[int, str, str]:
        code, out, err = self.node.run(list(argv))
        if code == 127:  # no such executable: ansible-core raises FileNotFoundError from the spawn
            if handle_exceptions:
                self.fail_json(msg="Error executing command.", rc=2)
            raise FileNotFoundError(2, "No such file or directory", argv[0])
        return code, out, err

    def fail_json(self, **result: Any) -> None:
        raise _Failed(result)


def _mko(node: ScriptedNode, enable: bool) -> tuple[str, str]:
    session: Any = _Session(node)
    method, description, _ = asyncio.run(persistence.persist(session, "eno1", "3c:ec:ef:00:11:22", enable))
    return method, description


def _ansible(node: ScriptedNode, enable: bool) -> tuple[str, str, bool]:
    module = _ansible_module()

    class Node(module.Node):  # type: ignore[name-defined,misc]
        def write(self, path: str, text: str) -> bool:  # the module writes files itself, not with tee
            changed: bool = node.files.get(path) != text
            node.files[path] = text
            return changed

    method, description, changed = module.persist(
        Node(_AnsibleModule(node)), "eno1", "3c:ec:ef:00:11:22", enable
    )
    return method, description, changed


CASES = {
    "NetworkManager": {"active": {"NetworkManager", "systemd-networkd"}},
    "NetworkManager, card unmanaged": {
        "active": {"NetworkManager", "systemd-networkd"},
        "nm_device": "10 (unmanaged)",
    },
    "systemd-networkd": {"active": {"systemd-networkd"}},
    "systemd, no networkd": {"active": set()},
    "no systemd": {"active": set(), "systemd": False},
}


@pytest.mark.parametrize("enable", [True, False], ids=["enable", "disable"])
@pytest.mark.parametrize("case", CASES)
def test_mko_and_the_ansible_module_persist_wake_on_alike(case: str, enable: bool) -> None:
    mko_node, ansible_node = ScriptedNode(**CASES[case]), ScriptedNode(**CASES[case])
    method, description, changed = _ansible(ansible_node, enable)
    assert (method, description) == _mko(mko_node, enable)
    assert ansible_node.outcome() == mko_node.outcome()
    assert changed == (method != "none")
    # A second run of the module finds nothing left to change.
    assert _ansible(ansible_node, enable)[2] is False


def test_every_backend_is_covered() -> None:
    methods = {_mko(ScriptedNode(**spec), True)[0] for spec in CASES.values()}
    assert methods == {"NetworkManager", "systemd-networkd", "systemd-unit", "none"}


def test_persistence_files_are_the_same_from_mko_and_from_the_playbook() -> None:
    module = _ansible_module()
    for enable in (True, False):
        assert module.link_file("3c:ec:ef:00:11:22", enable) == persistence.link_file(
            "3c:ec:ef:00:11:22", enable
        )
        assert module.oneshot_unit("eno1", enable) == persistence.oneshot_unit("eno1", enable)
    assert "WakeOnLan=magic" in persistence.link_file("3c:ec:ef:00:11:22", True)
    assert "WakeOnLan=off" in persistence.link_file("3c:ec:ef:00:11:22", False)
    assert "ExecStart=/usr/sbin/ethtool -s eno1 wol g\n" in persistence.oneshot_unit("eno1", True)
    assert "ExecStart=/usr/sbin/ethtool -s eno1 wol d\n" in persistence.oneshot_unit("eno1", False)
