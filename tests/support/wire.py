"""A raw Gearman connection for tests, built on geartrain's own protocol layer.

It speaks bytes on a real socket and nothing more, so tests see exactly what
the server sends: ``send("SUBMIT_JOB", b"fn", b"", b"data")`` and
``recv() -> ("JOB_CREATED", [b"H:host:1"])``.
"""

from __future__ import annotations

import socket
import time

from geartrain.protocol import REQ, Decoder, FramingError, PacketType, parse_args, type_name
from geartrain.protocol.codec import TEXT


class Closed(Exception):
    """The server closed the connection."""


class Wire:
    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.decoder = Decoder(max_packet_size=1 << 30)
        self.frames: list[tuple[int, bytes, bytes | None]] = []

    # -- sending
    def send(self, ptype: str | int, *args: bytes | str) -> None:
        code = PacketType[ptype] if isinstance(ptype, str) else ptype
        raw = [a.encode() if isinstance(a, str) else a for a in args]
        body = b"\0".join(raw)
        self.sendraw(REQ + len_header(code, body) + body)

    def sendraw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def admin(self, line: str | bytes) -> None:
        self.sendraw((line.encode() if isinstance(line, str) else line) + b"\r\n")

    # -- receiving
    def _frame(self, timeout: float | None) -> tuple[int, bytes, bytes | None]:
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.frames:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the server")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                raise Closed("connection reset by the server") from None
            if not data:
                raise Closed("connection closed by the server")
            for f in self.decoder.feed(data):
                if isinstance(f, FramingError):
                    raise AssertionError(f"server sent undecodable bytes: {f}")
                self.frames.append(f)
        return self.frames.pop(0)

    def recv(self, timeout: float | None = None) -> tuple[str, list[bytes]]:
        ptype, body, magic = self._frame(timeout)
        if ptype == TEXT:
            raise AssertionError(f"expected a packet, got text line {body!r}")
        return type_name(ptype), parse_args(ptype, body)

    def recv_raw(self, timeout: float | None = None) -> tuple[int, bytes]:
        ptype, body, _ = self._frame(timeout)
        return ptype, body

    def expect(self, name: str, timeout: float | None = None) -> list[bytes]:
        got, args = self.recv(timeout)
        if got != name:
            raise AssertionError(f"expected {name}, got {got} {args!r}")
        return args

    def silent(self, timeout: float = 0.3) -> tuple[str, list[bytes]] | None:
        """The next packet if one arrives within *timeout*, else None."""
        try:
            return self.recv(timeout)
        except TimeoutError:
            return None

    def read_admin(self, timeout: float | None = None) -> bytes:
        """Raw bytes of one admin reply: a single OK/ERR line, or lines up to '.'."""
        data = b""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            chunk = self.sock.recv(1)
            if not chunk:
                raise Closed("connection closed by the server")
            data += chunk
            if chunk == b"\n":
                lines = data.split(b"\n")
                if lines[0].startswith((b"OK", b"ERR")) or lines[-2].rstrip(b"\r") == b".":
                    return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def len_header(code: int, body: bytes) -> bytes:
    return code.to_bytes(4, "big") + len(body).to_bytes(4, "big")


def admin(address: tuple[str, int], *commands: str) -> list[bytes]:
    """Run admin commands on one fresh connection; the raw reply of each."""
    with Wire(address) as w:
        replies = []
        for cmd in commands:
            w.admin(cmd)
            replies.append(w.read_admin())
        return replies


def status_of(address: tuple[str, int], function: str) -> tuple[int, int, int] | None:
    """(total, running, workers) of *function* in `status`, or None."""
    for line in admin(address, "status")[0].decode().splitlines():
        cols = line.split("\t")
        if len(cols) == 4 and cols[0] == function:
            return int(cols[1]), int(cols[2]), int(cols[3])
    return None


def submit(w: Wire, function: str, data: bytes, unique: bytes = b"", ptype: str = "SUBMIT_JOB") -> bytes:
    w.send(ptype, function, unique, data)
    return w.expect("JOB_CREATED")[0]


def grab(w: Wire, ptype: str = "GRAB_JOB", timeout: float = 5.0) -> tuple[str, list[bytes]]:
    """GRAB until a JOB_ASSIGN* arrives, sleeping with PRE_SLEEP/NOOP in between."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        w.send(ptype)
        name, args = w.recv(timeout)
        while name == "NOOP":
            name, args = w.recv(timeout)
        if name.startswith("JOB_ASSIGN"):
            return name, args
        assert name == "NO_JOB", (name, args)
        w.send("PRE_SLEEP")
        try:
            w.expect("NOOP", max(0.01, end - time.monotonic()))
        except TimeoutError:
            break
    raise AssertionError(f"no job assigned within {timeout}s")


def run_job(address: tuple[str, int], function: str, *script: tuple[str, tuple[bytes, ...]],
            expect: bytes | None = None) -> bytes:
    """A raw worker grabs one job of *function* (which must be *expect*, when
    given), sends *script*'s packets for it (name, arguments after the
    handle), and returns once the server has read them; the job's handle."""
    with Wire(address) as w:
        w.send("CAN_DO", function)
        _, job = grab(w)
        if expect is not None:
            assert job[0] == expect, (job[0], expect)
        for name, args in script:
            w.send(name, job[0], *args)
        w.send("ECHO_REQ", b"sync")
        w.expect("ECHO_RES")
    return job[0]


def wait_until(predicate, timeout: float = 5.0, step: float = 0.02):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)
