"""mko's tables, split by topic. This package imports every table module, so that importing any
of them fills ``Base.metadata`` whole (Alembic's ``env.py`` and schema comparisons need all)."""

from mko.platform.db.models import (  # noqa: F401  (every table into Base.metadata)
    access,
    agents,
    base,
    ha,
    inventory,
    operations,
    outages,
    rules,
    schedules,
    ups,
)
