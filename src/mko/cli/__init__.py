"""Command-line interface: ``mko …`` and the seed's ``python cli.py …`` run this same app.

The root group (:mod:`mko.cli.root`) imports a command group's module only when that group runs
(:mod:`mko.cli.lazy`), so ``mko --help`` loads no database code.
"""

import gc

from mko.cli.root import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # What the command built (a 10,000-node wake's snapshots, outcomes and rows) is freed at exit
        # anyway: frozen, the interpreter's last garbage collections skip it instead of walking every
        # object (a few tenths of a second after a large wake).
        gc.freeze()
