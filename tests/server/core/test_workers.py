"""Workers: grabbing, sleeping and waking, losing jobs (CANT_DO, reset, disconnect), retries."""

from __future__ import annotations

import pytest

from geartrain.server.core import JobState
from tests.server.core.driver import Driver, T, handle

# ------------------------------------------------------------------ grabbing


def test_grab_job_variants_and_no_job() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    w.no_job(T.GRAB_JOB)
    w.no_job(T.GRAB_JOB_UNIQ)
    w.no_job(T.GRAB_JOB_ALL)
    h1 = c.submit(b"f", b"d1", unique=b"u1")
    h2 = c.submit(b"f", b"d2", unique=b"u2")
    h3 = c.submit(b"f", b"d3", unique=b"u3")
    assert w.grab(T.GRAB_JOB) == (T.JOB_ASSIGN, [h1, b"f", b"d1"])
    assert w.grab(T.GRAB_JOB_UNIQ) == (T.JOB_ASSIGN_UNIQ, [h2, b"f", b"u2", b"d2"])
    assert w.grab(T.GRAB_JOB_ALL) == (T.JOB_ASSIGN_UNIQ, [h3, b"f", b"u3", b"d3"])
    w.no_job()


def test_job_assign_bytes_are_exact() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    c.submit(b"f", b"pay\0load")
    w.send(T.GRAB_JOB)
    body = b"H:test:1\0f\0pay\0load"
    assert w.raw() == b"\0RES" + (11).to_bytes(4, "big") + len(body).to_bytes(4, "big") + body


def test_worker_without_abilities_gets_no_job() -> None:
    d = Driver()
    d.client().submit(b"f")
    w = d.connect()
    w.no_job()


def test_grab_marks_the_job_running() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f")
    w.take()
    job = d.server.jobs[h]
    assert job.state == JobState.RUNNING and job.worker is w.peer
    assert d.status_line(b"f") == (1, 1, 1)


def test_worker_may_hold_several_jobs() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h1, h2 = c.submit(b"f", b"1"), c.submit(b"f", b"2")
    w.take()
    w.take()
    assert d.status_line(b"f") == (2, 2, 1)
    w.complete(h2, b"two")
    w.complete(h1, b"one")
    assert c.recv() == [(T.WORK_COMPLETE, [h2, b"two"]), (T.WORK_COMPLETE, [h1, b"one"])]


# ------------------------------------------------------------------ PRE_SLEEP / NOOP

def test_pre_sleep_with_pending_work_gets_noop_at_once() -> None:
    d = Driver()
    d.client().submit(b"f")
    w = d.worker(b"f")
    w.send(T.PRE_SLEEP)
    assert w.recv() == [(T.NOOP, [])]
    assert not w.peer.sleeping


def test_pre_sleep_then_work_arrives_gets_one_noop() -> None:
    d = Driver()
    c = d.client()
    w = d.sleeper(b"f")
    c.submit(b"f", b"1")
    assert w.recv() == [(T.NOOP, [])]
    c.submit(b"f", b"2")
    c.submit(b"f", b"3")
    w.none()  # only once per sleep


def test_pre_sleep_twice_is_still_one_sleep() -> None:
    d = Driver()
    c = d.client()
    w = d.sleeper(b"f")
    w.sleep()
    c.submit(b"f")
    assert w.count(T.NOOP) == 1


def test_noop_again_after_the_next_pre_sleep() -> None:
    d = Driver()
    c = d.client()
    w = d.sleeper(b"f")
    h = c.submit(b"f", b"1")
    assert w.count(T.NOOP) == 1
    assert w.take()[0] == h
    w.complete(h)
    assert c.one(T.WORK_COMPLETE) == [h, b""]
    w.no_job()
    w.sleep()
    c.submit(b"f", b"2")
    assert w.count(T.NOOP) == 1


def test_sleeper_of_other_function_is_not_woken() -> None:
    d = Driver()
    w = d.sleeper(b"g")
    d.client().submit(b"f")
    w.none()


def test_sleeping_worker_registering_a_busy_function_is_woken() -> None:
    d = Driver()
    d.client().submit(b"f")
    w = d.sleeper(b"g")
    w.send(T.CAN_DO, b"f")
    assert w.recv() == [(T.NOOP, [])]
    assert w.take()[1] == b"f"


def test_sleeping_worker_registering_an_idle_function_is_woken_by_its_work() -> None:
    d = Driver()
    w = d.sleeper(b"g")
    w.can_do(b"f")
    d.client().submit(b"f")
    assert w.count(T.NOOP) == 1


