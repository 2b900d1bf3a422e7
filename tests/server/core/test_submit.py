"""Submitting jobs: handles, priorities, unique coalescing, reducers, maxqueue."""

from __future__ import annotations

import pytest

from geartrain.server.core import CoreSettings, JobServer
from tests.server.core.driver import Driver, T, handle

ALL_SUBMITS = [
    (T.SUBMIT_JOB, False), (T.SUBMIT_JOB_BG, True), (T.SUBMIT_JOB_HIGH, False),
    (T.SUBMIT_JOB_HIGH_BG, True), (T.SUBMIT_JOB_LOW, False), (T.SUBMIT_JOB_LOW_BG, True),
]


# ------------------------------------------------------------------ handles

def test_every_submit_type_gets_job_created_with_increasing_handles() -> None:
    d = Driver()
    c = d.client()
    got = [c.submit(b"f", b"x%d" % i, ptype=ptype) for i, (ptype, _) in enumerate(ALL_SUBMITS)]
    got.append(c.submit_epoch(b"f", 0, b"epoch"))
    c.send(T.SUBMIT_REDUCE_JOB, b"f", b"", b"red", b"", b"map")
    got.append(c.one(T.JOB_CREATED)[0])
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"f", b"", b"red", b"", b"map")
    got.append(c.one(T.JOB_CREATED)[0])
    assert got == [handle(n) for n in range(1, 10)]
    assert d.status_line(b"f") == (9, 0, 0)


def test_handle_prefix_comes_from_settings() -> None:
    d = Driver(handle_prefix="JH")
    assert d.client().submit(b"f") == b"JH:1"


def test_default_handle_prefix_is_h_and_hostname() -> None:
    import socket

    server = JobServer(CoreSettings())
    assert server.prefix == b"H:" + socket.gethostname().encode()


def test_handle_number_only_increases_for_new_jobs() -> None:
    d = Driver()
    c = d.client()
    assert c.submit(b"f", b"a", unique=b"u") == handle(1)
    assert c.submit(b"f", b"b", unique=b"u") == handle(1)  # coalesced
    assert c.submit(b"f", b"c", unique=b"u", ptype=T.SUBMIT_JOB_BG) == handle(1)
    assert c.submit(b"f", b"d") == handle(2)
    assert d.server.next_handle == 3


def test_background_submit_has_no_listener_foreground_has_one() -> None:
    d = Driver()
    c = d.client()
    hb = c.submit(b"f", b"bg", ptype=T.SUBMIT_JOB_BG)
    hf = c.submit(b"f", b"fg")
    jobs = d.server.jobs
    assert jobs[hb].listeners is None and jobs[hb].background
    assert jobs[hf].listeners == [c.peer] and not jobs[hf].background


# ------------------------------------------------------------------ priority order

def test_fifo_within_priority_high_normal_low() -> None:
    d = Driver()
    c = d.client()
    for ptype, name in [
        (T.SUBMIT_JOB_LOW, b"low1"), (T.SUBMIT_JOB, b"norm1"), (T.SUBMIT_JOB_HIGH, b"high1"),
        (T.SUBMIT_JOB_LOW_BG, b"low2"), (T.SUBMIT_JOB_BG, b"norm2"), (T.SUBMIT_JOB_HIGH_BG, b"high2"),
    ]:
        c.submit(b"f", name, ptype=ptype)
    w = d.worker(b"f")
    order = [w.take()[2] for _ in range(6)]
    assert order == [b"high1", b"high2", b"norm1", b"norm2", b"low1", b"low2"]
    w.no_job()


def test_multi_function_worker_takes_high_of_any_function_first() -> None:
    d = Driver()
    c = d.client()
    c.submit(b"a", b"a-low", ptype=T.SUBMIT_JOB_LOW)
    c.submit(b"a", b"a-norm")
    c.submit(b"b", b"b-norm")
    c.submit(b"b", b"b-high", ptype=T.SUBMIT_JOB_HIGH)
    c.submit(b"b", b"b-low", ptype=T.SUBMIT_JOB_LOW)
    w = d.worker(b"a", b"b")
    order = [w.take()[2] for _ in range(5)]
    assert order[0] == b"b-high"
    assert sorted(order[1:3]) == [b"a-norm", b"b-norm"]
    assert sorted(order[3:]) == [b"a-low", b"b-low"]


