"""Clients that go away, cancelled jobs, and memory that stays bounded."""

from __future__ import annotations

from geartrain.server.core import JobState
from tests.server.core.driver import Driver, T, handle

# ------------------------------------------------------------------ foreground client disconnects


def test_abandoned_queued_job_is_not_run_but_stays_listed_until_reached() -> None:
    # gearmand keeps it in status TOTAL and show jobs (IGNORE=1) until a worker gets there
    d = Driver()
    c = d.client()
    h = c.submit(b"f", b"x", unique=b"u")
    c.close()
    assert d.status_line(b"f") == (1, 0, 0)
    assert d.admin("show jobs") == h + b"\t0\t1\t0\n.\n"
    assert d.admin("show unique jobs") == b"u\n.\n"
    assert d.admin("prioritystatus") == b"f\t0\t1\t0\t0\n.\n"
    w = d.worker(b"f")
    w.no_job()
    assert d.status_line(b"f") == (0, 0, 1)
    assert d.admin("show jobs") == b".\n"
    assert d.server.jobs == {}


def test_abandoned_job_is_skipped_in_favour_of_the_next_one() -> None:
    d = Driver()
    leaver, stayer = d.client(), d.client()
    leaver.submit(b"f", b"abandoned")
    h = stayer.submit(b"f", b"wanted")
    leaver.close()
    w = d.worker(b"f")
    assert w.take() == [h, b"f", b"wanted"]
    assert d.status_line(b"f") == (1, 1, 1)


def test_abandoned_job_unique_is_free_for_a_new_job() -> None:
    d = Driver()
    leaver, c = d.client(), d.client()
    h = leaver.submit(b"f", b"x", unique=b"u")
    leaver.close()
    h2 = c.submit(b"f", b"x", unique=b"u")
    assert h2 != h
    w = d.worker(b"f")
    assert w.take()[0] == h2
    w.complete(h2, b"r")
    assert c.one(T.WORK_COMPLETE) == [h2, b"r"]


def test_abandoned_running_job_runs_to_completion_with_results_dropped() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f")
    w.take()
    c.close()
    w.send(T.WORK_STATUS, h, b"1", b"2")
    w.send(T.WORK_DATA, h, b"d")
    w.send(T.WORK_WARNING, h, b"w")
    w.send(T.WORK_COMPLETE, h, b"r")
    w.none()  # no ERROR to the worker
    assert c.peer.out == []
    assert d.server.jobs == {}
    assert d.status_line(b"f") == (0, 0, 1)


def test_abandoned_running_job_fail_and_exception_are_accepted_quietly() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h1, h2 = c.submit(b"f", b"1"), c.submit(b"f", b"2")
    w.take()
    w.take()
    c.close()
    w.send(T.WORK_FAIL, h1)
    w.send(T.WORK_EXCEPTION, h2, b"boom")
    w.none()
    assert d.server.jobs == {}


def test_abandoned_running_job_whose_worker_dies_is_dropped() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    c.submit(b"f")
    w.take()
    c.close()
    w.close()
    assert d.server.jobs == {}
    assert d.status_line(b"f") == (0, 0, 0)


def test_job_runs_while_one_of_its_clients_remains() -> None:
    d = Driver()
    c1, c2 = d.client(), d.client()
    h = c1.submit(b"f", b"x", unique=b"u")
    c2.submit(b"f", b"x", unique=b"u")
    c1.close()
    assert d.server.jobs[h].listeners == [c2.peer]
    w = d.worker(b"f")
    assert w.take()[0] == h
    w.complete(h, b"r")
    assert c2.one(T.WORK_COMPLETE) == [h, b"r"]


def test_client_that_submitted_twice_and_leaves_abandons_the_job() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f", b"x", unique=b"u")
    c.submit(b"f", b"x", unique=b"u")
    c.close()
    job = d.server.jobs[h]
    assert job.listeners == [] and job.ignored
    d.worker(b"f").no_job()


def test_background_job_is_not_lost_when_a_coalesced_foreground_client_leaves() -> None:
    # gearmand bug fixed: 1.1.20 drops the background job here (verified)
    d = Driver()
    bg, fg = d.client(), d.client()
    h = bg.submit(b"f", b"shared", unique=b"shared", ptype=T.SUBMIT_JOB_BG)
    assert fg.submit(b"f", b"shared", unique=b"shared") == h
    fg.close()
    assert d.admin("show jobs") == h + b"\t0\t0\t1\n.\n"
    w = d.worker(b"f")
    assert w.take() == [h, b"f", b"shared"]
    # and its unique still coalesces while it runs
    assert bg.submit(b"f", b"again", unique=b"shared") == h


def test_background_job_running_when_the_foreground_client_leaves_keeps_running() -> None:
    d = Driver()
    bg, fg = d.client(), d.client()
    w = d.worker(b"f")
    h = bg.submit(b"f", b"x", unique=b"s", ptype=T.SUBMIT_JOB_BG)
    fg.submit(b"f", b"x", unique=b"s")
    w.take()
    fg.close()
    w.close()  # the worker dies too: a background job is requeued, not dropped
    assert d.server.jobs[h].state == JobState.QUEUED
    assert d.worker(b"f").take()[0] == h