# ------------------------------------------------------------------ thundering herd

def test_one_job_wakes_exactly_one_of_2000_sleepers() -> None:
    d = Driver()
    sleepers = [d.sleeper(b"f") for _ in range(2000)]
    d.client().submit(b"f")
    noops = [w.count(T.NOOP) for w in sleepers]
    assert sum(noops) == 1
    assert noops[0] == 1  # longest asleep first
    assert len(d.function(b"f").sleepers) == 1999
    c = d.client()
    for i in range(1999):
        c.submit(b"f", b"%d" % i, ptype=T.SUBMIT_JOB_BG)
        assert sleepers[i + 1].count(T.NOOP) == 1
    assert sum(w.count(T.NOOP) for w in sleepers) == 0  # nobody woken twice
    assert not d.function(b"f").sleepers


def test_successive_jobs_rotate_over_sleepers_longest_asleep_first() -> None:
    d = Driver()
    sleepers = [d.sleeper(b"f") for _ in range(5)]
    c = d.client()
    woken = []
    for i in range(5):
        c.submit(b"f", b"%d" % i)
        woken.append([w.count(T.NOOP) for w in sleepers].index(1))
    assert woken == [0, 1, 2, 3, 4]
    assert not d.function(b"f").sleepers


def test_returning_sleeper_goes_to_the_back_of_the_line() -> None:
    d = Driver()
    a, b, c_ = (d.sleeper(b"f") for _ in range(3))
    cl = d.client()
    cl.submit(b"f", b"1")
    assert (a.count(T.NOOP), b.count(T.NOOP), c_.count(T.NOOP)) == (1, 0, 0)
    a.take()
    a.complete(handle(1))
    assert cl.one(T.WORK_COMPLETE) == [handle(1), b""]
    a.sleep()
    cl.submit(b"f", b"2")
    cl.submit(b"f", b"3")
    cl.submit(b"f", b"4")
    assert (b.count(T.NOOP), c_.count(T.NOOP), a.count(T.NOOP)) == (1, 1, 1)


def test_n_jobs_wake_n_workers() -> None:
    d = Driver()
    sleepers = [d.sleeper(b"f") for _ in range(100)]
    c = d.client()
    for i in range(7):
        c.submit(b"f", b"%d" % i, ptype=T.SUBMIT_JOB_BG)
    assert [w.count(T.NOOP) for w in sleepers] == [1] * 7 + [0] * 93


def test_coalesced_submit_wakes_nobody() -> None:
    d = Driver()
    sleepers = [d.sleeper(b"f") for _ in range(3)]
    c = d.client()
    c.submit(b"f", b"x", unique=b"u")
    c.submit(b"f", b"x", unique=b"u")
    assert sum(w.count(T.NOOP) for w in sleepers) == 1


def test_woken_worker_that_grabs_another_function_makes_server_wake_another_sleeper() -> None:
    d = Driver()
    multi = d.sleeper(b"f", b"g")
    other = d.sleeper(b"f")
    c = d.client()
    c.submit(b"f", b"for-f")
    assert multi.count(T.NOOP) == 1 and other.count(T.NOOP) == 0
    # before the woken worker grabs, a HIGH job of g comes in; it wakes nobody new
    # (no g sleeper left) and the multi worker takes it instead of f's job
    c.submit(b"g", b"for-g", ptype=T.SUBMIT_JOB_HIGH)
    assert multi.take()[2] == b"for-g"
    assert other.count(T.NOOP) == 1  # f's job still needs a worker
    assert other.take()[2] == b"for-f"


def test_woken_worker_that_disconnects_before_grabbing_makes_server_wake_another() -> None:
    d = Driver()
    first, second, third = (d.sleeper(b"f") for _ in range(3))
    d.client().submit(b"f")
    assert first.count(T.NOOP) == 1
    first.close()
    assert second.count(T.NOOP) == 1
    assert third.count(T.NOOP) == 0


def test_woken_worker_that_cant_do_the_function_makes_server_wake_another() -> None:
    d = Driver()
    first, second = d.sleeper(b"f", b"g"), d.sleeper(b"f")
    d.client().submit(b"f")
    assert first.count(T.NOOP) == 1
    first.send(T.CANT_DO, b"f")
    assert second.count(T.NOOP) == 1


def test_woken_worker_that_resets_abilities_makes_server_wake_another() -> None:
    d = Driver()
    first, second = d.sleeper(b"f"), d.sleeper(b"f")
    d.client().submit(b"f")
    assert first.count(T.NOOP) == 1
    first.send(T.RESET_ABILITIES)
    assert second.count(T.NOOP) == 1


