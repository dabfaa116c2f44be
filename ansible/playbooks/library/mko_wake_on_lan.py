#!/usr/bin/python3
"""Ansible module run on each node by configure_wake_on_lan.yml (one module call per host).

It does on the node what ``mko wol enable|disable`` does over SSH (mko.nic): find the card, read
``ethtool IFACE``, set ``wol g`` (or ``d``), make it persistent the way the node configures its network
(NetworkManager connection property, systemd .link file, or a oneshot unit), and read it back. Ansible
copies this file to the node, so it cannot import mko: its persistence repeats mko.nic.persistence, and
tests/unit/nic/test_persistence_twins.py holds the two to the same choice, description and files.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mko_wake_on_lan
short_description: Set a network card's Wake-on-LAN with ethtool, persistently, and read it back
description:
  - Finds the card by MAC (else the interface carrying the IPv4 default route).
  - Reports cards without magic-packet support (magic_capable false) instead of failing, so the
    playbook can record them before it fails the host.
options:
  mac: {description: MAC of the card mko wakes, type: str}
  interface: {description: interface name, used when no MAC is given, type: str}
  state: {description: enabled (wol g) or disabled (wol d), type: str, default: enabled}
"""

ETHTOOL = "/usr/sbin/ethtool"
_WOL_LINE = re.compile(r"^\s*(Supports Wake-on|Wake-on):\s*(\S*)\s*$", re.MULTILINE)


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


