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

from geartrain.results import CANCELLED, COMPLETED, EXCEPTION, FAILED, JobResult

__all__ = ["CANCELLED", "COMPLETED", "EXCEPTION", "FAILED", "JobResult", "Record", "ResultBook", "Trace",
           "record_of", "result_of"]


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


def record_of(result: JobResult) -> Record:
    return (result.handle, result.function, result.unique, result.state, result.result,
            tuple(result.data), tuple(result.warnings), result.numerator, result.denominator,
            result.submitted, result.finished, tuple(result.attempts), result.truncated_bytes,
            result.background, result.priority)


def result_of(record: Record) -> JobResult:
    return JobResult(*record)


_NONE: list[bytes] = []  # (never appended to)


class ResultBook:
    """Results of ended jobs, by handle and by (function, unique), oldest first."""

    def __init__(self, ttl: float, max_count: int) -> None:
        self.ttl = ttl
        self.max_count = max_count
        self.by_handle: dict[bytes, Record] = {}
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

    def add(self, record: Record) -> list[bytes]:
        """File *record*; returns the handles forgotten to make room."""
        handle = record[0]
        by_handle = self.by_handle
        if handle not in by_handle:  # (filed again when replayed: keep its place)
            self._order.append(handle)
        by_handle[handle] = record
        if self.indexed and record[2]:
            self._index(record)
        if len(by_handle) <= self.max_count:
            return _NONE
        dropped: list[bytes] = []
        while len(by_handle) > self.max_count:
            old = self._forget_oldest()
            if old is not None:
                dropped.append(old)
                self.evicted += 1
        return dropped

    def _index(self, record: Record) -> None:
        handle, unique = record[0], record[2]
        self.by_unique[(record[1], unique)] = handle
        self.by_unique_any[unique] = handle

    def get(self, handle: bytes) -> JobResult | None:
        record = self.by_handle.get(handle)
        return JobResult(*record) if record is not None else None

    def find_unique(self, unique: bytes, function: bytes | None = None) -> JobResult | None:
        """The latest result with *unique* (in *function*, or in any function)."""
        if not self.indexed:
            self.indexed = True
            for filed in self._order:
                record = self.by_handle.get(filed)
                if record is not None and record[2]:
                    self._index(record)
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
            record = by_handle.get(order[0])
            if record is not None and record[10] > limit:
                break
            old = self._forget_oldest()
            if old is not None:
                dropped.append(old)
        return dropped

    def next_expiry(self) -> float | None:
        """Wall-clock time the oldest result expires (None: the book is empty)."""
        for handle in self._order:
            record = self.by_handle.get(handle)
            if record is not None:
                return record[10] + self.ttl
        return None

    def _forget_oldest(self) -> bytes | None:
        handle = self._order.popleft()
        record = self.by_handle.pop(handle, None)
        if record is None:
            return None
        unique = record[2]
        if unique and self.indexed:
            key = (record[1], unique)
            if self.by_unique.get(key) == handle:
                del self.by_unique[key]
            if self.by_unique_any.get(unique) == handle:
                del self.by_unique_any[unique]
        return handle
