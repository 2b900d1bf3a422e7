"""Random sequences of events, checking the core's bookkeeping after every step.

The invariants are what the rest of the core relies on: counters match the
jobs, every job is where its state says, listeners and listening agree, a
background job is never lost, and no queued job is left with every one of its
workers asleep.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from geartrain.server.core import JobState
from tests.server.core.driver import Conn, Driver, T

FUNCS = [b"a", b"b", b"c"]
UNIQUES = [b"", b"", b"u1", b"u2", b"-"]
DATA = [b"", b"x", b"y"]
SUBMITS = [
    (T.SUBMIT_JOB, False), (T.SUBMIT_JOB_BG, True), (T.SUBMIT_JOB_HIGH, False),
    (T.SUBMIT_JOB_HIGH_BG, True), (T.SUBMIT_JOB_LOW, False), (T.SUBMIT_JOB_LOW_BG, True),
]
GRABS = [T.GRAB_JOB, T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL]
ASSIGNS = {T.JOB_ASSIGN, T.JOB_ASSIGN_UNIQ, T.JOB_ASSIGN_ALL}
ENDS = [T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION]


class CoreMachine(RuleBasedStateMachine):
    @initialize(wakeup=st.sampled_from([0, -1, 2]), retries=st.sampled_from([0, 0, 3]))
    def start(self, wakeup: int, retries: int) -> None:
        self.d = Driver(worker_wakeup=wakeup, job_retries=retries)
        self.conns: list[Conn] = [self.d.connect() for _ in range(4)]
        #: handles of jobs first submitted in the background, not yet ended or cancelled
        self.bg_alive: set[bytes] = set()
        self.retries = retries

    def _conn(self, i: int) -> Conn | None:
        live = [c for c in self.conns if not c.peer.closed]
        return live[i % len(live)] if live else None

    def _drain(self, c: Conn) -> list[tuple[int, bytes]]:
        return c.packets()

    @rule()
    def connect(self) -> None:
        if len([c for c in self.conns if not c.peer.closed]) < 6:
            self.conns.append(self.d.connect())

    @rule(i=st.integers(0, 5), fn=st.sampled_from(FUNCS), unique=st.sampled_from(UNIQUES),
          data=st.sampled_from(DATA), kind=st.sampled_from(SUBMITS))
    def submit(self, i: int, fn: bytes, unique: bytes, data: bytes, kind: tuple[int, bool]) -> None:
        c = self._conn(i)
        if c is None:
            return
        ptype, background = kind
        before = set(self.d.server.jobs)
        c.send(ptype, fn, unique, data)
        got = [p for p in self._drain(c) if p[0] == T.JOB_CREATED]
        assert len(got) == 1
        h = got[0][1]
        if background and h not in before:
            self.bg_alive.add(h)

    @rule(i=st.integers(0, 5), fn=st.sampled_from(FUNCS), delay=st.integers(0, 3))
    def submit_epoch(self, i: int, fn: bytes, delay: int) -> None:
        c = self._conn(i)
        if c is None:
            return
        before = set(self.d.server.jobs)
        c.send(T.SUBMIT_JOB_EPOCH, fn, b"", str(int(self.d.wall) + delay).encode(), b"e")
        got = [p for p in self._drain(c) if p[0] == T.JOB_CREATED]
        assert len(got) == 1
        if got[0][1] not in before:
            self.bg_alive.add(got[0][1])

    @rule(i=st.integers(0, 5), fn=st.sampled_from(FUNCS), timeout=st.sampled_from([None, 1000, 2000]))
    def can_do(self, i: int, fn: bytes, timeout: int | None) -> None:
        c = self._conn(i)
        if c is None:
            return
        if timeout is None:
            c.send(T.CAN_DO, fn)
        else:
            c.send(T.CAN_DO_TIMEOUT, fn, str(timeout).encode())
        self._drain(c)

    @rule(i=st.integers(0, 5), fn=st.sampled_from(FUNCS))
    def cant_do(self, i: int, fn: bytes) -> None:
        c = self._conn(i)
        if c is not None:
            c.send(T.CANT_DO, fn)
            self._drain(c)

    @rule(i=st.integers(0, 5))
    def reset(self, i: int) -> None:
        c = self._conn(i)
        if c is not None:
            c.send(T.RESET_ABILITIES)
            self._drain(c)

    @rule(i=st.integers(0, 5))
    def pre_sleep(self, i: int) -> None:
        c = self._conn(i)
        if c is not None:
            c.send(T.PRE_SLEEP)
            self._drain(c)

    @rule(i=st.integers(0, 5), grab=st.sampled_from(GRABS))
    def grab(self, i: int, grab: int) -> None:
        c = self._conn(i)
        if c is None:
            return
        c.send(grab)
        replies = [p for p in self._drain(c) if p[0] in ASSIGNS or p[0] == T.NO_JOB]
        assert len(replies) == 1

    @rule(i=st.integers(0, 5), j=st.integers(0, 10), end=st.sampled_from(ENDS))
    def finish(self, i: int, j: int, end: int) -> None:
        c = self._conn(i)
        if c is None or not c.peer.jobs:
            return
        h = list(c.peer.jobs)[j % len(c.peer.jobs)]
        c.send(T.WORK_STATUS, h, b"1", b"2")
        c.send(T.WORK_DATA, h, b"d")
        if end == T.WORK_FAIL:
            c.send(end, h)
        else:
            c.send(end, h, b"r")
        assert [p for p in self._drain(c) if p[0] == T.ERROR] == []
        self.bg_alive.discard(h)
        assert h not in self.d.server.jobs

    @rule(i=st.integers(0, 5))
    def disconnect(self, i: int) -> None:
        c = self._conn(i)
        if c is not None:
            c.close()

    @rule(j=st.integers(0, 50))
    def cancel(self, j: int) -> None:
        jobs = list(self.d.server.jobs)
        if not jobs:
            return
        h = jobs[j % len(jobs)]
        if self.d.admin(b"cancel job " + h) == b"OK\r\n":
            self.bg_alive.discard(h)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5]))
    def advance(self, seconds: float) -> None:
        self.d.advance(seconds)
        if self.retries:
            # jobs dropped after too many timeouts are no longer alive
            self.bg_alive &= set(self.d.server.jobs)

    @rule()
    def drop_out(self) -> None:
        for c in self.conns:
            c.raw()

    # ------------------------------------------------------------ invariants

    @invariant()
    def counters_match_jobs(self) -> None:
        if not hasattr(self, "d"):
            return
        server = self.d.server
        for f in server.functions.values():
            jobs = [j for j in server.jobs.values() if j.function is f]
            assert f.total == len(jobs)
            assert f.running == sum(1 for j in jobs if j.state == JobState.RUNNING)
            assert f.scheduled == sum(1 for j in jobs if j.state == JobState.SCHEDULED)
            for p in range(3):
                queue = f.queues[p]
                assert f.queued[p] == len(queue)
                assert f.dead[p] == sum(1 for j in queue if j.ignored)
                assert all(j.state == JobState.QUEUED and j.priority == p for j in queue)
            queued = [j for j in jobs if j.state == JobState.QUEUED]
            in_queues = [j for q in f.queues for j in q]
            assert sorted(map(id, queued)) == sorted(map(id, in_queues))
            for u, j in f.by_unique.items():
                assert j.unique == u and not j.ignored and server.jobs.get(j.handle) is j
            for data, j in f.by_payload.items():
                assert j.unique == b"-" and j.data == data and not j.ignored

    @invariant()
    def workers_and_listeners_agree(self) -> None:
        if not hasattr(self, "d"):
            return
        server = self.d.server
        for job in server.jobs.values():
            if job.state == JobState.RUNNING:
                assert job.worker is not None and not job.worker.closed
                assert job.worker.jobs.get(job.handle) is job
                assert job.function in job.worker.abilities
            else:
                assert job.worker is None
            for peer in job.listeners or ():
                assert not peer.closed and job in peer.listening
            if job.ignored:
                assert not job.listeners
        for peer in server.peers.values():
            for job in peer.listening:
                assert peer in (job.listeners or ())
            for h, job in peer.jobs.items():
                assert server.jobs.get(h) is job and job.worker is peer

    @invariant()
    def sleepers_are_consistent(self) -> None:
        if not hasattr(self, "d"):
            return
        server = self.d.server
        for f in server.functions.values():
            for peer in f.sleepers:
                assert peer.sleeping and not peer.closed and f in peer.abilities
            assert f.workers == {p for p in server.peers.values() if f in p.abilities}
        for peer in server.peers.values():
            if peer.sleeping:
                assert all(peer in f.sleepers for f in peer.abilities)

    @invariant()
    def no_background_job_is_lost(self) -> None:
        if not hasattr(self, "d"):
            return
        for h in self.bg_alive:
            job = self.d.server.jobs.get(h)
            assert job is not None and not job.ignored, h

    @invariant()
    def no_queued_job_with_every_worker_asleep(self) -> None:
        if not hasattr(self, "d"):
            return
        for f in self.d.server.functions.values():
            live = any(not j.ignored for q in f.queues for j in q)
            if live and f.workers:
                assert not all(p.sleeping for p in f.workers), f


CoreMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoreMachine = CoreMachine.TestCase
