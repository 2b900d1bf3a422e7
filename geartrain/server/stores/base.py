"""The one interface every store implements, and what it stores.

A store keeps the jobs that must survive the server (background jobs; with
``--store-foreground`` foreground ones too). The server asks four things of
it, like gearmand's queue plugins (add, flush, done, replay), but batched:

* ``open()`` connects and creates or migrates the schema;
* ``replay()`` returns every stored job, oldest first, at start-up;
* ``apply(adds, updates, dones, results, result_drops)`` writes new jobs,
  changed retry counts and finished jobs, and keeps the results of ended
  jobs and forgets expired ones, in ONE transaction (group commit:
  everything the server collected while the previous transaction ran);
* ``load_results()`` returns the kept results at start-up;
* ``close()``.

Jobs are keyed by their handle, never by their unique key, so jobs with empty
or equal uniques never overwrite each other (gearmand's sqlite and MySQL
queues do).
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import ClassVar, NamedTuple, overload

from geartrain.results import JobResult, result_from_json
from geartrain.server.stores.url import StoreURL

log = logging.getLogger("geartrain.server")


class StoredJob(NamedTuple):
    """A job as it is kept in a store (satisfies the core's ``JobRecord``).

    A tuple, cheap to make and soon dropped from the garbage collector's
    lists; the committer hands a store the jobs to add as ``StoredRows``,
    which makes these only when the store reads them."""

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes
    priority: int  #: 0 high, 1 normal, 2 low
    when: int = 0  #: epoch seconds it may run from (0: now)
    reducer: bytes = b""
    retries: int = 0


def result_row(result: JobResult) -> tuple[bytes, bytes, bytes, str, float, str]:
    """A kept result as every store keeps it: ``(handle, function, unique,
    state, finished, record)``; *record* is the JSON of
    :meth:`JobResult.to_json` (payloads as text or base64), the rest are
    columns to look it up or expire it by."""
    record = json.dumps(result.to_json(), separators=(",", ":"))
    return result.handle, result.function, result.unique, result.state, result.finished, record


class StoredRows(Sequence[StoredJob]):
    """Jobs to store, as the committer hands them to ``apply``: a sequence
    of StoredJob made on first use. A store that only needs the fields in
    order calls :meth:`tuples` instead and no StoredJob is made at all
    (the SQLite store packs those tuples as they are, on the path of every
    durable submit)."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[StoredJob] | None = None

    @abc.abstractmethod
    def tuples(self) -> list[tuple[bytes, bytes, bytes, bytes, int, int, bytes, int]]:
        """Each job's fields as a plain tuple, in StoredJob's order."""

    def _made(self) -> list[StoredJob]:
        if self._rows is None:
            self._rows = [tuple.__new__(StoredJob, fields) for fields in self.tuples()]
        return self._rows

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many jobs (without making their StoredJobs)."""

    @overload
    def __getitem__(self, index: int) -> StoredJob: ...

    @overload
    def __getitem__(self, index: slice) -> list[StoredJob]: ...

    def __getitem__(self, index: int | slice) -> StoredJob | list[StoredJob]:
        return self._made()[index]

    def __iter__(self) -> Iterator[StoredJob]:
        return iter(self._made())


def result_from_record(record: str | bytes, handle: bytes | None = None, function: bytes | None = None,
                       unique: bytes | None = None) -> JobResult:
    """The inverse of :func:`result_row`. The JSON names are text (bytes
    that are not UTF-8 come back replaced), so a store passes the exact
    *handle*, *function* and *unique* from its own columns when it has them."""
    result = result_from_json(json.loads(record))
    if handle is not None:
        result.handle = bytes(handle)
    if function is not None:
        result.function = bytes(function)
    if unique is not None:
        result.unique = bytes(unique)
    return result


class StoreError(Exception):
    """The store could not do what was asked; the message says why (no secrets)."""


class RejectedJobs(StoreError):
    """Some jobs of an apply() can never be stored (too big for the database):
    nothing was applied; the server refuses those and applies the rest again."""

    def __init__(self, message: str, handles: Iterable[bytes]) -> None:
        super().__init__(message)
        self.handles = frozenset(handles)


class Store(abc.ABC):
    """A place to keep jobs. Subclasses set ``scheme`` and implement the verbs."""

    scheme: ClassVar[str]
    #: False only for the memory store: nothing survives the process
    durable: ClassVar[bool] = True
    #: how many apply() calls may be in flight at once; they must take effect
    #: in the order they were called
    overlap: ClassVar[int] = 1

    def __init__(self, url: StoreURL) -> None:
        self.url = url

    def describe(self) -> str:
        """The store's URL for logs and messages, without any password."""
        return self.url.redacted()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; create or migrate the schema. Raises StoreError."""

    @abc.abstractmethod
    async def replay(self) -> list[StoredJob]:
        """Every stored job, in the order they were added."""

    @abc.abstractmethod
    async def apply(
        self,
        adds: Sequence[StoredJob],
        updates: Sequence[tuple[bytes, int]],
        dones: Sequence[bytes],
        results: Sequence[JobResult] = (),
        result_drops: Sequence[bytes] = (),
    ) -> None:
        """In one transaction: insert *adds*, set the retry count of the
        ``(handle, retries)`` in *updates*, delete the handles in *dones*,
        keep *results* (replacing a result with the same handle) and forget
        the results of the handles in *result_drops*.
        Raises StoreError (then nothing of it was applied)."""

    def start_apply(
        self,
        adds: Sequence[StoredJob],
        updates: Sequence[tuple[bytes, int]],
        dones: Sequence[bytes],
        results: Sequence[JobResult],
        result_drops: Sequence[bytes],
        done: Callable[[BaseException | None], None],
    ) -> Callable[[], None]:
        """:meth:`apply` without waiting for it (the committer's way): *done*
        is called with None once it is committed, or with the exception that
        failed it. Returns a function that gives up on it (the committer's
        timeout), after which *done* may not be called at all.

        This runs apply() in a task. A store that can answer from a callback
        overrides it (the SQLite store, from its helper's pipe) and so saves
        a task and its wake-ups on the path of every durable submit."""
        task = asyncio.get_running_loop().create_task(
            self.apply(adds, updates, dones, results, result_drops))

        def finished(task: asyncio.Task[None]) -> None:
            if not task.cancelled():
                done(task.exception())

        def give_up() -> None:
            task.cancel()

        task.add_done_callback(finished)
        return give_up

    async def load_results(self) -> list[JobResult]:
        """Every kept result (the server drops the expired ones)."""
        return []

    def _results_from_rows(self, rows: Iterable[tuple[bytes, bytes | None, bytes | None, str | bytes | None]],
                           where: str | None = None) -> list[JobResult]:
        """The results of ``(handle, function, unique, record)`` rows read back
        (see :func:`result_from_record`); a damaged one is logged and left
        out (and left in place: it may be looked at)."""
        kept: list[JobResult] = []
        for handle, function, unique, record in rows:
            try:
                if record is None:  # (a Redis hash without one)
                    raise KeyError("record")
                kept.append(result_from_record(record, handle, function, unique))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("%s: the kept result of %r is damaged (%s: %s); left in place, not loaded",
                          where or f"store {self.describe()}", bytes(handle), type(exc).__name__, exc)
        return kept

    async def count(self) -> int:
        """How many jobs are stored (for tests and start-up logs)."""
        return len(await self.replay())

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store may be opened again."""
