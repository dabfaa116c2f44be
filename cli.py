"""The seed's entry point: `python cli.py …` runs the same CLI as `mko …`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

try:
    from mko.cli import main
except ModuleNotFoundError:
    # Run with a Python that lacks mko's dependencies (e.g. the system one): use the project's venv,
    # created by `make run`, so the seed's `python cli.py …` works as written.
    from mko.platform.bootstrap import reexec_in_venv

    reexec_in_venv(__file__)
    raise

if __name__ == "__main__":
    main()
