"""Helpers for the end-to-end server tests (beyond tests/support/wire.py).

Everything here talks to real server processes over real sockets: servers
started with extra options, raw packet bytes, many connections read without
blocking, and the server's resident memory from /proc.
"""

from __future__ import annotations

import os
import re
import resource
import select
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from geartrain.protocol import REQ, Decoder, FramingError, PacketType, parse_args, type_name
from geartrain.protocol.codec import TEXT
from tests.support import process


def packet(ptype: str | int, *args: bytes | str, magic: bytes = REQ) -> bytes:
    """The wire bytes of one request packet (args joined with NUL)."""
    code = PacketType[ptype] if isinstance(ptype, str) else ptype
    body = b"\0".join(a.encode() if isinstance(a, str) else a for a in args)
    return magic + code.to_bytes(4, "big") + len(body).to_bytes(4, "big") + body


def header(ptype: str | int, size: int, magic: bytes = REQ) -> bytes:
    """Only the 12-byte header of a packet announcing a *size*-byte body."""
    code = PacketType[ptype] if isinstance(ptype, str) else ptype
    return magic + code.to_bytes(4, "big") + size.to_bytes(4, "big")


@contextmanager
def running(*args: str, workdir: Path, kind: str = "geartrain",
            host: str = "127.0.0.1") -> Iterator[process.ServerProcess]:
    """A server started with extra options, stopped afterwards; a geartrain
    server must not have logged a traceback."""
    factory = process.geartrain if kind == "geartrain" else process.gearmand
    workdir.mkdir(parents=True, exist_ok=True)
    srv = factory(*args, host=host, workdir=workdir).start()
    try:
        yield srv
    finally:
        srv.stop()
    if kind == "geartrain":
        assert "Traceback" not in srv.log(), srv.log()


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE towards *want* (up to the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def rss_kib(pid: int) -> int:
    """VmRSS of process *pid* in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def connect_many(address: tuple[str, int], n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(address, timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    return socks


def recv_exactly(sock: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_available(socks: Sequence[socket.socket], wait: float) -> dict[int, bytes]:
    """Whatever each socket has to read within *wait* seconds (non-blocking
    reads after a poll); keyed by index in *socks*, only sockets that had data."""
    poller = select.poll()
    index = {}
    for i, s in enumerate(socks):
        poller.register(s.fileno(), select.POLLIN)
        index[s.fileno()] = i
    got: dict[int, bytes] = {}
    end = time.monotonic() + wait
    while True:
        left = end - time.monotonic()
        events = poller.poll(max(0, int(left * 1000)))
        for fd, _ in events:
            i = index[fd]
            s = socks[i]
            s.setblocking(False)
            try:
                chunk = s.recv(1 << 16)
            except BlockingIOError:
                chunk = None
            finally:
                s.setblocking(True)
            if chunk:
                got[i] = got.get(i, b"") + chunk
            else:
                poller.unregister(fd)  # closed
        if left <= 0:
            return got


def frames(data: bytes) -> list[tuple[str, list[bytes]]]:
    """Decode server output into (name, args); text lines come back as ('TEXT', [line])."""
    out: list[tuple[str, list[bytes]]] = []
    for f in Decoder(max_packet_size=1 << 30).feed(data):
        if isinstance(f, FramingError):
            raise AssertionError(f"undecodable server output: {f}")
        ptype, body, _ = f
        if ptype == TEXT:
            out.append(("TEXT", [body]))
        else:
            out.append((type_name(ptype), parse_args(ptype, body)))
    return out


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the server closes; everything it sent first. Fails on timeout."""
    sock.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return data
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"server kept the connection open; it sent {data[:200]!r}")


_HANDLE = re.compile(rb"H:[A-Za-z0-9._-]+:(\d+)")


def mask(value: bytes) -> bytes:
    """Hide the host name in job handles (``H:vm:3`` -> ``H:*:3``)."""
    return _HANDLE.sub(rb"H:*:\1", value)


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def server_alive(srv: process.ServerProcess) -> bool:
    """The process runs and answers an ECHO on a fresh connection."""
    if not srv.alive():
        return False
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(packet("ECHO_REQ", b"ping"))
        return recv_exactly(s, 16) == b"\0RES" + (17).to_bytes(4, "big") + (4).to_bytes(4, "big") + b"ping"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
