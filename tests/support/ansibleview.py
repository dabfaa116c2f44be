"""Read an inventory the way Ansible does: the real ``ansible-inventory --list``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def ansible_view(path: Path) -> dict[str, Any]:
    """What ansible-inventory parses from PATH (it fails the test when Ansible warns or finds nothing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    done = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env | {"ANSIBLE_NOCOLOR": "1"},
    )
    assert "[WARNING]" not in done.stderr, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def inert_hostvars(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every host's variables with the unsafe markers taken off; a string Ansible would template fails.

    ansible-inventory shows a value marked unsafe (never evaluated as a template) as
    ``{"__ansible_unsafe": "..."}``; numbers and booleans cannot be templates.
    """
    hosts: dict[str, dict[str, Any]] = {}
    for host, variables in view["_meta"]["hostvars"].items():
        plain: dict[str, Any] = {}
        for name, value in variables.items():
            if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
                plain[name] = value["__ansible_unsafe"]
            else:
                assert isinstance(value, bool | int), f"{host} {name}={value!r} is not marked unsafe"
                plain[name] = value
        hosts[host] = plain
    return hosts
