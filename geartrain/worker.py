"""Gearman workers: :class:`AsyncWorker` (asyncio) and :class:`Worker` (blocking).

::

    worker = AsyncWorker(["127.0.0.1:4730"], concurrency=8)

    @worker.function("reverse")
    async def reverse(job: WorkerJob) -> bytes:
        for i in range(1, 11):
            job.send_status(i, 10)
        return job.payload[::-1]

    await worker.run()          # until worker.stop()

A function may be a coroutine function (run on the event loop) or a plain
function (run in a thread pool, so it may block). Returning completes the job
(WORK_COMPLETE with the returned value, encoded by the codec); raising
:class:`~geartrain.errors.JobFailed` fails it (WORK_FAIL); raising anything
else sends WORK_EXCEPTION with ``"ExceptionType: message"``.

The worker connects to every server, registers its functions (CAN_DO, or
CAN_DO_TIMEOUT when a function has a timeout), grabs jobs while it has free
slots (pipelining grabs while a server has jobs), sleeps with PRE_SLEEP when
a server has none and wakes on NOOP -- never polling. Free slots go to the
servers in the order they asked for one, so a busy server does not starve the
others. It reconnects with back-off after a server restart, and
:meth:`AsyncWorker.stop` is graceful: nothing new is grabbed and what is
running finishes and reports.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from geartrain.codecs import Codec, get_codec
from geartrain.errors import JobFailed, NoServerAvailable
from geartrain.link import Backoff, Link, request
from geartrain.protocol import REQ, PacketType
from geartrain.servers import ServerAddress, Servers, parse_servers
from geartrain.syncloop import LoopThread

log = logging.getLogger("geartrain.worker")

_T = PacketType
_NOOP = int(_T.NOOP)
_NO_JOB = int(_T.NO_JOB)
_JOB_ASSIGN_UNIQ = int(_T.JOB_ASSIGN_UNIQ)
_ERROR = int(_T.ERROR)
_WORK_COMPLETE = int(_T.WORK_COMPLETE)
_WORK_FAIL = int(_T.WORK_FAIL)
_WORK_EXCEPTION = int(_T.WORK_EXCEPTION)
_GRAB = request(_T.GRAB_JOB_UNIQ, b"")
_PRE_SLEEP = request(_T.PRE_SLEEP, b"")
_header = struct.Struct(">4sII").pack

JobFunction = Callable[["WorkerJob"], Any]


def _packet(ptype: int, handle: bytes, data: bytes) -> bytes:
    """``handle\\0data`` packet, joined once (results may be many megabytes)."""
    return b"".join((_header(REQ, ptype, len(handle) + 1 + len(data)), handle, b"\0", data))


def _is_async(fn: Callable[..., Any]) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


@dataclass(frozen=True, slots=True)
class Registration:
    """A function the worker serves."""

    name: str
    fn: JobFunction
    timeout: float | None  #: seconds; sent to the server as CAN_DO_TIMEOUT (milliseconds)
    is_async: bool
    codec: Codec | None = None  #: this function's codec; None: the worker's

    @property
    def key(self) -> bytes:
        """The function name on the wire."""
        return self.name.encode("utf-8", "surrogateescape")

    def packet(self) -> bytes:
        if self.timeout is not None:
            ms = max(1, round(self.timeout * 1000))
            return request(_T.CAN_DO_TIMEOUT, b"%s\0%d" % (self.key, ms))
        return request(_T.CAN_DO, self.key)


class WorkerJob:
    """The job a function is running: what it got, and how to report back.

    ``payload`` is decoded by the function's (else the worker's) codec; ``raw``
    is the bytes. ``send_status``, ``send_data`` and ``send_warning`` may be
    called from the event loop or from the thread a plain function runs in.
    """

    __slots__ = ("handle", "function", "unique", "payload", "raw", "_link", "_worker", "_key", "_run")

    def __init__(self, worker: AsyncWorker, link: Link, handle: bytes, function: str, unique: str,
                 raw: bytes, payload: Any) -> None:
        self._worker = worker
        self._link = link
        self._key = handle
        self._run = worker._run
        self.handle = handle.decode("utf-8", "surrogateescape")
        self.function = function
        self.unique = unique
        self.raw = raw
        self.payload = payload

    def __repr__(self) -> str:
        return f"<WorkerJob {self.handle} {self.function!r} unique={self.unique!r}>"

    def send_status(self, numerator: int, denominator: int) -> None:
        """WORK_STATUS: progress as numerator/denominator (e.g. 3, 10)."""
        self._worker._emit(self._link, request(
            _T.WORK_STATUS, b"%s\0%d\0%d" % (self._key, numerator, denominator)))

    def send_data(self, data: bytes | str) -> None:
        """WORK_DATA: a chunk of partial result, streamed to waiting clients."""
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self._worker._emit(self._link, _packet(_T.WORK_DATA, self._key, chunk))

    def send_warning(self, data: bytes | str) -> None:
        """WORK_WARNING: a warning for waiting clients; the job goes on."""
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self._worker._emit(self._link, _packet(_T.WORK_WARNING, self._key, chunk))

    async def drain(self) -> None:
        """Wait while the server is not reading what this worker sends: a
        coroutine streaming large WORK_DATA should await it between chunks."""
        await self._link.drain()


class _WorkerServer:
    """A worker's connection state for one job server (the Link's owner).

    Every GRAB_JOB_UNIQ outstanding (``grabs``) holds a slot. One grab probes
    a server; while it answers with jobs (``hot``) each JOB_ASSIGN is followed
    by two grabs (its replacement and one more) as far as slots are free, so
    the grabs to a busy server pipeline and no round trip is waited per job. After NO_JOB the worker sends
    PRE_SLEEP (``sleeping``) and grabs again on NOOP -- the server reads the
    PRE_SLEEP after every grab sent before it, so no job can slip between. A
    server that would grab but found no free slot is ``waiting`` in the
    worker's queue and grabs when one frees.
    """

    def __init__(self, worker: AsyncWorker, address: ServerAddress) -> None:
        self.worker = worker
        self.address = address
        self.link: Link | None = None
        self.backoff = Backoff()
        self.grabs = 0  #: GRAB_JOB_UNIQs outstanding
        self.hot = False  #: the last grab got a job: more may go out before it answers
        self.sleeping = False  #: PRE_SLEEP sent, waiting for NOOP
        self.waiting = False  #: in the worker's queue for a free slot
        self.lost: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.connected

    def attach(self, link: Link) -> asyncio.Future[None]:
        """*link* is this server's connection now; the future ends with it."""
        self.reset()
        self.link = link
        assert link.loop is not None
        self.lost = link.loop.create_future()
        return self.lost

    def reset(self) -> None:
        self.grabs = 0
        self.hot = self.sleeping = False
        if self.waiting:
            self.waiting = False
            try:
                self.worker._waiting.remove(self)
            except ValueError:  # pragma: no cover - the queue was cleared
                pass

    def packet_received(self, link: Link, ptype: int, body: bytes) -> None:
        worker = self.worker
        if ptype == _JOB_ASSIGN_UNIQ:
            self.grabs -= 1
            worker._grabs_out -= 1
            self.hot = True
            worker._start(link, body)
            if worker._stopping:
                worker._check_idle()
            elif not self.sleeping:
                worker._grab(self)  # in place of this one
                worker._grab(self)  # and one more while the server has jobs
        elif ptype == _NO_JOB:
            self.grabs -= 1
            worker._grabs_out -= 1
            self.hot = False
            if worker._stopping:
                worker._check_idle()
                return
            # Sleep even when no slot is free: the NOOP says when grabbing is
            # worth it again, and without one there is nothing to grab here.
            if not self.sleeping:
                self.sleeping = True
                link.send(_PRE_SLEEP)
            if worker._waiting:
                worker._kick()  # the slot this grab held may serve another server
        elif ptype == _NOOP:
            if self.sleeping:
                self.sleeping = False
                worker._grab(self)
        elif ptype == _ERROR:
            code, _, text = body.partition(b"\0")
            log.warning("%s: ERROR %s %s", self.address, code.decode(errors="replace"),
                        text.decode(errors="replace"))

    def link_lost(self, link: Link, exc: BaseException | None) -> None:
        if link is not self.link:
            return
        self.link = None
        worker = self.worker
        worker._grabs_out -= self.grabs
        self.reset()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        worker._kick()
        worker._check_idle()


