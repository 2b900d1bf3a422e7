"""Time: SUBMIT_JOB_EPOCH and CAN_DO_TIMEOUT, driven by fake clocks."""

from __future__ import annotations

import pytest

from geartrain.server.core import JobState
from tests.server.core.driver import MONO0, Driver, T, handle

# ------------------------------------------------------------------ epoch jobs


def test_epoch_job_is_not_runnable_before_its_time_and_is_after() -> None:
    d = Driver()
    c = d.client()
    h = c.submit_epoch(b"ep", int(d.wall) + 10, b"later")
    w = d.worker(b"ep")
    w.no_job()
    assert d.server.next_deadline() == MONO0 + 10
    d.advance(9.999)
    w.no_job()
    d.advance(0.001)
    assert w.take() == [h, b"ep", b"later"]


def test_epoch_job_is_background_normal_priority_and_counted_at_once() -> None:
    d = Driver()
    c = d.client()
    h = c.submit_epoch(b"ep", int(d.wall) + 60, b"later")
    assert d.server.jobs[h].background
    assert d.server.jobs[h].state == JobState.SCHEDULED
    assert d.status_line(b"ep") == (1, 0, 0)
    assert d.admin("prioritystatus") == b"ep\t0\t1\t0\t0\n.\n"
    assert c.status(h) == [h, b"1", b"0", b"0", b"0"]
    c.submit(b"ep", b"low", ptype=T.SUBMIT_JOB_LOW)
    c.submit(b"ep", b"high", ptype=T.SUBMIT_JOB_HIGH)
    d.advance(60)
    w = d.worker(b"ep")
    assert [w.take()[2] for _ in range(3)] == [b"high", b"later", b"low"]
    w.complete(h, b"result")
    c.none()  # a background job: nothing for the submitter


def test_sleeping_worker_is_woken_when_an_epoch_job_falls_due() -> None:
    # gearmand bug #101 fixed: 1.1.20 leaves the worker asleep
    d = Driver()
    c = d.client()
    w = d.sleeper(b"ep")
    h = c.submit_epoch(b"ep", int(d.wall) + 5, b"later")
    w.none()
    d.advance(4)
    w.none()
    d.advance(1)
    assert w.recv() == [(T.NOOP, [])]
    assert w.take()[0] == h


def test_epoch_job_wakes_one_of_many_sleepers() -> None:
    d = Driver()
    sleepers = [d.sleeper(b"ep") for _ in range(20)]
    d.client().submit_epoch(b"ep", int(d.wall) + 5)
    d.advance(5)
    assert [w.count(T.NOOP) for w in sleepers] == [1] + [0] * 19


@pytest.mark.parametrize("epoch", [b"0", b"abc", b"", b"-5", b"12abc"])
def test_garbage_zero_or_past_epoch_means_now(epoch: bytes) -> None:
    d = Driver()
    c = d.client()
    h = c.submit_epoch(b"ep", epoch, b"now")
    assert d.server.next_deadline() is None
    assert d.worker(b"ep").take() == [h, b"ep", b"now"]


def test_epoch_in_the_past_is_runnable_at_once() -> None:
    d = Driver()
    c = d.client()
    c.submit_epoch(b"ep", int(d.wall) - 100)
    c.submit_epoch(b"ep", int(d.wall))
    w = d.worker(b"ep")
    w.take()
    w.take()
    assert d.server.next_deadline() is None


def test_epoch_uses_whole_seconds_against_a_fractional_wall_clock() -> None:
    d = Driver()
    d.wall += 0.25
    c = d.client()
    h = c.submit_epoch(b"ep", int(d.wall) + 1)
    w = d.worker(b"ep")
    d.advance(0.74)
    w.no_job()
    d.advance(0.01)
    assert w.take()[0] == h


def test_epoch_jobs_fall_due_in_time_order() -> None:
    d = Driver()
    c = d.client()
    now = int(d.wall)
    c.submit_epoch(b"ep", now + 30, b"30")
    c.submit_epoch(b"ep", now + 10, b"10")
    c.submit_epoch(b"ep", now + 20, b"20")
    d.advance(100)
    w = d.worker(b"ep")
    assert [w.take()[2] for _ in range(3)] == [b"10", b"20", b"30"]


def test_cancelled_epoch_job_never_runs() -> None:
    d = Driver()
    c = d.client()
    h = c.submit_epoch(b"ep", int(d.wall) + 10)
    assert d.admin(b"cancel job " + h) == b"OK\r\n"
    assert d.status_line(b"ep") == (0, 0, 0)
    w = d.sleeper(b"ep")
    d.advance(10)
    w.none()
    w.no_job()
    assert d.server.jobs == {}


def test_on_timer_before_any_deadline_does_nothing() -> None:
    d = Driver()
    c = d.client()
    c.submit_epoch(b"ep", int(d.wall) + 10)
    d.server.on_timer()
    assert d.function(b"ep").scheduled == 1
    assert d.server.next_deadline() == MONO0 + 10


# ------------------------------------------------------------------ CAN_DO_TIMEOUT

def test_can_do_timeout_expiry_requeues_and_late_result_is_refused() -> None:
    d = Driver()
    c = d.client()
    w1 = d.connect()
    w1.send(T.CAN_DO_TIMEOUT, b"f", b"1500")
    w1.none()
    h = c.submit(b"f", b"x")
    assert w1.take()[0] == h
    assert d.server.next_deadline() == MONO0 + 1.5
    d.advance(1.499)
    assert d.server.jobs[h].state == JobState.RUNNING
    d.advance(0.001)
    job = d.server.jobs[h]
    assert job.state == JobState.QUEUED and job.retries == 1
    assert w1.peer.jobs == {}
    w1.none()  # the worker is not told
    c.none()  # nor is the client
    w1.send(T.WORK_COMPLETE, h, b"late")
    assert w1.error() == (b"JOB_NOT_FOUND", b"Job given in work result not found")
    c.none()
    w2 = d.worker(b"f")
    assert w2.take() == [h, b"f", b"x"]
    w2.complete(h, b"ok")
    assert c.one(T.WORK_COMPLETE) == [h, b"ok"]


