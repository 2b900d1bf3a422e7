"""Helpers for the durability tests: geartrain processes on a store, killed and restarted.

Everything talks to real server processes over real sockets (tests/support);
nothing is mocked. A server here always runs with ``--verbose DEBUG`` so the
tests can see its store commits (``store commit: N added, M updated, K done``).
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from geartrain.protocol import REQ, PacketType
from tests.support import process
from tests.support.wire import Closed, Wire, admin, len_header

PREFIX = "H:dur"
_COMMIT = re.compile(r"store commit: (\d+) added, (\d+) updated, (\d+) done")


def start(store_url: str | None, *args: str, workdir: Path, port: int | None = None,
          wait: bool = True) -> process.ServerProcess:
    """A geartrain server on *store_url* (None: the default store), started."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = ("--store", store_url) if store_url is not None else ()
    srv = process.geartrain(*store, "--verbose", "DEBUG", "--job-handle-prefix", PREFIX, *args,
                            workdir=workdir, port=port)
    return srv.start(wait=wait)


def kill(srv: process.ServerProcess) -> None:
    """SIGKILL: no shutdown code runs, nothing is flushed."""
    srv.signal(signal.SIGKILL)
    srv.wait(10)


def assert_clean(srv: process.ServerProcess) -> None:
    assert "Traceback" not in srv.log(), srv.log()


@contextmanager
def serving(store_url: str | None, *args: str, workdir: Path,
            port: int | None = None) -> Iterator[process.ServerProcess]:
    """A started server, SIGTERMed afterwards unless the test killed it; no traceback."""
    srv = start(store_url, *args, workdir=workdir, port=port)
    try:
        yield srv
    finally:
        srv.stop()
    assert_clean(srv)


def commits(srv: process.ServerProcess) -> list[tuple[int, int, int]]:
    """(added, updated, done) of every store commit the server logged so far."""
    return [(int(a), int(u), int(d)) for a, u, d in _COMMIT.findall(srv.log())]


def committed(srv: process.ServerProcess) -> tuple[int, int, int]:
    """Totals of added, updated and done rows over all logged commits."""
    rows = commits(srv)
    return (sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows))


def wait_committed(srv: process.ServerProcess, added: int = 0, updated: int = 0, done: int = 0,
                   timeout: float = 5.0) -> None:
    """Wait until the server logged commits with at least these totals."""
    end = time.monotonic() + timeout
    while True:
        got = committed(srv)
        if got[0] >= added and got[1] >= updated and got[2] >= done:
            return
        if time.monotonic() > end:
            raise AssertionError(f"store commits {got} (added, updated, done) never reached "
                                 f"{(added, updated, done)}\n{srv.log()[-3000:]}")
        time.sleep(0.02)


def show_jobs(address: tuple[str, int]) -> dict[bytes, tuple[int, int, int]]:
    """`show jobs`: handle -> (retries, ignored, background)."""
    out: dict[bytes, tuple[int, int, int]] = {}
    for line in admin(address, "show jobs")[0].splitlines():
        cols = line.split(b"\t")
        if len(cols) == 4:
            out[cols[0]] = (int(cols[1]), int(cols[2]), int(cols[3]))
    return out


def status(address: tuple[str, int]) -> dict[bytes, tuple[int, int, int]]:
    """`status`: function -> (total, running, workers)."""
    out: dict[bytes, tuple[int, int, int]] = {}
    for line in admin(address, "status")[0].splitlines():
        cols = line.split(b"\t")
        if len(cols) == 4:
            out[cols[0]] = (int(cols[1]), int(cols[2]), int(cols[3]))
    return out


def priority_status(address: tuple[str, int]) -> dict[bytes, tuple[int, int, int]]:
    """`prioritystatus`: function -> (high, normal (+scheduled), low)."""
    out: dict[bytes, tuple[int, int, int]] = {}
    for line in admin(address, "prioritystatus")[0].splitlines():
        cols = line.split(b"\t")
        if len(cols) == 5:
            out[cols[0]] = (int(cols[1]), int(cols[2]), int(cols[3]))
    return out


def number(handle: bytes) -> int:
    return int(handle.rpartition(b":")[2])


