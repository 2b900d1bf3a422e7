"""Drive a :class:`JobServer` with plain calls: bytes in, bytes out, a fake clock.

``Driver`` owns the server and two fake clocks (monotonic and wall) that only
move when a test calls :meth:`Driver.advance`. ``Conn`` is one connection: it
encodes requests with :func:`geartrain.protocol.encode`, feeds them through
its own :class:`Decoder` into :meth:`JobServer.receive` (as the network layer
does), and decodes what the server appended to ``peer.out``.
"""

from __future__ import annotations

from typing import Any

from geartrain.protocol import REQ, RES, TEXT, Decoder, FramingError, PacketType, encode, parse_args
from geartrain.server.core import CoreSettings, JobServer, Peer

T = PacketType
PREFIX = "H:test"

#: start values of the fake clocks (the wall clock looks like a real epoch)
MONO0 = 5000.0
WALL0 = 1_700_000_000.0


class Conn:
    """One connection to the core."""

    def __init__(self, driver: Driver, peer: Peer) -> None:
        self.driver = driver
        self.server = driver.server
        self.peer = peer
        self.decoder = Decoder()

    # -- sending
    def feed(self, data: bytes) -> None:
        """Bytes as they would arrive from the socket (then, as the network
        layer's flush does, the results of jobs that ended are filed)."""
        self.server.receive(self.peer, self.decoder.feed(data))
        self.server.file_results()

    def send(self, ptype: int, *args: bytes, magic: bytes = REQ) -> None:
        self.feed(encode(ptype, *args, magic=magic))

    def send_body(self, ptype: int, body: bytes, magic: bytes = REQ) -> None:
        """A packet with a hand-made body (for bodies encode() would refuse)."""
        self.feed(magic + ptype.to_bytes(4, "big") + len(body).to_bytes(4, "big") + body)

    def admin(self, line: bytes | str, ending: bytes = b"\n") -> bytes:
        """Send one admin line and return the raw bytes of everything the server sent back."""
        if isinstance(line, str):
            line = line.encode()
        self.feed(line + ending)
        return self.raw()

    # -- receiving
    def raw(self) -> bytes:
        """Everything sent to this connection since the last read, as bytes."""
        data = b"".join(self.peer.out)
        self.peer.out.clear()
        return data

    def packets(self) -> list[tuple[int, bytes]]:
        """Every binary packet sent since the last read, as (type, body)."""
        out = []
        for frame in Decoder().feed(self.raw()):
            assert not isinstance(frame, FramingError), frame
            ptype, body, magic = frame
            assert ptype != TEXT, f"text line {body!r} where packets were expected"
            assert magic is RES, f"server sent magic {magic!r}"
            out.append((ptype, body))
        return out

    def recv(self) -> list[tuple[int, list[bytes]]]:
        """Every packet since the last read, with its arguments split."""
        return [(ptype, parse_args(ptype, body)) for ptype, body in self.packets()]

    def one(self, ptype: int) -> list[bytes]:
        """Exactly one packet of *ptype* must have arrived; its arguments."""
        got = self.recv()
        assert len(got) == 1 and got[0][0] == ptype, f"expected one {T(ptype).name}, got {_names(got)}"
        return got[0][1]

    def none(self) -> None:
        got = self.recv()
        assert got == [], f"expected nothing, got {_names(got)}"

    def count(self, ptype: int) -> int:
        """How many packets of *ptype* arrived (all packets are consumed)."""
        return sum(1 for p, _ in self.packets() if p == ptype)

    def error(self) -> tuple[bytes, bytes]:
        code, text = self.one(T.ERROR)
        return code, text

    # -- conveniences for clients
    def submit(
        self, function: bytes, data: bytes = b"", unique: bytes = b"", ptype: int = T.SUBMIT_JOB
    ) -> bytes:
        self.send(ptype, function, unique, data)
        return self.one(T.JOB_CREATED)[0]

    def submit_epoch(
        self, function: bytes, when: bytes | int, data: bytes = b"", unique: bytes = b""
    ) -> bytes:
        epoch = str(when).encode() if isinstance(when, int) else when
        self.send(T.SUBMIT_JOB_EPOCH, function, unique, epoch, data)
        return self.one(T.JOB_CREATED)[0]

    def status(self, handle: bytes) -> list[bytes]:
        self.send(T.GET_STATUS, handle)
        return self.one(T.STATUS_RES)

    # -- conveniences for workers
    def can_do(self, *functions: bytes) -> None:
        for f in functions:
            self.send(T.CAN_DO, f)
        self.none()

    def sleep(self) -> None:
        """PRE_SLEEP, expecting no immediate NOOP."""
        self.send(T.PRE_SLEEP)
        self.none()

    def grab(self, ptype: int = T.GRAB_JOB) -> tuple[int, list[bytes]]:
        self.send(ptype)
        got = self.recv()
        assert len(got) == 1, f"expected one reply to {T(ptype).name}, got {_names(got)}"
        return got[0]

    def take(self, ptype: int = T.GRAB_JOB) -> list[bytes]:
        """Grab, expecting a job: the JOB_ASSIGN* arguments."""
        kind, args = self.grab(ptype)
        assert kind in (T.JOB_ASSIGN, T.JOB_ASSIGN_UNIQ, T.JOB_ASSIGN_ALL), f"got {T(kind).name}"
        return args

    def no_job(self, ptype: int = T.GRAB_JOB) -> None:
        kind, args = self.grab(ptype)
        assert kind == T.NO_JOB, f"expected NO_JOB, got {T(kind).name} {args!r}"

    def complete(self, handle: bytes, result: bytes = b"") -> None:
        self.send(T.WORK_COMPLETE, handle, result)
        self.none()

    def close(self) -> None:
        self.server.disconnect(self.peer)

    def __repr__(self) -> str:
        return f"<Conn {self.peer!r}>"