def test_disconnect_twice_is_harmless() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f")
    w = d.worker(b"f")
    w.take()
    w.close()
    w.close()
    c.close()
    c.close()
    assert d.server.jobs[h].ignored
    assert d.server.peers == {}


def test_disconnect_drops_pending_output() -> None:
    d = Driver()
    c = d.client()
    c.send(T.ECHO_REQ, b"x")
    assert c.peer.out
    c.close()
    assert c.peer.out == [] and c.peer.closed


# ------------------------------------------------------------------ bounded memory

def test_abandoning_many_queued_jobs_compacts_the_queue() -> None:
    d = Driver()
    keep = d.client()
    kept = [keep.submit(b"f", b"keep%d" % i) for i in range(10)]
    leavers = []
    for i in range(10000):
        c = d.client()
        c.submit(b"f", b"gone%d" % i, unique=b"u%d" % i)
        leavers.append(c)
    for c in leavers:
        c.close()
    f = d.function(b"f")
    assert len(f.queues[1]) <= 2 * 10 + 64
    assert f.queued[1] == len(f.queues[1])
    assert len(d.server.jobs) == len(f.queues[1])
    assert not f.by_unique
    status = d.status_line(b"f")
    assert status is not None and 10 <= status[0] <= 10 + 64
    w = d.worker(b"f")
    assert [w.take()[0] for _ in range(10)] == kept
    w.no_job()
    assert d.status_line(b"f") == (10, 10, 1)
    assert f.queued == [0, 0, 0] and f.dead == [0, 0, 0]
    for h in kept:
        w.complete(h)
    assert d.status_line(b"f") == (0, 0, 1)
    assert d.server.jobs == {}


def test_cancelling_many_queued_jobs_compacts_the_queue() -> None:
    d = Driver()
    c = d.client()
    handles = [c.submit(b"f", b"%d" % i, ptype=T.SUBMIT_JOB_LOW_BG) for i in range(5000)]
    live = c.submit(b"f", b"live", ptype=T.SUBMIT_JOB_LOW_BG)
    for h in handles:
        assert d.admin(b"cancel job " + h) == b"OK\r\n"
    f = d.function(b"f")
    assert len(f.queues[2]) <= 64 + 2
    assert f.queued[2] == len(f.queues[2])
    assert len(d.server.jobs) == len(f.queues[2])
    w = d.worker(b"f")
    assert w.take()[0] == live
    w.no_job()
    w.complete(live)
    assert d.server.jobs == {}
    assert d.status_line(b"f") == (0, 0, 1)


def test_interleaved_abandon_and_live_jobs_keep_fifo_order() -> None:
    d = Driver()
    keep = d.client()
    expected = []
    leavers = []
    for i in range(300):
        if i % 3 == 0:
            expected.append(keep.submit(b"f", b"%d" % i))
        else:
            c = d.client()
            c.submit(b"f", b"%d" % i)
            leavers.append(c)
    for c in leavers:
        c.close()
    w = d.worker(b"f")
    got = [w.take()[0] for _ in range(len(expected))]
    assert got == expected
    w.no_job()
    f = d.function(b"f")
    assert f.total == len(expected) == f.running


def test_dead_entries_counted_right_across_priorities() -> None:
    d = Driver()
    keep = d.client()
    high = keep.submit(b"f", b"high", ptype=T.SUBMIT_JOB_HIGH)
    low = keep.submit(b"f", b"low", ptype=T.SUBMIT_JOB_LOW)
    leavers = [d.client() for _ in range(100)]
    for i, c in enumerate(leavers):
        c.submit(b"f", b"%d" % i, ptype=(T.SUBMIT_JOB_HIGH, T.SUBMIT_JOB, T.SUBMIT_JOB_LOW)[i % 3])
        c.close()
    w = d.worker(b"f")
    assert w.take()[0] == high
    assert w.take()[0] == low
    w.no_job()
    f = d.function(b"f")
    assert f.queued == [0, 0, 0] and f.dead == [0, 0, 0]
    assert f.total == 2 and f.running == 2
    assert len(d.server.jobs) == 2


def test_finished_jobs_leave_nothing_behind() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    for i in range(500):
        h = c.submit(b"f", b"%d" % i, unique=b"u%d" % (i % 7))
        w.take()
        w.send(T.WORK_DATA, h, b"d")
        w.complete(h, b"r")
        c.recv()
    f = d.function(b"f")
    assert d.server.jobs == {}
    assert not f.by_unique and not f.by_payload
    assert c.peer.listening == set() and w.peer.jobs == {}
    assert (f.total, f.running, f.queued) == (0, 0, [0, 0, 0])


def test_timer_heap_does_not_keep_finished_epoch_jobs_forever() -> None:
    d = Driver()
    c = d.client()
    for i in range(100):
        c.submit_epoch(b"ep", int(d.wall) + 1 + i % 5)
    assert len(d.server.timers) == 100
    d.advance(10)
    assert len(d.server.timers) == 0
    assert d.function(b"ep").queued[1] == 100
    assert handle(100) in d.server.jobs
