"""`python -m mko …` runs the CLI."""

from mko.cli import main

main()
