"""Command-line interface: ``mko …`` and the seed's ``python cli.py …`` run this same app.

The root group (:mod:`mko.cli.root`) imports a command group's module only when that group runs
(:mod:`mko.cli.lazy`), so ``mko --help`` loads no database code.
"""

from mko.cli.root import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
