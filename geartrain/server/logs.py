"""Logging for the server: gearmand's level names on stdlib logging, a log
file that SIGHUP reopens (for logrotate), stderr by default."""

from __future__ import annotations

import logging
import sys

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

#: gearmand --verbose names -> logging levels
LEVELS = {
    "FATAL": logging.CRITICAL,
    "ALERT": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "NOTICE": NOTICE,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ReopenableFileHandler(logging.FileHandler):
    """A file handler whose file can be reopened after logrotate moved it."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def setup(log_file: str, level: str) -> logging.Handler | None:
    """Route the ``geartrain`` loggers to *log_file* at gearmand level *level*."""
    root = logging.getLogger("geartrain")
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file == "none":
        handler = logging.NullHandler()
    elif log_file in ("stderr", "-"):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = ReopenableFileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    root.propagate = False
    return handler


def reopen(handler: logging.Handler | None) -> None:
    if isinstance(handler, ReopenableFileHandler):
        handler.reopen()
        logging.getLogger("geartrain.server").log(NOTICE, "log file reopened")
