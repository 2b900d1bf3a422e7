"""Gearman clients: :class:`AsyncClient` (asyncio) and :class:`Client` (blocking).

Submit a job and get its result::

    async with AsyncClient(["127.0.0.1:4730"]) as client:
        print(await client.submit("reverse", b"Rasmus"))              # b'sumsaR'
        job = await client.submit_job("reverse", b"Rasmus", on_status=print)
        async for event in job.events():                               # StatusEvent(...), DataEvent(...)
            ...
        handle = await client.submit_background("resize", b"cat.png")
        print(await client.status(handle))                             # JobStatus(known=True, ...)

Several servers: a job with a unique key goes to the server its key hashes to
(so identical uniques meet and coalesce), jobs without one are spread round
robin. A server that refuses a connection is skipped (its jobs go to the next
server in order) and retried in the background with exponential back-off,
without delaying any job; one that dies while a foreground job runs fails
that job with :class:`~geartrain.errors.ConnectionLost` at once. Only when no
server is connected does a call wait for connection attempts, and it raises
:class:`~geartrain.errors.NoServerAvailable` when every server failed or is
still in its back-off.

Replies on one connection come back in request order (JOB_CREATED, ERROR,
STATUS_RES, OPTION_RES, ECHO_RES), so each server keeps a FIFO of what it
waits for; WORK_* packets are routed to their job by handle.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from geartrain.codecs import Codec, get_codec
from geartrain.errors import (
    ConnectionLost,
    GearmanError,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    QueueFull,
    ResultsUnsupported,
    ServerError,
)
from geartrain.link import Backoff, Link, request
from geartrain.protocol import RESULTS_OPTION, PacketType
from geartrain.results import JobResult, result_from_json
from geartrain.servers import ServerAddress, Servers, parse_servers
from geartrain.syncloop import LoopThread

log = logging.getLogger("geartrain.client")

_T = PacketType
_JOB_CREATED = int(_T.JOB_CREATED)
_ERROR = int(_T.ERROR)
_WORK_STATUS = int(_T.WORK_STATUS)
_WORK_DATA = int(_T.WORK_DATA)
_WORK_WARNING = int(_T.WORK_WARNING)
_WORK_COMPLETE = int(_T.WORK_COMPLETE)
_WORK_FAIL = int(_T.WORK_FAIL)
_WORK_EXCEPTION = int(_T.WORK_EXCEPTION)
_RESULT_RES = int(_T.RESULT_RES)
_ATTACH_RES = int(_T.ATTACH_RES)
_REPLIES = frozenset({_JOB_CREATED, _ERROR, int(_T.STATUS_RES), int(_T.STATUS_RES_UNIQUE),
                      int(_T.OPTION_RES), int(_T.ECHO_RES), _RESULT_RES, _ATTACH_RES})
#: states of a job that has not ended (geartrain.results)
_LIVE = frozenset({b"queued", b"scheduled", b"running"})
_WORK = frozenset({_WORK_STATUS, _WORK_DATA, _WORK_WARNING, _WORK_COMPLETE, _WORK_FAIL, _WORK_EXCEPTION})


class Priority(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PriorityLike = Priority | str
Payload = Any  # bytes/str by default; whatever the client's codec accepts otherwise
Unique = str | bytes | None
When = float | int | datetime.datetime | None

_FOREGROUND = {Priority.HIGH: _T.SUBMIT_JOB_HIGH, Priority.NORMAL: _T.SUBMIT_JOB,
               Priority.LOW: _T.SUBMIT_JOB_LOW}
_BACKGROUND = {Priority.HIGH: _T.SUBMIT_JOB_HIGH_BG, Priority.NORMAL: _T.SUBMIT_JOB_BG,
               Priority.LOW: _T.SUBMIT_JOB_LOW_BG}


def _priority(value: PriorityLike) -> Priority:
    try:
        return Priority(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError(f"priority must be 'high', 'normal' or 'low', not {value!r}") from None


def _bytes(value: str | bytes, what: str) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    if b"\0" in data:
        raise ValueError(f"{what} must not contain NUL bytes")
    return data


def _epoch(when: When) -> int:
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.astimezone()
        return int(when.timestamp())
    return int(when or 0)


def unique_hash(unique: bytes) -> int:
    """Jenkins one-at-a-time hash (what libgearman's hashkit uses by default)."""
    h = 0
    for byte in unique:
        h = (h + byte) & 0xFFFFFFFF
        h = (h + (h << 10)) & 0xFFFFFFFF
        h ^= h >> 6
    h = (h + (h << 3)) & 0xFFFFFFFF
    h ^= h >> 11
    h = (h + (h << 15)) & 0xFFFFFFFF
    return h


# --------------------------------------------------------------------- values

@dataclass(frozen=True, slots=True)
class Request:
    """One job to submit, for the ``*_many`` and :meth:`AsyncClient.run` calls."""

    function: str
    payload: Payload = b""
    unique: Unique = None
    priority: PriorityLike = Priority.NORMAL
    run_at: When = None  #: background only: run at this time (SUBMIT_JOB_EPOCH)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What GET_STATUS says about a handle."""

    handle: str
    known: bool
    running: bool
    numerator: int
    denominator: int

    @property
    def progress(self) -> float | None:
        """numerator / denominator, or None when there is no denominator."""
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True, slots=True)
class UniqueStatus:
    """What GET_STATUS_UNIQUE says about a unique key."""

    unique: str
    known: bool
    running: bool
    numerator: int
    denominator: int
    clients: int  #: foreground clients waiting for the job


