"""The job server's brain: every binary packet and what it does.

:class:`JobServer` is pure and deterministic. It takes events -- a peer
connected, frames arrived from a peer, a peer went away, the clock reached a
deadline -- and produces effects as data: encoded replies appended to
``peer.out`` (the peer is listed in :attr:`JobServer.dirty` until the network
layer writes them), ``peer.closing`` for connections to drop after the write,
and deadlines in :attr:`JobServer.timers`. It never touches a socket, and it
reads the time only through the two clocks it is given, so tests drive it
with plain calls and a fake clock.

Where gearmand 1.1.20 has a known bug, this module does the right thing; each
place says so (see docs/compatibility.md for the list).
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Protocol

from geartrain.protocol import REQ, RES, RESULTS_OPTION, TEXT, FramingError, PacketType
from geartrain.protocol.codec import Frame
from geartrain.results import QUEUED as QUEUED_NAME
from geartrain.results import RUNNING as RUNNING_NAME
from geartrain.results import SCHEDULED as SCHEDULED_NAME
from geartrain.results import UNKNOWN
from geartrain.server.core import stats as _stats
from geartrain.server.core import timers as _timers
from geartrain.server.core.admin import AdminCommands
from geartrain.server.core.function import Function
from geartrain.server.core.job import Job, JobState, Priority, handle_number
from geartrain.server.core.peer import Held, Peer
from geartrain.server.core.results import (
    CANCELLED,
    COMPLETED,
    EXCEPTION,
    FAILED,
    JobResult,
    Record,
    ResultBook,
    Trace,
    record_of,
    result_of_entry,
    result_of_job,
)
from geartrain.server.core.settings import (
    MAX_ABILITIES,
    MAX_CLIENT_ID_SIZE,
    MAX_REDUCER_SIZE,
    MAX_UNIQUE_SIZE,
    MIN_WORK_TIMEOUT_MS,
    WAKE_ALL,
    WAKE_AUTO,
    CoreSettings,
)
from geartrain.server.core.timers import TimerQueue

log = logging.getLogger("geartrain.server")

_T = PacketType
_header = struct.Struct(">4sII").pack

# plain ints, not the IntEnum members: the interpreter's fast paths for list
# indexing and comparisons only apply to exact ints
QUEUED = int(JobState.QUEUED)
RUNNING = int(JobState.RUNNING)
SCHEDULED = int(JobState.SCHEDULED)
FINISHED = int(JobState.FINISHED)
STORING = int(JobState.STORING)
HIGH, NORMAL, LOW = int(Priority.HIGH), int(Priority.NORMAL), int(Priority.LOW)


# packet types used on hot paths, as plain ints (cheaper than IntEnum members)
_JOB_CREATED = int(_T.JOB_CREATED)
_JOB_ASSIGN = int(_T.JOB_ASSIGN)
_JOB_ASSIGN_UNIQ = int(_T.JOB_ASSIGN_UNIQ)
_JOB_ASSIGN_ALL = int(_T.JOB_ASSIGN_ALL)
_WORK_COMPLETE = int(_T.WORK_COMPLETE)
_STATUS_RES = int(_T.STATUS_RES)


def _res(ptype: int, body: bytes) -> bytes:
    return _header(RES, ptype, len(body)) + body


NOOP_PACKET = _res(_T.NOOP, b"")
NO_JOB_PACKET = _res(_T.NO_JOB, b"")
_STATUS_UNKNOWN = b"\x000\x000\x000\x000"
_STATUS_QUEUED = b"\x001\x000\x000\x000"
_UINT32 = 0xFFFFFFFF


class JobRecord(Protocol):
    """What a durable store keeps of a job (see geartrain.server.stores),
    read-only (a store's StoredJob is a tuple)."""

    @property
    def handle(self) -> bytes: ...
    @property
    def function(self) -> bytes: ...
    @property
    def unique(self) -> bytes: ...
    @property
    def data(self) -> bytes: ...
    @property
    def priority(self) -> int: ...
    @property
    def when(self) -> int: ...
    @property
    def reducer(self) -> bytes: ...
    @property
    def retries(self) -> int: ...


#: seconds between two passes that forget expired results
EXPIRY_TICK = 1.0


def error_packet(code: bytes, text: bytes) -> bytes:
    return _res(_T.ERROR, code + b"\0" + text)


_ERR_NOT_EXPECTED = error_packet(b"INVALID_COMMAND", b"Command not expected")
_ERR_BAD_MAGIC = error_packet(b"INVALID_MAGIC", b"Request magic expected")
_ERR_RESULT_NOT_FOUND = error_packet(b"JOB_NOT_FOUND", b"Job given in work result not found")
_ERR_DATA_NOT_FOUND = error_packet(b"JOB_NOT_FOUND", b"Job does not exist on server")
_ERR_EXCEPTION_NOT_FOUND = error_packet(
    b"JOB_NOT_FOUND", b"An exception was received for a job that does not exist"
)
_ERR_UNIQUE_TOO_LARGE = error_packet(b"ARGUMENT_TOO_LARGE", b"Unique value too large")
# gearmand 1.1.20 reports an oversized reducer with the unique text (verified)
_ERR_REDUCER_TOO_LARGE = _ERR_UNIQUE_TOO_LARGE
_ERR_HANDLE_TOO_LARGE = error_packet(
    b"ARGUMENT_TOO_LARGE", b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf"
)
_ERR_TOO_MANY_FUNCTIONS = error_packet(
    b"ARGUMENT_TOO_LARGE", b"Too many functions registered on one connection"
)
_ERR_QUEUE_FULL = error_packet(b"QUEUE_ERROR", b"Job queue is full")
_ERR_SHUTTING_DOWN = error_packet(b"QUEUE_ERROR", b"Server is shutting down")
_ERR_UNKNOWN_OPTION = error_packet(b"UNKNOWN_OPTION", b"Server does not recognize given option")


def _bad_packet(name: str, need: str) -> bytes:
    return error_packet(b"INVALID_PACKET", f"{name} needs {need}".encode())


def _leading_int(value: bytes) -> int:
    """The integer a C ``strtol`` reads from the start of *value* (0 for garbage)."""
    s = value.strip()
    end = 1 if s[:1] in (b"-", b"+") else 0
    while end < len(s) and 48 <= s[end] <= 57:
        end += 1
    try:
        return int(s[:end])
    except ValueError:
        return 0


def atoi(value: bytes) -> int:
    """C ``atoi`` into a uint32, as gearmand stores WORK_STATUS numbers."""
    return _leading_int(value) & _UINT32


def strtoll(value: bytes) -> int:
    """C ``strtoll`` (base 10, garbage = 0, saturating), for SUBMIT_JOB_EPOCH."""
    return max(-(1 << 63), min(_leading_int(value), (1 << 63) - 1))


class JobServer:
    """Functions, jobs, queues, workers and listeners of one job server."""

    def __init__(
        self,
        settings: CoreSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings = settings or CoreSettings()
        self.clock = clock
        self.wallclock = wallclock
        self.prefix = settings.handle_prefix.encode()
        self.functions: dict[bytes, Function] = {}
        #: maxqueue limits set for functions that do not exist yet
        self.pending_limits: dict[bytes, tuple[int, int, int]] = {}
        self.jobs: dict[bytes, Job] = {}
        self.peers: dict[int, Peer] = {}
        self.dirty: list[Peer] = []
        self.timers = TimerQueue()
        #: durable-store effects, taken by the network layer after each batch:
        #: jobs to write (their submitters wait), jobs whose retry count
        #: changed, jobs to delete
        self.store_adds: list[Job] = []
        self.store_updates: list[Job] = []
        self.store_dones: list[Job] = []
        #: ... and results of ended jobs to keep, and results to forget
        self.store_results: list[JobResult] = []
        self.store_result_drops: list[bytes] = []
        self.durable = settings.durable
        #: results of ended jobs (core/results.py)
        self.results = ResultBook(settings.result_ttl, settings.result_max_count)
        self._keep_bg = settings.keep_results
        self._keep_fg = settings.keep_results and settings.keep_foreground_results
        self._result_max_bytes = settings.result_max_bytes
        self._results_timer = False
        #: jobs a worker just ended whose results are to be filed (file_results)
        self.pending_results: list[Job] = []
        #: WAIT_RESULT requests: handle -> the peers waiting (and how many times)
        self.result_waiters: dict[bytes, dict[Peer, int]] = {}
        self._extension: dict[int, Callable[[Peer, bytes], None]] = {
            _T.GET_RESULT: self._get_result,
            _T.WAIT_RESULT: self._wait_result,
            _T.GET_RESULT_UNIQUE: self._get_result_unique,
            _T.ATTACH_JOB: self._attach_job,
        }
        #: workers sent a NOOP that have not grabbed yet -> when (oldest first)
        self.woken: dict[Peer, float] = {}
        self._sweep_at = settings.max_idle_functions
        self.draining = False
        self.next_handle = 1
        self._next_peer = 1
        self.admin = AdminCommands(self)
        self.handlers = self._build_handlers()

    # ------------------------------------------------------------------ events

    def connect(self, host: str = "-", fd: int = -1) -> Peer:
        """A connection was accepted."""
        peer = Peer(self._next_peer, host, fd)
        self._next_peer += 1
        peer.exceptions = self.settings.exceptions
        self.peers[peer.id] = peer
        return peer

    def receive(self, peer: Peer, frames: Iterable[Frame | FramingError]) -> None:
        """Frames decoded from *peer*'s byte stream arrived."""
        handlers = self.handlers
        nhandlers = len(handlers)
        for frame in frames:
            if peer.closing:
                return
            if type(frame) is tuple:
                ptype, body, magic = frame
                if magic is REQ:
                    if 0 < ptype < nhandlers:
                        handlers[ptype](peer, body)
                    elif peer.results and ptype in self._extension:
                        self._extension[ptype](peer, body)
                    else:
                        self._send(peer, error_packet(
                            b"INVALID_COMMAND", b"Unknown packet type %d" % ptype))
                elif ptype == TEXT and magic is None:
                    self._send(peer, self.admin.execute(peer, body))
                else:
                    # gearmand: valid framing, wrong direction -> ERROR, connection kept
                    self._send(peer, _ERR_BAD_MAGIC)
            else:
                assert isinstance(frame, FramingError)
                log.info("closing connection %d from %s: %s", peer.fd, peer.host, frame.text)
                # gearmand closes silently; telling the peer why costs nothing
                if frame.in_text_line:  # an admin client: answer in its language
                    self._send(peer, b"ERR %s %s\r\n" % (
                        frame.code, frame.text.replace(" ", "+").encode()))
                else:
                    self._send(peer, error_packet(frame.code, frame.text.encode()))
                self.close(peer)

    def disconnect(self, peer: Peer) -> None:
        """The connection went away: requeue what it ran, detach what it waited for."""
        if peer.closed:
            return
        peer.closed = True
        peer.out.clear()
        peer.held = None
        self.peers.pop(peer.id, None)
        if peer.sleeping:
            self._unsleep(peer)
        woken_for = self._not_woken(peer)
        for f in peer.abilities:
            f.workers.discard(peer)
        for job in list(peer.jobs.values()):
            self._requeue(job)
        peer.abilities.clear()
        for job in peer.listening:
            listeners = job.listeners
            if listeners is not None:
                # one entry per foreground submit: the same connection may hold several
                if len(listeners) == 1 and listeners[0] is peer:
                    listeners.clear()
                else:
                    listeners[:] = [p for p in listeners if p is not peer]
                # gearmand bug fixed: a background job that a foreground client
                # coalesced onto is not lost when that client leaves
                if not listeners and not job.background:
                    self._abandon(job)
        peer.listening.clear()
        if woken_for is not None:
            self._rewake(woken_for)

    def close(self, peer: Peer) -> None:
        """Ask the network layer to close *peer* once its pending output is written."""
        peer.closing = True
        self._mark(peer)

    def next_deadline(self) -> float | None:
        """Earliest timer deadline on the :attr:`clock`, if any."""
        return self.timers.next_deadline()

    def on_timer(self) -> None:
        """The clock reached :meth:`next_deadline`: run what is due."""
        for kind, job, token in self.timers.pop_due(self.clock()):
            if kind == _timers.EPOCH_DUE:
                if job.state == SCHEDULED:
                    f = job.function
                    f.scheduled -= 1
                    job.queued_at = self.clock()
                    job.state = QUEUED
                    self._enqueue(f, job)
            elif kind == _timers.WORK_TIMEOUT:
                if job.state == RUNNING and job.attempt == token:
                    log.info("job %s timed out on worker %s; requeued",
                             job.handle.decode(errors="replace"), job.worker)
                    self._requeue(job)
            elif kind == _timers.WAKE_CHECK:
                self._check_woken()
            elif kind == _timers.RESULTS_EXPIRE:
                self._results_timer = False
                self._expire_results()

    def start_draining(self) -> None:
        """Graceful shutdown: hand out no more jobs and accept no new ones."""
        self.draining = True

    @property
    def running_jobs(self) -> int:
        return sum(f.running for f in self.functions.values())

    # ----------------------------------------------------------------- helpers

    def _mark(self, peer: Peer) -> None:
        if not peer.dirty:
            peer.dirty = True
            self.dirty.append(peer)

    def _send(self, peer: Peer, data: bytes) -> None:
        held = peer.held
        if held is not None:  # a JOB_CREATED ahead of this waits for the store
            held.append(data)
            return
        peer.out.append(data)
        if not peer.dirty:
            peer.dirty = True
            self.dirty.append(peer)

    def _hold(self, peer: Peer) -> Held:
        """A place in *peer*'s output for a reply that is not known yet."""
        placeholder = Held(peer)
        if peer.held is None:
            peer.held = deque((placeholder,))
        else:
            peer.held.append(placeholder)
        return placeholder

    def _release(self, peer: Peer) -> None:
        """Move the replies at the head of *peer*'s held output that are ready to its outbox."""
        held = peer.held
        if held is None:
            return
        out = peer.out
        moved = False
        while held:
            item = held[0]
            if isinstance(item, bytes):
                out.append(item)
            elif item.data is not None:
                out.append(item.data)
            else:
                break
            held.popleft()
            moved = True
        if not held:
            peer.held = None
        if moved and not peer.closed:
            self._mark(peer)

    def function(self, name: bytes) -> Function:
        """The function called *name*, created if it does not exist yet."""
        f = self.functions.get(name)
        if f is None:
            if len(self.functions) >= self._sweep_at:
                self._forget_idle_functions()
            f = self.functions[name] = Function(name)
            limit = self.pending_limits.pop(name, None)
            if limit is not None:
                f.max_queue = limit
        return f

    def _forget_idle_functions(self) -> None:
        """Keep memory bounded when clients invent function names without end.

        Like gearmand, a function stays listed after its last job and worker
        are gone. Once there are ``settings.max_idle_functions`` functions,
        the idle ones (no job, no worker, no limit, not made by `create
        function`) are forgotten; the next sweep waits until the count has
        doubled, so sweeping stays O(1) amortized.
        """
        idle = [
            name for name, f in self.functions.items()
            if not f.total and not f.workers and f.max_queue is None and not f.pinned
        ]
        for name in idle:
            del self.functions[name]
        self._sweep_at = max(self.settings.max_idle_functions, 2 * len(self.functions))
        log.warning("forgot %d idle functions (more than %d functions known)",
                    len(idle), self.settings.max_idle_functions)

    def _enqueue(self, f: Function, job: Job) -> None:
        """Queue a requeued or newly due job and wake a sleeper for it."""
        f.push(job)
        if f.sleepers and not self.draining:  # a draining server hands nothing out
            self._wake(f)

    def _wake(self, f: Function) -> None:
        n = self.settings.worker_wakeup
        sleepers = f.sleepers
        if n == WAKE_AUTO:
            n = 1
        elif n == WAKE_ALL:
            n = len(sleepers)
        send = self._send
        while sleepers and n > 0:
            worker = sleepers.popitem(last=False)[0]
            self._unsleep(worker)
            self._woke(worker, f)
            send(worker, NOOP_PACKET)
            n -= 1

    def _woke(self, worker: Peer, f: Function) -> None:
        """*worker* was sent a NOOP for *f*'s work. If it has not grabbed after
        ``settings.rewake_after`` seconds (stuck, or gone without a FIN), another
        sleeper is woken, so one unresponsive worker cannot hold a job back."""
        worker.woken_for = f
        woken = self.woken
        now = self.clock()
        if not woken:
            self.timers.add(now + self.settings.rewake_after, _timers.WAKE_CHECK, None)
        woken[worker] = now

    def _not_woken(self, worker: Peer) -> Function | None:
        """*worker* grabbed, slept again or left: it is no longer on its way to a job."""
        f = worker.woken_for
        if f is not None:
            worker.woken_for = None
            self.woken.pop(worker, None)
        return f

    def _check_woken(self) -> None:
        woken = self.woken
        if not woken:
            return
        limit = self.clock() - self.settings.rewake_after
        late = []
        for worker, when in woken.items():
            if when > limit:
                break
            late.append(worker)
        for worker in late:
            f = self._not_woken(worker)
            if f is not None:
                log.info("worker %s did not grab within %gs of its wake-up; waking another",
                         worker, self.settings.rewake_after)
                self._rewake(f)
        if woken:
            oldest = next(iter(woken.values()))
            self.timers.add(oldest + self.settings.rewake_after, _timers.WAKE_CHECK, None)

    def _rewake(self, f: Function) -> None:
        """A worker woken for *f* went elsewhere; wake another if work remains."""
        if f.sleepers and f.runnable and not self.draining:
            self._wake(f)

    def _unsleep(self, worker: Peer) -> None:
        worker.sleeping = False
        for f in worker.abilities:
            f.sleepers.pop(worker, None)

    def _has_work(self, worker: Peer) -> bool:
        if self.draining:
            return False
        for f in worker.abilities:
            q = f.queued
            if q[0] or q[1] or q[2]:
                return True
        return False

    def _take(self, worker: Peer) -> Job | None:
        """The next job for *worker*: highest priority across its functions,
        rotating among functions of equal priority (gearmand 2.0 order).
        Dead entries met on the way are dropped."""
        abilities = worker.abilities
        if len(abilities) == 1:
            for f in abilities:
                q = f.queued
                for p in (HIGH, NORMAL, LOW):
                    while q[p]:
                        job = f.pop(p)
                        if not job.ignored:
                            return job
                        self._finish(job)
            return None
        funcs = list(abilities)
        n = len(funcs)
        if not n:
            return None
        start = worker.rr % n
        for p in (HIGH, NORMAL, LOW):
            for i in range(n):
                f = funcs[(start + i) % n]
                q = f.queued
                while q[p]:
                    job = f.pop(p)
                    if not job.ignored:
                        worker.rr = start + i + 1
                        return job
                    self._finish(job)
        return None

    def _finish(self, job: Job) -> None:
        """Forget a job that ended (its running count is adjusted by the caller)."""
        job.state = FINISHED
        if self.result_waiters and not job.outcome:  # (a kept one is answered when filed)
            self._answer_waiters(job.handle)
        if job.stored:
            job.stored = False
            self.store_dones.append(job)
        del self.jobs[job.handle]
        f = job.function
        if job.unique:
            f.unindex(job)
        f.total -= 1
        listeners = job.listeners
        if listeners:
            for peer in listeners:
                peer.listening.discard(job)
            job.listeners = None
        if job.outcome:
            job.data = b""  # kept as its own result record: the workload is not part of it

    def _forget_stored(self, job: Job) -> None:
        """The job must not come back after a crash: delete its row now, not
        when a worker happens to reach it."""
        if job.stored:
            job.stored = False
            self.store_dones.append(job)

    def _ended(self, job: Job, outcome: int) -> None:
        """A worker ended its running *job* (before :meth:`_finish`)."""
        f = job.function
        f.running -= 1
        stats = f.stats
        stats.ended[job.priority][outcome] += 1
        stats.ran.observe(self.clock() - job.started_at)

    def _record(self, job: Job, state: str, payload: bytes = b"") -> None:
        """The result of a kept job that just ended is to be kept (once).

        A job a worker just ended (completed, failed, exception) is finished
        at once: the Job object itself becomes the record (nothing else
        refers to it any more), and :meth:`file_results` files it in the
        book at the end of the batch, with every job ended in it: a few
        attribute stores on the path of each job. A job cancelled or dropped
        while it may still change gets a snapshot (a tuple), filed now."""
        if len(payload) > self._result_max_bytes:
            trace = job.trace
            if trace is None:
                trace = job.trace = Trace(self._result_max_bytes)
            trace.truncated_bytes += len(payload) - self._result_max_bytes
            payload = payload[:self._result_max_bytes]
        if state == COMPLETED or state == EXCEPTION or (state == FAILED and job.worker is not None):
            job.outcome = state
            job.result = payload
            job.worker = None  # (the record must not keep a connection's objects alive)
            self.pending_results.append(job)
            return
        self.file_results()  # (in order)
        now = self.wallclock()
        started = job.started_at
        record = record_of(result_of_job(job, state, payload, now,
                                         started + (now - self.clock()) if started else 0.0))
        job.submitted = 0.0  # recorded: whatever the job still does is not
        job.trace = None
        self._file([record])

    def file_results(self) -> None:
        """File the results of the jobs ended since the last call (the network
        layer calls this once per loop turn, before it writes; every look-up
        calls it first)."""
        pending = self.pending_results
        if not pending:
            return
        self.pending_results = []
        now = self.wallclock()
        offset = now - self.clock()
        for job in pending:
            job.finished = now
            if job.started_at:
                job.started_at += offset  # on the wall clock from now on
        self._file(pending)

    def _file(self, entries: Sequence[Job | Record]) -> None:
        results = self.results
        dropped = results.add(entries)
        if self.result_waiters:
            for entry in entries:
                self._answer_waiters(entry[0] if type(entry) is tuple else entry.handle)  # type: ignore[union-attr]
        if self.durable:
            for entry in entries:
                self.store_results.append(result_of_entry(entry))
            self.store_result_drops.extend(dropped)
        if not self._results_timer:
            self._results_timer = True
            self.timers.add(self.clock() + results.ttl, _timers.RESULTS_EXPIRE, None)

    def _wall(self, monotonic: float) -> float:
        """The wall-clock time of a time on the monotonic :attr:`clock`."""
        return monotonic + (self.wallclock() - self.clock())

    def _expire_results(self) -> None:
        self.file_results()
        dropped = self.results.expire(self.wallclock())
        if dropped and self.durable:
            self.store_result_drops.extend(dropped)
        due = self.results.next_expiry()
        if due is not None:
            # at most once a second: a busy server ends jobs at every loop
            # turn, and a pass over the book per result due would cost more
            # than the results themselves (a result may outlive its TTL by
            # up to a second)
            self._results_timer = True
            delay = max(EXPIRY_TICK, due - self.wallclock() + 0.001)
            self.timers.add(self.clock() + delay, _timers.RESULTS_EXPIRE, None)

    def keep_results(self, results: Iterable[JobResult]) -> int:
        """Results read back from the durable store at start-up (before any
        connection), after :meth:`restore`; expired ones are dropped from the
        store. Returns how many were kept."""
        self.file_results()
        now = self.wallclock()
        drops = self.store_result_drops if self.durable else []
        kept: list[Job | Record] = []
        for result in sorted(results, key=lambda r: r.finished):
            # new handles never repeat one a kept result answers to
            self.next_handle = max(self.next_handle, handle_number(result.handle) + 1)
            if result.finished + self.results.ttl <= now:
                drops.append(result.handle)
            else:
                kept.append(record_of(result))
        drops.extend(self.results.restore(kept))
        count = len(kept)
        if count and not self._results_timer:
            self._expire_results()
        return count

    def _abandon(self, job: Job) -> None:
        """The last client of a foreground job left: it will not run (if queued)
        or its result goes nowhere (if running)."""
        job.ignored = True
        self._forget_stored(job)
        if job.unique:
            job.function.unindex(job)
        if job.state == QUEUED:
            for dead in job.function.bury(job):
                self._finish(dead)

    def _requeue(self, job: Job) -> None:
        """The worker running *job* lost it (disconnect, CANT_DO, timeout)."""
        worker = job.worker
        if worker is not None:
            worker.jobs.pop(job.handle, None)
        job.worker = None
        f = job.function
        f.running -= 1
        job.retries += 1
        job.numerator = job.denominator = 0
        if job.submitted:  # kept: remember when the lost attempt started
            trace = job.trace
            if trace is None:
                trace = job.trace = Trace(self.settings.result_max_bytes)
            trace.attempts += (self._wall(job.started_at),)
        job.started_at = 0.0
        job.queued_at = self.clock()
        if job.stored:
            self.store_updates.append(job)  # the retry count survives a restart
        if job.ignored:
            self._finish(job)
            return
        limit = self.settings.job_retries
        if limit > 0 and job.retries >= limit:
            log.warning("job %s of %r dropped after %d attempts",
                        job.handle.decode(errors="replace"), f.name, job.retries)
            self._fail_listeners(job)
            f.stats.ended[job.priority][_stats.FAILED] += 1
            if job.submitted:
                self._record(job, FAILED)
            self._finish(job)
            return
        job.state = QUEUED
        self._enqueue(f, job)

    def _fail_listeners(self, job: Job) -> None:
        if job.listeners:
            # gearmand bug #108 fixed: WORK_FAIL carries the bare handle, no NUL
            pkt = _res(_T.WORK_FAIL, job.handle)
            for peer in job.listeners:
                self._send(peer, pkt)

    # ------------------------------------------------------------ jobs, admin

    def cancel(self, handle: bytes) -> bool:
        """Cancel a job: its clients get WORK_FAIL; a queued one stays listed
        (ignored) until a worker reaches it, as in gearmand; a running one
        runs on, its results going nowhere."""
        job = self.jobs.get(handle)
        if job is None or job.state == STORING:  # not created until the store has it
            return False
        if job.ignored:
            return True  # still listed (cancelled or abandoned): gearmand answers OK again
        self._fail_listeners(job)
        job.function.stats.ended[job.priority][_stats.CANCELLED] += 1
        if job.submitted:
            self._record(job, CANCELLED)
        for peer in job.listeners or ():
            peer.listening.discard(job)
        job.listeners = None
        f = job.function
        if job.state == SCHEDULED:
            f.scheduled -= 1
            self._finish(job)
            return True
        job.ignored = True
        self._forget_stored(job)
        if job.unique:
            f.unindex(job)
        if job.state == QUEUED:
            for dead in f.bury(job):
                self._finish(dead)
        return True

    def set_max_queue(self, name: bytes, limits: tuple[int, int, int]) -> None:
        """Limit the jobs of *name* per priority; remembered for unknown functions."""
        value = None if limits == (0, 0, 0) else limits
        f = self.functions.get(name)
        if f is not None:
            f.max_queue = value
        elif value is None:
            self.pending_limits.pop(name, None)
        else:
            self.pending_limits[name] = value

    def drop_function(self, name: bytes) -> bool | None:
        """True if dropped, False if busy, None if unknown.

        The name matches case-insensitively, as in gearmand (an exact match
        wins). Unlike gearmand, a function that still has jobs is not dropped
        (gearmand only checks for workers and running jobs, and frees the
        function from under its queued ones).
        """
        f = self.functions.get(name)
        if f is None:
            folded = name.lower()
            for candidate in self.functions.values():
                if candidate.name.lower() == folded:
                    f = candidate
                    break
            else:
                return None
        if f.workers or f.total:
            return False
        del self.functions[f.name]
        return True

    # ----------------------------------------------------------- packet table

    def _build_handlers(self) -> list[Callable[[Peer, bytes], None]]:
        handlers: list[Callable[[Peer, bytes], None]] = [self._not_expected] * (_T.STATUS_RES_UNIQUE + 1)
        submit = self._submit
        table: dict[int, Callable[[Peer, bytes], None]] = {
            _T.CAN_DO: self._can_do,
            _T.CANT_DO: self._cant_do,
            _T.RESET_ABILITIES: self._reset_abilities,
            _T.PRE_SLEEP: self._pre_sleep,
            _T.SUBMIT_JOB: partial(submit, NORMAL, False),
            _T.GRAB_JOB: partial(self._grab, _JOB_ASSIGN),
            _T.WORK_STATUS: self._work_status,
            _T.WORK_COMPLETE: self._work_complete,
            _T.WORK_FAIL: self._work_fail,
            _T.GET_STATUS: self._get_status,
            _T.ECHO_REQ: self._echo,
            _T.SUBMIT_JOB_BG: partial(submit, NORMAL, True),
            _T.SUBMIT_JOB_HIGH: partial(submit, HIGH, False),
            _T.SET_CLIENT_ID: self._set_client_id,
            _T.CAN_DO_TIMEOUT: self._can_do_timeout,
            _T.WORK_EXCEPTION: self._work_exception,
            _T.OPTION_REQ: self._option,
            _T.WORK_DATA: partial(self._work_forward, _T.WORK_DATA),
            _T.WORK_WARNING: partial(self._work_forward, _T.WORK_WARNING),
            _T.GRAB_JOB_UNIQ: partial(self._grab, _JOB_ASSIGN_UNIQ),
            _T.SUBMIT_JOB_HIGH_BG: partial(submit, HIGH, True),
            _T.SUBMIT_JOB_LOW: partial(submit, LOW, False),
            _T.SUBMIT_JOB_LOW_BG: partial(submit, LOW, True),
            _T.SUBMIT_JOB_EPOCH: self._submit_epoch,
            _T.SUBMIT_REDUCE_JOB: partial(self._submit_reduce, False),
            _T.SUBMIT_REDUCE_JOB_BACKGROUND: partial(self._submit_reduce, True),
            _T.GRAB_JOB_ALL: partial(self._grab, _JOB_ASSIGN_ALL),
            _T.GET_STATUS_UNIQUE: self._get_status_unique,
        }
        for ptype, handler in table.items():
            handlers[ptype] = handler
        # NOOP, JOB_CREATED, NO_JOB, JOB_ASSIGN*, ECHO_RES, ERROR, STATUS_RES*,
        # OPTION_RES, ALL_YOURS, SUBMIT_JOB_SCHED and 5 stay _not_expected.
        return handlers

    def _not_expected(self, peer: Peer, body: bytes) -> None:
        self._send(peer, _ERR_NOT_EXPECTED)

    # ------------------------------------------------------------- submitting

    def _submit(self, priority: int, background: bool, peer: Peer, body: bytes) -> None:
        parts = body.split(b"\0", 2)
        if len(parts) != 3:
            self._send(peer, _bad_packet("SUBMIT_JOB", "function\\0unique\\0data"))
            return
        self._create(peer, parts[0], parts[1], parts[2], priority, background, 0, b"")

    def _submit_epoch(self, peer: Peer, body: bytes) -> None:
        parts = body.split(b"\0", 3)
        if len(parts) != 4:
            self._send(peer, _bad_packet("SUBMIT_JOB_EPOCH", "function\\0unique\\0epoch\\0data"))
            return
        self._create(peer, parts[0], parts[1], parts[3], NORMAL, True, strtoll(parts[2]), b"")

    def _submit_reduce(self, background: bool, peer: Peer, body: bytes) -> None:
        parts = body.split(b"\0", 4)
        if len(parts) == 5:  # function, unique, reducer, aggregator (unused), data
            name, unique, reducer, _aggregator, data = parts
        elif len(parts) == 4:  # the 3-field form of the PROTOCOL document
            name, unique, reducer, data = parts
        else:
            self._send(peer, _bad_packet(
                "SUBMIT_REDUCE_JOB", "function\\0unique\\0reducer\\0aggregator\\0data"))
            return
        if len(reducer) > MAX_REDUCER_SIZE:
            self._send(peer, _ERR_REDUCER_TOO_LARGE)
            return
        self._create(peer, name, unique, data, NORMAL, background, 0, reducer)

    def _create(
        self, peer: Peer, name: bytes, unique: bytes, data: bytes, priority: int,
        background: bool, when: int, reducer: bytes,
    ) -> None:
        # The hottest path of all (a bg-submit benchmark runs it ~500k times a
        # second), so Function.coalesce_target/index/push and _send are inlined.
        if len(unique) > MAX_UNIQUE_SIZE:
            self._send(peer, _ERR_UNIQUE_TOO_LARGE)
            return
        if self.draining:
            self._send(peer, _ERR_SHUTTING_DOWN)
            return
        f = self.functions.get(name)
        if f is None:
            f = self.function(name)
        if unique:
            if unique == b"-":  # coalesce on identical payload; never on an empty one
                job = f.by_payload.get(data) if data else None
            else:
                job = f.by_unique.get(unique)
            if job is not None:
                self._coalesce(peer, job, background)
                return
        limits = f.max_queue
        if limits is not None:
            limit = limits[priority]
            if limit and f.total >= limit:
                self._send(peer, _ERR_QUEUE_FULL)
                return
        handle = b"%s:%d" % (self.prefix, self.next_handle)
        self.next_handle += 1
        job = Job(handle, f, unique, data, priority, background, when, reducer)
        self.jobs[handle] = job
        if unique:
            if unique != b"-":
                f.by_unique[unique] = job
            elif data:
                f.by_payload[data] = job
        f.total += 1
        f.stats.submitted[priority] += 1
        job.queued_at = self.clock()
        if self._keep_fg if not background else self._keep_bg:
            job.submitted = self.wallclock()
        if not background:
            job.listeners = [peer]
            peer.listening.add(job)
        if self.durable and (background or self.settings.store_foreground):
            # JOB_CREATED only once the store has the job: hold the reply (and
            # whatever this peer is sent after it) until stored() says so
            job.state = STORING
            job.waiters = self._hold(peer)  # (one submitter: no list)
            self.store_adds.append(job)
            return
        created = _header(RES, _JOB_CREATED, len(handle)) + handle
        if when > 0 and self._schedule(job):
            self._send(peer, created)
            return
        f.queues[priority].append(job)
        f.queued[priority] += 1
        if f.sleepers:
            self._wake(f)
        held = peer.held
        if held is not None:
            held.append(created)
            return
        peer.out.append(created)
        if not peer.dirty:
            peer.dirty = True
            self.dirty.append(peer)

    def _coalesce(self, peer: Peer, job: Job, background: bool) -> None:
        """A submit with the unique of an existing job: same handle. A foreground
        submit listens from now on; as in gearmand each submit is one listener,
        so a connection that submits the same job twice gets every WORK_* packet
        twice (one per request it is waiting on)."""
        if background:
            # a background submit makes the job a background job: it must not
            # be lost when the foreground clients leave -- nor when the server dies
            job.background = True
        else:
            if job.listeners is None:
                job.listeners = [peer]
            else:
                job.listeners.append(peer)
            peer.listening.add(job)
        if job.state == STORING:  # the first submitter still waits for the store
            self._wait_stored(job, peer)
        elif self.durable and background and not job.stored:
            # a foreground job that now must survive a crash: store it first
            if job.waiters is None:
                self.store_adds.append(job)
            self._wait_stored(job, peer)
        else:
            self._send(peer, _res(_T.JOB_CREATED, job.handle))

    def _wait_stored(self, job: Job, peer: Peer) -> None:
        """*peer* gets its reply about *job* once the store answers."""
        held = self._hold(peer)
        waiters = job.waiters
        if waiters is None:
            job.waiters = held
        elif isinstance(waiters, Held):
            job.waiters = [waiters, held]
        else:
            waiters.append(held)

    def _schedule(self, job: Job) -> bool:
        """Park an epoch job until its time; False if its time has come."""
        delay = job.when - self.wallclock()
        if delay <= 0:
            return False
        job.state = SCHEDULED
        job.function.scheduled += 1
        self.timers.add(self.clock() + delay, _timers.EPOCH_DUE, job)
        return True

    # ------------------------------------------------------------ durability

    def stored(self, jobs: Sequence[Job], error: str | None = None) -> None:
        """The durable store answered for jobs taken from :attr:`store_adds`:
        committed (*error* None), or not. Their submitters get JOB_CREATED or
        ``ERROR QUEUE_ERROR``, in order with everything else sent to them.

        Committed is the path of every durable submit, so it is lean: the
        replies are filled in first and each peer's held output is released
        once per call, not once per job."""
        if error is not None:
            self._not_stored(jobs, error)
            return
        peers: list[Peer] = []
        last: Peer | None = None
        for job in jobs:
            waiters = job.waiters
            job.waiters = None
            handle = job.handle
            reply = _header(RES, _JOB_CREATED, len(handle)) + handle
            job.stored = True
            state = job.state
            if state == STORING:
                if job.ignored:  # its foreground clients left meanwhile
                    self._finish(job)
                elif not (job.when > 0 and self._schedule(job)):
                    job.state = QUEUED
                    f = job.function
                    p = job.priority
                    f.queues[p].append(job)  # (_enqueue and Function.push, inlined)
                    f.queued[p] += 1
                    if f.sleepers and not self.draining:
                        self._wake(f)
            elif state == FINISHED:  # it ended while its row was being written
                self._forget_stored(job)
            if isinstance(waiters, Held):
                waiters.data = reply
                peer = waiters.peer
                if peer is not last:
                    peers.append(peer)
                    last = peer
            elif waiters:
                for held in waiters:
                    held.data = reply
                    peers.append(held.peer)
        release = self._release
        for peer in peers:
            if not peer.closed:
                release(peer)

    def _not_stored(self, jobs: Sequence[Job], error: str) -> None:
        reply = error_packet(b"QUEUE_ERROR", error.encode("utf-8", "replace"))
        for job in jobs:
            waiters = job.waiters
            job.waiters = None
            if job.state == STORING:  # the store refused a new job: it never existed
                self._finish(job)
            for held in (waiters,) if isinstance(waiters, Held) else waiters or ():
                held.data = reply
                if not held.peer.closed:
                    self._release(held.peer)

    def restore(self, records: Iterable[JobRecord]) -> int:
        """Jobs replayed from the durable store at start-up (before any
        connection): queued again with their handles, priorities, uniques,
        run-at times, reducers and retry counts, in the order given. New
        handles continue after the highest replayed number. Returns how many."""
        count = 0
        for r in records:
            if r.handle in self.jobs:
                continue
            f = self.functions.get(r.function)
            if f is None:
                f = self.function(r.function)
            job = Job(r.handle, f, r.unique, r.data, r.priority, True, r.when, r.reducer)
            job.retries = r.retries
            job.stored = True
            job.queued_at = self.clock()
            if self._keep_bg:
                job.submitted = -1.0  # kept; when it was submitted, the queue does not say
            self.jobs[r.handle] = job
            if r.unique and f.coalesce_target(r.unique, r.data) is None:
                f.index(job)
            f.total += 1
            if not (r.when > 0 and self._schedule(job)):
                f.push(job)
            self.next_handle = max(self.next_handle, handle_number(r.handle) + 1)
            count += 1
        return count

    # ---------------------------------------------------------------- workers

    def _can_do(self, peer: Peer, body: bytes) -> None:
        self._add_ability(peer, body, 0)

    def _can_do_timeout(self, peer: Peer, body: bytes) -> None:
        name, sep, ms = body.rpartition(b"\0")
        if not sep:
            self._send(peer, _bad_packet("CAN_DO_TIMEOUT", "function\\0milliseconds"))
            return
        if len(ms) > 20:
            self._send(peer, error_packet(b"INVALID_PACKET", b"CAN_DO_TIMEOUT value too long"))
            return
        timeout = strtoll(ms)
        if timeout <= 0:
            timeout = 0  # none, like plain CAN_DO
        elif timeout < MIN_WORK_TIMEOUT_MS:
            timeout = MIN_WORK_TIMEOUT_MS  # gearmand 1.1.20 rounds up to one second (verified)
        self._add_ability(peer, name, timeout)

    def _add_ability(self, peer: Peer, name: bytes, timeout_ms: int) -> None:
        abilities = peer.abilities
        if len(abilities) >= MAX_ABILITIES and self.functions.get(name) not in abilities:
            self._send(peer, _ERR_TOO_MANY_FUNCTIONS)
            return
        f = self.function(name)
        if f in abilities:
            del abilities[f]  # re-registering moves it to "most recent"
        else:
            f.workers.add(peer)
        abilities[f] = timeout_ms
        if peer.sleeping:
            if f.runnable and not self.draining:
                self._unsleep(peer)
                self._woke(peer, f)
                self._send(peer, NOOP_PACKET)
            else:
                f.sleepers[peer] = None

    def _remove_ability(self, peer: Peer, f: Function) -> None:
        del peer.abilities[f]
        f.workers.discard(peer)
        f.sleepers.pop(peer, None)
        for job in [j for j in peer.jobs.values() if j.function is f]:
            self._requeue(job)
        if peer.woken_for is f:
            self._not_woken(peer)
            self._rewake(f)

    def _cant_do(self, peer: Peer, body: bytes) -> None:
        f = self.functions.get(body)
        if f is not None and f in peer.abilities:
            self._remove_ability(peer, f)

    def _reset_abilities(self, peer: Peer, body: bytes) -> None:
        for f in list(peer.abilities):
            self._remove_ability(peer, f)

    def _pre_sleep(self, peer: Peer, body: bytes) -> None:
        if peer.sleeping:
            return
        if self._has_work(peer):
            self._send(peer, NOOP_PACKET)
            return
        peer.sleeping = True
        if peer.woken_for is not None:
            self._not_woken(peer)  # it went back to sleep: no longer on its way to a job
        for f in peer.abilities:
            f.sleepers[peer] = None

    def _grab(self, assign: int, peer: Peer, body: bytes) -> None:
        if peer.sleeping:
            self._unsleep(peer)
        woken_for = peer.woken_for
        if woken_for is not None:
            self._not_woken(peer)
        job = None if self.draining else self._take(peer)
        if job is None:
            self._send(peer, NO_JOB_PACKET)
            return
        f = job.function
        if woken_for is not None and woken_for is not f:
            self._rewake(woken_for)
        job.state = RUNNING
        job.worker = peer
        job.attempt += 1
        f.running += 1
        now = self.clock()
        f.stats.waited.observe(now - job.queued_at)
        job.started_at = now
        handle = job.handle
        peer.jobs[handle] = job
        timeout = peer.abilities[f]
        if timeout:
            self.timers.add(self.clock() + timeout / 1000.0, _timers.WORK_TIMEOUT, job, job.attempt)
        if assign == _JOB_ASSIGN:
            body = handle + b"\0" + f.name + b"\0" + job.data
        elif assign == _JOB_ASSIGN_UNIQ or not job.reducer:
            # GRAB_JOB_ALL without a reducer answers JOB_ASSIGN_UNIQ, as libgearman expects
            assign = _JOB_ASSIGN_UNIQ
            body = b"\0".join((handle, f.name, job.unique, job.data))
        else:
            body = b"\0".join((handle, f.name, job.unique, job.reducer, job.data))
        self._send(peer, _header(RES, assign, len(body)) + body)

    def _set_client_id(self, peer: Peer, body: bytes) -> None:
        # control characters would break the line-oriented `workers` listing
        cid = body[:MAX_CLIENT_ID_SIZE]
        if any(c < 32 for c in cid):
            cid = bytes(c if c >= 32 else 32 for c in cid)
        peer.client_id = cid  # gearmand shows an empty id as empty

    # ---------------------------------------------------------------- results

    def _work_status(self, peer: Peer, body: bytes) -> None:
        parts = body.split(b"\0", 2)
        if len(parts) != 3:
            self._send(peer, _bad_packet("WORK_STATUS", "handle\\0numerator\\0denominator"))
            return
        job = peer.jobs.get(parts[0])
        if job is None:
            self._send(peer, _ERR_RESULT_NOT_FOUND)
            return
        job.numerator = atoi(parts[1])
        job.denominator = atoi(parts[2])
        if job.listeners:
            pkt = _header(RES, _T.WORK_STATUS, len(body)) + body
            for listener in job.listeners:
                self._send(listener, pkt)

    def _work_forward(self, ptype: int, peer: Peer, body: bytes) -> None:
        i = body.find(b"\0")
        if i < 0:
            handle = body
            body += b"\0"
        else:
            handle = body[:i]
        job = peer.jobs.get(handle)
        if job is None:
            self._send(peer, _ERR_DATA_NOT_FOUND)
            return
        if job.submitted:
            trace = job.trace
            if trace is None:
                trace = job.trace = Trace(self.settings.result_max_bytes)
            trace.add(ptype == _T.WORK_WARNING, body[len(handle) + 1:])
        if job.listeners:
            pkt = _header(RES, ptype, len(body)) + body
            for listener in job.listeners:
                self._send(listener, pkt)

    def _work_complete(self, peer: Peer, body: bytes) -> None:
        i = body.find(b"\0")
        if i < 0:
            # Perl's Gearman::Worker sends a bare handle for an empty result
            handle = body
            body += b"\0"
        else:
            handle = body[:i]
        job = peer.jobs.pop(handle, None)
        if job is None:
            self._send(peer, _ERR_RESULT_NOT_FOUND)
            return
        listeners = job.listeners
        if listeners:
            pkt = _header(RES, _WORK_COMPLETE, len(body)) + body
            for listener in listeners:
                self._send(listener, pkt)
        self._ended(job, _stats.COMPLETED)
        if job.submitted:
            self._record(job, COMPLETED, body[len(handle) + 1:])
        self._finish(job)

    def _work_fail(self, peer: Peer, body: bytes) -> None:
        handle = body.rstrip(b"\0")
        job = peer.jobs.pop(handle, None)
        if job is None:
            # gearmand checks the length first (its handles fit in 64 bytes); ours may
            # be longer with a long prefix, so only an unknown handle gets this answer
            self._send(peer, _ERR_HANDLE_TOO_LARGE if len(handle) >= 64 else _ERR_RESULT_NOT_FOUND)
            return
        self._fail_listeners(job)
        self._ended(job, _stats.FAILED)
        if job.submitted:
            self._record(job, FAILED)
        self._finish(job)

    def _work_exception(self, peer: Peer, body: bytes) -> None:
        i = body.find(b"\0")
        if i < 0:
            handle = body
            body += b"\0"
        else:
            handle = body[:i]
        job = peer.jobs.pop(handle, None)
        if job is None:
            self._send(peer, _ERR_EXCEPTION_NOT_FOUND)
            return
        if job.listeners:
            exc = _header(RES, _T.WORK_EXCEPTION, len(body)) + body
            fail = _res(_T.WORK_FAIL, handle)  # gearmand #108: no stray trailing NUL
            for listener in job.listeners:
                self._send(listener, exc if listener.exceptions else fail)
        self._ended(job, _stats.EXCEPTION)
        if job.submitted:
            self._record(job, EXCEPTION, body[len(handle) + 1:])
        self._finish(job)

    # ----------------------------------------------------------------- status

    def _get_status(self, peer: Peer, body: bytes) -> None:
        job = self.jobs.get(body)
        if job is None:
            tail = _STATUS_UNKNOWN
        elif job.state == RUNNING:
            tail = b"\x001\x001\x00%d\x00%d" % (job.numerator, job.denominator)
        else:
            tail = _STATUS_QUEUED
        body += tail
        self._send(peer, _header(RES, _STATUS_RES, len(body)) + body)

    def find_unique(self, unique: bytes) -> Job | None:
        """The first live job with *unique* in any function (gearmand's lookup)."""
        for f in self.functions.values():
            job = f.by_unique.get(unique)
            if job is not None:
                return job
        return None

    def _get_status_unique(self, peer: Peer, body: bytes) -> None:
        job = self.find_unique(body) if body else None
        if job is None:
            tail = b"\x000\x000\x000\x000\x000"
        else:
            clients = len(job.listeners) if job.listeners else 0
            if job.state == RUNNING:
                tail = b"\x001\x001\x00%d\x00%d\x00%d" % (job.numerator, job.denominator, clients)
            else:
                tail = b"\x001\x000\x000\x000\x00%d" % clients
        self._send(peer, _res(_T.STATUS_RES_UNIQUE, body + tail))

    # ------------------------------------------------------------------ misc

    def _echo(self, peer: Peer, body: bytes) -> None:
        self._send(peer, _header(RES, _T.ECHO_RES, len(body)) + body)

    def _option(self, peer: Peer, body: bytes) -> None:
        option = body.lower()
        if option == b"exceptions":
            peer.exceptions = True
            self._send(peer, _res(_T.OPTION_RES, body))
        elif option == RESULTS_OPTION:
            peer.results = True
            self._send(peer, _res(_T.OPTION_RES, body))
        else:
            self._send(peer, _ERR_UNKNOWN_OPTION)

    # ------------------------------------------- results (protocol extension)

    def describe(self, handle: bytes) -> JobResult | None:
        """What the server knows of *handle*: a live job (queued, scheduled,
        running) or the kept result of an ended one; None if neither."""
        self.file_results()
        job = self.jobs.get(handle)
        if job is not None and job.state != STORING and job.state != FINISHED and not job.ignored:
            return self._live(job)
        return self.results.get(handle)

    def describe_unique(self, unique: bytes, function: bytes | None = None) -> JobResult | None:
        """As :meth:`describe`, by unique key (in *function*, or in any): the
        live job if there is one, else the latest kept result."""
        self.file_results()
        job: Job | None
        if function is not None:
            f = self.functions.get(function)
            job = f.by_unique.get(unique) if f is not None else None
        else:
            job = self.find_unique(unique)
        if job is not None and job.state != STORING and job.state != FINISHED and not job.ignored:
            return self._live(job)
        return self.results.find_unique(unique, function)

    def _live(self, job: Job) -> JobResult:
        started = self._wall(job.started_at) if job.started_at else 0.0
        return result_of_job(job, _state_name(job.state), b"", 0.0, started)

    def _result_packet(self, handle: bytes, result: JobResult | None) -> bytes:
        if result is None:
            return _res(_T.RESULT_RES, handle + b"\0" + UNKNOWN.encode() + b"\0")
        doc = json.dumps(result.to_json(), separators=(",", ":")).encode()
        return _res(_T.RESULT_RES, b"%s\0%s\0%s" % (handle, result.state.encode(), doc))

    def _get_result(self, peer: Peer, body: bytes) -> None:
        self._send(peer, self._result_packet(body, self.describe(body)))

    def _wait_result(self, peer: Peer, body: bytes) -> None:
        self.file_results()
        result = self.describe(body)
        if result is not None and not result.done:
            waiting = self.result_waiters.setdefault(body, {})
            waiting[peer] = waiting.get(peer, 0) + 1
            return
        self._send(peer, self._result_packet(body, result))

    def _answer_waiters(self, handle: bytes) -> None:
        waiting = self.result_waiters.pop(handle, None)
        if not waiting:
            return
        packet = self._result_packet(handle, self.results.get(handle))
        for peer, times in waiting.items():
            if not peer.closed:
                for _ in range(times):
                    self._send(peer, packet)

    def _get_result_unique(self, peer: Peer, body: bytes) -> None:
        function, _, unique = body.partition(b"\0")
        result = self.describe_unique(unique, function or None) if unique else None
        self._send(peer, self._result_packet(result.handle if result is not None else b"", result))

    def _attach_job(self, peer: Peer, body: bytes) -> None:
        """Listen to a live job as its foreground clients do: its WORK_STATUS,
        WORK_DATA, WORK_WARNING and final WORK_* packets come to *peer* too."""
        self.file_results()
        job = self.jobs.get(body)
        if job is None or job.state == STORING or job.state == FINISHED or job.ignored:
            result = self.results.get(body)
            state = result.state if result is not None else UNKNOWN
            self._send(peer, _res(_T.ATTACH_RES, body + b"\0" + state.encode()))
            return
        if job.listeners is None:
            job.listeners = []
        job.listeners.append(peer)
        peer.listening.add(job)
        self._send(peer, _res(_T.ATTACH_RES, body + b"\0" + _state_name(job.state).encode()))



def _state_name(state: int) -> str:
    """The name a live job's state has in results (geartrain.results)."""
    return RUNNING_NAME if state == RUNNING else SCHEDULED_NAME if state == SCHEDULED else QUEUED_NAME
