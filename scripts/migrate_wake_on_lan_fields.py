"""The seed's database migration: `python scripts/migrate_wake_on_lan_fields.py [--dry-run] [--database …]`.

Backs the database up, adds the Wake-on-LAN fields (importing the earlier orchestrator's clusters and
nodes when it is one of its databases), sets the defaults for existing nodes and verifies the result;
on any failure the backup is restored. It is `mko db migrate-wol` under the seed's name: same options,
output and exit codes (`--help` lists them).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

try:
    from mko.cli.root import app
except ModuleNotFoundError:
    # Started with a Python that lacks mko's dependencies (e.g. the system one): use the project's venv.
    from mko.platform.bootstrap import reexec_in_venv

    reexec_in_venv(__file__)
    raise


def main() -> None:
    """Run `mko db migrate-wol` with this script's arguments."""
    app(["db", "migrate-wol", *sys.argv[1:]], prog_name="mko")


if __name__ == "__main__":
    main()
