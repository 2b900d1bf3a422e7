"""Robustness of the real server process against bad and hostile peers (issue point 4).

Every test ends by checking that the process is still alive and serving.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geartrain.protocol import RES
from tests.server._wire_extra import (
    closed_by_server,
    connect_many,
    fd_count,
    frames,
    header,
    packet,
    raise_nofile,
    recv_exactly,
    rss_kib,
    running,
    server_alive,
)
from tests.support.wire import Wire, admin, grab, submit, wait_until


def worker_lines(address: tuple[str, int]) -> int:
    """Connections listed by `workers` (the asking one included)."""
    return len(admin(address, "workers")[0].splitlines()) - 1


@pytest.fixture(scope="module", autouse=True)
def _many_descriptors():
    """Before any server starts (it inherits the limit): room for 2000+ sockets each."""
    raise_nofile(4500)


# ---------------------------------------------------------------- bad packets


@pytest.mark.parametrize("ptype", [999, 5, 43, 0, 0xFFFFFFFF])
def test_unknown_packet_type_gets_error_and_connection_lives(server, ptype):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "f")
        h = submit(c, "f", b"before")
        c.sendraw(packet(ptype, b"some\0body"))
        name, args = c.recv()
        assert name == "ERROR" and args[0] == b"INVALID_COMMAND", (name, args)
        c.send("ECHO_REQ", "after")
        assert c.expect("ECHO_RES") == [b"after"]
        grab(w)
        w.send("WORK_COMPLETE", h, b"done")
        assert c.expect("WORK_COMPLETE") == [h, b"done"]  # its job is still attached


CLIENT_FORBIDDEN = ["NOOP", "JOB_CREATED", "NO_JOB", "JOB_ASSIGN", "ECHO_RES", "ERROR", "STATUS_RES",
                    "ALL_YOURS", "OPTION_RES", "JOB_ASSIGN_UNIQ", "SUBMIT_JOB_SCHED", "JOB_ASSIGN_ALL",
                    "STATUS_RES_UNIQUE"]


def test_server_only_packet_types_get_error(server):
    with Wire(server.address) as c:
        for name in CLIENT_FORBIDDEN:
            c.send(name, "x", "y")
            assert c.expect("ERROR") == [b"INVALID_COMMAND", b"Command not expected"], name
        c.send("ECHO_REQ", "alive")
        assert c.expect("ECHO_RES") == [b"alive"]


def test_response_magic_gets_error_and_connection_lives(server):
    with Wire(server.address) as c:
        c.sendraw(packet("ECHO_REQ", "x", magic=RES))
        assert c.expect("ERROR") == [b"INVALID_MAGIC", b"Request magic expected"]
        c.send("ECHO_REQ", "y")
        assert c.expect("ECHO_RES") == [b"y"]


@pytest.mark.parametrize("name,body", [
    ("SUBMIT_JOB", b"fn-only"),
    ("SUBMIT_JOB_EPOCH", b"fn\0u"),
    ("SUBMIT_REDUCE_JOB", b"fn\0u"),
    ("WORK_STATUS", b"H:x:1"),
    ("CAN_DO_TIMEOUT", b"no-separator"),
])
def test_missing_separators_get_error_not_a_stall(server, name, body):
    """gearmand reads past the packet and desyncs; geartrain answers ERROR."""
    with Wire(server.address) as c:
        c.sendraw(packet(name, body))
        name_, args = c.recv()
        assert name_ == "ERROR" and args[0] == b"INVALID_PACKET", args
        c.send("ECHO_REQ", "next")
        assert c.expect("ECHO_RES") == [b"next"]


def test_bad_magic_closes_only_that_connection(server):
    with Wire(server.address) as bystander, Wire(server.address) as w:
        w.send("CAN_DO", "f")
        h = submit(bystander, "f", b"x")
        bad = socket.create_connection(server.address)
        bad.sendall(b"\0XYZ" + (16).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"a")
        reply = closed_by_server(bad)  # closed (gearmand closes silently; an ERROR first is fine)
        bad.close()
        assert reply == b"" or [(n, a[0]) for n, a in frames(reply)] == [("ERROR", b"INVALID_MAGIC")]
        bystander.send("ECHO_REQ", "still")
        assert bystander.expect("ECHO_RES") == [b"still"]
        grab(w)
        w.send("WORK_COMPLETE", h, b"ok")
        assert bystander.expect("WORK_COMPLETE") == [h, b"ok"]


def test_oversized_packet_header_is_refused_before_the_body(tmp_path):
    with running("--max-packet-size", "64K", workdir=tmp_path) as srv:
        with Wire(srv.address) as c:
            body = b"x" * (64 * 1024)  # exactly the limit is fine
            c.send("ECHO_REQ", body)
            assert c.expect("ECHO_RES") == [body]
        with Wire(srv.address) as bystander:
            s = socket.create_connection(srv.address)
            s.sendall(header("SUBMIT_JOB", 64 * 1024 + 1))  # the header only, no body
            reply = closed_by_server(s)
            s.close()
            ((name, args),) = frames(reply)
            assert name == "ERROR" and args[0] == b"ARGUMENT_TOO_LARGE", args
            assert b"65537" in args[1]
            # a 4 GiB announcement gets the same answer at once
            s = socket.create_connection(srv.address)
            s.sendall(header("ECHO_REQ", 0xFFFFFFFF))
            ((name, args),) = frames(closed_by_server(s))
            s.close()
            assert args[0] == b"ARGUMENT_TOO_LARGE"
            bystander.send("ECHO_REQ", "fine")
            assert bystander.expect("ECHO_RES") == [b"fine"]
            assert admin(srv.address, "status")[0] == b".\n"  # the refused SUBMIT_JOB left nothing


def test_text_line_limits(server):
    with Wire(server.address) as c:
        c.sendraw(b"x" * 8000 + b"\n")  # long but within 8 KiB: an ordinary unknown command
        assert c.read_admin() == b"ERR UNKNOWN_COMMAND Unknown+server+command" + b"x" * 8000 + b"\r\n"
        c.admin("version")
        assert c.read_admin().startswith(b"OK ")
    s = socket.create_connection(server.address)
    s.sendall(b"s" * 9000)  # no newline within 8 KiB
    reply = closed_by_server(s)
    s.close()
    # an admin client gets its answer as an admin line, then the close
    assert reply == b"ERR ARGUMENT_TOO_LARGE admin+line+longer+than+8192+bytes\r\n"
    assert server_alive(server)


@pytest.mark.parametrize("partial", [
    b"\0RE",  # half a magic
    b"\0REQ\0\0\0\x10\0\0",  # half a header
    packet("ECHO_REQ", b"y" * 100)[:60],  # half a body
    b"stat",  # half a text line
])
def test_truncated_input_then_close(server, partial):
    before = worker_lines(server.address)
    for _ in range(20):
        s = socket.create_connection(server.address)
        s.sendall(partial)
        s.close()
    assert wait_until(lambda: worker_lines(server.address) == before)
    assert server_alive(server)


def test_packets_split_into_single_bytes(server):
    with Wire(server.address) as c:
        data = packet("ECHO_REQ", b"slowly") + b"version\n" + packet("SUBMIT_JOB", "f", "", "x")
        for i in range(len(data)):
            c.sendraw(data[i:i + 1])
            if i % 7 == 0:
                time.sleep(0.001)
        assert c.expect("ECHO_RES") == [b"slowly"]
        ptype, line = c.recv_raw()
        assert ptype == 0 and line.startswith(b"OK ")
        assert c.expect("JOB_CREATED")[0].startswith(b"H:")


def test_half_closed_client_still_gets_its_replies(server):
    s = socket.create_connection(server.address, timeout=5)
    s.sendall(packet("ECHO_REQ", "one") + b"version\n")
    s.shutdown(socket.SHUT_WR)
    data = closed_by_server(s)
    s.close()
    assert frames(data)[0] == ("ECHO_RES", [b"one"])
    assert frames(data)[1][1][0].startswith(b"OK ")


# ---------------------------------------------------------------- garbage


def test_seeded_random_garbage_from_many_connections(server):
    rng = random.Random(20240607)
    with Wire(server.address) as bystander:
        bystander.send("CAN_DO", "keepalive")
        for round_ in range(4):
            socks = []
            for _ in range(50):
                s = socket.create_connection(server.address)
                kind = rng.randrange(3)
                if kind == 0:
                    data = rng.randbytes(rng.randrange(1, 4000))
                elif kind == 1:  # starts like a packet, then anything
                    data = b"\0REQ" + rng.randbytes(rng.randrange(0, 4000))
                else:  # a stream of well-framed packets of random types and bodies
                    data = b"".join(
                        packet(rng.randrange(0, 50), rng.randbytes(rng.randrange(0, 40)))
                        for _ in range(rng.randrange(1, 30))
                    )
                try:
                    s.sendall(data)
                except OSError:
                    pass
                socks.append(s)
            for s in socks:
                s.close()
            bystander.send("ECHO_REQ", b"round %d" % round_)
            assert bystander.expect("ECHO_RES") == [b"round %d" % round_]
    assert server_alive(server)
    assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    with running(workdir=tmp_path_factory.mktemp("fuzz")) as srv:
        yield srv


packet_types = st.one_of(st.integers(0, 45), st.integers(0, 0xFFFFFFFF))
random_packets = st.lists(
    st.tuples(packet_types, st.lists(st.binary(max_size=30), max_size=6)), min_size=1, max_size=12
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_packets)
def test_well_framed_random_packets_never_break_a_connection(shared_server, pkts):
    """Any sequence of well-framed request packets leaves the connection usable:
    geartrain answers bad ones with ERROR and never closes."""
    with Wire(shared_server.address, timeout=5) as c:
        for ptype, args in pkts:
            c.sendraw(packet(ptype, *args))
        c.send("ECHO_REQ", "marker-7f3a")
        for _ in range(200):
            name, args = c.recv()
            if name == "ECHO_RES" and args == [b"marker-7f3a"]:
                break
        else:
            raise AssertionError("no ECHO_RES")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=2000))
def test_arbitrary_bytes_never_crash_the_server(shared_server, data):
    s = socket.create_connection(shared_server.address, timeout=5)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(2)
        try:
            while s.recv(1 << 16):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    finally:
        s.close()
    assert shared_server.alive()


def test_fuzzed_server_still_healthy(shared_server):
    assert server_alive(shared_server)
    assert "Traceback" not in shared_server.log()


# ---------------------------------------------------------------- resources


def test_pipelining_client_that_never_reads_does_not_grow_memory(server):
    """200 MB of ECHO_REQ from a client that reads nothing: the server stops
    reading once its output for that client backs up, so its RSS stays flat."""
    chunk = packet("ECHO_REQ", b"e" * (64 * 1024 - 12)) * 16  # 1 MiB of 64 KiB echoes
    total = 200 * len(chunk)
    base = rss_kib(server.pid)
    s = socket.create_connection(server.address)
    s.setblocking(False)
    sent = 0
    peak = base
    stalled_since = None
    while sent < total:
        _, writable, _ = select.select([], [s], [], 0.2)
        if writable:
            try:
                sent += s.send(chunk[sent % len(chunk):])
                stalled_since = None
                continue
            except BlockingIOError:
                pass
        peak = max(peak, rss_kib(server.pid))
        stalled_since = stalled_since or time.monotonic()
        if time.monotonic() - stalled_since > 1.5:
            break  # the server has stopped reading
    peak = max(peak, rss_kib(server.pid))
    assert sent < total // 2, f"server read {sent} bytes without anyone reading the replies"
    assert peak - base < 64 * 1024, f"RSS grew from {base} KiB to {peak} KiB"
    # once the client reads, every echo comes back and the connection works
    s.setblocking(True)
    s.settimeout(10)
    received = 0
    reader_done = threading.Event()

    def reader() -> None:
        nonlocal received
        try:
            while received < sent:
                data = s.recv(1 << 20)
                if not data:
                    break
                received += len(data)
        finally:
            reader_done.set()

    t = threading.Thread(target=reader)
    t.start()
    rest = chunk[sent % len(chunk):] if sent % len(chunk) else b""
    s.sendall(rest)
    sent += len(rest)
    t.join(30)
    assert received == sent  # ECHO_RES has the same size as ECHO_REQ
    assert server_alive(server)
    s.close()


def test_2000_connections_at_once(server):
    raise_nofile(4500)
    socks = connect_many(server.address, 2000)
    try:
        for i, s in enumerate(socks):
            s.sendall(packet("ECHO_REQ", b"%d" % i))
        for i, s in enumerate(socks):
            body = b"%d" % i
            assert recv_exactly(s, 12 + len(body))[12:] == body
        assert worker_lines(server.address) == 2001
        assert fd_count(server.pid) >= 2000
    finally:
        for s in socks:
            s.close()
    assert wait_until(lambda: worker_lines(server.address) == 1)
    assert server_alive(server)