@dataclass(frozen=True, slots=True)
class StatusEvent:
    numerator: int
    denominator: int


@dataclass(frozen=True, slots=True)
class DataEvent:
    data: bytes


@dataclass(frozen=True, slots=True)
class WarningEvent:
    data: bytes


Event = StatusEvent | DataEvent | WarningEvent
_R = TypeVar("_R")


def _status_numbers(numerator: bytes, denominator: bytes) -> tuple[int, int]:
    try:
        return int(numerator), int(denominator)
    except ValueError:
        return 0, 0


# ----------------------------------------------------------------------- jobs

@dataclass(eq=False)
class Job:
    """A foreground job submitted by this client: await it for the result.

    ``await job`` (or ``await job.wait(timeout)``) returns the decoded result
    or raises :class:`JobFailed`, :class:`JobException`, :class:`JobTimeout`
    or :class:`ConnectionLost`. ``async for event in job.events()`` yields
    every status, data and warning update as it arrives (from the start,
    whenever iteration begins) and ends when the job does.
    """

    function: str
    unique: str
    priority: Priority
    handle: str | None = None
    server: ServerAddress | None = None
    numerator: int = 0
    denominator: int = 0
    history: list[Event] = field(default_factory=list)
    on_status: Callable[[Job, int, int], Any] | None = None
    on_data: Callable[[Job, bytes], Any] | None = None
    on_warning: Callable[[Job, bytes], Any] | None = None
    _codec: Codec | None = field(default=None, repr=False)
    _created: asyncio.Future[str] | None = field(default=None, repr=False)
    _result: asyncio.Future[Any] | None = field(default=None, repr=False)
    _wakeup: asyncio.Future[None] | None = field(default=None, repr=False)
    _server: _Server | None = field(default=None, repr=False)

    def _init(self, loop: asyncio.AbstractEventLoop, codec: Codec, server: _Server) -> None:
        self._codec = codec
        self._server = server
        self._created = loop.create_future()
        self._result = loop.create_future()

    # -- replies from the server
    def reply(self, ptype: int, body: bytes) -> None:
        assert self._created is not None
        if ptype == _JOB_CREATED:
            self.handle = body.decode("utf-8", "surrogateescape")
            # route WORK_* packets to this job from now on -- synchronously: they
            # may follow the JOB_CREATED in the very same read
            if self._server is not None and not self._result.done():  # type: ignore[union-attr]
                self._server.jobs.setdefault(body, []).append(self)
            if not self._created.done():
                self._created.set_result(self.handle)
        else:
            self._fail(_server_error(body, self.server))

    def _work(self, ptype: int, body: bytes) -> bool:
        """A WORK_* packet for this job; True when it ended the job."""
        if ptype == _WORK_COMPLETE:
            result = body[body.find(b"\0") + 1:] if b"\0" in body else b""
            assert self._result is not None and self._codec is not None
            if not self._result.done():
                try:
                    self._result.set_result(self._codec.decode(result))
                except Exception as exc:  # a codec that cannot decode the result
                    self._result.set_exception(exc)
            self._wake()
            return True
        if ptype == _WORK_FAIL:
            self._fail(JobFailed(f"job {self.handle} failed", self.handle))
            return True
        if ptype == _WORK_EXCEPTION:
            payload = body[body.find(b"\0") + 1:] if b"\0" in body else b""
            self._fail(JobException(payload, self.handle))
            return True
        event: Event
        if ptype == _WORK_STATUS:
            parts = body.split(b"\0", 2)
            n, d = _status_numbers(parts[1], parts[2]) if len(parts) == 3 else (0, 0)
            self.numerator, self.denominator = n, d
            event = StatusEvent(n, d)
            callback: Callable[..., Any] | None = self.on_status
            args: tuple[Any, ...] = (self, n, d)
        else:
            data = body[body.find(b"\0") + 1:] if b"\0" in body else b""
            if ptype == _WORK_DATA:
                event, callback = DataEvent(data), self.on_data
            else:
                event, callback = WarningEvent(data), self.on_warning
            args = (self, data)
        self.history.append(event)
        self._wake()
        if callback is not None:
            try:
                callback(*args)
            except Exception:  # a caller's callback must not break the connection
                log.exception("callback for job %s raised", self.handle)
        return False

    def _fail(self, exc: BaseException) -> None:
        for fut in (self._created, self._result):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: a caller may await only one of the two steps
        self._wake()

    def _abandon(self, exc: BaseException) -> None:
        """The caller gave up (timeout): end the job with *exc* and stop routing
        its packets. A JOB_CREATED still on its way will not register it."""
        self._fail(exc)
        if self._server is not None:
            self._server.forget(self)

    def _wake(self) -> None:
        w = self._wakeup
        if w is not None:
            self._wakeup = None
            if not w.done():
                w.set_result(None)

    def _changed(self) -> asyncio.Future[None]:
        """A future resolved at the next event or the end of the job, shared by
        every consumer waiting for it (several may iterate the events at once)."""
        w = self._wakeup
        if w is None or w.done():
            w = self._wakeup = asyncio.get_running_loop().create_future()
        return w

    # -- for callers
    @property
    def data(self) -> list[bytes]:
        """Every WORK_DATA chunk received so far."""
        return [e.data for e in self.history if isinstance(e, DataEvent)]

    @property
    def warnings(self) -> list[bytes]:
        return [e.data for e in self.history if isinstance(e, WarningEvent)]

    def done(self) -> bool:
        return self._result is not None and self._result.done()

    def result(self) -> Any:
        """The result of a finished job (raises like :meth:`wait`)."""
        assert self._result is not None
        return self._result.result()

    async def wait(self, timeout: float | None = None) -> Any:
        """The decoded result, waiting up to *timeout* seconds."""
        assert self._result is not None
        if timeout is None or self._result.done():
            return await asyncio.shield(self._result)
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), timeout)
        except TimeoutError:
            raise self._timeout(timeout) from None

    def _timeout(self, timeout: float | None) -> JobTimeout:
        return JobTimeout(f"job {self.handle or self.function!r} did not finish within {timeout}s",
                          self.handle)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.wait().__await__()

    async def events(self) -> AsyncIterator[Event]:
        """Status, data and warning events in arrival order, until the job ends."""
        seen = 0
        while True:
            finished = self.done()
            while seen < len(self.history):
                seen += 1
                yield self.history[seen - 1]
            if finished:
                return
            if seen == len(self.history) and not self.done():
                await asyncio.shield(self._changed())


