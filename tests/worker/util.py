"""Helpers for the worker tests: a packet-counting TCP proxy, running a worker
as a task, and bounded waits on the servers' admin view."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from geartrain import AsyncWorker
from geartrain.protocol import Decoder, FramingError, type_name
from tests.support import process
from tests.support.wire import admin, status_of

#: upper bound of every wait in these tests
WAIT = 10.0


def addr(srv: process.ServerProcess | tuple[str, int]) -> str:
    host, port = srv.address if isinstance(srv, process.ServerProcess) else srv
    return f"{host}:{port}"


class Proxy:
    """A TCP proxy (real sockets, one thread per direction) between workers and a
    job server. It decodes both byte streams and records every packet as
    ``(monotonic time, "up" | "down", packet type name, body)``: "up" is
    worker -> server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = ("127.0.0.1", int(self.listener.getsockname()[1]))
        self.packets: list[tuple[float, str, str, bytes]] = []
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self._hold: tuple[str, str] | None = None
        self._released = threading.Event()
        threading.Thread(target=self._accept, name="proxy accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for s in (downstream, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets += [downstream, upstream]
            for src, dst, way in ((downstream, upstream, "up"), (upstream, downstream, "down")):
                threading.Thread(target=self._pump, args=(src, dst, way), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        decoder = Decoder(1 << 30)
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            now = time.monotonic()
            hold = False
            with self.lock:
                for frame in decoder.feed(data):
                    assert not isinstance(frame, FramingError), frame
                    name = type_name(frame[0])
                    self.packets.append((now, way, name, frame[1]))
                    if self._hold == (way, name):
                        self._hold = None
                        hold = True
            try:
                dst.sendall(data)
            except OSError:
                break
            if hold:  # forward nothing more this way until release()
                self._released.wait(WAIT)
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold_after(self, way: str, name: str) -> None:
        """After the next *name* packet going *way*, hold that direction until release()."""
        with self.lock:
            self._released.clear()
            self._hold = (way, name)

    def release(self) -> None:
        self._released.set()

    def seen(self, way: str | None = None, since: int = 0) -> list[tuple[str, bytes]]:
        """(type, body) of the packets recorded from index *since*, one direction or both."""
        with self.lock:
            return [(name, body) for _, w, name, body in self.packets[since:] if way in (None, w)]

    def count(self) -> int:
        with self.lock:
            return len(self.packets)

    async def wait_for(self, way: str, name: str, since: int = 0, timeout: float = WAIT) -> int:
        """Index of the first *name* packet going *way* from *since* on."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                for i in range(since, len(self.packets)):
                    if self.packets[i][1] == way and self.packets[i][2] == name:
                        return i
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {name} {way} within {timeout}s: {self.seen(since=since)}")

    def close(self) -> None:
        self._released.set()
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass


@asynccontextmanager
async def running(worker: AsyncWorker, **kwargs: Any) -> AsyncIterator[asyncio.Task[None]]:
    """Run *worker* as a task; on exit stop it and check run() returned in time."""
    task = asyncio.create_task(worker.run(**kwargs))
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, WAIT)


async def until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll *predicate* (in a thread: it may do blocking I/O) until it is truthy."""
    end = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not true within {timeout}s (last {value!r})")
        await asyncio.sleep(0.02)


async def workers_for(server: tuple[str, int], function: str, n: int = 1) -> None:
    """Wait until *n* workers have registered *function* on *server*."""
    await until(lambda: (status_of(server, function) or (0, 0, 0))[2] == n,
                what=f"{n} worker(s) for {function!r} on {server}")


def queue_state(server: tuple[str, int], function: str) -> tuple[int, int, int]:
    """(total, running, workers) of *function* from `status`."""
    return status_of(server, function) or (0, 0, 0)


def workers_lines(server: tuple[str, int]) -> list[str]:
    return admin(server, "workers")[0].decode().splitlines()


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """Largest number of (start, end) spans open at one instant (an end at the
    same instant as a start closes first)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best
