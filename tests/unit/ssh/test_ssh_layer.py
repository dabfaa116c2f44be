"""The SSH layer's pieces that need no server: known_hosts edits, quoting, targets, the error tree.

Connections, host-key checks and commands against real sshd are in tests/integration/nic/test_nic_lab.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import asyncssh
import pytest

from mko.platform.errors import (
    FatalPowerError,
    HostKeyChangedError,
    HostKeyUnknownError,
    PowerError,
    RetryablePowerError,
    SshUnreachableError,
)
from mko.platform.settings import Settings
from mko.ssh.client import CommandResult, SshSession, SshTarget
from mko.ssh.known_hosts import KnownHosts, fingerprint, known_hosts_name

TARGET = SshTarget(3, "worker-1", "10.0.0.5", 2222, "ubuntu", None)


def _key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def test_known_hosts_names_follow_openssh() -> None:
    assert known_hosts_name("10.0.0.5", 22) == "10.0.0.5"
    assert known_hosts_name("10.0.0.5", 2222) == "[10.0.0.5]:2222"


def test_trust_appends_and_replace_removes_only_that_host(tmp_path: Path) -> None:
    path = tmp_path / "data" / "known_hosts"
    known = KnownHosts(path)
    assert known.keys_for("10.0.0.5", 2222) == []
    first, second, other = _key(), _key(), _key()
    known.trust("10.0.0.5", 2222, first, replace=False)
    assert [fingerprint(k) for k in known.keys_for("10.0.0.5", 2222)] == [fingerprint(first)]
    other_line = f"@cert-authority *.example.org {other.export_public_key().decode().strip()}"
    shared = f"[10.0.0.5]:2222,backup {other.export_public_key().decode().strip()}"
    path.write_text(path.read_text() + "# kept comment\n" + other_line + "\n" + shared + "\n")
    known.trust("10.0.0.5", 2222, second, replace=True)
    lines = path.read_text().splitlines()
    assert lines[0] == "# kept comment" and lines[1] == other_line
    assert lines[2] == f"backup {other.export_public_key().decode().strip()}"
    assert lines[3].startswith("[10.0.0.5]:2222 ssh-ed25519 ")
    assert [fingerprint(k) for k in known.keys_for("10.0.0.5", 2222)] == [fingerprint(second)]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_commands_are_quoted_for_the_remote_shell() -> None:
    argv = (
        "nmcli",
        "connection",
        "modify",
        "Wired 1; rm -rf / $(id) `id`",
        "802-3-ethernet.wake-on-lan",
        "magic",
    )
    result = CommandResult(argv, 0, "", "", 0.1)
    assert result.command == (
        "nmcli connection modify 'Wired 1; rm -rf / $(id) `id`' 802-3-ethernet.wake-on-lan magic"
    )
    session = SshSession(TARGET, Settings(), connection=None)  # type: ignore[arg-type]
    assert session._argv(["ethtool", "eth0"], sudo=True) == ("sudo", "-n", "--", "ethtool", "eth0")
    assert session._argv(["ip", "-j", "link"], sudo=False) == ("ip", "-j", "link")
    root = SshSession(SshTarget(1, "n", "10.0.0.1", user="root"), Settings(), connection=None)  # type: ignore[arg-type]
    assert root._argv(["ethtool", "eth0"], sudo=True) == ("ethtool", "eth0")
    with pytest.raises(ValueError, match="empty command"):
        session._argv([], sudo=False)


def test_targets_from_nodes_use_the_default_key_only_when_the_node_has_none() -> None:
    node = SimpleNamespace(
        id=7, hostname="cp-1", ip_address="10.0.0.7", ssh_port=22, ssh_user="ubuntu", ssh_key_path=None
    )
    settings = Settings(ssh_default_key=Path("/etc/mko/id_ed25519"))
    assert SshTarget.of(node, settings).key_path == "/etc/mko/id_ed25519"
    assert SshTarget.of(node, Settings()).key_path is None
    node.ssh_key_path = "/home/ops/.ssh/cluster"
    target = SshTarget.of(node, settings)
    assert (target.key_path, target.label, target.address) == (
        "/home/ops/.ssh/cluster",
        "node 7 (cp-1)",
        "10.0.0.7:22",
    )


def test_error_tree_and_messages() -> None:
    unreachable = SshUnreachableError(TARGET, "cannot connect to 10.0.0.5:2222: refused")
    assert isinstance(unreachable, RetryablePowerError) and not isinstance(unreachable, FatalPowerError)
    changed = HostKeyChangedError(TARGET, ["ssh-ed25519 SHA256:old"], "ssh-ed25519 SHA256:new")
    assert isinstance(changed, FatalPowerError) and isinstance(changed, PowerError)
    assert str(changed) == (
        "node 3 (worker-1): HOST KEY CHANGED for 10.0.0.5:2222: known ssh-ed25519 SHA256:old, presented "
        "ssh-ed25519 SHA256:new; nothing was run. If the node was reinstalled, check the new key on its "
        "console and run `mko node trust 3 --replace`"
    )
    unknown = HostKeyUnknownError(TARGET, "ssh-ed25519 SHA256:abc")
    assert "not trusted yet (it presents ssh-ed25519 SHA256:abc)" in str(unknown)
    assert "`mko node trust 3`" in str(unknown)
