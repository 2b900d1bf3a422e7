"""An in-process Gearman client of the core, for the HTTP front end.

Each HTTP request that submits or waits gets a :class:`LocalClient`: a real
core :class:`~geartrain.server.core.peer.Peer` whose "socket" is a
:class:`LocalTransport` decoding what the core writes to it. So an HTTP
submit is a Gearman submit, with every rule of the core (coalescing,
priorities, durability, WORK_* forwarding), and an HTTP client that goes away
is a client that disconnected (a foreground job it alone waited for is
abandoned, as for any client).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from geartrain.protocol import REQ, Decoder, FramingError, PacketType
from geartrain.server.core.server import JobServer

_T = PacketType
FINAL = frozenset({int(_T.WORK_COMPLETE), int(_T.WORK_FAIL), int(_T.WORK_EXCEPTION)})
_WORK = frozenset({int(_T.WORK_STATUS), int(_T.WORK_DATA), int(_T.WORK_WARNING)}) | FINAL
_DIRECT = frozenset({int(_T.JOB_CREATED), int(_T.ERROR), int(_T.OPTION_RES), int(_T.ATTACH_RES)})
#: (background, priority) -> the submit packet
_SUBMIT = {
    (False, "high"): _T.SUBMIT_JOB_HIGH, (False, "normal"): _T.SUBMIT_JOB, (False, "low"): _T.SUBMIT_JOB_LOW,
    (True, "high"): _T.SUBMIT_JOB_HIGH_BG, (True, "normal"): _T.SUBMIT_JOB_BG,
    (True, "low"): _T.SUBMIT_JOB_LOW_BG,
}


class LocalTransport:
    """Stands in for a socket: what the core writes is decoded and handed on."""

    def __init__(self, on_packet: Callable[[int, bytes], None]) -> None:
        self.decoder = Decoder()
        self.on_packet = on_packet
        self.closed = False

    def write(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if not isinstance(frame, FramingError):
                self.on_packet(frame[0], frame[1])

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class JobStream:
    """What one submitted (or attached) job sent, as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = b""
        self.data: list[bytes] = []
        self.warnings: list[bytes] = []
        self.numerator = 0
        self.denominator = 0
        #: the final packet: (type, payload)
        self.final: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self.created: asyncio.Future[bytes] = loop.create_future()
        #: called with each (type, payload) as it comes (server-sent events)
        self.on_packet: Callable[[int, bytes], None] | None = None

    def packet(self, ptype: int, body: bytes) -> None:
        handle, _, payload = body.partition(b"\0")
        if ptype == _T.WORK_STATUS:
            num, _, den = payload.partition(b"\0")
            self.numerator = int(num) if num.isdigit() else 0
            self.denominator = int(den) if den.isdigit() else 0
        elif ptype == _T.WORK_DATA:
            self.data.append(payload)
        elif ptype == _T.WORK_WARNING:
            self.warnings.append(payload)
        if self.on_packet is not None:
            self.on_packet(ptype, payload)
        if ptype in FINAL and not self.final.done():
            self.final.set_result((ptype, payload))


class SubmitRefused(Exception):
    """The core answered ERROR (queue full, store unavailable, bad request)."""

    def __init__(self, code: bytes, text: bytes) -> None:
        super().__init__(f"{code.decode(errors='replace')}: {text.decode(errors='replace')}")
        self.code = code.decode(errors="replace")
        self.text = text.decode(errors="replace")


class LocalClient:
    """One connection to the core from inside the process."""

    def __init__(self, core: JobServer, request_flush: Callable[[], None], host: str = "http") -> None:
        self.core = core
        self.request_flush = request_flush
        self.loop = asyncio.get_running_loop()
        self.peer = core.connect(host, -1)
        self.peer.transport = LocalTransport(self._packet)
        self.peer.exceptions = True
        self.peer.results = True
        self._pending: deque[Any] = deque()
        self._streams: dict[bytes, list[JobStream]] = {}
        self._waits: dict[bytes, list[asyncio.Future[bytes]]] = {}
        self.closed = False

    # -- requests
    def _send(self, ptype: int, *args: bytes, waiter: Any = None) -> None:
        if waiter is not None:
            self._pending.append(waiter)
        self.core.receive(self.peer, [(ptype, b"\0".join(args), REQ)])
        self.request_flush()

    async def submit(self, function: bytes, unique: bytes, payload: bytes, *, background: bool,
                     priority: str = "normal") -> JobStream:
        """Send a SUBMIT_JOB* (*priority*: high, normal or low) and wait for
        its JOB_CREATED; the stream then collects the job's WORK_* packets
        (foreground submits)."""
        stream = JobStream(self.loop)
        self._send(_SUBMIT[(background, priority)], function, unique, payload, waiter=stream)
        await stream.created
        return stream

    async def attach(self, handle: bytes) -> tuple[str, JobStream | None]:
        """ATTACH_JOB: the job's state, and a stream of its packets when it is live."""
        stream = JobStream(self.loop)
        stream.handle = handle
        self._send(_T.ATTACH_JOB, handle, waiter=stream)
        state = (await stream.created).decode()
        return state, (stream if state in ("queued", "scheduled", "running") else None)

    async def wait_result(self, handle: bytes) -> None:
        """WAIT_RESULT: returns when the job has ended (or is unknown)."""
        future: asyncio.Future[bytes] = self.loop.create_future()
        self._waits.setdefault(handle, []).append(future)
        self._send(_T.WAIT_RESULT, handle)
        await future

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.core.disconnect(self.peer)
        self.request_flush()
        for stream in [s for streams in self._streams.values() for s in streams]:
            if not stream.final.done():
                stream.final.cancel()

    # -- what the core wrote to us
    def _packet(self, ptype: int, body: bytes) -> None:
        if ptype in _WORK:
            handle = body.partition(b"\0")[0]
            streams = self._streams.get(handle)
            if streams:
                for stream in streams:
                    stream.packet(ptype, body)
                if ptype in FINAL:
                    del self._streams[handle]
        elif ptype == _T.RESULT_RES:
            handle = body.partition(b"\0")[0]
            for future in self._waits.pop(handle, []):
                if not future.done():
                    future.set_result(body)
        elif ptype in _DIRECT and self._pending:
            waiter = self._pending.popleft()
            if ptype == _T.ERROR:
                code, _, text = body.partition(b"\0")
                if not waiter.created.done():
                    waiter.created.set_exception(SubmitRefused(code, text))
                return
            if ptype == _T.JOB_CREATED:
                waiter.handle = body
                self._streams.setdefault(body, []).append(waiter)
                waiter.created.set_result(body)
            elif ptype == _T.ATTACH_RES:
                handle, _, state = body.partition(b"\0")
                if state in (b"queued", b"scheduled", b"running"):
                    self._streams.setdefault(handle, []).append(waiter)
                waiter.created.set_result(state)
