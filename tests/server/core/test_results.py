"""Results: WORK_* forwarding, exceptions, errors for unknown jobs, GET_STATUS(_UNIQUE)."""

from __future__ import annotations

import pytest

from geartrain.protocol import encode
from tests.server.core.driver import Conn, Driver, T, handle


def running(d: Driver, *clients: Conn, unique: bytes = b"u") -> tuple[Conn, bytes]:
    """A worker running one job that every client in *clients* submitted in the foreground."""
    w = d.worker(b"f")
    h = b""
    for c in clients:
        h = c.submit(b"f", b"x", unique=unique)
    assert w.take()[0] == h
    return w, h


# ------------------------------------------------------------------ forwarding

@pytest.mark.parametrize("ptype", [T.WORK_DATA, T.WORK_WARNING])
def test_work_data_and_warning_forwarded_byte_identical(ptype: int) -> None:
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    payload = b"\0\x01binary\0\xff\0"
    w.send(ptype, h, payload)
    w.none()
    expected = encode(ptype, h, payload)
    assert c.raw() == expected


def test_work_status_forwarded_verbatim() -> None:
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    body = h + b"\0 07\0 0x10 "
    w.send_body(T.WORK_STATUS, body)
    assert c.raw() == b"\0RES" + (12).to_bytes(4, "big") + len(body).to_bytes(4, "big") + body
    # stored as C atoi for GET_STATUS
    assert c.status(h) == [h, b"1", b"1", b"7", b"0"]


def test_work_packets_reach_every_listener_in_order() -> None:
    d = Driver()
    clients = [d.client() for _ in range(3)]
    w, h = running(d, *clients)
    w.send(T.WORK_STATUS, h, b"1", b"3")
    w.send(T.WORK_DATA, h, b"a")
    w.send(T.WORK_WARNING, h, b"b")
    w.send(T.WORK_STATUS, h, b"2", b"3")
    w.send(T.WORK_DATA, h, b"c")
    w.send(T.WORK_COMPLETE, h, b"done")
    w.none()
    expected = b"".join([
        encode(T.WORK_STATUS, h, b"1", b"3"), encode(T.WORK_DATA, h, b"a"),
        encode(T.WORK_WARNING, h, b"b"), encode(T.WORK_STATUS, h, b"2", b"3"),
        encode(T.WORK_DATA, h, b"c"), encode(T.WORK_COMPLETE, h, b"done"),
    ])
    assert [c.raw() for c in clients] == [expected] * 3


def test_work_complete_ends_the_job() -> None:
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    w.complete(h, b"result")
    assert c.one(T.WORK_COMPLETE) == [h, b"result"]
    assert d.server.jobs == {}
    assert c.peer.listening == set() and w.peer.jobs == {}
    assert d.status_line(b"f") == (0, 0, 1)
    w.send(T.WORK_DATA, h, b"more")
    assert w.error() == (b"JOB_NOT_FOUND", b"Job does not exist on server")


def test_work_complete_with_bare_handle_completes_with_empty_result() -> None:
    # gearmand bug fixed: a WORK_COMPLETE without the NUL stalls gearmand
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    w.send_body(T.WORK_COMPLETE, h)
    w.none()
    assert c.raw() == encode(T.WORK_COMPLETE, h, b"")
    assert c.packets() == []
    assert h not in d.server.jobs


def test_work_fail_has_no_trailing_nul_and_ends_the_job() -> None:
    d = Driver()
    c1, c2 = d.client(), d.client()
    w, h = running(d, c1, c2)
    w.send(T.WORK_FAIL, h)
    w.none()
    wire = b"\0RES" + (14).to_bytes(4, "big") + len(h).to_bytes(4, "big") + h
    assert c1.raw() == wire and c2.raw() == wire
    assert d.server.jobs == {}


def test_work_fail_with_trailing_nul_from_worker_is_forwarded_without_it() -> None:
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    w.send_body(T.WORK_FAIL, h + b"\0")
    assert c.packets() == [(T.WORK_FAIL, h)]
    assert d.server.jobs == {}


def test_work_exception_goes_as_exception_to_exception_listeners_and_bare_fail_to_others() -> None:
    d = Driver()
    plain, exc = d.client(), d.client()
    exc.send(T.OPTION_REQ, b"exceptions")
    assert exc.one(T.OPTION_RES) == [b"exceptions"]
    w, h = running(d, plain, exc)
    w.send(T.WORK_EXCEPTION, h, b"boom\0trace")
    w.none()
    assert exc.raw() == encode(T.WORK_EXCEPTION, h, b"boom\0trace")
    # gearmand bug #108 fixed: no trailing NUL after the handle
    assert plain.raw() == b"\0RES" + (14).to_bytes(4, "big") + len(h).to_bytes(4, "big") + h
    assert d.server.jobs == {}


