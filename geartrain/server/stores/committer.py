"""Group commit: the bridge between the core's store effects and a Store.

After each batch of packets the network layer hands the core's
``store_adds`` / ``store_updates`` / ``store_dones`` to :meth:`Committer.take`.
A transaction takes everything collected so far; what arrives meanwhile
waits for the next one, so a burst of submits (or completions) shares one
commit, and durability costs a transaction per batch, not per job. A store
that can queue transactions (``Store.overlap``: the SQLite helper) gets the
next one sent while it works on the previous one, so it never waits for the
server between the two; the others get one at a time.

When the store fails, the jobs of that transaction that were being added are
refused at once (their clients get ``ERROR QUEUE_ERROR``, never a handle);
updates and deletions are kept and retried, with back-off, until the store
is back, so a finished job is deleted eventually and at worst runs again
after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from geartrain.results import JobResult
from geartrain.server.core.job import Job
from geartrain.server.core.server import JobServer
from geartrain.server.core.stats import Histogram
from geartrain.server.stores.base import RejectedJobs, Store, StoredRows

log = logging.getLogger("geartrain.server")


class JobRows(StoredRows):
    """What the store is to keep of *jobs*, read when the store reads them
    (at once for SQLite): StoredJobs made on first use, or plain tuples for
    a store that asks for ``tuples()`` (SQLite), so no StoredJob is made on
    the path of every durable submit there."""

    __slots__ = ("jobs",)

    def __init__(self, jobs: list[Job]) -> None:
        super().__init__()
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def tuples(self) -> list[tuple[bytes, bytes, bytes, bytes, int, int, bytes, int]]:
        return [(j.handle, j.function.name, j.unique, j.data, j.priority, j.when, j.reducer, j.retries)
                for j in self.jobs]


class Committer:
    """Runs the store's transactions for one core (``depth`` at a time).

    Driven by callbacks, not tasks: :meth:`take` starts a transaction as
    soon as a slot is free (``Store.start_apply``), and the store's answer
    (:meth:`_Transaction.finish`) releases the held replies, then starts the
    next one. The SQLite store answers straight from its helper's pipe, so a
    transaction costs no task, future or timeout context, only a timer.
    """

    def __init__(self, store: Store, core: JobServer, on_change: Callable[[], None],
                 timeout: float = 5.0, depth: int | None = None) -> None:
        self.store = store
        self.core = core
        self.on_change = on_change
        self.timeout = timeout
        self._adds: list[Job] = []
        self._updates: list[Job] = []
        self._dones: list[Job] = []
        self._results: list[JobResult] = []
        self._result_drops: list[bytes] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[_Transaction] = set()
        self._retry_timer: asyncio.TimerHandle | None = None
        #: transactions that may run at once (the store says how many it overlaps)
        self.depth = max(1, depth if depth is not None else store.overlap)
        self._failing_since: float | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        #: how long successful transactions took (for /metrics)
        self.latency = Histogram()
        #: transactions committed, and jobs they carried (for logs and tests)
        self.commits = 0
        self.failures = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def take(self) -> None:
        """Collect the core's pending store effects (called after each batch)."""
        core = self.core
        if core.store_adds:
            self._adds.extend(core.store_adds)
            core.store_adds.clear()
        if core.store_updates:
            self._updates.extend(core.store_updates)
            core.store_updates.clear()
        if core.store_dones:
            self._dones.extend(core.store_dones)
            core.store_dones.clear()
        if core.store_results:
            self._results.extend(core.store_results)
            core.store_results.clear()
        if core.store_result_drops:
            self._result_drops.extend(core.store_result_drops)
            core.store_result_drops.clear()
        if self._has_work():
            self._idle.clear()
            self._kick()

    def take_early(self) -> None:
        """After a read that produced submits: start a transaction with them
        at once if none is in flight (the store would otherwise sit idle
        while the rest of the loop iteration's reads are parsed). With one
        in flight they wait for :meth:`take` at the end of the iteration, so
        each read does not cost a request of its own."""
        if not self._in_flight:
            self.take()

    def _has_work(self) -> bool:
        return bool(self._adds or self._updates or self._dones or self._results or self._result_drops)

    @property
    def pending(self) -> int:
        return (len(self._adds) + len(self._updates) + len(self._dones) + len(self._results)
                + len(self._result_drops))

    def _kick(self) -> None:
        """Start transactions while there is work and a free slot."""
        loop = self._loop
        if loop is None:  # not started (or stopped)
            return
        while len(self._in_flight) < self.depth and self._has_work():
            pause = self._retry_at - time.monotonic()
            if pause > 0:  # the store failed: everything waits out the back-off
                if self._retry_timer is None:
                    self._retry_timer = loop.call_later(pause, self._retry)
                return
            txn = _Transaction(self, self._adds, self._updates, self._dones, self._results,
                               self._result_drops)
            self._adds, self._updates, self._dones, self._results, self._result_drops = [], [], [], [], []
            self._in_flight.add(txn)
            txn.begin(loop)
        if not self._in_flight and not self._has_work():
            self._idle.set()

    def _retry(self) -> None:
        self._retry_timer = None
        self._kick()

    def _finished(self, txn: _Transaction, exc: BaseException | None) -> None:
        """A transaction is over: committed (*exc* None) or failed."""
        self._in_flight.discard(txn)
        adds = txn.adds
        if exc is None:
            self._committed(txn)
        elif isinstance(exc, RejectedJobs):
            # a few jobs can never be stored (too big for the database): refuse
            # just those, and apply everything else again at once
            bad = [j for j in adds if j.handle in exc.handles]
            log.warning("store %s refused %d job(s): %s", self.store.describe(), len(bad), exc)
            self.core.stored(bad, f"{self.store.scheme} store refused the job: {_reason(exc, self.timeout)}")
            self._adds[:0] = [j for j in adds if j.handle not in exc.handles]
            self._keep(txn)
            self.on_change()
        else:  # StoreError, a timeout, or a driver's own error
            self._failed(txn, exc)
        self._kick()

    def _committed(self, txn: _Transaction) -> None:
        if self._failing_since is not None:
            log.warning("store %s is back after %.1fs", self.store.describe(),
                        time.monotonic() - self._failing_since)
            self._failing_since = None
        self._backoff = 0.0
        self.commits += 1
        elapsed = time.monotonic() - txn.started
        self.latency.observe(elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("store commit: %d added, %d updated, %d done in %.1f ms", len(txn.adds),
                      len(txn.updates), len(txn.dones), elapsed * 1000)
        if txn.adds:
            self.core.stored(txn.adds, None)
        self.on_change()

    def _failed(self, txn: _Transaction, exc: BaseException) -> None:
        reason = _reason(exc, self.timeout)
        self.failures += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.error("store %s failed: %s; refusing background submits until it is back",
                      self.store.describe(), reason)
        adds = txn.adds
        if adds:
            self.core.stored(adds, f"{self.store.scheme} store unavailable: {reason}")
        # keep what must still reach the store; try again after a pause
        self._keep(txn)
        if adds and isinstance(exc, TimeoutError):
            # the transaction may still land after we gave up on it (a thread
            # that goes on, a query the server already ran): the clients were
            # told no, so those rows must go -- deleting a missing row is harmless
            self._dones.extend(adds)
        self.on_change()
        self._backoff = min(1.0, self._backoff * 2 or 0.05)
        self._retry_at = time.monotonic() + self._backoff

    def _keep(self, txn: _Transaction) -> None:
        """Put back what a transaction that did not commit must still write."""
        self._updates[:0] = txn.updates
        self._dones[:0] = txn.dones
        self._results[:0] = txn.results
        self._result_drops[:0] = txn.drops

    async def drain(self, timeout: float) -> bool:
        """Wait until everything taken so far is committed (shutdown)."""
        self.take()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        """Give up on the transactions in flight; start no more."""
        self._loop = None
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        for txn in list(self._in_flight):
            txn.abandon()
        self._in_flight.clear()
        await asyncio.sleep(0)  # (let a cancelled apply task unwind)


class _Transaction:
    """One transaction in flight: what it carries, its timer, how to give up on it."""

    __slots__ = ("committer", "adds", "updates", "dones", "results", "drops", "started",
                 "timer", "cancel", "over")

    def __init__(self, committer: Committer, adds: list[Job], updates: list[Job], dones: list[Job],
                 results: list[JobResult], drops: list[bytes]) -> None:
        self.committer = committer
        self.adds = adds
        self.updates = updates
        self.dones = dones
        self.results = results
        self.drops = drops
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.cancel: Callable[[], None] | None = None
        self.over = False

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        committer = self.committer
        self.started = time.monotonic()
        self.timer = loop.call_later(committer.timeout, self.expire)
        try:
            self.cancel = committer.store.start_apply(
                JobRows(self.adds), [(j.handle, j.retries) for j in self.updates],
                [j.handle for j in self.dones], self.results, self.drops, self.finish)
        except Exception as exc:  # (a store that fails before it starts)
            self.finish(exc)

    def finish(self, exc: BaseException | None) -> None:
        """The store's answer (None: committed)."""
        if self.over:  # given up on already (timeout, stop): too late
            return
        self.over = True
        if self.timer is not None:
            self.timer.cancel()
        self.committer._finished(self, exc)

    def expire(self) -> None:
        """No answer within the committer's timeout: give up on it."""
        if self.over:
            return
        self.over = True
        self.abandon()
        self.committer._finished(self, TimeoutError())

    def abandon(self) -> None:
        self.over = True
        if self.timer is not None:
            self.timer.cancel()
        cancel, self.cancel = self.cancel, None
        if cancel is not None:
            cancel()


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