def _server_error(body: bytes, server: ServerAddress | None) -> ServerError:
    code, _, text = body.partition(b"\0")
    c, t = code.decode("utf-8", "replace"), text.decode("utf-8", "replace")
    cls = QueueFull if c == "QUEUE_ERROR" and "full" in t else ServerError
    return cls(c, t, str(server) if server else None)


class _Reply:
    """A waiter for one direct reply (STATUS_RES, ECHO_RES, OPTION_RES, ...)."""

    __slots__ = ("future", "server")

    def __init__(self, loop: asyncio.AbstractEventLoop, server: ServerAddress) -> None:
        self.future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self.server = server

    def reply(self, ptype: int, body: bytes) -> None:
        if not self.future.done():
            if ptype == _ERROR:
                self.future.set_exception(_server_error(body, self.server))
            else:
                self.future.set_result((ptype, body))

    def _fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
            self.future.exception()


class _Attach(_Reply):
    """The reply to ATTACH_JOB: a live job starts routing its WORK_* packets
    to *job* at once (they may follow the ATTACH_RES in the very same read)."""

    __slots__ = ("job", "srv")

    def __init__(self, loop: asyncio.AbstractEventLoop, srv: _Server, job: Job) -> None:
        super().__init__(loop, srv.address)
        self.srv = srv
        self.job = job

    def reply(self, ptype: int, body: bytes) -> None:
        if ptype == _ATTACH_RES:
            handle, _, state = body.partition(b"\0")
            if state in _LIVE:
                self.job.handle = handle.decode("utf-8", "surrogateescape")
                self.srv.jobs.setdefault(handle, []).append(self.job)
                assert self.job._created is not None
                self.job._created.set_result(self.job.handle)
        super().reply(ptype, body)


class _Batch:
    """Collects the JOB_CREATED replies of many pipelined background submits."""

    __slots__ = ("results", "remaining", "future", "server", "positions", "_next")

    def __init__(self, loop: asyncio.AbstractEventLoop, results: list[Any], positions: list[int],
                 server: ServerAddress) -> None:
        self.results = results
        self.positions = positions
        self.remaining = len(positions)
        self.future: asyncio.Future[None] = loop.create_future()
        self.server = server
        self._next = 0

    def reply(self, ptype: int, body: bytes) -> None:
        i = self.positions[self._next]
        self._next += 1
        if ptype == _JOB_CREATED:
            self.results[i] = body.decode("utf-8", "surrogateescape")
        else:
            self.results[i] = _server_error(body, self.server)
        self.remaining -= 1
        if not self.remaining and not self.future.done():
            self.future.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        for i in self.positions[self._next:]:
            self.results[i] = exc
        self._next = len(self.positions)
        self.remaining = 0
        if not self.future.done():
            self.future.set_result(None)


class _Forgotten:
    """Stands in for a forgotten job that shares its handle with other jobs of
    the same connection; the packets meant for it go nowhere."""

    __slots__ = ()

    def _work(self, ptype: int, body: bytes) -> bool:
        return ptype in (_WORK_COMPLETE, _WORK_FAIL, _WORK_EXCEPTION)

    def _fail(self, exc: BaseException) -> None:
        pass


_FORGOTTEN = _Forgotten()


# -------------------------------------------------------------------- servers

