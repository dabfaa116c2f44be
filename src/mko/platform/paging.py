"""One page of a list: ``limit`` rows after ``offset``, and the total the filters match.

Every list route, page and command that pages takes a :class:`Page`; the total comes back beside the
rows (``X-Total-Count`` over HTTP, a "showing … of …" line in the CLI and the web).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_LIMIT", "MAX_OFFSET", "Page"]

# The most rows one request may ask for: 10,000 nodes fit in one page, a runaway client does not.
MAX_LIMIT = 10_000
# The largest offset: far past any inventory, and inside every database's integer range.
MAX_OFFSET = 1_000_000_000


@dataclass(frozen=True)
class Page:
    """``limit`` rows (None: all) starting after ``offset`` rows."""

    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise ValueError(f"offset must be between 0 and {MAX_OFFSET}")

    def shown(self, count: int, total: int) -> str:
        """``showing 101–200 of 10000`` (or ``0 of 0``) for a page that returned ``count`` rows."""
        if count == 0:
            return f"showing 0 of {total}"
        return f"showing {self.offset + 1}–{self.offset + count} of {total}"
