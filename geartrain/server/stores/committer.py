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
from geartrain.server.stores.base import RejectedJobs, Store, StoredJob

log = logging.getLogger("geartrain.server")


_tuple_new = tuple.__new__


def stored_jobs(jobs: list[Job]) -> list[StoredJob]:
    """What the store is to keep of *jobs*, as they are now (one StoredJob
    each, made without the keyword handling of ``StoredJob(...)``: this runs
    for every durable submit)."""
    return [_tuple_new(StoredJob, (j.handle, j.function.name, j.unique, j.data, j.priority, j.when,
                                   j.reducer, j.retries)) for j in jobs]


class Committer:
    """Runs the store's transactions for one core (``depth`` at a time)."""

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
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        #: transactions that may run at once (the store says how many it overlaps)
        self.depth = max(1, depth if depth is not None else store.overlap)
        self._busy = 0
        self._failing_since: float | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        #: how long successful transactions took (for /metrics)
        self.latency = Histogram()
        #: transactions committed, and jobs they carried (for logs and tests)
        self.commits = 0
        self.failures = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._lane(), name=f"geartrain-committer-{i}")
                       for i in range(self.depth)]

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
            self._wake.set()

    def _has_work(self) -> bool:
        return bool(self._adds or self._updates or self._dones or self._results or self._result_drops)

    @property
    def pending(self) -> int:
        return (len(self._adds) + len(self._updates) + len(self._dones) + len(self._results)
                + len(self._result_drops))

    async def _lane(self) -> None:
        """One transaction at a time; ``depth`` lanes overlap theirs."""
        while True:
            if not self._has_work():
                if self._busy == 0:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            pause = self._retry_at - time.monotonic()
            if pause > 0:  # the store failed: everyone waits out the back-off
                await asyncio.sleep(pause)
                continue
            adds, self._adds = self._adds, []
            updates, self._updates = self._updates, []
            dones, self._dones = self._dones, []
            results, self._results = self._results, []
            drops, self._result_drops = self._result_drops, []
            self._busy += 1
            try:
                await self._commit_once(adds, updates, dones, results, drops)
            finally:
                self._busy -= 1

    async def _commit_once(self, adds: list[Job], updates: list[Job], dones: list[Job],
                           results: list[JobResult], drops: list[bytes]) -> None:
        rows = stored_jobs(adds)
        started = time.monotonic()
        try:
            await asyncio.wait_for(
                self.store.apply(rows, [(j.handle, j.retries) for j in updates], [j.handle for j in dones],
                                 results, drops),
                self.timeout)
        except RejectedJobs as exc:
            # a few jobs can never be stored (too big for the database): refuse
            # just those, and apply everything else again at once
            bad = [j for j in adds if j.handle in exc.handles]
            log.warning("store %s refused %d job(s): %s", self.store.describe(), len(bad), exc)
            self.core.stored(bad, f"{self.store.scheme} store refused the job: {_reason(exc, self.timeout)}")
            self._adds[:0] = [j for j in adds if j.handle not in exc.handles]
            self._updates[:0] = updates
            self._dones[:0] = dones
            self._results[:0] = results
            self._result_drops[:0] = drops
            self._wake.set()
            self.on_change()
            return
        except Exception as exc:  # StoreError, a timeout, or a driver's own error
            reason = _reason(exc, self.timeout)
            self.failures += 1
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                log.error("store %s failed: %s; refusing background submits until it is back",
                          self.store.describe(), reason)
            if adds:
                self.core.stored(adds, f"{self.store.scheme} store unavailable: {reason}")
            # keep what must still reach the store; try again after a pause
            self._updates[:0] = updates
            self._dones[:0] = dones
            self._results[:0] = results
            self._result_drops[:0] = drops
            if adds and isinstance(exc, TimeoutError):
                # the transaction may still land after we gave up on it (a thread
                # that goes on, a query the server already ran): the clients were
                # told no, so those rows must go -- deleting a missing row is harmless
                self._dones.extend(adds)
            self.on_change()
            self._backoff = min(1.0, self._backoff * 2 or 0.05)
            self._retry_at = time.monotonic() + self._backoff
            self._wake.set()
            return
        if self._failing_since is not None:
            log.warning("store %s is back after %.1fs", self.store.describe(),
                        time.monotonic() - self._failing_since)
            self._failing_since = None
        self._backoff = 0.0
        self.commits += 1
        self.latency.observe(time.monotonic() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("store commit: %d added, %d updated, %d done in %.1f ms", len(adds),
                      len(updates), len(dones), (time.monotonic() - started) * 1000)
        if adds:
            self.core.stored(adds, None)
        self.on_change()

    async def drain(self, timeout: float) -> bool:
        """Wait until everything taken so far is committed (shutdown)."""
        self.take()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