class _Server:
    """A client's connection state for one job server (the Link's owner)."""

    def __init__(self, client: AsyncClient, address: ServerAddress) -> None:
        self.client = client
        self.address = address
        self.link: Link | None = None
        self.backoff = Backoff()
        self.pending: deque[Any] = deque()  # waiters for direct replies, in request order
        self.jobs: dict[bytes, list[Job | _Forgotten]] = {}  # foreground jobs by handle
        self._rr: dict[bytes, int] = {}
        self.connecting: asyncio.Future[None] | None = None
        self.retry: asyncio.Task[None] | None = None  #: a background reconnect, scheduled or running
        self.last_error: str = ""
        #: the link on which the server accepted OPTION_REQ "results"
        self.results_link: Link | None = None

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.connected

    async def connect(self) -> None:
        """Open the connection (and greet the server); raises if it cannot."""
        if self.connected:
            return
        if self.connecting is not None:
            return await asyncio.shield(self.connecting)
        self.connecting = connecting = asyncio.get_running_loop().create_future()
        link = Link(self.address, self)
        try:
            await link.open(self.client.connect_timeout)
            if self.client._closed:
                link.close()
                raise GearmanError("client is closed")
            self.link = link
            await self.client._greet(self)
        except BaseException as exc:
            self.backoff.failed(time.monotonic())
            self.last_error = str(exc) or type(exc).__name__
            if self.link is link:
                # fail (and drop) the greeting's waiter and anything sent meanwhile:
                # a stale waiter left in `pending` would take the next connection's replies
                self.link_lost(link, exc)
            link.abort()
            if isinstance(exc, asyncio.CancelledError):  # others waiting must not be cancelled
                exc = ConnectionLost(f"connecting to {self.address} was cancelled")
            connecting.set_exception(exc)
            connecting.exception()
            raise
        else:
            self.backoff.succeeded()
            connecting.set_result(None)
        finally:
            self.connecting = None

    async def try_connect(self) -> bool:
        """:meth:`connect`, True when it worked (the reason is kept in ``last_error``)."""
        try:
            await self.connect()
        except (GearmanError, OSError) as exc:  # TimeoutError is an OSError
            log.debug("%s unavailable: %s", self.address, exc)
            return False
        return True

    def reconnect_soon(self) -> None:
        """Retry a server that is down in the background, once its back-off allows."""
        if (self.connecting is None and self.retry is None and not self.client._closed
                and self.backoff.ready(time.monotonic())):
            self.retry = self.client._background(self._retry())

    async def _retry(self) -> None:
        try:
            await self.try_connect()
        finally:
            self.retry = None

    def send(self, data: bytes, waiter: Any) -> None:
        assert self.link is not None
        self.pending.append(waiter)
        self.link.send(data)

    # -- LinkOwner
    def packet_received(self, link: Link, ptype: int, body: bytes) -> None:
        if ptype in _WORK:
            i = body.find(b"\0")
            handle = body if i < 0 else body[:i]
            jobs = self.jobs.get(handle)
            if not jobs:
                return  # a job we stopped waiting for (timed out)
            if ptype in (_WORK_COMPLETE, _WORK_FAIL, _WORK_EXCEPTION):
                job = jobs.pop(0)
                if not jobs:
                    del self.jobs[handle]
                    self._rr.pop(handle, None)
                job._work(ptype, body)
            elif len(jobs) == 1:
                jobs[0]._work(ptype, body)
            else:
                # a handle this connection submitted several times gets each
                # packet once per submit: hand the copies out in turn
                n = self._rr.get(handle, 0)
                self._rr[handle] = n + 1
                jobs[n % len(jobs)]._work(ptype, body)
        elif ptype in _REPLIES:
            if self.pending:
                self.pending.popleft().reply(ptype, body)
            else:
                log.warning("unexpected packet %s from %s", ptype, self.address)
        # NOOP and anything else a client never asked for is ignored

    def link_lost(self, link: Link, exc: BaseException | None) -> None:
        if link is not self.link:
            return
        self.link = None
        reason = f": {exc}" if exc else ""
        lost = ConnectionLost(f"connection to {self.address} lost{reason}")
        pending, self.pending = self.pending, deque()
        jobs, self.jobs = self.jobs, {}
        self._rr.clear()
        for waiter in pending:
            waiter._fail(lost)
        for group in jobs.values():
            for job in group:
                job._fail(lost)

    def forget(self, job: Job) -> None:
        """Stop routing packets to *job* (its caller gave up waiting)."""
        if job.handle is None:
            return
        key = job.handle.encode("utf-8", "surrogateescape")
        group = self.jobs.get(key)
        if group and job in group:
            if any(j is not job and not isinstance(j, _Forgotten) for j in group):
                # others share the handle: the server still sends every packet once per
                # submit, so a stand-in must take this job's copies (or others get two)
                group[group.index(job)] = _FORGOTTEN
            else:
                del self.jobs[key]
                self._rr.pop(key, None)


# --------------------------------------------------------------------- client