class AsyncWorker:
    """An asyncio Gearman worker for one or many job servers.

    *concurrency*: jobs run at once (across all servers). *codec*: how
    payloads are decoded and results encoded (default bytes; a function may
    have its own). *executor*: where plain (non-async) functions run; default
    a thread pool of *concurrency* threads, made when first needed.
    """

    def __init__(
        self,
        servers: Servers = None,
        *,
        client_id: str | None = None,
        concurrency: int = 1,
        codec: Codec | str | None = None,
        executor: concurrent.futures.Executor | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.addresses = parse_servers(servers)
        self.client_id = client_id
        self.concurrency = concurrency
        self.codec = get_codec(codec)
        self.connect_timeout = connect_timeout
        self._executor = executor
        self._own_executor = executor is None
        self._functions: dict[str, Registration] = {}
        self._by_key: dict[bytes, Registration] = {}
        #: unregistered names: a job of one assigned before the server read our
        #: CANT_DO is requeued by the server (both gearmand and geartrain do)
        self._retired: set[bytes] = set()
        self._servers = [_WorkerServer(self, a) for a in self.addresses]
        self._waiting: deque[_WorkerServer] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._run: object = None  #: identifies the current run(); jobs carry it
        self._active = 0
        self._grabs_out = 0
        self._started = 0
        self._max_jobs: int | None = None
        self._stopping = False
        self._stop_pending = False
        self._idle: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: jobs finished (completed, failed or raised) since run() began
        self.jobs_done = 0

    # -- functions
    def register(self, name: str, fn: JobFunction, *, timeout: float | None = None,
                 codec: Codec | str | None = None) -> None:
        """Serve *name* with *fn* (a plain or coroutine function taking a WorkerJob).

        *timeout* (seconds) is sent as CAN_DO_TIMEOUT: the server requeues a
        job that runs longer (gearmand and geartrain count anything under a
        second as one second); the local run goes on and its late result is
        refused. gearmand 1.1.20 forgets the timeout of a job whose worker sends
        PRE_SLEEP while running it (a worker with free slots does), and wakes
        sleeping workers for a requeued job only at its next event.

        *codec* decodes this function's payloads and encodes its results
        instead of the worker's codec. Registering while the worker runs
        announces the function to every connected server at once.
        """
        if not name or "\0" in name:
            raise ValueError(f"bad function name {name!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        reg = Registration(name, fn, timeout, _is_async(fn), None if codec is None else get_codec(codec))
        self._functions[name] = reg
        self._by_key[reg.key] = reg
        self._retired.discard(reg.key)
        if self._loop is not None:
            self._in_loop(self._announce, reg)

    def function(self, name: str | None = None, *, timeout: float | None = None,
                 codec: Codec | str | None = None) -> Callable[[JobFunction], JobFunction]:
        """Decorator form of :meth:`register` (the name defaults to the function's)."""
        def decorate(fn: JobFunction) -> JobFunction:
            self.register(name or fn.__name__, fn, timeout=timeout, codec=codec)
            return fn
        return decorate

    def unregister(self, name: str) -> None:
        """Stop serving *name* (CANT_DO on every connected server).

        The servers requeue the jobs of *name* this worker is running when they
        read the CANT_DO (gearmand and geartrain both do), so those run again
        on another worker; the results of the local runs are still sent, and
        the servers answer them with an ERROR.
        """
        reg = self._functions.pop(name, None)
        if reg is None:
            return
        self._by_key.pop(reg.key, None)
        self._retired.add(reg.key)
        if self._loop is not None:
            self._in_loop(self._broadcast, request(_T.CANT_DO, reg.key))

    @property
    def functions(self) -> list[str]:
        return list(self._functions)

    def use_servers(self, servers: Servers) -> None:
        """Serve these servers instead (only while the worker is not running)."""
        if self._loop is not None:
            raise RuntimeError("cannot change the servers of a running worker")
        self.addresses = parse_servers(servers)
        self._servers = [_WorkerServer(self, a) for a in self.addresses]

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Call *fn* on the worker's loop: now if this is its thread, else soon."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread_id:
            fn(*args)
        else:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile: run() has returned
                pass

    def _announce(self, reg: Registration) -> None:
        packet = reg.packet()
        for srv in self._servers:
            if srv.connected:
                assert srv.link is not None
                srv.link.send(packet)
                if srv.sleeping:  # the server may already hold work for it
                    srv.sleeping = False
                    self._grab(srv)

    def _broadcast(self, packet: bytes) -> None:
        for srv in self._servers:
            if srv.connected:
                assert srv.link is not None
                srv.link.send(packet)

    # -- running
    async def run(self, *, max_jobs: int | None = None) -> None:
        """Work until :meth:`stop` (or after *max_jobs* jobs); returns once every
        running job has finished and reported, and the connections are closed.

        Cancelling ``run()`` is the hard stop: running coroutine jobs are
        cancelled and the connections closed at once, so the servers requeue
        what this worker held.
        """
        if not self._functions:
            raise ValueError("no functions registered")
        if self._loop is not None:
            raise RuntimeError("this worker is already running")
        loop = asyncio.get_running_loop()
        self._run = object()
        self._stopping = False
        self._idle = asyncio.Event()
        self._max_jobs = max_jobs
        self._started = self._active = self._grabs_out = 0
        self.jobs_done = 0
        for srv in self._servers:
            srv.reset()
        self._waiting.clear()
        self._thread_id = threading.get_ident()
        # publish the loop, then look for a stop() that came before it (from
        # another thread): one of the two sides sees the other
        self._loop = loop
        if self._stop_pending or (max_jobs is not None and max_jobs <= 0):
            self._stop_now()
        keepers = [loop.create_task(self._keep_connected(srv)) for srv in self._servers]
        try:
            await self._idle.wait()
        finally:
            self._stopping = True
            jobs = [t for t in self._tasks if not t.done()]  # only left after a hard stop
            for task in (*keepers, *jobs):
                task.cancel()
            await asyncio.gather(*keepers, *jobs, return_exceptions=True)
            for srv in self._servers:
                if srv.link is not None:
                    srv.link.close()
                    srv.link = None
                srv.reset()
            if self._own_executor and self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
            self._loop = None
            self._stop_pending = False

    def stop(self) -> None:
        """Graceful stop: grab nothing new, let running jobs finish, then
        :meth:`run` returns. Safe to call from any thread or a signal handler.

        A stop() that comes before run() started (say from another thread
        while it is starting) makes that run() return at once.
        """
        self._stop_pending = True
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread_id:
            self._stop_now()
        else:
            try:
                loop.call_soon_threadsafe(self._stop_now)
            except RuntimeError:  # the loop closed: run() has returned
                pass

    def _stop_now(self) -> None:
        if self._loop is None:
            return
        self._stopping = True
        self._check_idle()

    def _check_idle(self) -> None:
        if self._stopping and self._active == 0 and self._grabs_out == 0 and self._idle is not None:
            self._idle.set()

    async def _keep_connected(self, srv: _WorkerServer) -> None:
        while not self._stopping:
            link = Link(srv.address, srv)
            try:
                await link.open(self.connect_timeout)
                if not link.connected:  # closed before we got to it
                    raise NoServerAvailable(f"{srv.address} closed the connection at once")
            except NoServerAvailable as exc:
                delay = srv.backoff.failed(time.monotonic())
                log.info("%s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                link.close()
                return
            srv.backoff.succeeded()
            lost = srv.attach(link)
            log.info("connected to %s", srv.address)
            if self.client_id:
                link.send(request(_T.SET_CLIENT_ID, self.client_id.encode()))
            for reg in tuple(self._by_key.values()):
                link.send(reg.packet())
            self._grab(srv)
            await lost
            if not self._stopping:
                delay = srv.backoff.failed(time.monotonic())
                log.warning("lost connection to %s; reconnecting in %.1fs", srv.address, delay)
                await asyncio.sleep(delay)

    # -- grabbing
    def _grab(self, srv: _WorkerServer) -> None:
        """GRAB_JOB_UNIQ on *srv* if a slot is free, else queue it for one."""
        if srv.sleeping or self._stopping or (srv.grabs and not srv.hot):
            return
        link = srv.link
        if link is None:
            return
        if self._active + self._grabs_out >= self.concurrency or (
                self._max_jobs is not None and self._started + self._grabs_out >= self._max_jobs):
            if not srv.waiting:
                srv.waiting = True
                self._waiting.append(srv)
            return
        srv.grabs += 1
        self._grabs_out += 1
        link.send(_GRAB)

    def _kick(self) -> None:
        """Give free slots to the servers waiting for one, longest waiting first."""
        waiting = self._waiting
        while waiting and not self._stopping and self._active + self._grabs_out < self.concurrency:
            srv = waiting.popleft()
            srv.waiting = False
            self._grab(srv)
            if srv.waiting:  # max_jobs leaves no slot: it went back to the end
                break

    def _start(self, link: Link, body: bytes) -> None:
        parts = body.split(b"\0", 3)
        if len(parts) != 4:
            log.warning("%s: malformed JOB_ASSIGN_UNIQ %r", link.address, body[:100])
            return
        handle, function, unique, raw = parts
        reg = self._by_key.get(function)
        if reg is None:
            if function in self._retired:
                return  # our CANT_DO follows the GRAB: the server requeues the job
            link.send(request(_WORK_FAIL, handle))  # never registered: a server bug
            return
        job = WorkerJob(self, link, handle, reg.name, unique.decode("utf-8", "surrogateescape"), raw, None)
        self._active += 1
        self._started += 1
        codec = reg.codec if reg.codec is not None else self.codec
        try:
            job.payload = codec.decode(raw)
        except Exception as exc:
            self._done(job, _exception_packet(job, exc))
            return
        loop = self._loop
        assert loop is not None
        if reg.is_async:
            task = loop.create_task(self._run_async(job, codec, reg.fn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        executor = self._executor
        if executor is None:
            executor = self._executor = concurrent.futures.ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="geartrain-worker")
        try:
            future = loop.run_in_executor(executor, reg.fn, job)
        except RuntimeError as exc:  # a caller's executor that was shut down
            self._done(job, _exception_packet(job, exc))
            return
        future.add_done_callback(functools.partial(self._finish, job, codec))

    async def _run_async(self, job: WorkerJob, codec: Codec, fn: JobFunction) -> None:
        try:
            result = await fn(job)
        except JobFailed:
            packet = request(_WORK_FAIL, job._key)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # run() is being cancelled: the hard stop
                self._forget(job)  # no reply: the server requeues the job when we close
                raise
            packet = _exception_packet(job, exc)  # the job's own CancelledError
        except Exception as exc:
            log.info("job %s (%s) raised %r", job.handle, job.function, exc)
            packet = _exception_packet(job, exc)
        else:
            self._complete(job, codec, result)
            return
        self._done(job, packet)

    def _finish(self, job: WorkerJob, codec: Codec, future: asyncio.Future[Any]) -> None:
        """A plain function's thread is done."""
        if future.cancelled():
            self._done(job, _exception_packet(job, asyncio.CancelledError()))
            return
        exc = future.exception()
        if exc is None:
            result = future.result()
            if inspect.isawaitable(result) and self._loop is not None:  # it returned a coroutine
                task = self._loop.create_task(self._run_async(job, codec, lambda _: result))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            self._complete(job, codec, result)
        elif isinstance(exc, JobFailed):
            self._done(job, request(_WORK_FAIL, job._key))
        else:
            log.info("job %s (%s) raised %r", job.handle, job.function, exc)
            self._done(job, _exception_packet(job, exc))

    def _complete(self, job: WorkerJob, codec: Codec, result: Any) -> None:
        try:
            data = b"" if result is None else codec.encode(result)
        except Exception as exc:
            self._done(job, _exception_packet(job, exc))
            return
        self._done(job, _packet(_WORK_COMPLETE, job._key, data))

    def _done(self, job: WorkerJob, packet: bytes) -> None:
        """*job* ended: send its last packet, free its slot."""
        if job._run is not self._run:  # an earlier run()'s thread, done late: its link is closed
            return
        link = job._link
        if link.connected:
            link.send(packet)
        self._active -= 1
        self.jobs_done += 1
        if self._max_jobs is not None and self.jobs_done >= self._max_jobs:
            self._stop_now()
        if self._waiting:
            self._kick()
        if self._stopping:
            self._check_idle()

    def _forget(self, job: WorkerJob) -> None:
        """*job* ends without a reply (hard stop)."""
        if job._run is self._run:
            self._active -= 1
            self._check_idle()

    def _emit(self, link: Link, packet: bytes) -> None:
        """Send a job's progress packet from the loop or from a worker thread."""
        loop = self._loop
        if loop is None or not link.connected:
            return
        if threading.get_ident() == self._thread_id:
            link.send(packet)
        else:
            try:
                loop.call_soon_threadsafe(link.send, packet)
            except RuntimeError:  # the loop closed meanwhile
                pass


def _exception_packet(job: WorkerJob, exc: BaseException) -> bytes:
    """WORK_EXCEPTION with ``"ExceptionType: message"`` (or just the type)."""
    text = str(exc)
    desc = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return _packet(_WORK_EXCEPTION, job._key, desc.encode("utf-8", "replace"))


class Worker:
    """The blocking worker: register plain functions, then :meth:`work`.

    It runs an :class:`AsyncWorker` on a private event-loop thread; plain
    functions run in its thread pool, coroutine functions on its loop.
    :meth:`work` blocks until :meth:`stop` is called (from another thread or a
    signal handler) or Ctrl-C, and stops gracefully.
    """

    def __init__(
        self,
        servers: Servers = None,
        *,
        client_id: str | None = None,
        concurrency: int = 1,
        codec: Codec | str | None = None,
        executor: concurrent.futures.Executor | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._async = AsyncWorker(servers, client_id=client_id, concurrency=concurrency, codec=codec,
                                  executor=executor, connect_timeout=connect_timeout)

    @property
    def aio(self) -> AsyncWorker:
        return self._async

    @property
    def jobs_done(self) -> int:
        return self._async.jobs_done

    @property
    def functions(self) -> list[str]:
        return self._async.functions

    def register(self, name: str, fn: JobFunction, *, timeout: float | None = None,
                 codec: Codec | str | None = None) -> None:
        self._async.register(name, fn, timeout=timeout, codec=codec)

    def function(self, name: str | None = None, *, timeout: float | None = None,
                 codec: Codec | str | None = None) -> Callable[[JobFunction], JobFunction]:
        return self._async.function(name, timeout=timeout, codec=codec)

    def unregister(self, name: str) -> None:
        self._async.unregister(name)

    def work(self, *, max_jobs: int | None = None) -> None:
        """Serve jobs until :meth:`stop`, Ctrl-C, or *max_jobs* jobs."""
        thread = LoopThread("geartrain-worker")
        try:
            future = thread.submit(self._async.run(max_jobs=max_jobs))
            while True:
                try:
                    future.result()
                    return
                except KeyboardInterrupt:
                    self.stop()
        finally:
            thread.stop()

    def stop(self) -> None:
        """Graceful stop (thread-safe); a stop() racing work()'s start still counts."""
        self._async.stop()


async def run_until_signalled(worker: AsyncWorker, *, max_jobs: int | None = None,
                              signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> int:
    """``worker.run()`` wired to signals, for command-line programs: the first
    SIGINT/SIGTERM stops gracefully (running jobs finish and report); a second
    one is the hard stop (running jobs are abandoned, the servers requeue
    them). Returns 0, or the number of the signal that forced the stop."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    forced = 0
    received = 0
    wanted = tuple(signals)

    def on_signal(sig: int) -> None:
        nonlocal forced, received
        received += 1
        if received == 1:
            log.info("signal %d: stopping after the running jobs", sig)
            worker.stop()
            return
        forced = sig
        if main is not None:
            main.cancel()

    for sig in wanted:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await worker.run(max_jobs=max_jobs)
    except asyncio.CancelledError:
        if not forced:
            raise
    finally:
        for sig in wanted:
            loop.remove_signal_handler(sig)
    return forced
