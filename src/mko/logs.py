"""Logging to ``logs/orchestrator.log`` (rotating) and the console."""

from __future__ import annotations

import logging
import logging.handlers

from mko.settings import Settings

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MARK = "_mko_handler"


def configure_logging(settings: Settings, *, console: bool = True) -> None:
    """Attach the rotating file handler (and a console handler) to the ``mko`` logger, once."""
    logger = logging.getLogger("mko")
    logger.setLevel(settings.log_level.upper())
    for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(handler)
        handler.close()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        settings.log_file, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups, encoding="utf-8"
    )
    handlers: list[logging.Handler] = [file_handler]
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT))
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
    logger.propagate = False
