"""Cron expressions in a time zone: checks, and the runs between two times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from mko.platform.errors import InputError

__all__ = ["check_cron", "check_timezone", "runs_between"]


CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def check_cron(expression: str) -> str:
    """A standard five-field cron expression (or @daily, @hourly, …), normalised; InputError otherwise."""
    expr = " ".join(expression.split())
    if not expr:
        raise InputError("cron", "must not be empty")
    if expr.startswith("@"):
        if expr.lower() not in CRON_ALIASES:
            raise InputError("cron", f"{expr!r}: use one of {', '.join(sorted(CRON_ALIASES))}")
        return expr.lower()
    if len(expr.split(" ")) != 5:
        raise InputError(
            "cron",
            f"{expr!r}: use five fields, minute hour day-of-month month day-of-week (e.g. '30 7 * * 1-5')",
        )
    if not croniter.is_valid(expr):
        raise InputError("cron", f"{expr!r} is not a valid cron expression")
    return expr


def check_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; InputError naming the field when it is unknown."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            "timezone", f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin"
        ) from None


def runs_between(
    expression: str, zone: ZoneInfo, after: datetime, until: datetime | None = None, limit: int = 10
) -> list[datetime]:
    """Run instants (UTC) strictly after ``after`` and not after ``until``, at most ``limit``."""
    start = after.astimezone(zone)
    times = croniter(expression, start)
    last_wall = start.replace(tzinfo=None)
    found: list[datetime] = []
    while len(found) < limit:
        candidate: datetime = times.get_next(datetime)
        if until is not None and candidate > until:
            break
        wall = candidate.replace(tzinfo=None)
        # NOTE: when clocks go back an hour croniter yields the repeated wall-clock times twice (once per
        # UTC offset); cron users expect "02:30 daily" to run once that night, so a wall time not later
        # than the previous one is skipped.
        if wall <= last_wall:
            continue
        last_wall = wall
        found.append(candidate.astimezone(UTC))
    return found


def _latest_run(expression: str, zone: ZoneInfo, now: datetime) -> datetime:
    previous: datetime = croniter(expression, (now + timedelta(milliseconds=1)).astimezone(zone)).get_prev(
        datetime
    )
    return previous.astimezone(UTC)