def test_woken_worker_whose_job_was_taken_by_another_wakes_nobody() -> None:
    d = Driver()
    first, second = d.sleeper(b"f"), d.sleeper(b"f")
    busy = d.worker(b"f")
    d.client().submit(b"f")
    assert first.count(T.NOOP) == 1
    busy.take()
    first.no_job()
    first.close()
    assert second.count(T.NOOP) == 0


def test_woken_worker_that_goes_back_to_sleep_is_no_longer_counted_as_woken() -> None:
    d = Driver()
    w = d.sleeper(b"f")
    s1, s2 = d.sleeper(b"f"), d.sleeper(b"f")
    busy = d.worker(b"f")
    c = d.client()
    c.submit(b"f", b"1")
    assert w.count(T.NOOP) == 1
    busy.take()  # someone else got there first
    w.sleep()  # back to sleep without grabbing
    c.submit(b"f", b"2")
    assert (s1.count(T.NOOP), s2.count(T.NOOP), w.count(T.NOOP)) == (1, 0, 0)
    w.close()  # its old wake-up must not wake another sleeper for job 2
    assert s2.count(T.NOOP) == 0


def test_worker_wakeup_all_wakes_every_sleeper() -> None:
    d = Driver(worker_wakeup=-1)
    sleepers = [d.sleeper(b"f") for _ in range(50)]
    d.client().submit(b"f")
    assert [w.count(T.NOOP) for w in sleepers] == [1] * 50


@pytest.mark.parametrize("n", [1, 3, 10])
def test_worker_wakeup_n_wakes_up_to_n(n: int) -> None:
    d = Driver(worker_wakeup=n)
    sleepers = [d.sleeper(b"f") for _ in range(5)]
    d.client().submit(b"f")
    assert sum(w.count(T.NOOP) for w in sleepers) == min(n, 5)


def test_multi_function_sleeper_does_not_pile_up_in_sleeper_lists() -> None:
    d = Driver()
    names = [b"f%d" % i for i in range(10)]
    w = d.sleeper(*names)
    c = d.client()
    for i in range(1000):
        h = c.submit(b"f0", b"%d" % i, ptype=T.SUBMIT_JOB_BG)
        assert w.count(T.NOOP) == 1
        assert w.take()[0] == h
        w.complete(h)
        w.no_job()
        w.sleep()
    for name in names:
        assert list(d.function(name).sleepers) == [w.peer]


def test_sleeping_worker_that_disconnects_leaves_no_trace() -> None:
    d = Driver()
    w = d.sleeper(b"f", b"g")
    w.close()
    assert not d.function(b"f").sleepers and not d.function(b"g").sleepers
    assert not d.function(b"f").workers
    assert d.status_line(b"f") == (0, 0, 0)


# ------------------------------------------------------------------ losing jobs

def test_cant_do_requeues_held_jobs_of_that_function_only() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f", b"g")
    hf, hg = c.submit(b"f", b"x"), c.submit(b"g", b"y")
    w.take()
    w.take()
    w.send(T.CANT_DO, b"f")
    w.none()
    assert d.server.jobs[hf].state == JobState.QUEUED
    assert d.server.jobs[hf].retries == 1
    assert d.server.jobs[hg].state == JobState.RUNNING
    w.send(T.WORK_COMPLETE, hf, b"late")
    assert w.error() == (b"JOB_NOT_FOUND", b"Job given in work result not found")
    w2 = d.worker(b"f")
    assert w2.take() == [hf, b"f", b"x"]
    c.none()


def test_cant_do_unknown_function_is_ignored() -> None:
    d = Driver()
    w = d.worker(b"f")
    w.send(T.CANT_DO, b"nosuch")
    w.send(T.CANT_DO, b"g")
    w.none()
    assert list(w.peer.abilities) == [d.function(b"f")]


def test_reset_abilities_requeues_everything_held() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f", b"g")
    c.submit(b"f", b"x")
    c.submit(b"g", b"y")
    w.take()
    w.take()
    w.send(T.RESET_ABILITIES)
    w.none()
    assert w.peer.abilities == {} and w.peer.jobs == {}
    assert d.status_line(b"f") == (1, 0, 0)
    assert d.status_line(b"g") == (1, 0, 0)
    w.no_job()


