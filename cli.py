"""The seed's entry point: `python cli.py …` runs the same CLI as `mko …`."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

try:
    from mko.cli import main
except ModuleNotFoundError:
    # Run with a Python that lacks mko's dependencies (e.g. the system one): use the project's venv,
    # created by `make run`, so the seed's `python cli.py …` works as written.
    venv_python = HERE / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != (HERE / ".venv").resolve():
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    raise

if __name__ == "__main__":
    main()