def test_can_do_timeout_expiry_wakes_a_sleeper() -> None:
    d = Driver()
    c = d.client()
    w1 = d.connect()
    w1.send(T.CAN_DO_TIMEOUT, b"f", b"2000")
    c.submit(b"f")
    w1.take()
    sleeper = d.sleeper(b"f")
    d.advance(2)
    assert sleeper.count(T.NOOP) == 1


def test_plain_can_do_never_times_out() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f")
    w.take()
    assert d.server.next_deadline() is None
    d.advance(10**6)
    d.server.on_timer()
    assert d.server.jobs[h].state == JobState.RUNNING
    w.complete(h, b"ok")
    assert c.one(T.WORK_COMPLETE) == [h, b"ok"]


@pytest.mark.parametrize("ms", [b"0", b"-5", b"abc", b""])
def test_zero_negative_or_garbage_timeout_means_none(ms: bytes) -> None:
    d = Driver()
    c = d.client()
    w = d.connect()
    w.send(T.CAN_DO_TIMEOUT, b"f", ms)
    w.none()
    h = c.submit(b"f")
    w.take()
    assert d.server.next_deadline() is None
    assert d.server.jobs[h].state == JobState.RUNNING


def test_timeout_below_one_second_counts_as_one_second() -> None:
    # gearmand 1.1.20 rounds 0 < ms < 1000 up to 1000 (verified: a 200 ms job was still
    # held after 0.6 s and requeued by 1.2 s)
    d = Driver()
    c = d.client()
    w = d.connect()
    w.send(T.CAN_DO_TIMEOUT, b"f", b"200")
    h = c.submit(b"f")
    w.take()
    d.advance(0.999)
    assert d.server.jobs[h].state == JobState.RUNNING
    d.advance(0.001)
    assert d.server.jobs[h].state == JobState.QUEUED


def test_timeout_applies_only_to_its_function() -> None:
    d = Driver()
    c = d.client()
    w = d.connect()
    w.send(T.CAN_DO_TIMEOUT, b"f", b"1000")
    w.send(T.CAN_DO, b"g")
    hg = c.submit(b"g")
    w.take()
    assert d.server.next_deadline() is None
    hf = c.submit(b"f")
    w.take()
    d.advance(5)
    assert d.server.jobs[hg].state == JobState.RUNNING
    assert d.server.jobs[hf].state == JobState.QUEUED


def test_reregistering_with_plain_can_do_removes_the_timeout() -> None:
    d = Driver()
    c = d.client()
    w = d.connect()
    w.send(T.CAN_DO_TIMEOUT, b"f", b"1000")
    w.send(T.CAN_DO, b"f")
    h = c.submit(b"f")
    w.take()
    d.advance(5)
    assert d.server.jobs[h].state == JobState.RUNNING


def test_completed_job_is_not_touched_by_its_old_timer() -> None:
    d = Driver()
    c = d.client()
    w = d.connect()
    w.send(T.CAN_DO_TIMEOUT, b"f", b"1000")
    h = c.submit(b"f", b"x", unique=b"u")
    w.take()
    w.complete(h)
    c.recv()
    d.advance(2)
    assert d.server.jobs == {}
    assert d.status_line(b"f") == (0, 0, 1)


def test_stale_timer_of_an_earlier_attempt_does_not_requeue_the_next_one() -> None:
    d = Driver()
    c = d.client()
    w1 = d.connect()
    w1.send(T.CAN_DO_TIMEOUT, b"f", b"1000")
    h = c.submit(b"f")
    w1.take()
    d.advance(0.5)
    w1.close()  # requeued; its timer is still in the heap
    w2 = d.connect()
    w2.send(T.CAN_DO_TIMEOUT, b"f", b"10000")
    assert w2.take()[0] == h
    d.advance(0.5)  # the first attempt's deadline
    job = d.server.jobs[h]
    assert job.state == JobState.RUNNING and job.worker is w2.peer and job.retries == 1
    d.advance(9.5)  # the second attempt's deadline
    assert job.state == JobState.QUEUED and job.retries == 2


def test_timeouts_count_against_job_retries() -> None:
    d = Driver(job_retries=2)
    c = d.client()
    h = c.submit(b"f")
    for _ in range(2):
        w = d.connect()
        w.send(T.CAN_DO_TIMEOUT, b"f", b"1000")
        assert w.take()[0] == h
        d.advance(1)
    assert c.packets() == [(T.WORK_FAIL, h)]
    assert d.server.jobs == {}
    assert d.status_line(b"f") == (0, 0, 2)


def test_each_held_job_has_its_own_timer() -> None:
    d = Driver()
    c = d.client()
    w = d.connect()
    w.send(T.CAN_DO_TIMEOUT, b"f", b"1000")
    h1 = c.submit(b"f", b"1")
    w.take()
    d.advance(0.5)
    h2 = c.submit(b"f", b"2")
    w.take()
    d.advance(0.5)
    assert d.server.jobs[h1].state == JobState.QUEUED
    assert d.server.jobs[h2].state == JobState.RUNNING
    d.advance(0.5)
    assert d.server.jobs[h2].state == JobState.QUEUED
    assert handle(3) not in d.server.jobs
