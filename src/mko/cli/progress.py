"""Rich progress parts for long waits, imported only by the commands that show a progress display."""

from __future__ import annotations

from rich.progress import ProgressColumn, Task
from rich.text import Text

__all__ = ["TimeLeftColumn"]


class TimeLeftColumn(ProgressColumn):
    """Seconds left until a long wait gives up (its ``--timeout``), counted down as it runs."""

    def __init__(self, timeout: float | None) -> None:
        super().__init__()
        self.timeout = timeout

    def render(self, task: Task) -> Text:
        """Return "N s left" (nothing once the task is done, or without a timeout)."""
        if self.timeout is None or task.finished:
            return Text("")
        left = max(0.0, self.timeout - (task.elapsed or 0.0))
        return Text(f"{left:.0f} s left", style="progress.remaining")