def test_exceptions_option_is_case_insensitive_and_echoed_as_sent() -> None:
    d = Driver()
    c = d.client()
    c.send(T.OPTION_REQ, b"EXCEPTIONS")
    assert c.one(T.OPTION_RES) == [b"EXCEPTIONS"]
    c.send(T.OPTION_REQ, b"ExCePtIoNs")
    assert c.one(T.OPTION_RES) == [b"ExCePtIoNs"]
    assert c.peer.exceptions


def test_exceptions_setting_applies_to_every_connection() -> None:
    d = Driver(exceptions=True)
    c = d.client()
    w, h = running(d, c)
    w.send(T.WORK_EXCEPTION, h, b"boom")
    assert c.recv() == [(T.WORK_EXCEPTION, [h, b"boom"])]


def test_option_set_after_submit_still_counts() -> None:
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    c.send(T.OPTION_REQ, b"exceptions")
    c.one(T.OPTION_RES)
    w.send(T.WORK_EXCEPTION, h, b"boom")
    assert c.recv() == [(T.WORK_EXCEPTION, [h, b"boom"])]


def test_unknown_option_gets_error() -> None:
    d = Driver()
    c = d.client()
    c.send(T.OPTION_REQ, b"bogus")
    assert c.error() == (b"UNKNOWN_OPTION", b"Server does not recognize given option")
    c.send(T.OPTION_REQ, b"exceptions\0")
    assert c.error() == (b"UNKNOWN_OPTION", b"Server does not recognize given option")
    assert not c.peer.exceptions


def test_background_job_results_go_nowhere() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    w.take()
    w.send(T.WORK_STATUS, h, b"1", b"2")
    w.send(T.WORK_DATA, h, b"x")
    w.complete(h, b"r")
    c.none()
    assert d.server.jobs == {}


# ------------------------------------------------------------------ errors for unknown jobs

RESULT_ERRORS = [
    (T.WORK_STATUS, (b"1", b"2"), b"Job given in work result not found"),
    (T.WORK_COMPLETE, (b"r",), b"Job given in work result not found"),
    (T.WORK_FAIL, (), b"Job given in work result not found"),
    (T.WORK_DATA, (b"d",), b"Job does not exist on server"),
    (T.WORK_WARNING, (b"d",), b"Job does not exist on server"),
    (T.WORK_EXCEPTION, (b"e",), b"An exception was received for a job that does not exist"),
]


@pytest.mark.parametrize("ptype,args,text", RESULT_ERRORS)
def test_results_for_unknown_handle_get_job_not_found(
    ptype: int, args: tuple[bytes, ...], text: bytes
) -> None:
    d = Driver()
    w = d.worker(b"f")
    w.send(ptype, b"H:nosuch:1", *args)
    assert w.error() == (b"JOB_NOT_FOUND", text)


@pytest.mark.parametrize("ptype,args,text", RESULT_ERRORS)
def test_results_for_a_job_held_by_another_worker_get_job_not_found(
    ptype: int, args: tuple[bytes, ...], text: bytes
) -> None:
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    other = d.worker(b"f")
    other.send(ptype, h, *args)
    assert other.error() == (b"JOB_NOT_FOUND", text)
    c.none()
    assert d.server.jobs[h].worker is w.peer


@pytest.mark.parametrize("ptype,args,text", RESULT_ERRORS)
def test_results_for_a_queued_job_get_job_not_found(ptype: int, args: tuple[bytes, ...], text: bytes) -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f")
    w.send(ptype, h, *args)
    assert w.error() == (b"JOB_NOT_FOUND", text)
    assert h in d.server.jobs


# ------------------------------------------------------------------ GET_STATUS

def test_get_status_queued_running_done_unknown() -> None:
    d = Driver()
    c, s = d.client(), d.client()
    h = c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    assert s.status(h) == [h, b"1", b"0", b"0", b"0"]
    w = d.worker(b"f")
    w.take()
    assert s.status(h) == [h, b"1", b"1", b"0", b"0"]
    w.send(T.WORK_STATUS, h, b"5", b"10")
    assert s.status(h) == [h, b"1", b"1", b"5", b"10"]
    w.complete(h)
    assert s.status(h) == [h, b"0", b"0", b"0", b"0"]
    assert s.status(b"H:nosuch:99") == [b"H:nosuch:99", b"0", b"0", b"0", b"0"]


