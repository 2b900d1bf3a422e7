"""Differential tests: the same scripted conversations against geartrain and
C gearmand 1.1.20 must produce the same packets.

Each scenario drives named connections through a :class:`Convo`, which
records everything the server sends (job handles masked as ``H:*:N``; the
numbers must match too). The scenario runs once against each server and the
two transcripts are compared.

Where geartrain deliberately differs from gearmand (a gearmand bug fixed),
the tests at the end run the conversation on both servers and assert each
server's own behaviour explicitly, so the difference is documented.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.server._wire_extra import closed_by_server, header, mask, packet, running
from tests.support.wire import Closed, Wire, admin, wait_until

PLAIN_WORK_FAIL = 14


class Convo:
    """Named connections to one server and a transcript of what they received."""

    def __init__(self, srv) -> None:  # type: ignore[no-untyped-def]
        self.srv = srv
        self.address = srv.address
        self.conns: dict[str, Wire] = {}
        self.pending: dict[str, list[tuple[int, bytes]]] = {}
        self.log: list[tuple] = []
        self.handles: list[bytes] = []

    def __getitem__(self, name: str) -> Wire:
        if name not in self.conns:
            self.conns[name] = Wire(self.address, timeout=2)
            self.pending[name] = []
        return self.conns[name]

    def send(self, name: str, ptype: str | int, *args: bytes | str, sync: bool = True) -> None:
        self[name].send(ptype, *args)
        if sync:
            self.sync(name)

    def sendraw(self, name: str, data: bytes) -> None:
        self[name].sendraw(data)

    def sync(self, name: str) -> None:
        """Wait until the server handled everything *name* sent (ECHO round trip);
        replies that arrive first are kept for :meth:`recv`."""
        w = self[name]
        w.send("ECHO_REQ", b"sync\xff")
        while True:
            ptype, body = w.recv_raw()
            if ptype == 17 and body == b"sync\xff":
                return
            self.pending[name].append((ptype, body))

    def _next(self, name: str, timeout: float) -> tuple[int, bytes]:
        if self.pending[name]:
            return self.pending[name].pop(0)
        return self[name].recv_raw(timeout)

    def recv(self, name: str, count: int = 1, timeout: float = 2.0) -> list[bytes]:
        """Record the next *count* packets of *name*; the raw args of the last one."""
        args: list[bytes] = []
        for _ in range(count):
            try:
                ptype, body = self._next(name, timeout)
            except TimeoutError:
                self.log.append((name, "TIMEOUT"))
                return []
            except Closed:
                self.log.append((name, "CLOSED"))
                return []
            args = body.split(b"\0")
            if ptype in (8,):  # JOB_CREATED: remember the real handle
                self.handles.append(body)
            self.log.append((name, ptype, mask(body)))
        return args

    def recv_type(self, name: str) -> None:
        """Record only the type of the next packet of *name*."""
        self.log.append((name, self._next(name, 2.0)[0]))

    def handle(self, name: str) -> bytes:
        """Record a JOB_CREATED on *name*; its real handle."""
        args = self.recv(name)
        return args[0] if args else b"?"

    def quiet(self, name: str, timeout: float = 0.25) -> None:
        """Record whether *name* receives anything within *timeout*."""
        try:
            ptype, body = self._next(name, timeout)
            self.log.append((name, "UNEXPECTED", ptype, mask(body)))
        except TimeoutError:
            self.log.append((name, "quiet"))
        except Closed:
            self.log.append((name, "CLOSED"))

    def admin(self, command: str, sort: bool = True, columns: slice | None = None) -> None:
        """Record an admin reply (lines sorted: gearmand lists in hash order)."""
        reply = admin(self.address, command)[0]
        lines = reply.split(b"\n")
        if columns is not None:
            lines = [b" ".join(ln.split(b" ")[columns]) for ln in lines]
        if sort:
            lines = sorted(lines)
        self.log.append(("admin", command, [mask(ln) for ln in lines]))

    def close(self, name: str) -> None:
        self.conns.pop(name).close()

    def close_all(self) -> None:
        for w in self.conns.values():
            w.close()


Scenario = Callable[[Convo], None]
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...]]] = {}


def scenario(*args: str) -> Callable[[Scenario], Scenario]:
    """Register a conversation; *args* are command-line options both servers take."""
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[fn.__name__] = (fn, args)
        return fn
    return register


def transcript(kind: str, fn: Scenario, args: tuple[str, ...], workdir: Path) -> list[tuple]:
    with running(*args, kind=kind, workdir=workdir / kind) as srv:
        cv = Convo(srv)
        try:
            fn(cv)
        finally:
            cv.close_all()
        return cv.log


# ======================================================================== scenarios


@scenario()
def submit_grab_status_complete(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "reverse")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.send("w", "PRE_SLEEP")
    cv.send("c", "SUBMIT_JOB", "reverse", "", "test")
    h = cv.handle("c")
    cv.recv("w")  # NOOP
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.send("o", "GET_STATUS", h)
    cv.recv("o")
    cv.send("w", "WORK_STATUS", h, "1", "4")
    cv.recv("c")
    cv.send("o", "GET_STATUS", h)
    cv.recv("o")
    cv.send("w", "WORK_STATUS", h, " 7x", "abc")
    cv.recv("c")
    cv.send("o", "GET_STATUS", h)
    cv.recv("o")
    cv.send("o", "GET_STATUS", "H:nosuch:99")
    cv.recv("o")
    cv.send("w", "WORK_DATA", h, "partial\0with nul")
    cv.send("w", "WORK_WARNING", h, "warn!")
    cv.admin("status")
    cv.admin("prioritystatus")
    cv.send("w", "WORK_COMPLETE", h, "tset")
    cv.recv("c", 3)
    cv.quiet("o")
    cv.send("o", "GET_STATUS", h)
    cv.recv("o")
    cv.admin("status")
    cv.admin("show jobs")


@scenario()
def priorities_foreground_and_background(cv: Convo) -> None:
    for ptype, data in [("SUBMIT_JOB_LOW", "low1"), ("SUBMIT_JOB_BG", "norm-bg"),
                        ("SUBMIT_JOB_HIGH", "high1"), ("SUBMIT_JOB_LOW_BG", "low-bg"),
                        ("SUBMIT_JOB", "norm1"), ("SUBMIT_JOB_HIGH_BG", "high-bg")]:
        cv.send("c", ptype, "prio", "", data)
        cv.handle("c")
    cv.admin("prioritystatus")
    cv.admin("status")
    cv.send("w", "CAN_DO", "prio")
    for _ in range(6):
        cv.send("w", "GRAB_JOB")
        args = cv.recv("w")
        cv.send("w", "WORK_COMPLETE", args[0], b"r-" + args[-1])
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.recv("c", 3)
    cv.quiet("c")


@scenario()
def unique_coalescing(cv: Convo) -> None:
    cv.send("c1", "SUBMIT_JOB", "co", "u1", "data1")
    h = cv.handle("c1")
    cv.send("c2", "SUBMIT_JOB", "co", "u1", "data2")
    cv.handle("c2")
    cv.send("c3", "SUBMIT_JOB_BG", "co", "u1", "data3")
    cv.handle("c3")
    cv.send("c3", "SUBMIT_JOB_HIGH", "co", "u1", "data4")
    cv.handle("c3")
    cv.send("s", "GET_STATUS_UNIQUE", "u1")
    cv.recv("s")
    cv.send("c1", "SUBMIT_JOB", "other", "u1", "x")
    cv.handle("c1")
    for _ in range(2):
        cv.send("c1", "SUBMIT_JOB_BG", "co", "", "x")
        cv.handle("c1")
    for data in ("same", "same", "diff"):
        cv.send("c1", "SUBMIT_JOB_BG", "co", "-", data)
        cv.handle("c1")
    for _ in range(2):  # "-" with an empty payload never coalesces
        cv.send("c1", "SUBMIT_JOB_BG", "co", "-", "")
        cv.handle("c1")
    cv.admin("status")
    cv.admin("prioritystatus")
    cv.admin("show unique jobs")
    cv.send("w", "CAN_DO", "co")
    cv.send("w", "GRAB_JOB_UNIQ")
    cv.recv("w")
    cv.send("w", "WORK_COMPLETE", h, "done")
    for c in ("c1", "c2", "c3"):
        cv.recv(c)
        cv.quiet(c)
    cv.send("s", "GET_STATUS_UNIQUE", "u1")  # the "other" function's job still has it
    cv.recv("s")
    cv.send("s", "GET_STATUS_UNIQUE", "nosuch")
    cv.recv("s")


@scenario()
def coalescing_onto_running_job(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "run")
    cv.send("c1", "SUBMIT_JOB", "run", "uq", "d")
    h = cv.handle("c1")
    cv.send("w", "GRAB_JOB_UNIQ")
    cv.recv("w")
    cv.send("w", "WORK_DATA", h, "early")
    cv.recv("c1")
    cv.send("c2", "SUBMIT_JOB_LOW", "run", "uq", "ignored")
    cv.handle("c2")
    cv.quiet("c2")
    cv.send("c2", "GET_STATUS_UNIQUE", "uq")
    cv.recv("c2")
    cv.send("w", "WORK_STATUS", h, "1", "2")
    cv.send("w", "WORK_WARNING", h, "w")
    cv.send("w", "WORK_COMPLETE", h, "done")
    cv.recv("c1", 3)
    cv.recv("c2", 3)
    cv.send("c1", "SUBMIT_JOB", "run", "uq", "again")  # a new job now
    cv.handle("c1")


@scenario()
def same_connection_submitting_twice_gets_results_twice(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "tw")
    cv.send("c", "SUBMIT_JOB", "tw", "k", "d")
    h = cv.handle("c")
    cv.send("c", "SUBMIT_JOB", "tw", "k", "d")
    cv.handle("c")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.send("w", "WORK_DATA", h, "x")
    cv.send("w", "WORK_COMPLETE", h, "y")
    cv.recv("c", 4)
    cv.quiet("c")


@scenario()
def grab_forms_and_reduce_jobs(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "g")
    for grab in ("GRAB_JOB", "GRAB_JOB_UNIQ", "GRAB_JOB_ALL"):
        cv.send("w", grab)
        cv.recv("w")
    cv.send("c", "SUBMIT_JOB", "g", "u1", "one\0nul")
    cv.send("c", "SUBMIT_JOB", "g", "u2", "two")
    cv.send("c", "SUBMIT_JOB", "g", "", "three")
    cv.send("c", "SUBMIT_REDUCE_JOB", "g", "ru", "red", "", "four")
    cv.send("c", "SUBMIT_REDUCE_JOB_BACKGROUND", "g", "rb", "red2", "", "five")
    cv.send("c", "SUBMIT_REDUCE_JOB", "g", "", "red3", "", "six")
    cv.recv("c", 6)
    for grab in ("GRAB_JOB", "GRAB_JOB_UNIQ", "GRAB_JOB_ALL", "GRAB_JOB_ALL", "GRAB_JOB_ALL", "GRAB_JOB_UNIQ",
                 "GRAB_JOB_ALL"):
        cv.send("w", grab)
        cv.recv("w")
    cv.admin("status")
    cv.send("c", "SUBMIT_REDUCE_JOB", "g", "big", "r" * 65, "", "x")
    cv.recv("c")
    cv.send("c", "SUBMIT_JOB", "g", "u" * 65, "x")
    cv.recv("c")
    cv.send("c", "SUBMIT_JOB", "g", "u" * 64, "x")
    cv.recv("c")


@scenario()
def options_and_exceptions(cv: Convo) -> None:
    for opt in ("exceptions", "EXCEPTIONS", "bogus", ""):
        cv.send("e", "OPTION_REQ", opt)
        cv.recv("e")
    cv.send("w", "CAN_DO", "ex")
    cv.send("e", "SUBMIT_JOB", "ex", "shared", "x")
    h = cv.handle("e")
    cv.send("p", "SUBMIT_JOB", "ex", "shared", "x")
    cv.handle("p")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.send("w", "WORK_EXCEPTION", h, "boom")
    cv.recv("e")
    cv.recv_type("p")  # WORK_FAIL; its body differs (test_work_fail_has_no_trailing_nul)
    cv.admin("status")


@scenario()
def work_fail_and_errors_for_unknown_jobs(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "wf")
    cv.send("c", "SUBMIT_JOB", "wf", "", "x")
    h = cv.handle("c")
    cv.send("x", "WORK_COMPLETE", h, "not mine")  # only the worker holding it may answer
    cv.recv("x")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.send("x", "WORK_STATUS", h, "1", "2")
    cv.recv("x")
    cv.send("w", "WORK_FAIL", h)
    cv.recv("c")
    for ptype in ("WORK_COMPLETE", "WORK_DATA", "WORK_WARNING", "WORK_EXCEPTION"):
        cv.send("w", ptype, h, "late")
        cv.recv("w")
    cv.send("w", "WORK_STATUS", h, "1", "2")
    cv.recv("w")
    cv.send("w", "WORK_FAIL", h)
    cv.recv("w")


@scenario()
def work_fail_with_overlong_handle(cv: Convo) -> None:
    cv.send("w", "WORK_FAIL", "H:" + "x" * 70)
    cv.recv("w")
    cv.send("w", "WORK_FAIL", "H:" + "x" * 40)
    cv.recv("w")


@scenario()
def server_only_packet_types(cv: Convo) -> None:
    body = b"a\0b\0c\0d\0e\0f\0g\0h"
    for ptype in (5, 6, 8, 10, 11, 17, 19, 20, 24, 27, 31, 35, 40, 42):
        cv.send("c", ptype, body)
        cv.recv("c")
    cv.sendraw("c", packet("ECHO_REQ", "x", magic=b"\0RES"))
    cv.recv("c")
    cv.send("c", "ECHO_REQ", "still here")
    cv.recv("c")


@scenario()
def echo_and_client_id(cv: Convo) -> None:
    for payload in (b"", b"a\0b\0", bytes(range(256)) * 4096):
        cv.send("c", "ECHO_REQ", payload)
        cv.recv("c")
    cv.send("w", "SET_CLIENT_ID", "worker 1")
    cv.send("w", "CAN_DO", "f1")
    cv.send("w", "CAN_DO", "f2")
    cv.send("w", "CAN_DO", "f3")
    cv.send("w", "CANT_DO", "f2")
    cv.send("v", "SET_CLIENT_ID", "")
    cv.send("v", "CAN_DO", "f3")
    cv.admin("workers", columns=slice(1, None))
    cv.admin("status")


@scenario()
def pre_sleep_noop_rules(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "sl")
    cv.send("w", "PRE_SLEEP")
    cv.quiet("w")
    cv.send("c", "SUBMIT_JOB_BG", "sl", "", "1")
    cv.handle("c")
    cv.recv("w")
    cv.send("c", "SUBMIT_JOB_BG", "sl", "", "2")
    cv.handle("c")
    cv.quiet("w")  # one NOOP per sleep
    cv.send("w", "PRE_SLEEP")  # work waiting: NOOP at once
    cv.recv("w")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.send("w", "PRE_SLEEP")  # still work waiting
    cv.recv("w")


@scenario("-w", "1")
def wakeup_one_rotates(cv: Convo) -> None:
    for w in ("w1", "w2", "w3"):
        cv.send(w, "CAN_DO", "wk")
        cv.send(w, "PRE_SLEEP")
    for i in range(2):
        cv.send("c", "SUBMIT_JOB_BG", "wk", "", str(i))
        cv.handle("c")
        for w in ("w1", "w2", "w3"):
            cv.quiet(w, 0.15)


@scenario()
def maxqueue_limits(cv: Convo) -> None:
    cv.admin("maxqueue mq 2", sort=False)
    cv.send("c", "SUBMIT_JOB_BG", "mq", "", "first creates the function")
    cv.recv("c")  # gearmand: a limit on an unknown function is a no-op, so this one is accepted
    cv.admin("maxqueue mq 2", sort=False)
    cv.send("c", "SUBMIT_JOB_BG", "mq", "u1", "2")
    cv.recv("c")
    cv.send("c", "SUBMIT_JOB_BG", "mq", "", "3")
    cv.recv("c")
    cv.send("c", "SUBMIT_JOB_BG", "mq", "u1", "coalesced")
    cv.recv("c")
    cv.admin("maxqueue mq 3 2 0", sort=False)
    cv.send("c", "SUBMIT_JOB_LOW_BG", "mq", "", "low")
    cv.recv("c")
    cv.send("c", "SUBMIT_JOB_HIGH_BG", "mq", "", "high")
    cv.recv("c")
    cv.admin("maxqueue mq -5", sort=False)
    cv.send("c", "SUBMIT_JOB_HIGH_BG", "mq", "", "high")
    cv.recv("c")
    cv.admin("maxqueue", sort=False)
    cv.admin("status")


@scenario()
def losing_workers_requeues(cv: Convo) -> None:
    cv.send("w1", "CAN_DO", "lost")
    cv.send("w1", "CAN_DO", "kept")
    cv.send("c", "SUBMIT_JOB", "lost", "", "work")
    h = cv.handle("c")
    cv.send("w1", "GRAB_JOB")
    cv.recv("w1")
    cv.send("w1", "WORK_STATUS", h, "5", "10")
    cv.recv("c")
    cv.send("w1", "CANT_DO", "lost")
    cv.admin("status")
    cv.admin("show jobs")
    cv.send("c", "GET_STATUS", h)
    cv.recv("c")
    cv.send("w1", "WORK_COMPLETE", h, "late")
    cv.recv("w1")
    cv.send("w2", "CAN_DO", "lost")
    cv.send("w2", "GRAB_JOB")
    cv.recv("w2")
    cv.send("w2", "RESET_ABILITIES")
    cv.admin("show jobs")
    cv.send("w3", "CAN_DO", "lost")
    cv.send("w3", "GRAB_JOB")
    cv.recv("w3")
    cv.close("w3")
    wait_until(lambda: b"\t0\t" in admin(cv.address, "status")[0].split(b"lost\t", 1)[1][:8])
    cv.admin("show jobs")
    cv.send("w4", "CAN_DO", "lost")
    cv.send("w4", "GRAB_JOB")
    cv.recv("w4")
    cv.send("w4", "WORK_COMPLETE", h, "finally")
    cv.recv("c")
    cv.quiet("c")
    cv.admin("status")


@scenario()
def client_leaving_abandons_queued_job(cv: Convo) -> None:
    cv.send("c", "SUBMIT_JOB", "ab", "", "nobody waits")
    h = cv.handle("c")
    cv.close("c")
    wait_until(lambda: b"\t1\t" in admin(cv.address, "show jobs")[0])
    cv.admin("show jobs")
    cv.admin("status")
    cv.send("o", "GET_STATUS", h)
    cv.recv("o")
    cv.send("w", "CAN_DO", "ab")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.admin("show jobs")
    cv.admin("status")


@scenario()
def running_job_whose_client_left(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "rl")
    cv.send("c", "SUBMIT_JOB", "rl", "", "x")
    h = cv.handle("c")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.close("c")
    wait_until(lambda: b"\t1\t" in admin(cv.address, "show jobs")[0])
    cv.admin("show jobs")
    cv.send("w", "WORK_DATA", h, "to nobody")
    cv.quiet("w")
    cv.send("w", "WORK_COMPLETE", h, "to nobody")
    cv.quiet("w")
    cv.admin("show jobs")
    cv.admin("status")


@scenario()
def epoch_jobs(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "ep")
    cv.send("c", "SUBMIT_JOB_EPOCH", "ep", "", str(int(time.time()) + 30), "later")
    cv.send("c", "SUBMIT_JOB_EPOCH", "ep", "", "0", "now")
    cv.send("c", "SUBMIT_JOB_EPOCH", "ep", "", "abc", "garbage")
    cv.send("c", "SUBMIT_JOB_EPOCH", "ep", "eu", "-1", "negative")
    cv.recv("c", 4)
    cv.admin("status")
    for _ in range(5):
        cv.send("w", "GRAB_JOB")
        cv.recv("w")
    cv.admin("status")
    cv.send("c", "GET_STATUS", cv.handles[0])
    cv.recv("c")
    cv.quiet("c")


@scenario()
def cancel_job(cv: Convo) -> None:
    cv.send("c", "SUBMIT_JOB", "cx", "", "fg")
    h = cv.handle("c")
    cv.send("c", "SUBMIT_JOB_BG", "cx", "", "bg")
    hb = cv.handle("c")
    cv.admin(f"cancel job {h.decode()}", sort=False)
    cv.recv("c")
    cv.admin(f"cancel job {hb.decode()}", sort=False)
    cv.admin("cancel job H:nohost:12345", sort=False)
    cv.admin("show jobs")
    cv.admin("status")
    cv.send("w", "CAN_DO", "cx")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.admin("status")


@scenario()
def admin_and_binary_on_one_connection(cv: Convo) -> None:
    cv.send("c", "SUBMIT_JOB_BG", "mixed", "", "x")
    cv.handle("c")
    cv["c"].admin("status")
    cv.send("c", "ECHO_REQ", "after text", sync=False)
    reply = cv["c"].recv_raw()
    cv.log.append(("c", reply))
    cv.recv("c")
    cv.admin("create function fresh", sort=False)
    cv.admin("status")
    cv.admin("drop function FRESH", sort=False)  # matched case-insensitively
    cv.admin("drop function fresh", sort=False)
    cv.admin("drop function nosuch", sort=False)
    cv.send("w", "CAN_DO", "other")
    cv.admin("drop function other", sort=False)
    cv.admin("status")


@scenario("--job-handle-prefix", "JH", "-j", "2")
def job_retries_and_prefix(cv: Convo) -> None:
    cv.send("c", "SUBMIT_JOB", "r", "", "crashy")
    cv.handle("c")
    for i in range(2):
        w = f"w{i}"
        cv.send(w, "CAN_DO", "r")
        cv.send(w, "GRAB_JOB")
        cv.recv(w)
        cv.close(w)
        if i == 0:
            wait_until(lambda: b"JH:1\t1" in admin(cv.address, "show jobs")[0])
            cv.admin("show jobs")
    cv.recv("c")
    cv.admin("show jobs")
    cv.send("w3", "CAN_DO", "r")
    cv.send("w3", "GRAB_JOB")
    cv.recv("w3")
    cv.admin("status")


@scenario("--exceptions")
def exceptions_flag(cv: Convo) -> None:
    cv.send("w", "CAN_DO", "ex")
    cv.send("c", "SUBMIT_JOB", "ex", "", "x")
    h = cv.handle("c")
    cv.send("w", "GRAB_JOB")
    cv.recv("w")
    cv.send("w", "WORK_EXCEPTION", h, "trace")
    cv.recv("c")


@scenario()
def can_do_timeout_rounds_up_and_requeues(cv: Convo) -> None:
    cv.send("w1", "CAN_DO_TIMEOUT", b"slow\x00300")
    cv.send("c", "SUBMIT_JOB", "slow", "", "payload")
    h = cv.handle("c")
    cv.send("w1", "GRAB_JOB")
    cv.recv("w1")
    time.sleep(0.6)  # past 300 ms, but gearmand rounds sub-second timeouts up to one second
    cv.admin("status")
    assert wait_until(lambda: b"slow\t1\t0" in admin(cv.address, "status")[0], timeout=4)
    cv.admin("show jobs")
    cv.quiet("c")
    cv.send("w1", "WORK_COMPLETE", h, "too late")
    cv.recv("w1")
    cv.send("w2", "CAN_DO", "slow")
    cv.send("w2", "GRAB_JOB")
    cv.recv("w2")
    cv.send("w2", "WORK_COMPLETE", h, "ok")
    cv.recv("c")


# ---------------------------------------------------------------- the comparison


@pytest.mark.parametrize("name", list(SCENARIOS), ids=str)
def test_same_packets_as_gearmand(name, tmp_path):
    fn, args = SCENARIOS[name]
    theirs = transcript("gearmand", fn, args, tmp_path)
    ours = transcript("geartrain", fn, args, tmp_path)
    assert not any("TIMEOUT" in entry or "CLOSED" in entry for entry in theirs), theirs
    assert ours == theirs


# ======================================================================== deliberate differences


def both(tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    """(gearmand, geartrain) servers, as context managers."""
    return (running(*args, kind="gearmand", workdir=tmp_path / "gearmand"),
            running(*args, kind="geartrain", workdir=tmp_path / "geartrain"))


def test_background_job_kept_when_coalesced_foreground_client_leaves(tmp_path):
    def run(srv) -> str:  # type: ignore[no-untyped-def]
        with Wire(srv.address) as bg, Wire(srv.address) as w:
            bg.send("SUBMIT_JOB_BG", "keep", "shared", "d")
            h = bg.expect("JOB_CREATED")[0]
            fg = Wire(srv.address)
            fg.send("SUBMIT_JOB", "keep", "shared", "d")
            assert fg.expect("JOB_CREATED")[0] == h
            fg.close()
            wait_until(lambda: len(admin(srv.address, "workers")[0].splitlines()) == 4)
            w.send("CAN_DO", "keep")
            w.send("GRAB_JOB")
            name, _ = w.recv()
            return name
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == "NO_JOB"  # gearmand bug: the background job is lost
    with gt as srv:
        assert run(srv) == "JOB_ASSIGN"


def test_work_fail_has_no_trailing_nul(tmp_path):
    def run(srv) -> list[bytes]:  # type: ignore[no-untyped-def]
        bodies = []
        with Wire(srv.address) as c, Wire(srv.address) as w:
            w.send("CAN_DO", "f")
            for how in ("exception", "fail with nul", "fail"):
                c.send("SUBMIT_JOB", "f", "", how)
                h = c.expect("JOB_CREATED")[0]
                w.send("GRAB_JOB")
                w.expect("JOB_ASSIGN")
                if how == "exception":
                    w.send("WORK_EXCEPTION", h, "boom")
                else:
                    w.send("WORK_FAIL", h + b"\0" if how == "fail with nul" else h)
                ptype, body = c.recv_raw()
                assert ptype == PLAIN_WORK_FAIL
                bodies.append(mask(body))
        return bodies
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == [b"H:*:1\0", b"H:*:2\0", b"H:*:3"]  # gearmand #108
    with gt as srv:
        assert run(srv) == [b"H:*:1", b"H:*:2", b"H:*:3"]


@pytest.mark.parametrize("ptype", [0, 43, 999])
def test_unknown_packet_type_error_instead_of_close(tmp_path, ptype):
    gm, gt = both(tmp_path)
    with gm as srv, Wire(srv.address) as c:
        c.sendraw(packet(ptype, "x"))
        assert closed_by_server(c.sock) == b""
    with gt as srv, Wire(srv.address) as c:
        c.sendraw(packet(ptype, "x"))
        assert c.expect("ERROR") == [b"INVALID_COMMAND", b"Unknown packet type %d" % ptype]
        c.send("ECHO_REQ", "alive")
        assert c.expect("ECHO_RES") == [b"alive"]


def test_work_complete_with_only_a_handle(tmp_path):
    def run(srv):  # type: ignore[no-untyped-def]
        with Wire(srv.address) as c, Wire(srv.address) as w:
            w.send("CAN_DO", "f")
            c.send("SUBMIT_JOB", "f", "", "x")
            h = c.expect("JOB_CREATED")[0]
            w.send("GRAB_JOB")
            w.expect("JOB_ASSIGN")
            w.sendraw(packet("WORK_COMPLETE", h))  # no NUL, no result
            result = c.silent(0.5)
            w.send("ECHO_REQ", "next")
            try:
                after = w.recv(1)
            except Closed:
                after = "CLOSED"
            return result, after
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == (None, "CLOSED")  # gearmand waits for the NUL, then desyncs
    with gt as srv:
        result, after = run(srv)
        assert result is not None and result[0] == "WORK_COMPLETE" and result[1][1] == b""
        assert after == ("ECHO_RES", [b"next"])


def test_epoch_job_wakes_sleeping_worker(tmp_path):
    def run(srv):  # type: ignore[no-untyped-def]
        with Wire(srv.address) as c, Wire(srv.address) as w:
            w.send("CAN_DO", "ep")
            c.send("SUBMIT_JOB_EPOCH", "ep", "", str(int(time.time()) + 2), "later")  # due in 1-2 s
            h = c.expect("JOB_CREATED")[0]
            w.send("GRAB_JOB")
            while (got := w.recv())[0] == "NOOP":  # gearmand sends a useless NOOP at submit
                pass
            assert got[0] == "NO_JOB"
            w.send("PRE_SLEEP")
            woken = w.silent(2.3)
            w.send("GRAB_JOB")
            assert w.expect("JOB_ASSIGN") == [h, b"ep", b"later"]  # due by now in both
            return woken
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) is None  # gearmand #101: never woken
    with gt as srv:
        assert run(srv) == ("NOOP", [])


def test_maxqueue_remembered_for_unknown_function(tmp_path):
    def run(srv):  # type: ignore[no-untyped-def]
        assert admin(srv.address, "maxqueue later 1") == [b"OK\r\n"]
        with Wire(srv.address) as c:
            replies = []
            for i in range(2):
                c.send("SUBMIT_JOB_BG", "later", "", str(i))
                replies.append(c.recv()[0])
            return replies
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == ["JOB_CREATED", "JOB_CREATED"]  # the limit was silently dropped
    with gt as srv:
        assert run(srv) == ["JOB_CREATED", "ERROR"]


def test_create_function_on_lf_only_line(tmp_path):
    def run(srv) -> bytes:  # type: ignore[no-untyped-def]
        with Wire(srv.address) as a:
            a.sendraw(b"create function foo\n")
            assert a.read_admin() == b"OK\r\n"
            a.sendraw(b"create function bar\r\n")
            assert a.read_admin() == b"OK\r\n"
        return b"".join(sorted(admin(srv.address, "status")[0].splitlines(keepends=True)))
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == b".\nbar\t0\t0\t0\nfo\t0\t0\t0\n"  # gearmand drops the last character
    with gt as srv:
        assert run(srv) == b".\nbar\t0\t0\t0\nfoo\t0\t0\t0\n"


def test_admin_line_with_six_words(tmp_path):
    gm, gt = both(tmp_path)
    with gm as srv, Wire(srv.address) as a:
        a.sendraw(b"maxqueue a 1 2 3 4\n")
        assert closed_by_server(a.sock) == b""
    with gt as srv, Wire(srv.address) as a:
        a.sendraw(b"maxqueue a 1 2 3 4\n")
        assert a.read_admin().startswith(b"ERR INVALID_ARGUMENTS ")
        a.sendraw(b"status\n")
        assert a.read_admin() == b".\n"


def test_default_wakeup_is_one_sleeper_per_job_not_all(tmp_path):
    """gearmand's default (-w 0) NOOPs every sleeper for each job; geartrain's
    default wakes one, and `-w 0` means the same (auto), not "all"."""
    def run(srv) -> int:  # type: ignore[no-untyped-def]
        workers = [Wire(srv.address) for _ in range(4)]
        for w in workers:
            w.send("CAN_DO", "wk")
            w.send("PRE_SLEEP")
            w.send("ECHO_REQ", "s")
            w.expect("ECHO_RES")
        with Wire(srv.address) as c:
            c.send("SUBMIT_JOB_BG", "wk", "", "x")
            c.expect("JOB_CREATED")
        woken = sum(w.silent(0.25) == ("NOOP", []) for w in workers)
        for w in workers:
            w.close()
        return woken
    for sub, args in (("default", ()), ("w0", ("-w", "0"))):
        gm, gt = both(tmp_path / sub, *args)
        with gm as srv:
            assert run(srv) == 4
        with gt as srv:
            assert run(srv) == 1


def test_highest_priority_over_all_functions(tmp_path):
    """1.1.20 drains the last registered function first; geartrain takes the
    highest priority over all the worker's functions (gearmand 2.0 order)."""
    def run(srv) -> list[bytes]:  # type: ignore[no-untyped-def]
        with Wire(srv.address) as c, Wire(srv.address) as w:
            for fn, ptype, data in [("fA", "SUBMIT_JOB_BG", "A-norm"),
                                    ("fA", "SUBMIT_JOB_LOW_BG", "A-low"),
                                    ("fB", "SUBMIT_JOB_HIGH_BG", "B-high"),
                                    ("fB", "SUBMIT_JOB_BG", "B-norm")]:
                c.send(ptype, fn, "", data)
                c.expect("JOB_CREATED")
            w.send("CAN_DO", "fA")
            w.send("CAN_DO", "fB")
            got = []
            for _ in range(4):
                w.send("GRAB_JOB")
                got.append(w.expect("JOB_ASSIGN")[2])
            return got
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == [b"B-high", b"B-norm", b"A-norm", b"A-low"]
    with gt as srv:
        assert run(srv) == [b"B-high", b"A-norm", b"B-norm", b"A-low"]


