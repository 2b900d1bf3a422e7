"""A peer: the server core's view of one connection (client, worker or admin)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geartrain.server.core.function import Function
    from geartrain.server.core.job import Job


class Held:
    """A reply to *peer* that waits for the durable store: a place in the
    peer's ``held`` output, filled in by ``JobServer.stored``."""

    __slots__ = ("data", "peer")

    def __init__(self, peer: Peer) -> None:
        self.data: bytes | None = None
        self.peer = peer


class Peer:
    """State of one connection. Gearman does not separate clients from
    workers: any connection may submit, register functions and grab jobs.

    ``abilities`` maps each registered function to its CAN_DO_TIMEOUT in
    milliseconds (0 = none), in registration order. ``jobs`` are the jobs this
    peer runs as a worker, ``listening`` the foreground jobs it waits for as a
    client. ``out`` collects encoded replies until the network layer writes
    them in one go; ``transport`` belongs to the network layer and the core
    never touches it.
    """

    __slots__ = (
        "id", "fd", "host", "client_id", "out", "dirty", "closing", "closed",
        "transport", "abilities", "jobs", "listening", "exceptions", "sleeping",
        "woken_for", "rr", "held", "results",
    )

    def __init__(self, peer_id: int, host: str = "-", fd: int = -1) -> None:
        self.id = peer_id
        self.fd = fd
        self.host = host
        self.client_id = b"-"
        self.out: list[bytes] = []
        self.dirty = False
        self.closing = False
        self.closed = False
        self.transport: Any = None
        self.abilities: dict[Function, int] = {}
        self.jobs: dict[bytes, Job] = {}
        self.listening: set[Job] = set()
        self.exceptions = False
        #: opted in to geartrain's result packets (OPTION_REQ "results")
        self.results = False
        self.sleeping = False
        self.woken_for: Function | None = None
        self.rr = 0
        #: replies queued behind a JOB_CREATED that waits for the durable store
        #: (bytes, or a Held filled in when the store answers); None when
        #: nothing waits, which is almost always
        self.held: deque[bytes | Held] | None = None

    def __repr__(self) -> str:
        return f"<Peer {self.id} fd={self.fd} {self.host} {self.client_id!r}>"