def submit_bg(w: Wire, function: str, data: bytes, unique: bytes = b"",
              ptype: str = "SUBMIT_JOB_BG") -> bytes:
    """A background submit that must be acknowledged with JOB_CREATED."""
    w.send(ptype, function, unique, data)
    name, args = w.recv()
    assert name == "JOB_CREATED", (name, args)
    return args[0]


def packet(ptype: str, *args: bytes | str) -> bytes:
    """The wire bytes of one request packet (args joined with NUL)."""
    body = b"\0".join(a.encode() if isinstance(a, str) else a for a in args)
    return REQ + len_header(PacketType[ptype], body) + body


def pipeline(w: Wire, packets: Sequence[tuple[str, Sequence[bytes | str]]]) -> None:
    """Send several request packets in ONE write."""
    w.sendraw(b"".join(packet(ptype, *args) for ptype, args in packets))


def barrier(address: tuple[str, int], function: str = "dur.barrier") -> bytes:
    """A background submit on a fresh connection, acknowledged: every store
    effect the server produced before it is committed (transactions run one at
    a time and a failed one refuses its adds). Returns the barrier job's handle."""
    with Wire(address) as w:
        return submit_bg(w, function, b"barrier")


class Assigned:
    """One JOB_ASSIGN_ALL / JOB_ASSIGN_UNIQ as a worker saw it."""

    def __init__(self, name: str, args: list[bytes]) -> None:
        self.handle = args[0]
        self.function = args[1]
        self.unique = args[2]
        if name == "JOB_ASSIGN_ALL":
            self.reducer, self.data = args[3], args[4]
        else:
            self.reducer, self.data = b"", args[3]

    def __repr__(self) -> str:
        return f"<Assigned {self.handle!r} {self.function!r} u={self.unique!r} d={self.data!r}>"


class Worker:
    """A raw worker connection: grabs with GRAB_JOB_ALL (handle, unique, reducer, data)."""

    def __init__(self, address: tuple[str, int], *functions: str) -> None:
        self.w = Wire(address)
        for f in functions:
            self.w.send("CAN_DO", f)

    def grab(self) -> Assigned | None:
        """The next job, or None if the server has none right now."""
        self.w.send("GRAB_JOB_ALL")
        name, args = self.w.recv()
        while name == "NOOP":
            name, args = self.w.recv()
        if name == "NO_JOB":
            return None
        assert name in ("JOB_ASSIGN_ALL", "JOB_ASSIGN_UNIQ"), (name, args)
        return Assigned(name, args)

    def grab_wait(self, timeout: float = 5.0) -> Assigned:
        end = time.monotonic() + timeout
        while True:
            job = self.grab()
            if job is not None:
                return job
            if time.monotonic() > end:
                raise AssertionError(f"no job assigned within {timeout}s")
            time.sleep(0.02)

    def complete(self, job: Assigned, result: bytes = b"ok") -> None:
        self.w.send("WORK_COMPLETE", job.handle, result)

    def drain(self, limit: int = 100000) -> list[Assigned]:
        """Grab and complete until the server has nothing queued for us."""
        done: list[Assigned] = []
        while len(done) < limit:
            job = self.grab()
            if job is None:
                break
            self.complete(job)
            done.append(job)
        return done

    def close(self) -> None:
        self.w.close()


def first_connection(host: str, port: int, timeout: float = 20.0) -> socket.socket:
    """Connect as early as possible: poll until the port accepts, return that socket."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return socket.create_connection((host, port), timeout=5)
        except OSError:
            time.sleep(0.001)
    raise AssertionError(f"{host}:{port} never accepted within {timeout}s")


def read_admin_reply(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Bytes of one list reply (up to the '.' line) on a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while not (data.endswith(b"\n.\n") or data == b".\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise Closed("connection closed")
        data += chunk
    return data


def admin_line(address: tuple[str, int], command: str) -> bytes:
    """The one-line reply (OK/ERR) of an admin command."""
    return admin(address, command)[0]


def wait_until_value(get: Callable[[], object], want: object, timeout: float = 5.0) -> bool:
    """Poll *get* until it returns *want*; True if it did within *timeout*."""
    end = time.monotonic() + timeout
    while True:
        got = get()
        if got == want:
            return True
        if time.monotonic() > end:
            raise AssertionError(f"still {got!r}, not {want!r}, after {timeout}s")
        time.sleep(0.02)