class AsyncClient:
    """An asyncio Gearman client for one or many job servers.

    *servers*: ``"host:port"`` strings (or one string with several, comma
    separated), default ``$GEARMAN_SERVERS`` or ``127.0.0.1:4730``.
    *codec*: how payloads and results are encoded (default bytes; ``"str"``,
    ``"json"`` or a :class:`~geartrain.codecs.Codec`). *exceptions*: ask the
    servers to forward worker exceptions (WORK_EXCEPTION), so they arrive as
    :class:`JobException` with the worker's payload.
    """

    def __init__(
        self,
        servers: Servers = None,
        *,
        codec: Codec | str | None = None,
        client_id: str | None = None,
        exceptions: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        self.addresses = parse_servers(servers)
        self.codec = get_codec(codec)
        self.client_id = client_id
        self._client_id = _bytes(client_id, "client_id") if client_id else b""
        self.exceptions = exceptions
        self.connect_timeout = connect_timeout
        self._servers = [_Server(self, a) for a in self.addresses]
        self._rr = itertools.count()
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; jobs still waiting fail with ConnectionLost."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for srv in self._servers:
            if srv.link is not None:
                srv.link.close()
                srv.link_lost(srv.link, None)

    def _background(self, coro: Coroutine[Any, Any, _R]) -> asyncio.Task[_R]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def connect(self) -> list[ServerAddress]:
        """Connect to every server now (otherwise connections open on first use);
        returns the ones that answered. Raises NoServerAvailable if none did."""
        results = await asyncio.gather(*(s.connect() for s in self._servers), return_exceptions=True)
        ok = [s.address for s, r in zip(self._servers, results, strict=True)
              if not isinstance(r, BaseException)]
        if not ok:
            raise NoServerAvailable("no job server reachable: " + "; ".join(str(r) for r in results))
        return ok

    async def _greet(self, srv: _Server) -> None:
        """First packets on a new connection: options and client id."""
        assert srv.link is not None
        loop = asyncio.get_running_loop()
        if self._client_id:
            srv.link.send(request(_T.SET_CLIENT_ID, self._client_id))
        if self.exceptions:
            waiter = _Reply(loop, srv.address)
            srv.send(request(_T.OPTION_REQ, b"exceptions"), waiter)
            try:
                await asyncio.wait_for(waiter.future, self.connect_timeout)
            except ServerError:
                log.info("%s does not support the exceptions option", srv.address)
            except TimeoutError:
                raise NoServerAvailable(f"{srv.address} accepted the connection but did not answer "
                                        f"within {self.connect_timeout}s") from None

    # -- choosing a server
    def _order(self, unique: bytes) -> list[_Server]:
        servers = self._servers
        n = len(servers)
        if n == 1:
            return servers
        start = unique_hash(unique) % n if unique else next(self._rr) % n
        return servers[start:] + servers[:start]

    async def _server_for(self, unique: bytes) -> _Server:
        """The server for a job: the first connected one in the key's order.

        Servers ahead of it that are down are retried in the background once
        their back-off allows (the job does not wait for them). When no server
        is connected, those whose back-off allows are tried at once, and the
        first in order that connects is used -- so a fresh client still sends
        a unique key to the server it hashes to.
        """
        if self._closed:
            raise GearmanError("client is closed")
        servers = self._servers
        if len(servers) == 1:
            if servers[0].connected:
                return servers[0]
            order = servers
        else:
            order = self._order(unique)
            for i, srv in enumerate(order):
                if srv.connected:
                    for down in order[:i]:
                        down.reconnect_soon()
                    return srv
        now = time.monotonic()
        candidates = [s for s in order if s.connecting is not None or s.backoff.ready(now)]
        attempts = [asyncio.ensure_future(s.try_connect()) for s in candidates]
        try:
            for srv, attempt in zip(candidates, attempts, strict=True):
                if await attempt:
                    return srv
        finally:
            for attempt in attempts:
                if not attempt.done():  # a later server still connecting: let it finish
                    self._tasks.add(attempt)
                    attempt.add_done_callback(self._tasks.discard)
        if self._closed:
            raise GearmanError("client is closed")
        raise self._unavailable()

    def _unavailable(self) -> NoServerAvailable:
        now = time.monotonic()
        reasons = [f"{s.address}: {s.last_error or 'not connected'}"
                   + (f" (retrying in {s.backoff.not_before - now:.1f}s)" if not s.backoff.ready(now) else "")
                   for s in self._servers]
        return NoServerAvailable("no job server available: " + "; ".join(reasons))

    # -- submitting
    def _packet(self, function: str, payload: Payload, unique: bytes, priority: Priority,
                background: bool, run_at: When) -> bytes:
        fn = _bytes(function, "function name")
        if not fn:
            raise ValueError("function name must not be empty")
        data = self.codec.encode(payload)
        if run_at is not None:
            if not background:
                raise ValueError("run_at is only for background jobs")
            if priority is not Priority.NORMAL:
                raise ValueError("a job with run_at has normal priority (SUBMIT_JOB_EPOCH)")
            return request(_T.SUBMIT_JOB_EPOCH, b"%s\0%s\0%d\0%s" % (fn, unique, _epoch(run_at), data))
        ptype = (_BACKGROUND if background else _FOREGROUND)[priority]
        return request(ptype, b"".join((fn, b"\0", unique, b"\0", data)))

    async def submit_job(
        self,
        function: str,
        payload: Payload = b"",
        *,
        unique: Unique = None,
        priority: PriorityLike = Priority.NORMAL,
        on_status: Callable[[Job, int, int], Any] | None = None,
        on_data: Callable[[Job, bytes], Any] | None = None,
        on_warning: Callable[[Job, bytes], Any] | None = None,
    ) -> Job:
        """Submit a foreground job; returns once the server created it (the
        :class:`Job` has its handle). Await the job for its result."""
        jobs = await self._submit_jobs(
            [Request(function, payload, unique, priority)], on_status, on_data, on_warning)
        job = jobs[0]
        assert job._created is not None
        await job._created
        return job

    async def submit(
        self,
        function: str,
        payload: Payload = b"",
        *,
        unique: Unique = None,
        priority: PriorityLike = Priority.NORMAL,
        timeout: float | None = None,
        on_status: Callable[[Job, int, int], Any] | None = None,
        on_data: Callable[[Job, bytes], Any] | None = None,
        on_warning: Callable[[Job, bytes], Any] | None = None,
    ) -> Any:
        """Submit a foreground job and return its result (decoded by the codec).

        *timeout* covers the whole job, from the submit on; when it expires the
        client forgets the job (it may still run on the server) and raises
        :class:`JobTimeout`."""
        (job,) = await self._submit_jobs(
            [Request(function, payload, unique, priority)], on_status, on_data, on_warning)
        try:
            return await job.wait(timeout)
        except JobTimeout as exc:
            job._abandon(exc)
            raise

    async def submit_jobs(self, requests: Iterable[Request]) -> list[Job]:
        """Submit many foreground jobs at once, pipelined (PHP's addTask);
        returns when all are created. Await each :class:`Job` for its result."""
        jobs = await self._submit_jobs(list(requests))
        await asyncio.gather(*(j._created for j in jobs if j._created is not None))
        return jobs

    async def run(self, requests: Iterable[Request], *, timeout: float | None = None,
                  return_exceptions: bool = False) -> list[Any]:
        """Submit many foreground jobs at once and gather their results in order
        (PHP's addTask + runTasks). With *return_exceptions*, a failed job's
        exception takes its place in the list instead of being raised."""
        jobs = await self._submit_jobs(list(requests))
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(j.wait() for j in jobs), return_exceptions=return_exceptions),
                timeout)
        except TimeoutError:
            exc = JobTimeout(f"jobs did not finish within {timeout}s")
            for job in jobs:
                if not job.done():
                    job._abandon(job._timeout(timeout))
            raise exc from None

    def _encode(self, requests: Sequence[Request], background: bool) -> tuple[list[bytes], list[bytes]]:
        """The unique key and packet of every request; all are checked before
        anything is sent or connected."""
        make = self._packet
        uniques: list[bytes] = []
        packets: list[bytes] = []
        for req in requests:
            unique = _bytes(req.unique, "unique") if req.unique is not None else b""
            uniques.append(unique)
            packets.append(make(req.function, req.payload, unique, _priority(req.priority), background,
                                req.run_at))
        return uniques, packets

    async def _route(self, uniques: Sequence[bytes]) -> dict[_Server, list[int]]:
        """The server of each request (by its unique key), as positions per server."""
        if len(self._servers) == 1:
            return {await self._server_for(b""): list(range(len(uniques)))} if uniques else {}
        routes: dict[_Server, list[int]] = {}
        for i, unique in enumerate(uniques):
            routes.setdefault(await self._server_for(unique), []).append(i)
        return routes

    @staticmethod
    def _packets_of(packets: list[bytes], positions: list[int]) -> bytes:
        if len(positions) == len(packets):  # one server gets them all, in order
            return b"".join(packets)
        return b"".join([packets[i] for i in positions])

    async def _submit_jobs(
        self,
        requests: Sequence[Request],
        on_status: Callable[[Job, int, int], Any] | None = None,
        on_data: Callable[[Job, bytes], Any] | None = None,
        on_warning: Callable[[Job, bytes], Any] | None = None,
    ) -> list[Job]:
        loop = asyncio.get_running_loop()
        uniques, packets = self._encode(requests, background=False)
        jobs: list[Job] = [None] * len(packets)  # type: ignore[list-item]  # all set below
        for srv, positions in (await self._route(uniques)).items():
            for i in positions:
                req = requests[i]
                job = Job(req.function, uniques[i].decode("utf-8", "surrogateescape"),
                          _priority(req.priority), server=srv.address, on_status=on_status,
                          on_data=on_data, on_warning=on_warning)
                job._init(loop, self.codec, srv)
                jobs[i] = job
            if not srv.connected:
                lost = ConnectionLost(f"connection to {srv.address} lost")
                for i in positions:
                    jobs[i]._fail(lost)
                continue
            assert srv.link is not None
            srv.pending.extend(jobs[i] for i in positions)
            srv.link.send(self._packets_of(packets, positions))
            await srv.link.drain()
        return jobs

    async def submit_background(
        self,
        function: str,
        payload: Payload = b"",
        *,
        unique: Unique = None,
        priority: PriorityLike = Priority.NORMAL,
        run_at: When = None,
    ) -> str:
        """Submit a background job; returns its handle as soon as the server has it.
        *run_at* (epoch seconds or a datetime) delays it (SUBMIT_JOB_EPOCH)."""
        (handle,) = await self.submit_background_many(
            [Request(function, payload, unique, priority, run_at)])
        return handle  # type: ignore[no-any-return]

    async def submit_background_many(
        self, requests: Iterable[Request], *, return_exceptions: bool = False
    ) -> list[Any]:
        """Submit many background jobs in one pipelined write per server; returns
        their handles in order. A refused job raises (or, with
        *return_exceptions*, leaves its exception in the list)."""
        loop = asyncio.get_running_loop()
        uniques, packets = self._encode(list(requests), background=True)
        results: list[Any] = [None] * len(packets)
        batches = []
        for srv, positions in (await self._route(uniques)).items():
            batch = _Batch(loop, results, positions, srv.address)
            if not srv.connected:
                batch._fail(ConnectionLost(f"connection to {srv.address} lost"))
                continue
            assert srv.link is not None
            srv.pending.extend(itertools.repeat(batch, len(positions)))
            srv.link.send(self._packets_of(packets, positions))
            batches.append(batch)
            await srv.link.drain()
        for batch in batches:
            await batch.future
        if not return_exceptions:
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return results

    # -- status
    async def status(self, handle: str) -> JobStatus:
        """GET_STATUS of one handle (asked of every server when there are several)."""
        return (await self.statuses([handle]))[0]

    async def statuses(self, handles: Iterable[str]) -> list[JobStatus]:
        """GET_STATUS of many handles in one round trip per server."""
        wanted = list(handles)
        if not wanted:
            return []
        packets = b"".join(request(_T.GET_STATUS, _bytes(h, "handle")) for h in wanted)
        servers = await self._connected_servers()
        loop = asyncio.get_running_loop()
        per_server = []
        for srv in servers:
            waiters = [_Reply(loop, srv.address) for _ in wanted]
            assert srv.link is not None
            srv.pending.extend(waiters)
            srv.link.send(packets)
            per_server.append(waiters)
        answers: list[JobStatus | None] = [None] * len(wanted)
        for waiters in per_server:
            for i, w in enumerate(waiters):
                try:
                    _, body = await w.future
                except ConnectionLost:
                    continue
                parts = body.split(b"\0")
                if len(parts) < 5:
                    continue
                st = JobStatus(wanted[i], parts[1] == b"1", parts[2] == b"1",
                               *_status_numbers(parts[3], parts[4]))
                if answers[i] is None or (st.known and not answers[i].known):  # type: ignore[union-attr]
                    answers[i] = st
        return [a or JobStatus(h, False, False, 0, 0) for h, a in zip(wanted, answers, strict=True)]

    async def status_unique(self, unique: str | bytes) -> UniqueStatus:
        """GET_STATUS_UNIQUE: the job with this unique key, on the server it hashes to."""
        key = _bytes(unique, "unique")
        srv = await self._server_for(key)
        waiter = _Reply(asyncio.get_running_loop(), srv.address)
        srv.send(request(_T.GET_STATUS_UNIQUE, key), waiter)
        _, body = await waiter.future
        parts = body.split(b"\0")
        n, d = _status_numbers(parts[3], parts[4]) if len(parts) >= 5 else (0, 0)
        clients = int(parts[5]) if len(parts) >= 6 and parts[5].isdigit() else 0
        return UniqueStatus(key.decode("utf-8", "surrogateescape"), parts[1:2] == [b"1"],
                            parts[2:3] == [b"1"], n, d, clients)

    async def echo(self, data: bytes = b"ping") -> bytes:
        """ECHO_REQ round trip to one server (a liveness check)."""
        srv = await self._server_for(b"")
        waiter = _Reply(asyncio.get_running_loop(), srv.address)
        srv.send(request(_T.ECHO_REQ, data), waiter)
        _, body = await waiter.future
        return body

    # -- results (geartrain servers; docs/protocol-extensions.md)
    async def result(self, handle: str, *, wait: bool = False,
                     timeout: float | None = None) -> JobResult | None:
        """What the server knows of *handle*: the kept result of an ended job
        (completed, failed, exception, cancelled: its payload, data, warnings,
        last status, times and attempts), or a job still queued or running;
        None when no server knows it. With *wait*, a live job is waited for
        (at most *timeout* seconds, then :class:`JobTimeout`) and its final
        result returned. Needs a geartrain server (gearmand keeps no results)."""
        key = _bytes(handle, "handle")
        if wait:
            job = await self.attach(handle)
            if job is not None:
                try:
                    await job.wait(timeout)
                except (JobFailed, JobException):
                    pass  # ended all the same: the result says how
        return await self._ask_all(request(_T.GET_RESULT, key))

    async def result_unique(self, unique: str | bytes, function: str | None = None) -> JobResult | None:
        """As :meth:`result`, by unique key (in *function*, or in any): the live
        job with it, else the latest kept result; None when none is known."""
        key = _bytes(unique, "unique")
        name = _bytes(function, "function") if function is not None else b""
        return await self._ask_all(request(_T.GET_RESULT_UNIQUE, name + b"\0" + key))

    async def attach(self, handle: str) -> Job | None:
        """Follow a live job (background ones too) as if this client had
        submitted it: the returned :class:`Job` gets its status, data and
        warnings from now on and ends with it. None when no server runs or
        queues a job with that handle (see :meth:`result` for ended ones)."""
        key = _bytes(handle, "handle")
        loop = asyncio.get_running_loop()
        servers = await self._connected_servers()
        attached: list[tuple[_Server, Job, _Attach]] = []
        for srv in servers:
            await self._results_option(srv)
            job = Job("", "", Priority.NORMAL, server=srv.address)
            job._init(loop, self.codec, srv)
            waiter = _Attach(loop, srv, job)
            srv.send(request(_T.ATTACH_JOB, key), waiter)
            attached.append((srv, job, waiter))
        found: Job | None = None
        for srv, job, waiter in attached:
            try:
                await waiter.future
            except ConnectionLost:
                continue
            if job._created is not None and job._created.done() and found is None:
                found = job
            elif job._created is not None and job._created.done():
                srv.forget(job)  # the same handle live on two servers: follow the first
        return found

    async def _results_option(self, srv: _Server) -> None:
        """OPTION_REQ "results", once per connection, before any result packet."""
        if srv.results_link is not None and srv.results_link is srv.link:
            return
        waiter = _Reply(asyncio.get_running_loop(), srv.address)
        srv.send(request(_T.OPTION_REQ, RESULTS_OPTION), waiter)
        try:
            await waiter.future
        except ServerError as exc:
            raise ResultsUnsupported(
                f"{srv.address} keeps no results (it refused OPTION_REQ results: {exc}); "
                "results need a geartrain server") from None
        srv.results_link = srv.link

    async def _ask_all(self, packet: bytes) -> JobResult | None:
        """Send a GET_RESULT* to every connected server; the first that knows wins."""
        loop = asyncio.get_running_loop()
        servers = await self._connected_servers()
        waiters = []
        for srv in servers:
            await self._results_option(srv)
            waiter = _Reply(loop, srv.address)
            srv.send(packet, waiter)
            waiters.append(waiter)
        found: JobResult | None = None
        for waiter in waiters:
            try:
                _, body = await waiter.future
            except ConnectionLost:
                continue
            _, state, doc = body.split(b"\0", 2)
            if state != b"unknown" and found is None:
                found = result_from_json(json.loads(doc))
        return found

    async def _connected_servers(self) -> list[_Server]:
        """Every server that is connected, after (re)trying those whose back-off allows."""
        if self._closed:
            raise GearmanError("client is closed")
        now = time.monotonic()
        retry = [s for s in self._servers
                 if not s.connected and (s.connecting is not None or s.backoff.ready(now))]
        if retry:
            await asyncio.gather(*(s.try_connect() for s in retry))
        servers = [s for s in self._servers if s.connected]
        if not servers:
            raise self._unavailable()
        return servers