def test_malformed_body_gets_error_instead_of_a_stall(tmp_path):
    gm, gt = both(tmp_path)
    with gm as srv, Wire(srv.address) as c:
        c.sendraw(packet("SUBMIT_JOB", "nonul"))
        assert c.silent(0.3) is None
        c.send("ECHO_REQ", "next")
        assert closed_by_server(c.sock) == b""
    with gt as srv, Wire(srv.address) as c:
        c.sendraw(packet("SUBMIT_JOB", "nonul"))
        assert c.expect("ERROR")[0] == b"INVALID_PACKET"
        c.send("ECHO_REQ", "next")
        assert c.expect("ECHO_RES") == [b"next"]


def test_oversized_packet_refused_up_front(tmp_path):
    """gearmand allocates whatever a header announces and waits for the body;
    geartrain refuses a body over --max-packet-size (default 64M) at once."""
    gm, gt = both(tmp_path)
    with gm as srv, Wire(srv.address) as c:
        c.sendraw(header("ECHO_REQ", 65 << 20))
        assert c.silent(0.3) is None
        assert srv.alive()
    with gt as srv, Wire(srv.address) as c:
        c.sendraw(header("ECHO_REQ", 65 << 20))
        ptype, body = c.recv_raw()
        assert ptype == 19 and body.startswith(b"ARGUMENT_TOO_LARGE\0")
        assert closed_by_server(c.sock) == b""


