"""Run the repository's entry scripts under the project's venv when started with another Python.

Only the standard library is imported here, so a script can import this module with a Python that lacks
mko's dependencies (e.g. the system one) and hand itself over to ``.venv/bin/python``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["REPO_ROOT", "reexec_in_venv"]

REPO_ROOT = Path(__file__).resolve().parents[3]


def reexec_in_venv(script: str | Path) -> None:
    """Replace this process with ``.venv/bin/python script args…``; returns only when that is impossible."""
    venv = REPO_ROOT / ".venv"
    venv_python = venv / "bin" / "python"
    # Already inside the venv (or no venv yet, e.g. before `make install`): the caller re-raises its
    # ImportError, which names the missing module.
    if not venv_python.exists() or Path(sys.prefix).resolve() == venv.resolve():
        return
    os.execv(str(venv_python), [str(venv_python), str(Path(script).resolve()), *sys.argv[1:]])