class Node:
    """The commands the module runs, all as argument lists."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.commands: list[str] = []

    def run(self, argv: list[str], check: bool = True) -> tuple[int, str, str]:
        try:
            rc, out, err = self.module.run_command(argv, handle_exceptions=False)
        except FileNotFoundError:
            # What a shell answers, and so what mko sees over SSH: a node without systemd (or nmcli)
            # is "not persistent" there too, instead of a failed host.
            rc, out, err = 127, "", f"{argv[0]}: command not found"
        except OSError as exc:
            self.module.fail_json(msg=f"{' '.join(argv)}: {exc}", commands=self.commands)
        self.commands.append(" ".join(argv) + f" -> {rc}")
        if check and rc != 0:
            self.module.fail_json(msg=f"{' '.join(argv)} exited {rc}: {err.strip() or out.strip()}",
                                  commands=self.commands)  # fmt: skip
        return rc, out, err

    def wol(self, interface: str) -> tuple[str | None, str | None]:
        _, out, _ = self.run([ETHTOOL, interface])
        values = dict(_WOL_LINE.findall(out))
        return values.get("Supports Wake-on"), values.get("Wake-on")

    def write(self, path: str, text: str) -> bool:
        """Write PATH (0644) unless it already holds TEXT; return whether it changed."""
        try:
            with open(path) as f:
                if f.read() == text:
                    return False
        except FileNotFoundError:
            pass
        if self.module.check_mode:
            return True
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mko-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        self.commands.append(f"wrote {path}")
        return True


def network_manager_connection(node: Node, interface: str) -> str | None:
    rc, out, _ = node.run(["systemctl", "is-active", "NetworkManager"], check=False)
    if out.strip() != "active":
        return None
    fields = "GENERAL.STATE,GENERAL.CONNECTION"
    rc, out, _ = node.run(["nmcli", "-t", "-f", fields, "device", "show", interface], check=False)
    if rc != 0:
        return None
    values = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    state, connection = values.get("GENERAL.STATE", ""), values.get("GENERAL.CONNECTION", "").strip()
    if "unmanaged" in state or state.startswith(("10 ", "20 ")) or connection in ("", "--"):
        return None
    return connection


def persist(node: Node, interface: str, mac: str, enable: bool) -> tuple[str, str, bool]:
    """Return (method, description, changed)."""
    connection = network_manager_connection(node, interface)
    if connection is not None:
        value = "magic" if enable else "none"
        _, out, _ = node.run(["nmcli", "-g", "802-3-ethernet.wake-on-lan", "connection", "show", connection])
        changed = out.strip() != value
        if changed and not node.module.check_mode:
            node.run(["nmcli", "connection", "modify", connection, "802-3-ethernet.wake-on-lan", value])
        return "NetworkManager", f"NetworkManager connection {connection!r}: wake-on-lan {value}", changed
    rc, out, _ = node.run(["systemctl", "is-active", "systemd-networkd"], check=False)
    if out.strip() == "active":
        path = f"/etc/systemd/network/50-mko-wol-{interface}.link"
        changed = node.write(path, link_file(mac, enable))
        description = f"systemd .link file {path} (WakeOnLan={'magic' if enable else 'off'})"
        return "systemd-networkd", description, changed
    if rc in (0, 3, 4):
        unit = f"mko-wol-{interface}.service"
        changed = node.write(f"/etc/systemd/system/{unit}", oneshot_unit(interface, enable))
        if changed and not node.module.check_mode:
            node.run(["systemctl", "daemon-reload"])
        _, out, _ = node.run(["systemctl", "is-enabled", unit], check=False)
        if out.strip() != "enabled":
            changed = True
            if not node.module.check_mode:
                node.run(["systemctl", "enable", unit])
        return "systemd-unit", f"oneshot unit {unit} (enabled, runs ethtool at boot)", changed
    return "none", "not persistent: the node runs neither NetworkManager nor systemd", False


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mac": {"type": "str"},
            "interface": {"type": "str"},
            "state": {"type": "str", "default": "enabled", "choices": ["enabled", "disabled"]},
        },
        supports_check_mode=True,
    )
    node = Node(module)
    enable = module.params["state"] == "enabled"
    mac = (module.params["mac"] or "").lower()
    _, out, _ = node.run(["ip", "-j", "-d", "link", "show"])
    links = json.loads(out)
    for link in links:
        # A bond's ports carry the bond's MAC; the card wakes on its permanent one.
        slave = (link.get("linkinfo") or {}).get("info_slave_data") or {}
        link["mko_mac"] = str(
            link.get("permaddr") or slave.get("perm_hwaddr") or link.get("address", "")
        ).lower()
    if mac:
        card = next((link for link in links if link["mko_mac"] == mac), None)
        if card is None:
            found = ", ".join(f"{link['ifname']}={link['mko_mac']}" for link in links if link["mko_mac"])
            module.fail_json(msg=f"no interface has the MAC {mac} mko wakes (found {found}); run "
                                 "`mko wol collect-mac --overwrite` if the card was replaced")  # fmt: skip
    else:
        name = module.params["interface"]
        if not name:
            _, out, _ = node.run(["ip", "-j", "-4", "route", "show", "default"])
            routes = json.loads(out or "[]")
            name = routes[0]["dev"] if routes else None
        card = next((link for link in links if link["ifname"] == name), None)
        if card is None:
            module.fail_json(msg="no interface given and no default route to find one")
    interface, mac = card["ifname"], card["mko_mac"]
    if not re.fullmatch(r"(?!-)[A-Za-z0-9_.-]{1,15}", interface) or interface in (".", ".."):
        module.fail_json(msg=f"interface name {interface!r} is not safe to use in file names")
    supports, before = node.wol(interface)
    result = {"interface": interface, "mac": mac, "supports": supports or "", "wake_on_before": before or "",
              "magic_capable": bool(supports and "g" in supports), "persistence": None}  # fmt: skip
    if not result["magic_capable"] and (enable or not supports):
        # Nothing can be set: report the card as it is and let the playbook decide.
        module.exit_json(changed=False, wake_on=before or "", commands=node.commands, **result)
    wanted = "g" if enable else "d"
    changed = False
    if (before or "") != wanted:
        changed = True
        if not module.check_mode:
            node.run([ETHTOOL, "-s", interface, "wol", wanted])
    method, description, persisted = persist(node, interface, mac, enable)
    _, after = node.wol(interface)
    result.update(persistence=method, persistence_detail=description)
    if not module.check_mode and (after or "") != wanted:
        module.fail_json(msg=f"read back Wake-on: {after} on {interface}, expected {wanted}", wake_on=after,
                         commands=node.commands, **result)  # fmt: skip
    module.exit_json(changed=changed or persisted, wake_on=after or "", commands=node.commands, **result)


if __name__ == "__main__":
    main()
