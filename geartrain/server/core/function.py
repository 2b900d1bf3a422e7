"""A function: the queues of its jobs and the workers that can run it."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from geartrain.server.core.stats import FunctionStats

if TYPE_CHECKING:
    from geartrain.server.core.job import Job
    from geartrain.server.core.peer import Peer

#: a queue is compacted once it holds more dead entries than this and than live ones
_COMPACT_MIN = 32


class Function:
    """One function name, as `status` lists it.

    Jobs wait in three FIFO queues (HIGH, NORMAL, LOW). A queued job that is
    cancelled or abandoned stays in place, counted in ``dead`` as well as in
    ``queued`` and ``total`` (gearmand shows such jobs until a worker reaches
    them); it is dropped when reached, and the queue is compacted when dead
    entries outnumber live ones, so removal stays O(1) amortized and memory
    bounded.
    ``sleepers`` holds the registered workers that sent PRE_SLEEP, longest
    asleep first, so wake-ups rotate fairly among them.
    """

    __slots__ = (
        "name", "queues", "queued", "dead", "scheduled", "total", "running", "workers",
        "sleepers", "max_queue", "by_unique", "by_payload", "pinned", "stats",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.queues: tuple[deque[Job], deque[Job], deque[Job]] = (deque(), deque(), deque())
        self.queued = [0, 0, 0]  #: entries per priority queue, dead ones included
        self.dead = [0, 0, 0]  #: cancelled/abandoned jobs still in each queue
        self.scheduled = 0  #: epoch jobs not yet due
        self.total = 0  #: every live job: queued + scheduled + running
        self.running = 0
        self.workers: set[Peer] = set()
        self.sleepers: OrderedDict[Peer, None] = OrderedDict()
        self.max_queue: tuple[int, int, int] | None = None
        self.by_unique: dict[bytes, Job] = {}
        self.by_payload: dict[bytes, Job] = {}  #: jobs submitted with unique "-"
        self.pinned = False  #: made by the admin `create function`: never forgotten when idle
        #: counters and time histograms for /metrics (they go when the function is forgotten)
        self.stats = FunctionStats()

    @property
    def runnable(self) -> int:
        """Queue entries (a dead one still makes a worker look and drop it)."""
        q = self.queued
        return q[0] + q[1] + q[2]

    def push(self, job: Job) -> None:
        """Queue *job* at the tail of its priority."""
        p = job.priority
        self.queues[p].append(job)
        self.queued[p] += 1

    def pop(self, priority: int) -> Job:
        """Take the oldest entry of *priority*, live or dead; there must be one."""
        job = self.queues[priority].popleft()
        self.queued[priority] -= 1
        if job.ignored:
            self.dead[priority] -= 1
        return job

    def bury(self, job: Job) -> list[Job]:
        """A queued *job* was cancelled or abandoned (``job.ignored`` is set).

        Like gearmand, it keeps its place and its count until a worker reaches
        it. Returns the dead jobs to forget now when the queue was compacted,
        which happens once dead entries outnumber the live ones.
        """
        p = job.priority
        self.dead[p] += 1
        dead = self.dead[p]
        if dead <= _COMPACT_MIN or dead * 2 <= self.queued[p]:
            return []
        queue = self.queues[p]
        buried = [j for j in queue if j.ignored]
        live = deque(j for j in queue if not j.ignored)
        self.queues[p].clear()
        self.queues[p].extend(live)
        self.queued[p] = len(live)
        self.dead[p] = 0
        return buried

    def index(self, job: Job) -> None:
        u = job.unique
        if u == b"-":
            if job.data:  # gearmand: "-" with an empty payload never coalesces
                self.by_payload[job.data] = job
        elif u:
            self.by_unique[u] = job

    def unindex(self, job: Job) -> None:
        u = job.unique
        if u == b"-":
            if self.by_payload.get(job.data) is job:
                del self.by_payload[job.data]
        elif u:
            if self.by_unique.get(u) is job:
                del self.by_unique[u]

    def coalesce_target(self, unique: bytes, data: bytes) -> Job | None:
        if unique == b"-":
            return self.by_payload.get(data) if data else None
        return self.by_unique.get(unique)

    def __repr__(self) -> str:
        return f"<Function {self.name!r} total={self.total} running={self.running}>"
