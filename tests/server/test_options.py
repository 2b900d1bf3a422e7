"""Server options end to end: each test starts its own `geartrain server` with flags."""

from __future__ import annotations

import socket

import pytest

from tests.server._wire_extra import ipv6_loopback, read_available, running
from tests.support import process
from tests.support.wire import Wire, admin, grab, status_of, submit, wait_until

NOOP = b"\0RES" + (6).to_bytes(4, "big") + (0).to_bytes(4, "big")
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")


@needs_ipv6
def test_listen_ipv6(tmp_path):
    with running(host="::1", workdir=tmp_path) as srv:
        assert srv.address[0] == "::1"
        with Wire(srv.address) as c, Wire(srv.address) as w:
            w.send("SET_CLIENT_ID", "v6worker")
            w.send("CAN_DO", "six")
            h = submit(c, "six", b"data")
            _, args = grab(w)
            assert args == [h, b"six", b"data"]
            w.send("WORK_COMPLETE", h, b"ok")
            assert c.expect("WORK_COMPLETE") == [h, b"ok"]
            lines = admin(srv.address, "workers")[0].decode().splitlines()
            mine = [ln.split(" ") for ln in lines if "v6worker" in ln]
            assert len(mine) == 1 and mine[0][1] == "::1", lines
            assert all(ln.split(" ")[1] == "::1" for ln in lines[:-1]), lines
        with pytest.raises(OSError):  # IPv6 only: nothing on 127.0.0.1 at that port
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_two_listen_addresses(tmp_path):
    second = "::1" if ipv6_loopback() else "127.0.0.2"
    with running("--listen", second, workdir=tmp_path) as srv:
        other = (second, srv.port)
        process.wait_listening(*other, None)
        with Wire(srv.address) as c, Wire(other) as w:
            w.send("CAN_DO", "both")
            h = submit(c, "both", b"across")
            _, args = grab(w)
            assert args == [h, b"both", b"across"]
            w.send("WORK_COMPLETE", h, b"done")
            assert c.expect("WORK_COMPLETE") == [h, b"done"]
            hosts = sorted(ln.split(" ")[1] for ln in admin(other, "workers")[0].decode().splitlines()[:-1])
            assert hosts == sorted(["127.0.0.1", second, second])
        with pytest.raises(OSError):  # only the listed addresses
            socket.create_connection(("127.0.0.3", srv.port), timeout=1).close()


def test_job_handle_prefix(tmp_path):
    with running("--job-handle-prefix", "JH", workdir=tmp_path) as srv, Wire(srv.address) as c:
        assert submit(c, "f", b"1") == b"JH:1"
        assert submit(c, "f", b"2", ptype="SUBMIT_JOB_BG") == b"JH:2"
        assert submit(c, "f", b"1", b"u") == b"JH:3"
        assert submit(c, "f", b"other data", b"u") == b"JH:3"  # coalesced: no new number
        assert submit(c, "g", b"x") == b"JH:4"


def test_default_handle_prefix_is_hostname(server):
    with Wire(server.address) as c:
        assert submit(c, "f", b"1") == b"H:%s:1" % socket.gethostname().encode()


def test_job_retries_drops_job_after_two_lost_workers(tmp_path):
    with running("-j", "2", "--job-handle-prefix", "JH", workdir=tmp_path) as srv, Wire(srv.address) as c:
        h = submit(c, "r", b"crashy")
        assert h == b"JH:1"
        for attempt in (1, 2):
            w = Wire(srv.address)
            w.send("CAN_DO", "r")
            _, args = grab(w)
            assert args == [h, b"r", b"crashy"]
            w.close()
            if attempt == 1:
                assert wait_until(lambda: admin(srv.address, "show jobs")[0] == b"JH:1\t1\t0\t0\n.\n")
        assert c.recv_raw() == (14, h)  # WORK_FAIL with the bare handle
        assert admin(srv.address, "show jobs")[0] == b".\n"
        assert status_of(srv.address, "r") == (0, 0, 0)
        with Wire(srv.address) as w3:
            w3.send("CAN_DO", "r")
            w3.send("GRAB_JOB")
            assert w3.expect("NO_JOB") == []
        assert c.silent(0.2) is None


def test_job_retries_zero_requeues_forever(server):
    with Wire(server.address) as c:
        h = submit(c, "r", b"x")
        for _ in range(4):
            w = Wire(server.address)
            w.send("CAN_DO", "r")
            assert grab(w)[1][0] == h
            w.close()
        assert wait_until(lambda: status_of(server.address, "r") == (1, 0, 0))
        assert c.silent(0.1) is None


def test_exceptions_flag_enables_exceptions_for_every_connection(tmp_path):
    with running("--exceptions", workdir=tmp_path) as srv:
        with Wire(srv.address) as c, Wire(srv.address) as w:
            w.send("CAN_DO", "ex")
            h = submit(c, "ex", b"x")
            grab(w)
            w.send("WORK_EXCEPTION", h, b"stack trace")
            assert c.expect("WORK_EXCEPTION") == [h, b"stack trace"]


def test_without_exceptions_flag_exception_becomes_fail(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "ex")
        h = submit(c, "ex", b"x")
        grab(w)
        w.send("WORK_EXCEPTION", h, b"stack trace")
        assert c.recv_raw() == (14, h)


@pytest.mark.parametrize("flag,woken", [(None, 1), ("all", 5), ("3", 3), ("1", 1), ("auto", 1)])
def test_worker_wakeup_variants(tmp_path, flag, woken):
    args = ("-w", flag) if flag else ()
    with running(*args, workdir=tmp_path) as srv, Wire(srv.address) as c:
        workers = [Wire(srv.address) for _ in range(5)]
        for w in workers:
            w.send("CAN_DO", "wk")
            w.send("PRE_SLEEP")
            w.send("ECHO_REQ", "sync")
            w.expect("ECHO_RES")
        submit(c, "wk", b"x", ptype="SUBMIT_JOB_BG")
        got = read_available([w.sock for w in workers], 0.4)
        assert sorted(got.values()) == [NOOP] * woken, got
        for w in workers:
            w.close()


def test_bad_option_values_refuse_to_start(tmp_path):
    for bad in (("-w", "-1"), ("--max-packet-size", "12Q"), ("-j", "-3")):
        srv = process.geartrain(*bad, workdir=tmp_path)
        with pytest.raises(RuntimeError):
            srv.start()
        assert srv.proc is not None and srv.proc.returncode not in (None, 0)
