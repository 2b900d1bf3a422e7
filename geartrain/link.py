"""One connection from a client or worker to one job server.

A :class:`Link` is an ``asyncio.Protocol`` (no streams, like the server's hot
path): bytes are decoded with the sans-IO :class:`~geartrain.protocol.Decoder`
and each packet is handed to the owner's ``packet_received(link, ptype, body)``;
outgoing packets are collected and written once per loop iteration, so a
WORK_COMPLETE and the next GRAB_JOB, or a thousand pipelined submits, leave
in one ``write``. :class:`Backoff` decides when a server that refused or
dropped a connection is tried again.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from typing import Any, Protocol

from geartrain.errors import ConnectionLost, NoServerAvailable
from geartrain.protocol import REQ, Decoder, FramingError
from geartrain.servers import ServerAddress

_header = struct.Struct(">4sII").pack


def request(ptype: int, body: bytes) -> bytes:
    """One request packet (``\\0REQ`` magic) with an already joined body."""
    return _header(REQ, ptype, len(body)) + body


class LinkOwner(Protocol):
    def packet_received(self, link: Link, ptype: int, body: bytes) -> None: ...

    def link_lost(self, link: Link, exc: BaseException | None) -> None: ...


class Backoff:
    """Exponential back-off with jitter: 0.1 s, 0.2 s, ... up to *maximum*."""

    def __init__(self, initial: float = 0.1, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self.not_before = 0.0

    def failed(self, now: float) -> float:
        delay = min(self.maximum, self.initial * 2.0 ** self.failures)
        delay *= 0.5 + random.random() / 2
        self.failures += 1
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.not_before


class Link(asyncio.Protocol):
    """A connection to *address*; ``open()`` it, ``send()`` packets on it."""

    def __init__(self, address: ServerAddress, owner: LinkOwner, max_packet_size: int = 1 << 30) -> None:
        self.address = address
        self.owner = owner
        self.decoder = Decoder(max_packet_size)
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._paused: asyncio.Future[None] | None = None
        self._abort_reason: BaseException | None = None

    def __repr__(self) -> str:
        state = "open" if self.transport is not None and not self.closed else "closed"
        return f"<Link {self.address} {state}>"

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.closed

    async def open(self, timeout: float | None = 10.0) -> None:
        """Connect; raises :class:`NoServerAvailable` when the server is unreachable."""
        self.loop = loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, self.address.host, self.address.port), timeout
            )
        except (OSError, TimeoutError) as exc:
            self.closed = True
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise NoServerAvailable(f"cannot connect to {self.address}: {reason}") from None

    # -- asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not TCP
                pass

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        for frame in self.decoder.feed(data):
            if type(frame) is tuple:
                owner.packet_received(self, frame[0], frame[1])
            elif isinstance(frame, FramingError):
                self.abort(ConnectionLost(f"garbled data from {self.address}: {frame.text}"))
                return

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.closed and self.transport is None:
            return
        self.closed = True
        self.transport = None
        exc = exc or self._abort_reason
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self.owner.link_lost(self, exc)

    def pause_writing(self) -> None:
        if self.loop is not None and (self._paused is None or self._paused.done()):
            self._paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    # -- sending
    def send(self, data: bytes) -> None:
        """Queue *data*; everything queued in one loop iteration goes out in one write."""
        self._out.append(data)
        if not self._flush_scheduled:
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def send_threadsafe(self, data: bytes) -> None:
        """:meth:`send` from another thread (a worker function in an executor)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.send, data)

    def flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        transport = self.transport
        if transport is None or self.closed:
            out.clear()
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    async def drain(self) -> None:
        """Wait while the server is not reading what we send."""
        paused = self._paused
        if paused is not None and not paused.done():
            await paused

    def close(self) -> None:
        """Write what is queued, then close; ``connected`` is False from now on."""
        self.flush()
        transport = self.transport
        self.closed = True
        if transport is not None:
            transport.close()

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the connection at once; the owner's ``link_lost`` gets *exc*."""
        self._abort_reason = exc
        transport = self.transport
        if transport is not None:
            transport.abort()
        else:
            self.connection_lost(exc)