def test_disconnect_mid_job_requeues_at_tail_resets_status_counts_retries() -> None:
    d = Driver()
    c = d.client()
    w1 = d.worker(b"f")
    h1 = c.submit(b"f", b"first")
    w1.take()
    w1.send(T.WORK_STATUS, h1, b"3", b"4")
    assert c.one(T.WORK_STATUS) == [h1, b"3", b"4"]
    assert c.status(h1) == [h1, b"1", b"1", b"3", b"4"]
    h2 = c.submit(b"f", b"second")
    w1.close()
    assert c.status(h1) == [h1, b"1", b"0", b"0", b"0"]
    w2 = d.worker(b"f")
    assert w2.take() == [h2, b"f", b"second"]  # the requeued job went to the tail
    assert w2.take() == [h1, b"f", b"first"]
    assert c.status(h1) == [h1, b"1", b"1", b"0", b"0"]  # the old worker's numbers are gone
    assert d.admin("show jobs") == b"%s\t1\t0\t0\n%s\t0\t0\t0\n.\n" % (h1, h2)
    c.none()  # clients are not told
    w2.complete(h1, b"ok")
    assert c.one(T.WORK_COMPLETE) == [h1, b"ok"]


def test_requeued_job_wakes_a_sleeper() -> None:
    d = Driver()
    c = d.client()
    w1 = d.worker(b"f")
    sleeper = d.sleeper(b"f")
    c.submit(b"f")
    assert sleeper.count(T.NOOP) == 1
    w1.take()
    sleeper.no_job()
    sleeper.sleep()
    w1.close()
    assert sleeper.count(T.NOOP) == 1


def test_job_retries_drops_after_n_attempts_and_clients_get_work_fail() -> None:
    d = Driver(job_retries=2)
    c = d.client()
    h = c.submit(b"f", b"x")
    w1 = d.worker(b"f")
    assert w1.take()[0] == h
    w1.close()
    assert d.admin("show jobs") == h + b"\t1\t0\t0\n.\n"
    c.none()
    w2 = d.worker(b"f")
    assert w2.take()[0] == h
    w2.close()
    assert c.packets() == [(T.WORK_FAIL, h)]  # bare handle, no NUL
    assert d.server.jobs == {}
    assert d.status_line(b"f") == (0, 0, 0)
    d.worker(b"f").no_job()


def test_job_retries_fails_every_listener_and_background_jobs_silently() -> None:
    d = Driver(job_retries=1)
    c1, c2 = d.client(), d.client()
    h = c1.submit(b"f", b"x", unique=b"u")
    c2.submit(b"f", b"x", unique=b"u")
    hb = c1.submit(b"f", b"bg", ptype=T.SUBMIT_JOB_BG)
    w = d.worker(b"f")
    w.take()
    w.take()
    w.close()
    assert c1.packets() == [(T.WORK_FAIL, h)]
    assert c2.packets() == [(T.WORK_FAIL, h)]
    assert hb not in d.server.jobs and h not in d.server.jobs


def test_job_retries_zero_requeues_forever() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f")
    for attempt in range(1, 51):
        w = d.worker(b"f")
        assert w.take()[0] == h
        w.close()
        assert d.server.jobs[h].retries == attempt
    c.none()


def test_job_retries_counts_cant_do_as_an_attempt() -> None:
    d = Driver(job_retries=1)
    c = d.client()
    h = c.submit(b"f")
    w = d.worker(b"f")
    w.take()
    w.send(T.CANT_DO, b"f")
    assert c.packets() == [(T.WORK_FAIL, h)]


def test_set_client_id_shows_in_workers() -> None:
    d = Driver()
    w = d.worker(b"f")
    w.send(T.SET_CLIENT_ID, b"worker one")
    w.none()
    assert w.admin("workers") == b"%d 127.0.0.1 worker one : f\n.\n" % w.peer.fd


# ------------------------------------------------------------------ graceful shutdown

def test_draining_server_hands_out_and_accepts_nothing() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f", b"queued")
    w = d.worker(b"f")
    d.server.start_draining()
    w.no_job()
    w.send(T.PRE_SLEEP)
    w.none()  # queued work, but nothing is handed out: no NOOP
    c.send(T.SUBMIT_JOB, b"f", b"", b"new")
    assert c.error() == (b"QUEUE_ERROR", b"Server is shutting down")
    assert list(d.server.jobs) == [h]


def test_draining_server_wakes_nobody_for_requeued_or_due_jobs() -> None:
    d = Driver()
    c = d.client()
    w1 = d.worker(b"f")
    c.submit(b"f", b"x")
    c.submit_epoch(b"f", int(d.wall) + 5)
    w1.take()
    sleeper = d.sleeper(b"f")
    d.server.start_draining()
    w1.close()  # requeued
    d.advance(5)  # epoch job due
    sleeper.none()
    assert d.function(b"f").queued[1] == 2
