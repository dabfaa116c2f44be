#!/usr/bin/python3
"""Ansible module run on each node by collect_network_info.yml: the node's `ip -j` answers, raw.

One module call per host instead of three: `ip -j -d link show`, `ip -j addr show` and
`ip -j -4 route show default`, returned as the JSON text they printed. mko parses them on import
with the same code as `mko wol collect-mac`.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mko_network_info
short_description: Return the node's links, addresses and default route as printed by `ip -j`
options: {}
"""

COMMANDS = {
    "link": ["ip", "-j", "-d", "link", "show"],
    "addr": ["ip", "-j", "addr", "show"],
    "route": ["ip", "-j", "-4", "route", "show", "default"],
}


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    answers = {}
    for name, argv in COMMANDS.items():
        rc, out, err = module.run_command(argv)
        if rc != 0:
            module.fail_json(
                msg=f"{' '.join(argv)} exited {rc}: {err.strip()} (iproute2 >= 4.13 prints JSON)"
            )
        answers[name] = out
    module.exit_json(changed=False, ip=answers)


if __name__ == "__main__":
    main()
