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

#: how many segments a full book is cut into (see ResultBook)
SEGMENTS = 16


class ResultBook:
    """Results of ended jobs, by handle and by (function, unique), oldest first.

    The book is a run of segments, oldest first, each a dict handle -> entry
    in filing order holding up to ``max_count / 16`` results. When the book
    holds more than ``max_count``, the oldest segment goes at once, so a full
    book keeps between 15/16 of ``max_count`` and ``max_count`` results.
    Forgetting a whole segment costs one dict deallocation instead of a
    deque pop, a dict pop and a function call per result, on the path of
    every job a full book files (a drained queue files one per job)."""

    def __init__(self, ttl: float, max_count: int) -> None:
        self.ttl = ttl
        self.max_count = max_count
        #: results per segment
        self.span = max(1, -(-max_count // SEGMENTS))
        #: the segments, oldest first; the last one is being filled
        self.segments: deque[dict[bytes, Entry]] = deque([{}])
        self._count = 0
        #: the unique-key indexes are built on the first look-up by unique key
        #: (most servers never make one) and kept up to date from then on
        self.indexed = False
        #: (function, unique) -> handle of the latest result with it
        self.by_unique: dict[tuple[bytes, bytes], bytes] = {}
        #: unique -> handle of the latest result with it in any function
        self.by_unique_any: dict[bytes, bytes] = {}
        #: results forgotten because the book was full (before their time)
        self.evicted = 0

    def __len__(self) -> int:
        return self._count

    def entry(self, handle: bytes) -> Entry | None:
        for segment in reversed(self.segments):
            entry = segment.get(handle)
            if entry is not None:
                return entry
        return None

    def add(self, entries: Sequence[Entry]) -> list[bytes]:
        """File *entries* (a batch, oldest first, of handles never filed
        before); the handles forgotten to make room."""
        segment, span = self.segments[-1], self.span
        for entry in entries:
            segment[entry[0] if type(entry) is tuple else entry.handle] = entry  # type: ignore[union-attr]
            if len(segment) >= span:
                segment = {}
                self.segments.append(segment)
        self._count += len(entries)
        if self.indexed:
            for entry in entries:
                self._index(entry)
        if self._count <= self.max_count:
            return _NONE
        dropped: list[bytes] = []
        while self._count > self.max_count:
            old = self._drop_oldest()
            dropped.extend(old)
            self.evicted += len(old)
        return dropped

    def restore(self, entries: Sequence[Entry]) -> list[bytes]:
        """File *entries* read back from the store: one filed already keeps
        its place and takes the new entry."""
        fresh: list[Entry] = []
        for entry in entries:
            handle = entry[0] if type(entry) is tuple else entry.handle  # type: ignore[union-attr]
            for segment in self.segments:
                if handle in segment:
                    segment[handle] = entry
                    if self.indexed:
                        self._index(entry)
                    break
            else:
                fresh.append(entry)
        return self.add(fresh)

    def _index(self, entry: Entry) -> None:
        handle, function, unique, _ = _key(entry)
        if unique:
            self.by_unique[(function, unique)] = handle
            self.by_unique_any[unique] = handle

    def get(self, handle: bytes) -> JobResult | None:
        entry = self.entry(handle)
        return result_of_entry(entry) if entry is not None else None

    def find_unique(self, unique: bytes, function: bytes | None = None) -> JobResult | None:
        """The latest result with *unique* (in *function*, or in any function)."""
        if not self.indexed:
            self.indexed = True
            for segment in self.segments:
                for entry in segment.values():
                    self._index(entry)
        if function is not None:
            found = self.by_unique.get((function, unique))
        else:
            found = self.by_unique_any.get(unique)
        return self.get(found) if found is not None else None

    def expire(self, now: float) -> list[bytes]:
        """Forget results that ended more than ``ttl`` seconds before *now*."""
        dropped: list[bytes] = []
        limit = now - self.ttl
        segments = self.segments
        while self._count:
            oldest = segments[0]
            if not oldest:
                segments.popleft()
                continue
            if _key(oldest[next(reversed(oldest))])[3] <= limit:
                dropped.extend(self._drop_oldest())  # (every result in it expired)
                continue
            gone = []
            for handle, entry in oldest.items():
                if _key(entry)[3] > limit:
                    break
                gone.append(handle)
            for handle in gone:
                self._unindex(handle, oldest.pop(handle))
            self._count -= len(gone)
            dropped.extend(gone)
            break
        return dropped

    def next_expiry(self) -> float | None:
        """Wall-clock time the oldest result expires (None: the book is empty)."""
        for segment in self.segments:
            for entry in segment.values():
                return _key(entry)[3] + self.ttl
        return None

    def _drop_oldest(self) -> list[bytes]:
        """Forget the oldest segment; its handles."""
        segments = self.segments
        segment = segments.popleft()
        if not segments:
            segments.append({})
        self._count -= len(segment)
        if self.indexed:
            for handle, entry in segment.items():
                self._unindex(handle, entry)
        return list(segment)

    def _unindex(self, handle: bytes, entry: Entry) -> None:
        _, function, unique, _ = _key(entry)
        if unique and self.indexed:
            key = (function, unique)
            if self.by_unique.get(key) == handle:
                del self.by_unique[key]
            if self.by_unique_any.get(unique) == handle:
                del self.by_unique_any[unique]