def test_multi_function_worker_rotates_among_functions_of_equal_priority() -> None:
    d = Driver()
    c = d.client()
    for i in range(3):
        c.submit(b"a", b"a%d" % i)
        c.submit(b"b", b"b%d" % i)
        c.submit(b"c", b"c%d" % i)
    w = d.worker(b"a", b"b", b"c")
    order = [w.take()[1] for _ in range(9)]
    assert order == [b"a", b"b", b"c"] * 3


def test_rotation_skips_functions_without_jobs() -> None:
    d = Driver()
    c = d.client()
    for i in range(4):
        c.submit(b"a", b"a%d" % i)
    c.submit(b"c", b"c0")
    w = d.worker(b"a", b"b", b"c")
    assert [w.take()[2] for _ in range(5)] == [b"a0", b"c0", b"a1", b"a2", b"a3"]


# ------------------------------------------------------------------ coalescing

def test_empty_unique_never_coalesces() -> None:
    d = Driver()
    c = d.client()
    assert c.submit(b"f", b"same") == handle(1)
    assert c.submit(b"f", b"same") == handle(2)
    assert d.status_line(b"f") == (2, 0, 0)


@pytest.mark.parametrize("ptype,background", ALL_SUBMITS)
def test_same_function_and_unique_coalesces_onto_queued_job(ptype: int, background: bool) -> None:
    d = Driver()
    c1, c2 = d.client(), d.client()
    h = c1.submit(b"f", b"first", unique=b"u1")
    assert c2.submit(b"f", b"second", unique=b"u1", ptype=ptype) == h
    job = d.server.jobs[h]
    assert job.listeners == ([c1.peer] if background else [c1.peer, c2.peer])
    assert d.status_line(b"f") == (1, 0, 0)


def test_coalesces_onto_running_job_and_joiner_gets_only_later_packets() -> None:
    d = Driver()
    c1, c2 = d.client(), d.client()
    w = d.worker(b"f")
    h = c1.submit(b"f", b"x", unique=b"u")
    assert w.take()[0] == h
    w.send(T.WORK_DATA, h, b"early")
    assert c1.one(T.WORK_DATA) == [h, b"early"]
    assert c2.submit(b"f", b"y", unique=b"u") == h
    w.send(T.WORK_DATA, h, b"late")
    w.complete(h, b"done")
    assert c1.recv() == [(T.WORK_DATA, [h, b"late"]), (T.WORK_COMPLETE, [h, b"done"])]
    assert c2.recv() == [(T.WORK_DATA, [h, b"late"]), (T.WORK_COMPLETE, [h, b"done"])]


def test_dash_unique_coalesces_on_identical_payload_only() -> None:
    d = Driver()
    c = d.client()
    assert c.submit(b"f", b"same", unique=b"-") == handle(1)
    assert c.submit(b"f", b"same", unique=b"-", ptype=T.SUBMIT_JOB_BG) == handle(1)
    assert c.submit(b"f", b"diff", unique=b"-") == handle(2)
    assert c.submit(b"g", b"same", unique=b"-") == handle(3)  # other function


def test_dash_unique_with_empty_payload_never_coalesces() -> None:
    # gearmand 1.1.20 (job.cc, verified): "-" with no data is like an empty unique
    d = Driver()
    c = d.client()
    assert c.submit(b"f", b"", unique=b"-", ptype=T.SUBMIT_JOB_BG) == handle(1)
    assert c.submit(b"f", b"", unique=b"-", ptype=T.SUBMIT_JOB_BG) == handle(2)
    assert d.function(b"f").by_payload == {}


def test_dash_job_and_literal_unique_do_not_mix() -> None:
    d = Driver()
    c = d.client()
    assert c.submit(b"f", b"payload", unique=b"-") == handle(1)
    assert c.submit(b"f", b"other", unique=b"payload") == handle(2)
    assert c.submit(b"f", b"payload", unique=b"-") == handle(1)


def test_first_job_wins_priority_and_data() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f", b"first", unique=b"u")  # NORMAL
    c.submit(b"f", b"other-high", ptype=T.SUBMIT_JOB_HIGH)
    assert c.submit(b"f", b"second", unique=b"u", ptype=T.SUBMIT_JOB_HIGH) == h
    w = d.worker(b"f")
    assert w.take()[2] == b"other-high"
    assert w.take(T.GRAB_JOB_UNIQ) == [h, b"f", b"u", b"first"]
    w.no_job()


