"""``python -m mko …`` runs the CLI (the playbooks call ``python -m mko ansible import-facts``)."""

from mko.cli import main

main()