def test_get_status_exact_bytes() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f")
    c.send(T.GET_STATUS, h)
    body = h + b"\x001\x000\x000\x000"
    assert c.raw() == b"\0RES" + (20).to_bytes(4, "big") + len(body).to_bytes(4, "big") + body


def test_get_status_numbers_are_c_atoi_into_uint32() -> None:
    d = Driver()
    c = d.client()
    w, h = running(d, c)
    w.send(T.WORK_STATUS, h, b"-1", b"abc")
    c.recv()
    assert c.status(h) == [h, b"1", b"1", b"4294967295", b"0"]


def test_get_status_unique() -> None:
    d = Driver()
    c1, c2, bg, s = d.client(), d.client(), d.client(), d.client()
    s.send(T.GET_STATUS_UNIQUE, b"uq")
    assert s.one(T.STATUS_RES_UNIQUE) == [b"uq", b"0", b"0", b"0", b"0", b"0"]
    h = c1.submit(b"f", b"x", unique=b"uq")
    bg.submit(b"f", b"x", unique=b"uq", ptype=T.SUBMIT_JOB_BG)
    c2.submit(b"f", b"x", unique=b"uq")
    s.send(T.GET_STATUS_UNIQUE, b"uq")
    assert s.one(T.STATUS_RES_UNIQUE) == [b"uq", b"1", b"0", b"0", b"0", b"2"]
    w = d.worker(b"f")
    w.take()
    w.send(T.WORK_STATUS, h, b"1", b"4")
    s.send(T.GET_STATUS_UNIQUE, b"uq")
    assert s.one(T.STATUS_RES_UNIQUE) == [b"uq", b"1", b"1", b"1", b"4", b"2"]
    w.complete(h)
    s.send(T.GET_STATUS_UNIQUE, b"uq")
    assert s.one(T.STATUS_RES_UNIQUE) == [b"uq", b"0", b"0", b"0", b"0", b"0"]


def test_get_status_unique_exact_bytes_first_field_is_the_unique() -> None:
    d = Driver()
    c = d.client()
    c.submit(b"f", unique=b"uq", ptype=T.SUBMIT_JOB_BG)
    c.send(T.GET_STATUS_UNIQUE, b"uq")
    body = b"uq\x001\x000\x000\x000\x000"
    assert c.raw() == b"\0RES" + (42).to_bytes(4, "big") + len(body).to_bytes(4, "big") + body


def test_get_status_unique_searches_every_function() -> None:
    d = Driver()
    c = d.client()
    c.submit(b"g", unique=b"uq", ptype=T.SUBMIT_JOB_BG)
    c.send(T.GET_STATUS_UNIQUE, b"uq")
    assert c.one(T.STATUS_RES_UNIQUE) == [b"uq", b"1", b"0", b"0", b"0", b"0"]


def test_get_status_unique_of_empty_unique_is_unknown() -> None:
    d = Driver()
    c = d.client()
    c.submit(b"f", b"x")
    c.send(T.GET_STATUS_UNIQUE, b"")
    assert c.one(T.STATUS_RES_UNIQUE) == [b"", b"0", b"0", b"0", b"0", b"0"]


# ------------------------------------------------------------------ echo

def test_echo_returns_the_same_bytes() -> None:
    d = Driver()
    c = d.client()
    payload = bytes(range(256)) * 4
    c.send(T.ECHO_REQ, payload)
    assert c.raw() == encode(T.ECHO_RES, payload)
    c.send(T.ECHO_REQ, b"")
    assert c.recv() == [(T.ECHO_RES, [b""])]


def test_handles_are_unique_per_job() -> None:
    d = Driver()
    c = d.client()
    assert {c.submit(b"f", b"%d" % i) for i in range(100)} == {handle(n) for n in range(1, 101)}


def test_work_fail_for_an_unknown_overlong_handle_gets_gearmands_size_error() -> None:
    d = Driver()
    w = d.worker(b"f")
    w.send(T.WORK_FAIL, b"H:" + b"x" * 62)  # 64 bytes
    assert w.error() == (
        b"ARGUMENT_TOO_LARGE", b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf"
    )
    w.send(T.WORK_FAIL, b"H:" + b"x" * 61)  # 63 bytes
    assert w.error() == (b"JOB_NOT_FOUND", b"Job given in work result not found")


def test_long_handle_prefix_still_works_end_to_end() -> None:
    prefix = "H:" + "h" * 80
    d = Driver(handle_prefix=prefix)
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f", b"x")
    assert h == prefix.encode() + b":1"
    w.take()
    w.send(T.WORK_FAIL, h)
    w.none()
    assert c.packets() == [(T.WORK_FAIL, h)]
