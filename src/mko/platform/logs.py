"""Logging to ``logs/orchestrator.log`` (rotating, mode 0600) and the console.

Every record is one line: the message is passed through :func:`mko.platform.validation.printable` (newlines,
ANSI escapes and other control characters escaped, cut to ``MESSAGE_MAX`` characters), and the lines
of a traceback are indented, so no value anyone typed can forge a record or colour a terminal, and a
huge value cannot rotate the log away.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from typing import Any

from mko.platform.files import PRIVATE_FILE, private_directory, tighten
from mko.platform.settings import Settings
from mko.platform.validation import printable

__all__ = ["MESSAGE_MAX", "SafeFormatter", "configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MARK = "_mko_handler"
#: Longest message of one record (the rest is cut, saying how much).
MESSAGE_MAX = 2000


class SafeFormatter(logging.Formatter):
    """One record per line: escaped, bounded messages; traceback lines indented under their record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Values escaped by the caller keep their single backslashes; only raw controls are escaped.
        record.message = printable(record.message, MESSAGE_MAX, backslashes=False)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    # An exception's message may hold anything; each of its lines is escaped and indented, so none
    # can look like the start of a record.
    return "\n".join("    " + printable(line, MESSAGE_MAX, backslashes=False) for line in text.splitlines())


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created 0600 (the log names users, nodes and addresses)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def configure_logging(settings: Settings, *, console: bool = True) -> None:
    """Attach the rotating file handler (and a console handler) to the ``mko`` logger, once."""
    logger = logging.getLogger("mko")
    logger.setLevel(settings.log_level.upper())
    for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(handler)
        handler.close()
    private_directory(settings.log_dir)
    for existing in settings.log_dir.glob(f"{settings.log_file.name}*"):
        tighten(existing)  # written 0644 by an older mko
    file_handler = _PrivateRotatingFileHandler(
        settings.log_file, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups, encoding="utf-8"
    )
    handlers: list[logging.Handler] = [file_handler]
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(SafeFormatter(_FORMAT))
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
    logger.propagate = False