def test_coalesced_epoch_and_reduce_submits_are_ignored_too() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f", b"first", unique=b"u")
    assert c.submit_epoch(b"f", int(d.wall) + 3600, b"later", unique=b"u") == h
    c.send(T.SUBMIT_REDUCE_JOB, b"f", b"u", b"red", b"", b"map")
    assert c.one(T.JOB_CREATED) == [h]
    w = d.worker(b"f")
    assert w.take(T.GRAB_JOB_ALL) == [h, b"f", b"u", b"first"]  # no reducer: JOB_ASSIGN_UNIQ layout
    assert d.server.jobs[h].reducer == b""


def test_every_foreground_submitter_gets_all_work_packets_background_only_job_created() -> None:
    d = Driver()
    fg1, fg2, bg = d.client(), d.client(), d.client()
    w = d.worker(b"f")
    h = fg1.submit(b"f", b"x", unique=b"u")
    assert bg.submit(b"f", b"x", unique=b"u", ptype=T.SUBMIT_JOB_BG) == h
    assert fg2.submit(b"f", b"x", unique=b"u", ptype=T.SUBMIT_JOB_LOW) == h
    w.take()
    w.send(T.WORK_STATUS, h, b"1", b"2")
    w.send(T.WORK_DATA, h, b"d")
    w.send(T.WORK_WARNING, h, b"w")
    w.complete(h, b"r")
    expected = [
        (T.WORK_STATUS, [h, b"1", b"2"]), (T.WORK_DATA, [h, b"d"]),
        (T.WORK_WARNING, [h, b"w"]), (T.WORK_COMPLETE, [h, b"r"]),
    ]
    assert fg1.recv() == expected
    assert fg2.recv() == expected
    bg.none()


def test_same_connection_submitting_twice_gets_every_packet_twice() -> None:
    # gearmand 1.1.20 (verified): each submit is one listener; a client waiting on two
    # requests with the same handle needs one answer per request
    d = Driver()
    c, s = d.client(), d.client()
    w = d.worker(b"f")
    h = c.submit(b"f", b"a", unique=b"u")
    assert c.submit(b"f", b"b", unique=b"u") == h
    s.send(T.GET_STATUS_UNIQUE, b"u")
    assert s.one(T.STATUS_RES_UNIQUE) == [b"u", b"1", b"0", b"0", b"0", b"2"]
    w.take()
    w.send(T.WORK_DATA, h, b"d")
    w.complete(h, b"r")
    assert c.recv() == [(T.WORK_DATA, [h, b"d"])] * 2 + [(T.WORK_COMPLETE, [h, b"r"])] * 2
    assert c.peer.listening == set()


def test_same_unique_on_different_functions_are_different_jobs() -> None:
    d = Driver()
    c = d.client()
    h1 = c.submit(b"f", b"x", unique=b"u")
    h2 = c.submit(b"g", b"x", unique=b"u")
    assert h1 != h2
    wf, wg = d.worker(b"f"), d.worker(b"g")
    assert wf.take()[0] == h1
    assert wg.take()[0] == h2


def test_unique_is_free_again_after_the_job_ends() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f", b"x", unique=b"u")
    w.take()
    w.complete(h)
    c.recv()
    assert c.submit(b"f", b"x", unique=b"u") == handle(2)


def test_maxqueue_not_checked_for_coalesced_submits() -> None:
    d = Driver()
    assert d.admin("maxqueue f 1") == b"OK\r\n"
    c = d.client()
    h = c.submit(b"f", b"x", unique=b"u")
    assert c.submit(b"f", b"x", unique=b"u") == h
    assert c.submit(b"f", b"x", unique=b"u", ptype=T.SUBMIT_JOB_HIGH_BG) == h
    c.send(T.SUBMIT_JOB, b"f", b"v", b"x")
    assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")


# ------------------------------------------------------------------ unique / reducer sizes

def test_unique_over_64_bytes_is_refused() -> None:
    d = Driver()
    c = d.client()
    for ptype, _ in ALL_SUBMITS:
        c.send(ptype, b"f", b"u" * 65, b"x")
        assert c.error() == (b"ARGUMENT_TOO_LARGE", b"Unique value too large")
    c.send(T.SUBMIT_JOB_EPOCH, b"f", b"u" * 65, b"0", b"x")
    assert c.error() == (b"ARGUMENT_TOO_LARGE", b"Unique value too large")
    c.send(T.SUBMIT_REDUCE_JOB, b"f", b"u" * 65, b"r", b"", b"x")
    assert c.error() == (b"ARGUMENT_TOO_LARGE", b"Unique value too large")
    assert d.server.jobs == {}
    assert d.server.next_handle == 1


