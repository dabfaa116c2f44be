"""The suite's fixtures live in tests/support/ (one module per topic); this file only loads them.

tests/support/plugin.py also sets what every test process shares: the markers, cheap password hashing,
and the order in which pytest-xdist hands out the tests (longest first).
"""

pytest_plugins = [
    "support.plugin",
    "support.db",
    "support.lab",
    "support.ups",
    "support.postgres",
]