# ------------------------------------------------------------------- blocking

class Client:
    """The blocking client: :class:`AsyncClient`'s API as plain calls.

    It runs an :class:`AsyncClient` on a private event-loop thread, so one
    ``Client`` may be shared by many threads. Callbacks (``on_status`` and
    friends) run on that loop thread; keep them short.
    """

    def __init__(
        self,
        servers: Servers = None,
        *,
        codec: Codec | str | None = None,
        client_id: str | None = None,
        exceptions: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        self._async = AsyncClient(servers, codec=codec, client_id=client_id, exceptions=exceptions,
                                  connect_timeout=connect_timeout)
        self._closed = False
        self._thread = LoopThread("geartrain-client")  # last: nothing above may leak the thread

    @property
    def aio(self) -> AsyncClient:
        """The underlying :class:`AsyncClient` (use it only on the client's loop)."""
        return self._async

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._async.close(), 10)
        finally:
            self._thread.stop()

    def _run(self, coro: Coroutine[Any, Any, _R], timeout: float | None = None) -> _R:
        if self._closed:
            coro.close()
            raise GearmanError("client is closed")
        return self._thread.run(coro, timeout)

    def connect(self) -> list[ServerAddress]:
        return self._run(self._async.connect())

    def submit(self, function: str, payload: Payload = b"", *, unique: Unique = None,
               priority: PriorityLike = Priority.NORMAL, timeout: float | None = None,
               on_status: Callable[[Job, int, int], Any] | None = None,
               on_data: Callable[[Job, bytes], Any] | None = None,
               on_warning: Callable[[Job, bytes], Any] | None = None) -> Any:
        """Submit a foreground job and return its result."""
        return self._run(self._async.submit(
            function, payload, unique=unique, priority=priority, timeout=timeout,
            on_status=on_status, on_data=on_data, on_warning=on_warning))

    def submit_job(self, function: str, payload: Payload = b"", *, unique: Unique = None,
                   priority: PriorityLike = Priority.NORMAL,
                   on_status: Callable[[Job, int, int], Any] | None = None,
                   on_data: Callable[[Job, bytes], Any] | None = None,
                   on_warning: Callable[[Job, bytes], Any] | None = None) -> SyncJob:
        """Submit a foreground job; returns a :class:`SyncJob` once it is created."""
        job = self._run(self._async.submit_job(
            function, payload, unique=unique, priority=priority,
            on_status=on_status, on_data=on_data, on_warning=on_warning))
        return SyncJob(job, self._thread)

    def run(self, requests: Iterable[Request], *, timeout: float | None = None,
            return_exceptions: bool = False) -> list[Any]:
        """Submit many foreground jobs at once and return their results in order."""
        return self._run(self._async.run(list(requests), timeout=timeout,
                                         return_exceptions=return_exceptions))

    def submit_background(self, function: str, payload: Payload = b"", *, unique: Unique = None,
                          priority: PriorityLike = Priority.NORMAL, run_at: When = None) -> str:
        return self._run(self._async.submit_background(
            function, payload, unique=unique, priority=priority, run_at=run_at))

    def submit_background_many(self, requests: Iterable[Request], *,
                               return_exceptions: bool = False) -> list[Any]:
        return self._run(self._async.submit_background_many(
            list(requests), return_exceptions=return_exceptions))

    def status(self, handle: str) -> JobStatus:
        return self._run(self._async.status(handle))

    def statuses(self, handles: Iterable[str]) -> list[JobStatus]:
        return self._run(self._async.statuses(list(handles)))

    def status_unique(self, unique: str | bytes) -> UniqueStatus:
        return self._run(self._async.status_unique(unique))

    def echo(self, data: bytes = b"ping") -> bytes:
        return self._run(self._async.echo(data))

    def result(self, handle: str, *, wait: bool = False, timeout: float | None = None) -> JobResult | None:
        """See :meth:`AsyncClient.result`."""
        return self._run(self._async.result(handle, wait=wait, timeout=timeout))

    def result_unique(self, unique: str | bytes, function: str | None = None) -> JobResult | None:
        """See :meth:`AsyncClient.result_unique`."""
        return self._run(self._async.result_unique(unique, function))


