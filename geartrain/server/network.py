"""asyncio adapter: sockets in, :class:`JobServer` events out, replies written back.

The hot path is ``asyncio.Protocol`` callbacks (no streams): each read is fed
to the connection's :class:`~geartrain.protocol.Decoder`, the frames go to the
core, and the replies the core produced for *every* connection are written at
the end of the loop iteration, one ``write`` per connection per batch.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from geartrain.protocol import Decoder
from geartrain.server.core.peer import Peer
from geartrain.server.core.server import JobServer

log = logging.getLogger("geartrain.server")

#: Pause reading from a connection while this much output waits for it.
WRITE_HIGH_WATER = 1 << 20


class KeepAlive:
    """TCP keepalive settings applied to every accepted socket (-1 = system default)."""

    __slots__ = ("enabled", "idle", "interval", "count")

    def __init__(self, enabled: bool = False, idle: int = -1, interval: int = -1, count: int = -1):
        self.enabled = enabled
        self.idle = idle
        self.interval = interval
        self.count = count

    def apply(self, sock: Any) -> None:
        if not self.enabled:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in (
            (getattr(socket, "TCP_KEEPIDLE", None), self.idle),
            (getattr(socket, "TCP_KEEPINTVL", None), self.interval),
            (getattr(socket, "TCP_KEEPCNT", None), self.count),
        ):
            if opt is not None and value > 0:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)


class GearConnection(asyncio.Protocol):
    """One Gearman connection (binary packets and admin text lines)."""

    __slots__ = ("network", "core", "decoder", "peer", "transport")

    def __init__(self, network: Network) -> None:
        self.network = network
        self.core = network.core
        self.decoder = Decoder(network.max_packet_size)
        self.peer: Peer | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        fd = -1
        if sock is not None:
            fd = sock.fileno()
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.network.keepalive.apply(sock)
            except OSError as exc:  # pragma: no cover - platform specific
                log.debug("socket options: %s", exc)
        peername = transport.get_extra_info("peername")
        host = peername[0] if isinstance(peername, tuple) and peername else "-"
        if host.startswith("::ffff:"):
            host = host[7:]
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = self.core.connect(host, fd)
        peer.transport = transport
        self.peer = peer
        self.network.transports.add(transport)
        log.debug("connection %d from %s", fd, host)

    def data_received(self, data: bytes) -> None:
        frames = self.decoder.feed(data)
        if frames:
            core = self.core
            core.receive(self.peer, frames)  # type: ignore[arg-type]
            if core.store_adds and self.network.on_store_adds is not None:
                # submits waiting for the store may go now, not at the end of
                # the loop iteration: see Committer.take_early
                self.network.on_store_adds()
            if not self.network.flush_pending:  # checked here: the call is the rare case
                self.network.request_flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        network = self.network
        network.transports.discard(self.transport)
        if self.peer is not None:
            log.debug("connection %d from %s closed", self.peer.fd, self.peer.host)
            self.core.disconnect(self.peer)
            network.request_flush()

    def pause_writing(self) -> None:
        # the peer is not reading what we send: stop reading its requests
        # until it catches up, so a pipelining client cannot grow our buffers
        try:
            self.transport.pause_reading()
        except (RuntimeError, AttributeError):  # pragma: no cover - closing
            pass

    def resume_writing(self) -> None:
        try:
            self.transport.resume_reading()
        except (RuntimeError, AttributeError):  # pragma: no cover - closing
            pass


class Network:
    """Listeners, connections, the flush step and the core's timer."""

    def __init__(
        self,
        core: JobServer,
        *,
        max_packet_size: int = 64 << 20,
        max_output: int = 256 << 20,
        keepalive: KeepAlive | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.core = core
        self.max_packet_size = max_packet_size
        #: a connection with more unread output than this is a slow consumer and is dropped
        self.max_output = max(max_output, 2 * max_packet_size)
        self.keepalive = keepalive or KeepAlive()
        self.loop = loop or asyncio.get_running_loop()
        self.flush_pending = False
        self.transports: set[Any] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        #: called after a flush when the core produced store effects (the
        #: committer's ``take``); None with the memory store
        self.on_store_effects: Callable[[], None] | None = None
        #: called after a read that produced submits for the store (the
        #: committer's ``take_early``); None with the memory store
        self.on_store_adds: Callable[[], None] | None = None

    async def listen(self, hosts: Sequence[str] | None, port: int, backlog: int) -> list[tuple[str, int]]:
        """Bind the Gear port on *hosts* (all interfaces when empty); returns bound addresses."""
        server = await self.loop.create_server(
            lambda: GearConnection(self),
            host=list(hosts) if hosts else None,
            port=port,
            backlog=backlog,
            reuse_address=True,
        )
        self.servers.append(server)
        return [s.getsockname()[:2] for s in server.sockets]

    def close_listeners(self) -> None:
        for server in self.servers:
            server.close()

    def close_all(self) -> None:
        for transport in list(self.transports):
            transport.close()

    def flush(self) -> None:
        """Write every reply the core produced since the last flush."""
        self.flush_pending = False
        core = self.core
        if core.pending_results:
            core.file_results()  # (may answer WAIT_RESULT requests: before writing)
        dirty = core.dirty
        if dirty:
            core.dirty = []
            max_output = self.max_output
            for peer in dirty:
                peer.dirty = False
                if peer.closed:
                    continue
                transport = peer.transport
                out = peer.out
                if out:
                    transport.write(out[0] if len(out) == 1 else b"".join(out))
                    out.clear()
                    if transport.get_write_buffer_size() > max_output:
                        log.warning(
                            "dropping connection %d from %s: %d bytes of unread output",
                            peer.fd, peer.host, transport.get_write_buffer_size(),
                        )
                        transport.abort()
                        continue
                if peer.closing:
                    transport.close()
        if self.on_store_effects is not None and (core.store_adds or core.store_updates or core.store_dones
                                                  or core.store_results or core.store_result_drops):
            self.on_store_effects()
        self._arm_timer()

    def request_flush(self) -> None:
        """Flush at the end of this loop iteration (for events from outside a read)."""
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self.flush)

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_later(max(0.0, deadline - self.core.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.on_timer()
        self.flush()
