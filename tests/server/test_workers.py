"""Waking sleeping workers without a thundering herd (issue point 6).

Thousands of real worker connections register one function and sleep
(CAN_DO + PRE_SLEEP); then jobs arrive. The tests count the NOOPs every
worker socket received, read without blocking after a short settle. They
assert counts, never timings.
"""

from __future__ import annotations

import socket

import pytest

from tests.server._wire_extra import (
    connect_many,
    frames,
    packet,
    raise_nofile,
    read_available,
    recv_exactly,
    running,
)
from tests.support.wire import Wire, status_of, submit

ECHO_RES_SYNC = b"\0RES" + (17).to_bytes(4, "big") + (4).to_bytes(4, "big") + b"sync"
NOOP = b"\0RES" + (6).to_bytes(4, "big") + (0).to_bytes(4, "big")
SETTLE = 0.4


@pytest.fixture(scope="module", autouse=True)
def _many_descriptors():
    """Before any server starts (it inherits the limit): room for 2000+ sockets each."""
    raise_nofile(4500)


def sleepers(address: tuple[str, int], n: int, function: str = "herd") -> list[socket.socket]:
    """*n* workers that registered *function* and sleep; the server has seen it all."""
    raise_nofile(2 * n + 200)
    socks = connect_many(address, n)
    hello = packet("CAN_DO", function) + packet("PRE_SLEEP") + packet("ECHO_REQ", "sync")
    for s in socks:
        s.sendall(hello)
    for s in socks:  # the echo comes after PRE_SLEEP was handled
        assert recv_exactly(s, len(ECHO_RES_SYNC)) == ECHO_RES_SYNC
    assert status_of(address, function) == (0, 0, n)
    return socks


def noops(socks: list[socket.socket], expected: int) -> dict[int, int]:
    """NOOPs per worker index, read until *expected* arrived and then SETTLE more."""
    got: dict[int, bytes] = {}
    total = 0
    for _ in range(20):
        for i, data in read_available(socks, 0.25).items():
            got[i] = got.get(i, b"") + data
        total = sum(len(d) for d in got.values()) // len(NOOP)
        if total >= expected:
            break
    for i, data in read_available(socks, SETTLE).items():
        got[i] = got.get(i, b"") + data
    counts = {}
    for i, data in got.items():
        decoded = frames(data)
        assert all(name == "NOOP" for name, _ in decoded), decoded
        counts[i] = len(decoded)
    return counts


def take_and_finish(sock: socket.socket, function: bytes) -> bytes:
    """A woken worker grabs its job, completes it and goes back to sleep."""
    sock.sendall(packet("GRAB_JOB"))
    data = b""
    sock.settimeout(5)
    while len(data) < 12 or len(data) < 12 + int.from_bytes(data[8:12], "big"):
        data += sock.recv(1 << 16)
    (name, args), = frames(data)
    assert name == "JOB_ASSIGN" and args[1] == function, (name, args)
    # the echo proves the server handled PRE_SLEEP before the next job is submitted
    sock.sendall(packet("WORK_COMPLETE", args[0], b"") + packet("PRE_SLEEP") + packet("ECHO_REQ", "sync"))
    assert recv_exactly(sock, len(ECHO_RES_SYNC)) == ECHO_RES_SYNC
    return args[0]


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def test_one_job_wakes_exactly_one_of_2000_sleepers(server):
    socks = sleepers(server.address, 2000)
    try:
        with Wire(server.address) as c:
            submit(c, "herd", b"job", ptype="SUBMIT_JOB_BG")
            counts = noops(socks, 1)
            assert sum(counts.values()) == 1, counts
            (woken,) = counts
            assert status_of(server.address, "herd") == (1, 0, 2000)
            take_and_finish(socks[woken], b"herd")
            assert noops(socks, 0) == {}  # nobody else was woken for it
    finally:
        close_all(socks)


def test_wakeups_rotate_among_sleepers(server):
    socks = sleepers(server.address, 2000)
    try:
        with Wire(server.address) as c:
            woken = []
            for i in range(5):
                submit(c, "herd", b"job %d" % i, ptype="SUBMIT_JOB_BG")
                counts = noops(socks, 1)
                assert list(counts.values()) == [1], counts
                (who,) = counts
                woken.append(who)
                take_and_finish(socks[who], b"herd")
            assert len(set(woken)) == 5, woken
            assert status_of(server.address, "herd") == (0, 0, 2000)
    finally:
        close_all(socks)


def test_n_jobs_wake_n_sleepers(server):
    socks = sleepers(server.address, 500)
    try:
        with Wire(server.address) as c:
            for i in range(3):
                submit(c, "herd", b"%d" % i, ptype="SUBMIT_JOB_BG")
            counts = noops(socks, 3)
            assert sorted(counts.values()) == [1, 1, 1], counts
    finally:
        close_all(socks)


def test_woken_worker_that_leaves_passes_the_wakeup_on(server):
    socks = sleepers(server.address, 50)
    try:
        with Wire(server.address) as c:
            submit(c, "herd", b"job", ptype="SUBMIT_JOB_BG")
            (first,) = noops(socks, 1)
            socks[first].close()  # woken, but gone before grabbing
            rest = [s for i, s in enumerate(socks) if i != first]
            counts = noops(rest, 1)
            assert list(counts.values()) == [1], counts
            (second,) = counts
            take_and_finish(rest[second], b"herd")
    finally:
        close_all(socks)


def test_worker_wakeup_all_wakes_every_sleeper(tmp_path):
    with running("-w", "all", workdir=tmp_path) as srv:
        socks = sleepers(srv.address, 2000)
        try:
            with Wire(srv.address) as c:
                submit(c, "herd", b"job", ptype="SUBMIT_JOB_BG")
                counts = noops(socks, 2000)
                assert len(counts) == 2000
                assert set(counts.values()) == {1}
        finally:
            close_all(socks)


@pytest.mark.parametrize("n", [1, 2])
def test_worker_wakeup_n_wakes_n(tmp_path, n):
    with running("-w", str(n), workdir=tmp_path) as srv:
        socks = sleepers(srv.address, 2000)
        try:
            with Wire(srv.address) as c:
                submit(c, "herd", b"job", ptype="SUBMIT_JOB_BG")
                counts = noops(socks, n)
                assert len(counts) == n and set(counts.values()) == {1}, counts
        finally:
            close_all(socks)


def test_sleepers_of_other_functions_are_not_woken(server):
    socks = sleepers(server.address, 200, "quiet")
    try:
        with Wire(server.address) as c, Wire(server.address) as w:
            w.send("CAN_DO", "busy")
            w.send("PRE_SLEEP")
            submit(c, "busy", b"x", ptype="SUBMIT_JOB_BG")
            assert w.expect("NOOP") == []
            assert noops(socks, 0) == {}
    finally:
        close_all(socks)
