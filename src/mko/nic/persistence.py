"""Keeping Wake-on enabled across reboots: a systemd .link file, a oneshot unit or the
NetworkManager connection, whichever the node uses."""

from __future__ import annotations

from typing import Any

from mko.nic.ethtool import ETHTOOL
from mko.platform.errors import NicError
from mko.ssh.client import SshSession

__all__ = ["link_file", "oneshot_unit"]


def link_file(mac: str, enable: bool) -> str:
    """Return the systemd .link file that sets Wake-on-LAN of the card with MAC at every boot."""
    return (
        "# Written by mko (wol enable/disable): Wake-on-LAN of the network card with this MAC.\n"
        "# Only the first matching .link file applies, so the default naming policy is repeated.\n"
        "[Match]\n"
        f"MACAddress={mac}\n"
        "\n"
        "[Link]\n"
        "NamePolicy=keep kernel database onboard slot path\n"
        "AlternativeNamesPolicy=database onboard slot path\n"
        "MACAddressPolicy=persistent\n"
        f"WakeOnLan={'magic' if enable else 'off'}\n"
    )


def oneshot_unit(interface: str, enable: bool) -> str:
    """Return the oneshot unit that runs ``ethtool -s IFACE wol g|d`` at every boot."""
    device = f"sys-subsystem-net-devices-{interface}.device"
    return (
        "# Written by mko (wol enable/disable): Wake-on-LAN of this network card at every boot.\n"
        "[Unit]\n"
        f"Description=Wake-on-LAN for {interface} (mko)\n"
        f"Requires={device}\n"
        f"After={device}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={ETHTOOL} -s {interface} wol {'g' if enable else 'd'}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def link_path(interface: str) -> str:
    """Return where the .link file goes."""
    return f"/etc/systemd/network/50-mko-wol-{interface}.link"


def unit_name(interface: str) -> str:
    """Return the oneshot unit's name."""
    return f"mko-wol-{interface}.service"


async def _is_active(session: SshSession, unit: str) -> tuple[bool, int]:
    result = await session.run(["systemctl", "is-active", unit])
    return result.stdout.strip() == "active", result.exit_status


async def _network_manager_connection(session: SshSession, interface: str) -> str | None:
    """Return the NetworkManager connection of INTERFACE when NM manages it, else None."""
    active, _ = await _is_active(session, "NetworkManager")
    if not active:
        return None
    result = await session.run(
        ["nmcli", "-t", "-f", "GENERAL.STATE,GENERAL.CONNECTION", "device", "show", interface]
    )
    if not result.ok:
        return None
    values = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    state, connection = values.get("GENERAL.STATE", ""), values.get("GENERAL.CONNECTION", "").strip()
    if "unmanaged" in state or state.startswith(("10 ", "20 ")) or not connection or connection == "--":
        return None
    return connection


async def persist(session: SshSession, interface: str, mac: str, enable: bool) -> tuple[str, str, list[Any]]:
    """Make Wake-on survive reboots the way the node is set up; return (method, description, commands)."""
    commands: list[Any] = []

    async def run(argv: list[str], **kwargs: Any) -> None:
        result = await session.run(argv, sudo=True, **kwargs)
        commands.append(result.as_dict())
        if not result.ok:
            raise NicError(f"`{result.command}` exited {result.exit_status}: {result.stderr.strip()[-300:]}")

    connection = await _network_manager_connection(session, interface)
    if connection is not None:
        value = "magic" if enable else "none"
        await run(["nmcli", "connection", "modify", connection, "802-3-ethernet.wake-on-lan", value])
        return "NetworkManager", f"NetworkManager connection {connection!r}: wake-on-lan {value}", commands
    networkd, status = await _is_active(session, "systemd-networkd")
    if networkd:
        path = link_path(interface)
        await run(["tee", path], input=link_file(mac, enable))
        return (
            "systemd-networkd",
            f"systemd .link file {path} (WakeOnLan={'magic' if enable else 'off'})",
            commands,
        )
    if status in (0, 3, 4):  # systemctl answered: systemd runs, without networkd
        unit = unit_name(interface)
        await run(["tee", f"/etc/systemd/system/{unit}"], input=oneshot_unit(interface, enable))
        await run(["systemctl", "daemon-reload"])
        await run(["systemctl", "enable", unit])
        return "systemd-unit", f"oneshot unit {unit} (enabled, runs ethtool at boot)", commands
    return "none", "not persistent: the node runs neither NetworkManager nor systemd", commands
