"""What a job produced, kept after it ends (gearmand forgets all of it).

While a kept job lives, its :class:`Trace` (made when first needed) collects
the WORK_DATA and WORK_WARNING chunks and the start times of lost attempts
(the current attempt's start is on the job). When it ends
(completed, failed, exception, cancelled), the core turns the trace into a
:class:`JobResult`, files it in the :class:`ResultBook` (looked up by handle
or by unique key) and hands it to the durable store, which keeps it across
restarts.

Bounds: each job keeps at most ``max_bytes`` of result payload and at most
``max_bytes`` of data and warning chunks together; what does not fit is cut
off and counted in ``truncated_bytes`` (never silently). The book forgets a
result ``ttl`` seconds after the job ended, and the oldest ones first when it
holds more than ``max_count``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

from geartrain.results import CANCELLED, COMPLETED, EXCEPTION, FAILED, JobResult

if TYPE_CHECKING:
    from geartrain.server.core.job import Job

__all__ = ["CANCELLED", "COMPLETED", "EXCEPTION", "FAILED", "Entry", "JobResult", "Record", "ResultBook",
           "Trace", "record_of", "result_of_entry", "result_of_job"]


class Trace:
    """What a kept job produced so far (it lives on ``Job.trace``).

    Lists are made only when there is something to put in them: most jobs
    send no data and no warnings, and every container object costs the
    garbage collector on a server holding many jobs."""

    __slots__ = ("attempts", "data", "warnings", "budget", "truncated_bytes")

    def __init__(self, budget: int) -> None:
        #: wall-clock start of each lost attempt (JOB_ASSIGN sent; the worker went away)
        self.attempts: tuple[float, ...] = ()
        self.data: list[bytes] | None = None
        self.warnings: list[bytes] | None = None
        #: bytes of data and warnings this job may still keep
        self.budget = budget
        self.truncated_bytes = 0

    def add(self, warning: bool, payload: bytes) -> None:
        """Keep a WORK_DATA or WORK_WARNING chunk, as much of it as fits."""
        size = len(payload)
        if size > self.budget:
            self.truncated_bytes += size - self.budget
            payload = payload[:self.budget]
            size = len(payload)
            if not size:
                return
        self.budget -= size
        if warning:
            if self.warnings is None:
                self.warnings = []
            self.warnings.append(payload)
        else:
            if self.data is None:
                self.data = []
            self.data.append(payload)


#: A kept result, as the book holds it: the fields of JobResult, in order, in
#: a tuple of bytes, numbers, strings and tuples of those. Such a tuple is
#: dropped from the garbage collector's lists, so a server keeping 100,000
#: results pays nothing for them at each collection (JobResult objects would
#: be scanned every time).
Record = tuple[bytes, bytes, bytes, str, bytes, tuple[bytes, ...], tuple[bytes, ...], int, int,
               float, float, tuple[float, ...], int, bool, int]
# (indexes used below: 0 handle, 1 function, 2 unique, 10 finished)


#: What the book holds per result: a Record, or the Job itself when a worker
#: ended it (then nothing else refers to it, and filing it costs nothing)
Entry = Union["Job", Record]


def _key(entry: Entry) -> tuple[bytes, bytes, bytes, float]:
    """(handle, function, unique, finished) of an entry."""
    if type(entry) is tuple:
        return entry[0], entry[1], entry[2], entry[10]
    job: Job = entry  # type: ignore[assignment]
    return job.handle, job.function.name, job.unique, job.finished


def result_of_entry(entry: Entry) -> JobResult:
    if type(entry) is tuple:
        return JobResult(*entry)
    job: Job = entry  # type: ignore[assignment]
    # (started_at is on the wall clock once the result is filed)
    return result_of_job(job, job.outcome, job.result, job.finished, job.started_at)


def result_of_job(job: Job, state: str, payload: bytes, finished: float, started: float) -> JobResult:
    """What *job* and its trace say, as a JobResult; *started*: the wall-clock
    start of the attempt under way (0.0: none)."""
    trace = job.trace
    attempts = list(trace.attempts) if trace is not None else []
    if started:
        attempts.append(started)
    return JobResult(job.handle, job.function.name, job.unique, state, payload,
                     list(trace.data or ()) if trace is not None else [],
                     list(trace.warnings or ()) if trace is not None else [],
                     job.numerator, job.denominator, job.submitted, finished, attempts,
                     trace.truncated_bytes if trace is not None else 0, job.background, job.priority)


def record_of(result: JobResult) -> Record:
    return (result.handle, result.function, result.unique, result.state, result.result,
            tuple(result.data), tuple(result.warnings), result.numerator, result.denominator,
            result.submitted, result.finished, tuple(result.attempts), result.truncated_bytes,
            result.background, result.priority)


_NONE: list[bytes] = []  # (never appended to)


class ResultBook:
    """Results of ended jobs, by handle and by (function, unique), oldest first."""

    def __init__(self, ttl: float, max_count: int) -> None:
        self.ttl = ttl
        self.max_count = max_count
        self.by_handle: dict[bytes, Entry] = {}
        #: the unique-key indexes are built on the first look-up by unique key
        #: (most servers never make one) and kept up to date from then on
        self.indexed = False
        #: (function, unique) -> handle of the latest result with it
        self.by_unique: dict[tuple[bytes, bytes], bytes] = {}
        #: unique -> handle of the latest result with it in any function
        self.by_unique_any: dict[bytes, bytes] = {}
        #: handles in the order they were filed (finish times only grow)
        self._order: deque[bytes] = deque()
        #: results forgotten because the book was full (before their time)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.by_handle)

    def add(self, entries: Sequence[Entry]) -> list[bytes]:
        """File *entries* (a batch, oldest first); the handles forgotten to make room."""
        by_handle, order = self.by_handle, self._order
        for entry in entries:
            handle = entry[0] if type(entry) is tuple else entry.handle  # type: ignore[union-attr]
            if handle not in by_handle:  # (filed again when replayed: keep its place)
                order.append(handle)
            by_handle[handle] = entry
            if self.indexed:
                self._index(entry)
        if len(by_handle) <= self.max_count:
            return _NONE
        dropped: list[bytes] = []
        while len(by_handle) > self.max_count:
            old = self._forget_oldest()
            if old is not None:
                dropped.append(old)
                self.evicted += 1
        return dropped

    def _index(self, entry: Entry) -> None:
        handle, function, unique, _ = _key(entry)
        if unique:
            self.by_unique[(function, unique)] = handle
            self.by_unique_any[unique] = handle

    def get(self, handle: bytes) -> JobResult | None:
        entry = self.by_handle.get(handle)
        return result_of_entry(entry) if entry is not None else None

    def find_unique(self, unique: bytes, function: bytes | None = None) -> JobResult | None:
        """The latest result with *unique* (in *function*, or in any function)."""
        if not self.indexed:
            self.indexed = True
            for filed in self._order:
                entry = self.by_handle.get(filed)
                if entry is not None:
                    self._index(entry)
        if function is not None:
            found = self.by_unique.get((function, unique))
        else:
            found = self.by_unique_any.get(unique)
        return self.get(found) if found is not None else None

    def expire(self, now: float) -> list[bytes]:
        """Forget results that ended more than ``ttl`` seconds before *now*."""
        dropped: list[bytes] = []
        order, by_handle = self._order, self.by_handle
        limit = now - self.ttl
        while order:
            entry = by_handle.get(order[0])
            if entry is not None and _key(entry)[3] > limit:
                break
            old = self._forget_oldest()
            if old is not None:
                dropped.append(old)
        return dropped

    def next_expiry(self) -> float | None:
        """Wall-clock time the oldest result expires (None: the book is empty)."""
        for handle in self._order:
            entry = self.by_handle.get(handle)
            if entry is not None:
                return _key(entry)[3] + self.ttl
        return None

    def _forget_oldest(self) -> bytes | None:
        handle = self._order.popleft()
        entry = self.by_handle.pop(handle, None)
        if entry is None:
            return None
        _, function, unique, _ = _key(entry)
        if unique and self.indexed:
            key = (function, unique)
            if self.by_unique.get(key) == handle:
                del self.by_unique[key]
            if self.by_unique_any.get(unique) == handle:
                del self.by_unique_any[unique]
        return handle
