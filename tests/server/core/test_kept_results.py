"""Kept results of ended jobs (core/results.py): what is recorded, its
bounds, expiry, look-up by handle and unique key through the admin
``result`` commands and the result packets of the protocol extension
(docs/protocol-extensions.md), and attaching to a running background job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from geartrain.results import JobResult, payload_from_json, result_from_json
from tests.server.core.driver import WALL0, Conn, Driver, T


def result_of(d: Driver, handle: bytes) -> dict[str, Any]:
    reply = d.admin(b"result " + handle)
    assert reply.startswith(b"OK ") and reply.endswith(b"\n"), reply
    doc: dict[str, Any] = json.loads(reply[3:])
    return doc


def text(payload: dict[str, str]) -> bytes:
    return payload_from_json(payload)


def bg(d: Driver, function: bytes = b"f", data: bytes = b"x", unique: bytes = b"") -> bytes:
    return d.client().submit(function, data, unique=unique, ptype=T.SUBMIT_JOB_BG)


def bg_stored(d: Driver, function: bytes = b"f") -> bytes:
    """A background submit to a durable core, committed by a stand-in store."""
    c = d.client()
    c.send(T.SUBMIT_JOB_BG, function, b"", b"x")
    d.server.stored(d.server.store_adds[:])
    d.server.store_adds.clear()
    return c.one(T.JOB_CREATED)[0]


def opted_in(d: Driver) -> Conn:
    c = d.client()
    c.send(T.OPTION_REQ, b"results")
    assert c.one(T.OPTION_RES) == [b"results"]
    return c


# --------------------------------------------------------------- recording

def test_completed_background_job_keeps_everything_it_produced() -> None:
    d = Driver()
    h = bg(d, b"f", b"in", unique=b"u1")
    d.advance(2)
    w = d.worker(b"f")
    assert w.take()[0] == h
    w.send(T.WORK_STATUS, h, b"3", b"10")
    w.send(T.WORK_DATA, h, b"chunk \0 1")
    w.send(T.WORK_WARNING, h, b"careful")
    w.send(T.WORK_DATA, h, b"\xff\xfe")
    w.none()
    d.advance(5)
    w.complete(h, b"the result")
    doc = result_of(d, h)
    assert doc["state"] == "completed"
    assert text(doc["result"]) == b"the result"
    assert [text(c) for c in doc["data"]] == [b"chunk \0 1", b"\xff\xfe"]
    assert doc["data"][1] == {"base64": "//4="}  # not UTF-8: base64, never mangled
    assert [text(c) for c in doc["warnings"]] == [b"careful"]
    assert (doc["numerator"], doc["denominator"]) == (3, 10)
    assert doc["submitted_at"] == WALL0
    assert doc["attempt_started_at"] == [WALL0 + 2] and doc["attempts"] == 1
    assert doc["finished_at"] == WALL0 + 7
    assert (doc["function"], doc["unique"], doc["priority"], doc["background"]) == ("f", "u1", "normal", True)
    assert doc["truncated"] is False
    # GET_STATUS answers exactly as gearmand does: the job is gone
    assert d.client().status(h) == [h, b"0", b"0", b"0", b"0"]


@pytest.mark.parametrize("how", ["fail", "exception", "cancel-queued", "cancel-running", "retries"])
def test_every_way_a_job_ends_is_recorded(how: str) -> None:
    d = Driver(handle_prefix="H:test", job_retries=2)
    h = bg(d)
    w = d.worker(b"f")
    expected = {"fail": "failed", "exception": "exception", "cancel-queued": "cancelled",
                "cancel-running": "cancelled", "retries": "failed"}[how]
    attempts = 1
    if how == "cancel-queued":
        assert d.admin(b"cancel job " + h) == b"OK\r\n"
        attempts = 0
    else:
        assert w.take()[0] == h
        if how == "fail":
            w.send(T.WORK_FAIL, h)
        elif how == "exception":
            w.send(T.WORK_EXCEPTION, h, b"boom")
        elif how == "cancel-running":
            assert d.admin(b"cancel job " + h) == b"OK\r\n"
            w.complete(h, b"too late")  # runs on; its result goes nowhere
        else:
            w.close()
            w2 = d.worker(b"f")
            assert w2.take()[0] == h
            w2.close()  # the second loss exhausts --job-retries 2
            attempts = 2
    doc = result_of(d, h)
    assert doc["state"] == expected
    assert doc["attempts"] == attempts
    assert text(doc["result"]) == (b"boom" if how == "exception" else b"")


def test_foreground_jobs_are_kept_only_when_asked() -> None:
    for keep in (False, True):
        d = Driver(handle_prefix="H:test", keep_foreground_results=keep)
        c = d.client()
        h = c.submit(b"f", b"x")
        w = d.worker(b"f")
        w.take()
        w.complete(h, b"r")
        c.recv()
        reply = d.admin(b"result " + h)
        if keep:
            assert json.loads(reply[3:])["background"] is False
        else:
            assert reply == b"ERR UNKNOWN_JOB\r\n"


def test_no_results_keeps_nothing() -> None:
    d = Driver(handle_prefix="H:test", keep_results=False)
    h = bg(d)
    w = d.worker(b"f")
    w.take()
    w.complete(h, b"r")
    assert d.admin(b"result " + h) == b"ERR UNKNOWN_JOB\r\n"
    assert len(d.server.results) == 0


def test_output_beyond_the_byte_budget_is_cut_and_counted() -> None:
    d = Driver(handle_prefix="H:test", result_max_bytes=10)
    h = bg(d)
    w = d.worker(b"f")
    w.take()
    w.send(T.WORK_DATA, h, b"123456")
    w.send(T.WORK_WARNING, h, b"abcdef")  # 4 of 6 fit
    w.send(T.WORK_DATA, h, b"zz")  # nothing fits
    w.complete(h, b"0123456789ABC")  # 3 over
    doc = result_of(d, h)
    assert [text(c) for c in doc["data"]] == [b"123456"]
    assert [text(c) for c in doc["warnings"]] == [b"abcd"]
    assert text(doc["result"]) == b"0123456789"
    assert doc["truncated"] is True and doc["truncated_bytes"] == 2 + 2 + 3


def test_results_expire_after_the_ttl_and_the_store_is_told() -> None:
    d = Driver(handle_prefix="H:test", result_ttl=60.0)
    d.server.durable = True  # as with a durable store: results go to store_results
    w = d.worker(b"f")
    handles = []
    for i in range(3):
        h = bg_stored(d)
        handles.append(h)
        w.take()
        w.complete(h, b"r%d" % i)
        d.advance(20)
    assert [r.handle for r in d.server.store_results] == handles
    # the first finished at +0, the others at +20 and +40; now is +60
    d.advance(1)
    assert d.admin(b"result " + handles[0]) == b"ERR UNKNOWN_JOB\r\n"
    assert result_of(d, handles[1])["state"] == "completed"
    assert d.server.store_result_drops == [handles[0]]
    d.advance(40)
    assert len(d.server.results) == 0
    assert d.server.store_result_drops == handles


def test_beyond_max_count_the_oldest_results_go_first() -> None:
    d = Driver(handle_prefix="H:test", result_max_count=2)
    w = d.worker(b"f")
    handles = []
    for _ in range(3):
        h = bg(d)
        handles.append(h)
        w.take()
        w.complete(h)
    assert d.admin(b"result " + handles[0]) == b"ERR UNKNOWN_JOB\r\n"
    assert [result_of(d, h)["handle"].encode() for h in handles[1:]] == handles[1:]
    assert d.server.results.evicted == 1


def test_a_full_book_forgets_its_oldest_segment_at_once_and_tells_the_store() -> None:
    # 32 results at most, in segments of 2: the book never holds more than
    # 32, never fewer than 30 once full, and forgets the oldest first
    d = Driver(handle_prefix="H:test", result_max_count=32)
    d.server.durable = True
    assert d.server.results.span == 2
    w = d.worker(b"f")
    handles = []
    for i in range(41):
        h = bg_stored(d)
        handles.append(h)
        w.take()
        w.complete(h, b"r%d" % i)
        assert len(d.server.results) == min(i + 1, 32) or 30 <= len(d.server.results) <= 32
    gone = d.server.store_result_drops
    assert gone == handles[:len(gone)] and len(gone) == d.server.results.evicted
    assert len(gone) + len(d.server.results) == 41
    for h in gone:
        assert d.admin(b"result " + h) == b"ERR UNKNOWN_JOB\r\n"
    for h in handles[len(gone):]:
        assert result_of(d, h)["state"] == "completed"


def test_the_unique_index_forgets_what_the_book_forgets() -> None:
    d = Driver(handle_prefix="H:test", result_max_count=4)
    w = d.worker(b"f")
    first = bg(d, unique=b"u0")
    w.take()
    w.complete(first, b"one")
    assert d.admin(b"result-unique u0").startswith(b"OK ")  # (builds the index)
    again = bg(d, unique=b"u0")  # the same unique, later: the index points at it
    w.take()
    w.complete(again, b"two")
    assert json.loads(d.admin(b"result-unique u0")[3:])["handle"] == again.decode()
    for i in range(4):  # pushes both out
        h = bg(d, unique=b"v%d" % i)
        w.take()
        w.complete(h)
    assert d.admin(b"result-unique u0") == b"ERR UNKNOWN_JOB\r\n"
    assert json.loads(d.admin(b"result-unique v3")[3:])["state"] == "completed"


def test_expiry_within_a_segment_keeps_the_younger_results_of_it() -> None:
    d = Driver(handle_prefix="H:test", result_ttl=60.0, result_max_count=160)  # segments of 10
    w = d.worker(b"f")
    handles = []
    for _ in range(4):
        h = bg(d)
        handles.append(h)
        w.take()
        w.complete(h)
        d.advance(10)
    d.advance(31)  # now +71: the first two ended more than 60 s ago (at +0 and +10)
    assert [d.admin(b"result " + h).startswith(b"OK ") for h in handles] == [False, False, True, True]
    assert len(d.server.results) == 2
    d.advance(20)
    assert len(d.server.results) == 0


def test_expired_results_are_forgotten_once_a_second_not_once_per_result() -> None:
    # a busy server ends jobs at every loop turn: it must not walk the book
    # once per result that falls due, so expired results go in one pass a second
    d = Driver(handle_prefix="H:test", result_ttl=10.0)
    w = d.worker(b"f")
    for _ in range(10):  # ended at +0, +0.5, ... +4.5
        h = bg(d)
        w.take()
        w.complete(h)
        d.advance(0.5)
    d.advance(5.01)  # +10.01: the first is past its time; the next pass is at +11.01
    assert len(d.server.results) == 9
    d.advance(0.5)  # +10.51: the one ended at +0.5 is due, but waits for that pass
    assert len(d.server.results) == 9
    d.advance(0.55)  # +11.06: the pass forgets those ended at +0.5 and +1.0
    assert len(d.server.results) == 7


# ----------------------------------------------------------------- look-up

def test_live_jobs_are_described_with_what_they_produced_so_far() -> None:
    d = Driver()
    h = bg(d, unique=b"live")
    assert result_of(d, h)["state"] == "queued"
    w = d.worker(b"f")
    w.take()
    w.send(T.WORK_STATUS, h, b"1", b"4")
    w.send(T.WORK_DATA, h, b"so far")
    doc = result_of(d, h)
    assert doc["state"] == "running" and (doc["numerator"], doc["denominator"]) == (1, 4)
    assert [text(c) for c in doc["data"]] == [b"so far"] and doc["finished_at"] is None
    assert json.loads(d.admin(b"result-unique live")[3:])["handle"] == h.decode()
    assert d.admin(b"result H:test:999") == b"ERR UNKNOWN_JOB\r\n"
    assert d.admin(b"result").startswith(b"ERR INVALID_ARGUMENTS")


def test_result_by_unique_prefers_the_live_job_then_the_latest_result() -> None:
    d = Driver()
    w = d.worker(b"f", b"g")
    first = bg(d, b"f", unique=b"k")
    w.take()
    w.complete(first, b"one")
    second = bg(d, b"g", unique=b"k")
    assert json.loads(d.admin(b"result-unique k")[3:])["handle"] == second.decode()  # live
    w.take()
    w.complete(second, b"two")
    assert json.loads(d.admin(b"result-unique k")[3:])["handle"] == second.decode()
    assert json.loads(d.admin(b"result-unique k f")[3:])["handle"] == first.decode()
    assert d.admin(b"result-unique k nosuch") == b"ERR UNKNOWN_JOB\r\n"


# ------------------------------------------------------- protocol extension

def test_result_packets_are_unknown_until_the_client_opts_in() -> None:
    d = Driver()
    c = d.client()
    for ptype in (T.GET_RESULT, T.WAIT_RESULT, T.ATTACH_JOB):
        c.send(ptype, b"H:test:1")
        code, message = c.error()
        assert code == b"INVALID_COMMAND" and message == b"Unknown packet type %d" % ptype
    c.send(T.OPTION_REQ, b"RESULTS")  # case-insensitive, echoed as sent
    assert c.one(T.OPTION_RES) == [b"RESULTS"]


def test_get_result_and_get_result_unique() -> None:
    d = Driver()
    c = opted_in(d)
    c.send(T.GET_RESULT, b"H:test:7")
    assert c.one(T.RESULT_RES) == [b"H:test:7", b"unknown", b""]
    h = bg(d, unique=b"uu")
    w = d.worker(b"f")
    w.take()
    w.complete(h, b"\0bin\0")
    c.send(T.GET_RESULT, h)
    handle, state, doc = c.one(T.RESULT_RES)
    assert (handle, state) == (h, b"completed")
    result = result_from_json(json.loads(doc))
    assert isinstance(result, JobResult) and result.result == b"\0bin\0" and result.done
    c.send(T.GET_RESULT_UNIQUE, b"f", b"uu")
    assert c.one(T.RESULT_RES)[:2] == [h, b"completed"]
    c.send(T.GET_RESULT_UNIQUE, b"", b"uu")  # any function
    assert c.one(T.RESULT_RES)[:2] == [h, b"completed"]
    c.send(T.GET_RESULT_UNIQUE, b"", b"none")
    assert c.one(T.RESULT_RES) == [b"", b"unknown", b""]


def test_wait_result_answers_when_the_job_ends() -> None:
    d = Driver()
    c = opted_in(d)
    h = bg(d)
    c.send(T.WAIT_RESULT, h)
    c.send(T.WAIT_RESULT, h)  # twice: answered twice
    c.none()
    w = d.worker(b"f")
    w.take()
    w.send(T.WORK_DATA, h, b"d")
    c.none()
    w.send(T.WORK_EXCEPTION, h, b"bad")
    got = c.recv()
    assert [p for p, _ in got] == [T.RESULT_RES, T.RESULT_RES]
    assert got[0][1][:2] == [h, b"exception"]
    assert json.loads(got[0][1][2])["data"] == [{"text": "d"}]
    c.send(T.WAIT_RESULT, h)  # ended: at once
    assert c.one(T.RESULT_RES)[1] == b"exception"
    assert d.server.result_waiters == {}


def test_wait_result_for_a_job_that_is_not_kept_answers_unknown_when_it_ends() -> None:
    d = Driver()
    c = opted_in(d)
    fg = d.client()
    h = fg.submit(b"f", b"x")
    c.send(T.WAIT_RESULT, h)
    c.none()
    w = d.worker(b"f")
    w.take()
    w.complete(h, b"r")
    assert c.one(T.RESULT_RES) == [h, b"unknown", b""]


def test_attach_streams_a_background_job_and_leaving_does_not_lose_it() -> None:
    d = Driver()
    h = bg(d)
    a = opted_in(d)
    a.send(T.ATTACH_JOB, h)
    assert a.one(T.ATTACH_RES) == [h, b"queued"]
    w = d.worker(b"f")
    w.take()
    w.send(T.WORK_STATUS, h, b"1", b"2")
    w.send(T.WORK_DATA, h, b"part")
    assert [p for p, _ in a.recv()] == [T.WORK_STATUS, T.WORK_DATA]
    a.close()  # an attached client leaving is not a foreground client leaving
    late = opted_in(d)
    late.send(T.ATTACH_JOB, h)
    assert late.one(T.ATTACH_RES) == [h, b"running"]
    w.complete(h, b"done")
    assert late.one(T.WORK_COMPLETE) == [h, b"done"]
    late.send(T.ATTACH_JOB, h)
    assert late.one(T.ATTACH_RES) == [h, b"completed"]
    late.send(T.ATTACH_JOB, b"H:test:404")
    assert late.one(T.ATTACH_RES) == [b"H:test:404", b"unknown"]
    assert result_of(d, h)["state"] == "completed"


# ------------------------------------------------------------ durable restart

def test_results_read_back_at_start_are_kept_unless_expired_and_handles_move_on() -> None:
    d = Driver(handle_prefix="H:test", result_ttl=100.0)
    d.server.durable = True
    fresh = JobResult(b"H:test:41", b"f", b"", "completed", b"r", finished=WALL0 - 10)
    old = JobResult(b"H:test:7", b"f", b"", "failed", finished=WALL0 - 500)
    assert d.server.keep_results([old, fresh]) == 1
    assert d.server.store_result_drops == [b"H:test:7"]
    assert result_of(d, b"H:test:41")["state"] == "completed"
    assert bg_stored(d) == b"H:test:42"  # never a handle a kept result answers to
    # read back again (a result filed already keeps its place and takes the new one)
    again = JobResult(b"H:test:41", b"f", b"", "failed", finished=WALL0 - 10)
    assert d.server.keep_results([again]) == 1
    assert len(d.server.results) == 1 and result_of(d, b"H:test:41")["state"] == "failed"
    d.advance(91)
    assert d.admin(b"result H:test:41") == b"ERR UNKNOWN_JOB\r\n"


def test_a_job_replayed_from_the_store_keeps_its_result_too() -> None:
    from geartrain.server.stores.base import StoredJob

    d = Driver()
    d.server.restore([StoredJob(b"H:test:5", b"f", b"k", b"data", 1)])
    w = d.worker(b"f")
    assert w.take()[0] == b"H:test:5"
    d.advance(3)
    w.complete(b"H:test:5", b"after the restart")
    doc = result_of(d, b"H:test:5")
    assert doc["state"] == "completed" and text(doc["result"]) == b"after the restart"
    assert doc["submitted_at"] is None  # the queue tables do not record it
    assert doc["attempt_started_at"] == [WALL0]
    # its time in queue counts from the replay, not from the clock's epoch
    assert d.function(b"f").stats.waited.sum < 1.0