def test_unique_of_exactly_64_bytes_is_kept_intact() -> None:
    # gearmand truncates it to 63 bytes; geartrain keeps all 64
    d = Driver()
    c = d.client()
    unique = bytes(range(65, 65 + 64))
    h = c.submit(b"f", b"x", unique=unique)
    assert c.submit(b"f", b"y", unique=unique) == h
    assert c.submit(b"f", b"z", unique=unique[:63]) != h
    assert d.admin("show unique jobs") == unique + b"\n" + unique[:63] + b"\n.\n"
    w = d.worker(b"f")
    assert w.take(T.GRAB_JOB_UNIQ) == [h, b"f", unique, b"x"]


def test_submit_reduce_job_with_four_fields_is_assigned_with_its_reducer() -> None:
    d = Driver()
    c = d.client()
    c.send(T.SUBMIT_REDUCE_JOB, b"mapf", b"ru", b"redf", b"", b"map\0data")
    h = c.one(T.JOB_CREATED)[0]
    w = d.worker(b"mapf")
    assert w.grab(T.GRAB_JOB_ALL) == (T.JOB_ASSIGN_ALL, [h, b"mapf", b"ru", b"redf", b"map\0data"])
    w.complete(h, b"out")
    assert c.one(T.WORK_COMPLETE) == [h, b"out"]


def test_submit_reduce_job_background_has_no_listener() -> None:
    d = Driver()
    c = d.client()
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"mapf", b"ru", b"redf", b"", b"mapdata")
    h = c.one(T.JOB_CREATED)[0]
    w = d.worker(b"mapf")
    assert w.grab(T.GRAB_JOB_ALL) == (T.JOB_ASSIGN_ALL, [h, b"mapf", b"ru", b"redf", b"mapdata"])
    w.complete(h, b"out")
    c.none()


def test_reduce_job_is_normal_priority() -> None:
    d = Driver()
    c = d.client()
    c.submit(b"f", b"low", ptype=T.SUBMIT_JOB_LOW)
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"f", b"", b"r", b"", b"reduce")
    c.one(T.JOB_CREATED)
    c.submit(b"f", b"high", ptype=T.SUBMIT_JOB_HIGH)
    w = d.worker(b"f")
    assert [w.take()[2] for _ in range(3)] == [b"high", b"reduce", b"low"]


def test_reducer_over_64_bytes_is_refused_exactly_64_accepted() -> None:
    d = Driver()
    c = d.client()
    c.send(T.SUBMIT_REDUCE_JOB, b"f", b"", b"r" * 65, b"", b"x")
    # gearmand 1.1.20 answers with the unique text here too (verified)
    assert c.error() == (b"ARGUMENT_TOO_LARGE", b"Unique value too large")
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"f", b"", b"r" * 65, b"", b"x")
    assert c.error() == (b"ARGUMENT_TOO_LARGE", b"Unique value too large")
    c.send(T.SUBMIT_REDUCE_JOB, b"f", b"", b"r" * 64, b"", b"x")
    h = c.one(T.JOB_CREATED)[0]
    w = d.worker(b"f")
    assert w.take(T.GRAB_JOB_ALL)[3] == b"r" * 64
    assert h == handle(1)


def test_grab_job_and_grab_job_uniq_ignore_the_reducer() -> None:
    d = Driver()
    c = d.client()
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"f", b"u1", b"red", b"", b"d1")
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"f", b"u2", b"red", b"", b"d2")
    c.recv()
    w = d.worker(b"f")
    assert w.grab(T.GRAB_JOB) == (T.JOB_ASSIGN, [handle(1), b"f", b"d1"])
    assert w.grab(T.GRAB_JOB_UNIQ) == (T.JOB_ASSIGN_UNIQ, [handle(2), b"f", b"u2", b"d2"])


# ------------------------------------------------------------------ maxqueue

def test_maxqueue_single_number_limits_every_priority() -> None:
    d = Driver()
    c = d.client()
    c.submit(b"f")  # the function exists
    assert d.admin("maxqueue f 3") == b"OK\r\n"
    c.submit(b"f", ptype=T.SUBMIT_JOB_HIGH_BG)
    c.submit(b"f", ptype=T.SUBMIT_JOB_LOW)
    for ptype, _ in ALL_SUBMITS:
        c.send(ptype, b"f", b"", b"x")
        assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    assert d.status_line(b"f") == (3, 0, 0)
    assert d.server.next_handle == 4


