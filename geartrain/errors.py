"""Typed errors of the client, worker and admin libraries.

Every error a caller can act on is a :class:`GearmanError`; catch that to
catch them all. Job outcomes that are not a result raise
:class:`JobFailed` (WORK_FAIL) or :class:`JobException` (WORK_EXCEPTION,
carrying the worker's payload); transport trouble raises
:class:`ConnectionLost` or :class:`NoServerAvailable`.
"""

from __future__ import annotations


class GearmanError(Exception):
    """Base class of every geartrain client-side error."""


class ServerError(GearmanError):
    """The job server answered a request with an ERROR packet (or an admin ``ERR`` line)."""

    def __init__(self, code: str, text: str = "", server: str | None = None) -> None:
        where = f" from {server}" if server else ""
        super().__init__(f"{code}: {text}{where}" if text else f"{code}{where}")
        self.code = code
        self.text = text
        self.server = server


class QueueFull(ServerError):
    """The server refused a submit: its ``maxqueue`` limit for the function was reached."""


class JobError(GearmanError):
    """A job ended without a result. ``handle`` is the job's handle."""

    def __init__(self, message: str, handle: str | None = None) -> None:
        super().__init__(message)
        self.handle = handle


class JobFailed(JobError):
    """The worker sent WORK_FAIL (or the server failed the job: cancelled, retries exhausted)."""


class JobException(JobError):
    """The worker sent WORK_EXCEPTION; ``payload`` holds what it sent (usually a message)."""

    def __init__(self, payload: bytes, handle: str | None = None) -> None:
        text = payload.decode("utf-8", "replace")
        super().__init__(f"worker raised: {text}" if text else "worker raised an exception", handle)
        self.payload = payload


class JobTimeout(JobError, TimeoutError):
    """The job did not end within the caller's timeout (it may still run on the server)."""


class ConnectionLost(GearmanError, ConnectionError):
    """The connection to a job server broke while a request was waiting on it."""


class NoServerAvailable(GearmanError, ConnectionError):
    """No configured job server accepts connections right now."""


class ResultsUnsupported(GearmanError):
    """The server does not implement geartrain's result packets (gearmand)."""
