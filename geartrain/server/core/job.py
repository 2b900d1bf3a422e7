"""A job: one unit of work for one function, with its listeners."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geartrain.server.core.function import Function
    from geartrain.server.core.peer import Held, Peer


class Priority(enum.IntEnum):
    HIGH = 0
    NORMAL = 1
    LOW = 2


class JobState(enum.IntEnum):
    QUEUED = 0  #: waiting in its function's queue for a worker
    RUNNING = 1  #: assigned to a worker
    SCHEDULED = 2  #: an epoch job whose time has not come
    FINISHED = 3  #: completed, failed, cancelled or dropped; no longer indexed
    STORING = 4  #: waiting for the durable store before anyone may see it


def handle_number(handle: bytes) -> int:
    """N of a ``PREFIX:N`` handle (0 if it does not end in a number): new
    handles continue after the highest N of the jobs a store gives back."""
    number = handle.rpartition(b":")[2]
    return int(number) if number.isdigit() else 0


class Job:
    """Everything the server knows about one job.

    With a durable store, a background job is ``STORING`` until its row is
    committed; only then do its submitters get JOB_CREATED and workers see it.

    ``listeners`` are the foreground clients attached to it (the submitter
    and every foreground submit that coalesced onto it); a background job
    starts without any. ``ignored`` marks a running job nobody waits for any
    more (cancelled, or a foreground job whose clients all left): it runs to
    its end, but its results go nowhere.
    """

    __slots__ = (
        "handle", "function", "unique", "data", "priority", "background", "when",
        "reducer", "listeners", "worker", "numerator", "denominator", "retries",
        "state", "ignored", "attempt", "stored", "waiters", "submitted", "trace",
        "queued_at", "started_at", "outcome", "result", "finished",
    )

    def __init__(
        self,
        handle: bytes,
        function: Function,
        unique: bytes,
        data: bytes,
        priority: int,
        background: bool,
        when: int = 0,
        reducer: bytes = b"",
    ) -> None:
        self.handle = handle
        self.function = function
        self.unique = unique
        self.data = data
        self.priority = priority
        self.background = background
        self.when = when
        self.reducer = reducer
        self.listeners: list[Peer] | None = None
        self.worker: Peer | None = None
        self.numerator = 0
        self.denominator = 0
        self.retries = 0
        self.state: int = 0  # a JobState, kept as a plain int (QUEUED)
        self.ignored = False
        self.attempt = 0
        #: a row for this job exists in the durable store (forget it when the job ends)
        self.stored = False
        #: submitters waiting for the store: their held JOB_CREATED reply (a
        #: Held, which knows its peer), or a list of them when submits coalesced
        self.waiters: Held | list[Held] | None = None
        #: wall-clock submit time when its result is to be kept (0.0: not kept,
        #: or already recorded)
        self.submitted = 0.0
        #: data, warnings and attempts so far (a results.Trace, from the first attempt)
        self.trace: Any = None
        #: monotonic time it became runnable (last), and its current attempt started
        #: (on the wall clock once the job ended and its result is kept)
        self.queued_at = 0.0
        self.started_at = 0.0
        #: once ended with its result kept (the job itself is then the record,
        #: see core/results.py): how it ended, its payload, when (wall clock)
        self.outcome = ""
        self.result = b""
        self.finished = 0.0

    def __repr__(self) -> str:
        return (
            f"<Job {self.handle!r} {self.function.name!r} {JobState(self.state).name}"
            f" prio={Priority(self.priority).name}>"
        )