def test_bad_magic_and_long_lines_close_both_geartrain_says_why(tmp_path):
    gm, gt = both(tmp_path)
    for ctx, expect_error in ((gm, False), (gt, True)):
        with ctx as srv:
            for data, code in ((b"\0XYZ" + b"\0" * 8, b"INVALID_MAGIC"),
                               (b"s" * 9000, b"ARGUMENT_TOO_LARGE")):
                with Wire(srv.address) as c:
                    c.sendraw(data)
                    reply = closed_by_server(c.sock)
                if not expect_error:
                    assert reply == b""
                elif data.startswith(b"\0"):  # a binary client gets an ERROR packet
                    assert reply.startswith(b"\0RES\0\0\0\x13") and reply[12:].startswith(code + b"\0"), reply
                else:  # an admin client gets an ERR line
                    assert reply.startswith(b"ERR " + code + b" "), reply


def test_duplicate_can_do_counts_once(tmp_path):
    """gearmand registers a function twice when CAN_DO is repeated (listed
    twice in `workers`, counted twice in `status`); geartrain keeps one
    registration and moves it to the front."""
    def run(srv):  # type: ignore[no-untyped-def]
        with Wire(srv.address) as w:
            w.send("SET_CLIENT_ID", "dup")
            for fn in ("f1", "f2", "f1"):
                w.send("CAN_DO", fn)
            w.send("ECHO_REQ", "sync")
            w.expect("ECHO_RES")
            mine = [ln.split(b" ", 2)[2] for ln in admin(srv.address, "workers")[0].splitlines()
                    if b" dup " in ln]
            return mine, sorted(admin(srv.address, "status")[0].splitlines())
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == ([b"dup : f1 f2 f1"], [b".", b"f1\t0\t0\t2", b"f2\t0\t0\t1"])
    with gt as srv:
        assert run(srv) == ([b"dup : f1 f2"], [b".", b"f1\t0\t0\t1", b"f2\t0\t0\t1"])


