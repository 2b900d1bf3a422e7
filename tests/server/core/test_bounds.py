"""Liveness and memory bounds: stuck woken workers, invented function names,
background submits coalescing onto foreground jobs."""

from __future__ import annotations

from geartrain.server.core.settings import MAX_ABILITIES
from tests.server.core.driver import Driver, T


def test_a_woken_worker_that_never_grabs_does_not_hold_the_job_back():
    d = Driver()
    stuck = d.sleeper(b"f")
    other = d.sleeper(b"f")
    client = d.client()
    client.submit(b"f", b"x")
    assert stuck.count(T.NOOP) == 1  # longest asleep is woken first
    assert other.count(T.NOOP) == 0
    d.advance(0.5)
    assert other.count(T.NOOP) == 0  # still within the grace time
    d.advance(0.6)
    assert other.count(T.NOOP) == 1  # stuck never grabbed: the next sleeper is woken
    args = other.take()
    assert args[2] == b"x"
    d.advance(5)
    assert stuck.count(T.NOOP) == 0


def test_a_worker_that_grabs_in_time_wakes_nobody_else():
    d = Driver()
    fast = d.sleeper(b"f")
    other = d.sleeper(b"f")
    client = d.client()
    client.submit(b"f", b"x")
    assert fast.count(T.NOOP) == 1
    fast.take()
    d.advance(3)
    assert other.count(T.NOOP) == 0
    assert d.server.woken == {}


def test_rewake_only_while_work_remains():
    d = Driver()
    stuck = d.sleeper(b"f")
    other = d.sleeper(b"f")
    client = d.client()
    client.submit(b"f", b"x")
    assert stuck.count(T.NOOP) == 1
    third = d.worker(b"f")
    third.take()  # somebody else took the job meanwhile
    d.advance(2)
    assert other.count(T.NOOP) == 0
    assert d.server.woken == {}


def test_background_submit_coalesced_onto_a_foreground_job_survives_its_client():
    d = Driver()
    fg = d.client()
    bg = d.client()
    h1 = fg.submit(b"f", b"data", b"u1")
    h2 = bg.submit(b"f", b"other", b"u1", ptype=T.SUBMIT_JOB_BG)
    assert h1 == h2
    fg.close()
    w = d.worker(b"f")
    args = w.take()
    assert args[0] == h1 and args[2] == b"data"
    assert d.admin("show jobs") == h1 + b"\t0\t0\t1\n.\n"


def test_idle_functions_are_forgotten_beyond_the_limit():
    d = Driver(max_idle_functions=100)
    w = d.worker(b"busy")
    c = d.client()
    c.submit(b"queued", b"x", ptype=T.SUBMIT_JOB_BG)
    assert d.admin("create function made") == b"OK\r\n"
    d.admin("maxqueue limited 5")
    d.server.function(b"limited")
    for i in range(500):
        name = b"junk%d" % i
        w.can_do(name)
        w.send(T.CANT_DO, name)
    names = set(d.server.functions)
    assert len(names) <= 200
    assert {b"busy", b"queued", b"made", b"limited"} <= names
    # the survivors still work
    w2 = d.worker(b"queued")
    assert w2.take()[2] == b"x"


def test_below_the_limit_functions_stay_listed_like_gearmand():
    d = Driver()
    w = d.worker(b"f1")
    w.send(T.CANT_DO, b"f1")
    assert d.admin("status") == b"f1\t0\t0\t0\n.\n"


def test_one_connection_cannot_register_unlimited_functions():
    d = Driver()
    w = d.connect()
    for i in range(MAX_ABILITIES):
        w.send(T.CAN_DO, b"f%d" % i)
    w.none()
    w.send(T.CAN_DO, b"one-too-many")
    code, text = w.error()
    assert code == b"ARGUMENT_TOO_LARGE" and b"Too many functions" in text
    w.send(T.CAN_DO, b"f7")  # re-registering a known one is fine
    w.none()
    assert len(w.peer.abilities) == MAX_ABILITIES
