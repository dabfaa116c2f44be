"""What the import contracts (``lint-imports`` in ``make test``) cannot say: every package is placed in
the layers, no two modules import each other, package faces carry no weight, and importing mko has no
side effects (docs/architecture.md)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

import mko

SRC = Path(mko.__file__).parent
PYPROJECT = SRC.parents[1] / "pyproject.toml"
# Package faces that may import: the version, the CLI's entry point (its root group only: the command
# groups load lazily, mko.cli.lazy), the one module that gathers every table for Alembic's metadata.
# Pending: mko.lab re-exports its parts until the lab's node-side programs become modules of their own
# (redesign step 7).
_MAY_IMPORT = {"mko", "mko.cli", "mko.platform.db.models"}
_PENDING = {"mko.lab"}


def _contract(contract_id: str) -> dict[str, object]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    contract: dict[str, object] = next(c for c in config["contracts"] if c["id"] == contract_id)
    return contract


def test_every_package_of_mko_is_placed_in_the_layers() -> None:
    layers = _contract("layers")["layers"]
    assert isinstance(layers, list)
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    present = {
        f"mko.{path.stem if path.is_file() else path.name}"
        for path in SRC.iterdir()
        if (path.is_dir() and (path / "__init__.py").exists())
        or (path.suffix == ".py" and path.stem not in ("__init__", "__main__"))
    }
    assert present == placed, "add the new package to the layers contract and docs/architecture.md"


def test_no_contract_has_exceptions() -> None:
    """The contracts hold without ``ignore_imports``: the last one (the composite ``proxmox_host`` driver
    reaching other drivers) went when the inventory began to hand a driver its delegate."""
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    excepted = [c["id"] for c in contracts if c.get("ignore_imports")]
    assert excepted == [], "an exception to an import contract is a design decision: docs/architecture.md"


def test_no_two_modules_import_each_other_even_through_others() -> None:
    graph = grimp.build_graph("mko")
    circles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert circles == []


def test_package_faces_are_a_docstring_and_nothing_else() -> None:
    heavy = []
    for init in sorted(SRC.rglob("__init__.py")):
        package = ".".join(init.parent.relative_to(SRC.parent).parts)
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{package} needs its one-paragraph docstring"
        imports = [
            node
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        ]
        if imports and package not in _MAY_IMPORT | _PENDING:
            heavy.append(package)
    assert heavy == []


_IMPORT_EVERYTHING = """
import importlib, json, pkgutil
import mko
for info in pkgutil.walk_packages(mko.__path__, prefix="mko."):
    if ".nodeside" not in info.name and not info.name.endswith("__main__"):
        importlib.import_module(info.name)
from sqlalchemy.orm import Session
from mko.platform.db.models.schedules import ScheduleAction
from mko.schedules.actions import RUNNERS
hooks = Session().dispatch
print(json.dumps({
    "hooks": [len(hooks.after_flush), len(hooks.after_commit), len(hooks.after_rollback)],
    "runners": sorted(action.value for action in RUNNERS),
    "actions": sorted(action.value for action in ScheduleAction),
}))
"""


def test_importing_every_module_of_mko_attaches_no_hook_and_registers_nothing() -> None:
    """Nothing happens because a module was imported: no listener on every Session, and a scheduled
    shutdown runs whether or not anything imported the cluster package (the runners are a static table)."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["hooks"] == [0, 0, 0]
    assert seen["runners"] == seen["actions"]  # every action a schedule can hold has its runner

    only_schedules = "from mko.schedules.actions import RUNNERS; print(sorted(a.value for a in RUNNERS))"
    alone = subprocess.run(
        [sys.executable, "-c", only_schedules], capture_output=True, text=True, timeout=60, check=True
    )
    assert alone.stdout.strip() == "['shutdown', 'wake']"