def test_maxqueue_counts_running_jobs() -> None:
    d = Driver()
    c = d.client()
    d.admin("create function f")
    d.admin("maxqueue f 2")
    w = d.worker(b"f")
    c.submit(b"f", b"1")
    c.submit(b"f", b"2")
    w.take()
    c.send(T.SUBMIT_JOB, b"f", b"", b"3")
    assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    w.complete(handle(1))
    assert c.one(T.WORK_COMPLETE) == [handle(1), b""]
    assert c.submit(b"f", b"3") == handle(3)


def test_maxqueue_three_numbers_are_high_normal_low() -> None:
    d = Driver()
    c = d.client()
    d.admin("create function mq")
    assert d.admin("maxqueue mq 3 1 1") == b"OK\r\n"
    c.submit(b"mq", ptype=T.SUBMIT_JOB_BG)  # total 1: NORMAL limit 1 reached now
    c.send(T.SUBMIT_JOB, b"mq", b"", b"x")
    assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    c.send(T.SUBMIT_JOB_LOW_BG, b"mq", b"", b"x")
    assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    c.submit(b"mq", ptype=T.SUBMIT_JOB_HIGH_BG)
    c.submit(b"mq", ptype=T.SUBMIT_JOB_HIGH)
    c.send(T.SUBMIT_JOB_HIGH_BG, b"mq", b"", b"x")
    assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    assert d.status_line(b"mq") == (3, 0, 0)


def test_maxqueue_two_numbers_leave_low_unlimited() -> None:
    d = Driver()
    c = d.client()
    d.admin("create function f")
    d.admin("maxqueue f 1 1")
    c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    for ptype in (T.SUBMIT_JOB, T.SUBMIT_JOB_HIGH):
        c.send(ptype, b"f", b"", b"x")
        assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    for _ in range(5):
        c.submit(b"f", ptype=T.SUBMIT_JOB_LOW_BG)
    assert d.status_line(b"f") == (6, 0, 0)


def test_maxqueue_zero_or_no_number_removes_the_limit() -> None:
    d = Driver()
    c = d.client()
    d.admin("create function f")
    d.admin("maxqueue f 1")
    c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    c.send(T.SUBMIT_JOB_BG, b"f", b"", b"x")
    assert c.error()[0] == b"QUEUE_ERROR"
    assert d.admin("maxqueue f") == b"OK\r\n"
    c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    d.admin("maxqueue f 1")
    d.admin("maxqueue f 0")
    c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    d.admin("maxqueue f -5")  # negative = 0 = unlimited
    c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    assert d.status_line(b"f") == (4, 0, 0)


def test_maxqueue_before_the_function_exists_is_remembered_but_not_listed() -> None:
    # gearmand silently ignores it (verified); geartrain applies it once the function appears
    d = Driver()
    assert d.admin("maxqueue later 1") == b"OK\r\n"
    assert d.admin("status") == b".\n"
    assert d.admin("prioritystatus") == b".\n"
    c = d.client()
    c.submit(b"later", ptype=T.SUBMIT_JOB_BG)
    c.send(T.SUBMIT_JOB_BG, b"later", b"", b"x")
    assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    assert d.status_line(b"later") == (1, 0, 0)


def test_maxqueue_remembered_limit_applies_to_a_function_created_by_a_worker() -> None:
    d = Driver()
    d.admin("maxqueue f 0 0 1")
    d.worker(b"f")
    c = d.client()
    c.submit(b"f", ptype=T.SUBMIT_JOB_LOW)
    c.send(T.SUBMIT_JOB_LOW, b"f", b"", b"x")
    assert c.error() == (b"QUEUE_ERROR", b"Job queue is full")
    c.submit(b"f")


def test_maxqueue_reset_before_the_function_exists_forgets_the_limit() -> None:
    d = Driver()
    d.admin("maxqueue f 1")
    d.admin("maxqueue f 0")
    c = d.client()
    c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    assert d.server.pending_limits == {}


# ------------------------------------------------------------------ malformed submits

@pytest.mark.parametrize("ptype", [T.SUBMIT_JOB, T.SUBMIT_JOB_BG, T.SUBMIT_JOB_EPOCH, T.SUBMIT_REDUCE_JOB])
def test_submit_without_separators_gets_an_error_and_the_connection_stays(ptype: int) -> None:
    d = Driver()
    c = d.client()
    c.send_body(ptype, b"nonul")
    code, _ = c.error()
    assert code == b"INVALID_PACKET"
    assert not c.peer.closing
    assert c.submit(b"f", b"x") == handle(1)