class SyncJob:
    """A foreground job of the blocking :class:`Client`."""

    def __init__(self, job: Job, thread: LoopThread) -> None:
        self._job = job
        self._thread = thread

    @property
    def handle(self) -> str | None:
        return self._job.handle

    @property
    def numerator(self) -> int:
        return self._job.numerator

    @property
    def denominator(self) -> int:
        return self._job.denominator

    @property
    def data(self) -> list[bytes]:
        return self._job.data

    @property
    def warnings(self) -> list[bytes]:
        return self._job.warnings

    def done(self) -> bool:
        return self._job.done()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its result (raises like AsyncClient's jobs)."""
        if self._job.done():
            return self._job.result()
        return self._thread.run(self._job.wait(timeout))

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Status, data and warning events as they arrive, until the job ends.

        With *timeout*, raises :class:`JobTimeout` if the job has not ended
        that many seconds after iteration began."""
        job = self._job
        seen = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            finished = job.done()  # before reading the history: events precede the end
            history = job.history
            while seen < len(history):
                seen += 1
                yield history[seen - 1]
            if finished:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise job._timeout(timeout)
            try:
                self._thread.run(self._next_event(seen), left)
            except TimeoutError:
                raise job._timeout(timeout) from None

    async def _next_event(self, seen: int) -> None:
        job = self._job
        if len(job.history) == seen and not job.done():
            await asyncio.shield(job._changed())