def _names(got: list[tuple[int, list[bytes]]]) -> list[str]:
    return [f"{T(p).name}{args!r}" for p, args in got]


class Driver:
    """A JobServer with fake clocks, and connections to it."""

    def __init__(self, settings: CoreSettings | None = None, **kwargs: Any) -> None:
        if settings is None:
            kwargs.setdefault("handle_prefix", PREFIX)
            settings = CoreSettings(**kwargs)
        self.mono = MONO0
        self.wall = WALL0
        self.server = JobServer(settings, clock=lambda: self.mono, wallclock=lambda: self.wall)
        self._fd = 10

    def connect(self, host: str = "127.0.0.1") -> Conn:
        self._fd += 1
        return Conn(self, self.server.connect(host, self._fd))

    def client(self) -> Conn:
        return self.connect()

    def worker(self, *functions: bytes) -> Conn:
        w = self.connect()
        w.can_do(*functions)
        return w

    def sleeper(self, *functions: bytes) -> Conn:
        """A worker registered for *functions* that went to sleep."""
        w = self.worker(*functions)
        w.sleep()
        return w

    def advance(self, seconds: float) -> None:
        """Move both clocks forward and fire whatever timers fell due."""
        self.mono += seconds
        self.wall += seconds
        deadline = self.server.next_deadline()
        if deadline is not None and deadline <= self.mono:
            self.server.on_timer()

    def admin(self, line: bytes | str) -> bytes:
        """One admin line on a fresh connection that is closed afterwards."""
        conn = self.connect()
        try:
            return conn.admin(line)
        finally:
            conn.close()

    def function(self, name: bytes) -> Any:
        return self.server.functions[name]

    def status_line(self, name: bytes) -> tuple[int, int, int] | None:
        """(total, running, workers) of *name* in `status`, or None if not listed."""
        for line in self.admin("status").split(b"\n"):
            cols = line.split(b"\t")
            if len(cols) == 4 and cols[0] == name:
                return int(cols[1]), int(cols[2]), int(cols[3])
        return None


def handle(n: int) -> bytes:
    """The n-th job handle of a fresh Driver."""
    return b"%s:%d" % (PREFIX.encode(), n)
