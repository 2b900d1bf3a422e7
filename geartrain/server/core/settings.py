"""Settings of the server core (what the core needs to know, nothing about sockets)."""

from __future__ import annotations

import dataclasses
import socket

#: gearmand refuses uniques longer than this
MAX_UNIQUE_SIZE = 64
#: ... and reducer names longer than this
MAX_REDUCER_SIZE = 64
#: SET_CLIENT_ID is truncated to this many bytes, as gearmand does
MAX_CLIENT_ID_SIZE = 127
#: functions one connection may register (CAN_DO); more get ERROR
MAX_ABILITIES = 10_000
#: a CAN_DO_TIMEOUT below this many milliseconds counts as this many, as in gearmand
MIN_WORK_TIMEOUT_MS = 1000

WAKE_AUTO = 0
WAKE_ALL = -1


def default_handle_prefix() -> str:
    return "H:" + socket.gethostname()


@dataclasses.dataclass(slots=True)
class CoreSettings:
    """Behaviour switches of :class:`~geartrain.server.core.server.JobServer`.

    ``job_retries``: a job that a worker lost (disconnect, CANT_DO, timeout)
    this many times in total is dropped and its clients get WORK_FAIL; 0 keeps
    requeueing forever (gearmand 1.1.20 semantics).

    ``worker_wakeup``: sleeping workers woken per queued job. ``WAKE_AUTO``
    (0) wakes one per runnable job, rotating fairly; ``WAKE_ALL`` (-1) wakes
    every sleeper, like gearmand's default; N > 0 wakes up to N.
    """

    handle_prefix: str = dataclasses.field(default_factory=default_handle_prefix)
    job_retries: int = 0
    worker_wakeup: int = WAKE_AUTO
    exceptions: bool = False
    version: str = "0"
    pid: int = 0
    verbose: str = "NOTICE"
    #: background jobs are written to a durable store before JOB_CREATED
    durable: bool = False
    #: ... and foreground jobs too
    store_foreground: bool = False
    #: seconds a woken worker may take to grab before another sleeper is woken
    rewake_after: float = 1.0
    #: beyond this many functions, idle ones are forgotten (bounds memory)
    max_idle_functions: int = 10_000
    #: keep what background jobs produce after they end (core/results.py)
    keep_results: bool = True
    #: ... and what foreground jobs produce
    keep_foreground_results: bool = False
    #: seconds a result is kept after its job ended
    result_ttl: float = 86_400.0
    #: bytes of result payload, and of data plus warnings, kept per job
    result_max_bytes: int = 1 << 20
    #: results kept at most (the oldest are forgotten first)
    result_max_count: int = 100_000