def test_can_do_while_asleep_wakes_for_waiting_work(tmp_path):
    """A sleeping worker that registers a function with queued jobs: gearmand
    lets it sleep on; geartrain sends NOOP."""
    def run(srv):  # type: ignore[no-untyped-def]
        with Wire(srv.address) as c, Wire(srv.address) as w:
            c.send("SUBMIT_JOB_BG", "waiting", "", "x")
            c.expect("JOB_CREATED")
            w.send("CAN_DO", "other")
            w.send("PRE_SLEEP")
            w.send("CAN_DO", "waiting")
            return w.silent(0.5)
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) is None
    with gt as srv:
        assert run(srv) == ("NOOP", [])


def test_cancelling_a_cancelled_job(tmp_path):
    """gearmand accepts a second `cancel job` and sends the client a second
    WORK_FAIL; geartrain answers OK too (the job is still listed) but the
    client, detached by the first cancel, gets nothing more."""
    def run(srv):  # type: ignore[no-untyped-def]
        with Wire(srv.address) as c:
            c.send("SUBMIT_JOB", "cx", "", "fg")
            h = c.expect("JOB_CREATED")[0]
            assert admin(srv.address, f"cancel job {h.decode()}") == [b"OK\r\n"]
            assert c.recv_raw() == (PLAIN_WORK_FAIL, h)
            again = admin(srv.address, f"cancel job {h.decode()}")[0]
            return again, c.silent(0.3), mask(admin(srv.address, "show jobs")[0])
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == (b"OK\r\n", ("WORK_FAIL", [b"H:vm:1"]), b"H:*:1\t0\t1\t0\n.\n")
    with gt as srv:
        assert run(srv) == (b"OK\r\n", None, b"H:*:1\t0\t1\t0\n.\n")


def test_drop_function_with_queued_jobs(tmp_path):
    """gearmand drops a function that only has queued jobs (freeing it from
    under them); geartrain refuses while it has jobs."""
    def run(srv):  # type: ignore[no-untyped-def]
        with Wire(srv.address) as c:
            c.send("SUBMIT_JOB_BG", "queued", "", "x")
            c.expect("JOB_CREATED")
            return admin(srv.address, "drop function queued", "status")
    gm, gt = both(tmp_path)
    with gm as srv:
        assert run(srv) == [b"OK\r\n", b".\n"]
    with gt as srv:
        assert run(srv) == [b"ERR there are still connected workers or executing clients\r\n",
                            b"queued\t1\t0\t0\n.\n"]
