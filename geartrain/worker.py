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
slots, sleeps with PRE_SLEEP when a server has none and wakes on NOOP --
never polling. It reconnects with back-off after a server restart, and
:meth:`AsyncWorker.stop` is graceful: nothing new is grabbed and what is
running finishes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from geartrain.codecs import Codec, get_codec
from geartrain.errors import JobFailed, NoServerAvailable
from geartrain.link import Backoff, Link, request
from geartrain.protocol import PacketType
from geartrain.servers import ServerAddress, parse_servers
from geartrain.syncloop import LoopThread

log = logging.getLogger("geartrain.worker")

_T = PacketType
_NOOP = int(_T.NOOP)
_NO_JOB = int(_T.NO_JOB)
_JOB_ASSIGN_UNIQ = int(_T.JOB_ASSIGN_UNIQ)
_ERROR = int(_T.ERROR)
_GRAB = request(_T.GRAB_JOB_UNIQ, b"")
_PRE_SLEEP = request(_T.PRE_SLEEP, b"")

JobFunction = Callable[["WorkerJob"], Any]


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    fn: JobFunction
    timeout: float | None  #: seconds; sent to the server as CAN_DO_TIMEOUT (milliseconds)
    is_async: bool

    def packet(self) -> bytes:
        name = self.name.encode()
        if self.timeout:
            return request(_T.CAN_DO_TIMEOUT, b"%s\0%d" % (name, max(1, round(self.timeout * 1000))))
        return request(_T.CAN_DO, name)


class WorkerJob:
    """The job a function is running: what it got, and how to report back.

    ``send_status``, ``send_data`` and ``send_warning`` may be called from
    the event loop or from the thread a plain function runs in.
    """

    __slots__ = ("handle", "function", "unique", "payload", "raw", "_link", "_worker", "_key")

    def __init__(self, worker: AsyncWorker, link: Link, handle: bytes, function: str, unique: str,
                 raw: bytes, payload: Any) -> None:
        self._worker = worker
        self._link = link
        self._key = handle
        self.handle = handle.decode("utf-8", "surrogateescape")
        self.function = function
        self.unique = unique
        self.raw = raw
        self.payload = payload

    def __repr__(self) -> str:
        return f"<WorkerJob {self.handle} {self.function!r} unique={self.unique!r}>"

    def _send(self, ptype: int, body: bytes) -> None:
        self._worker._emit(self._link, request(ptype, body))

    def send_status(self, numerator: int, denominator: int) -> None:
        """WORK_STATUS: progress as numerator/denominator (e.g. 3, 10)."""
        self._send(_T.WORK_STATUS, b"%s\0%d\0%d" % (self._key, numerator, denominator))

    def send_data(self, data: bytes | str) -> None:
        """WORK_DATA: a chunk of partial result, streamed to waiting clients."""
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self._send(_T.WORK_DATA, self._key + b"\0" + chunk)

    def send_warning(self, data: bytes | str) -> None:
        """WORK_WARNING: a warning for waiting clients; the job goes on."""
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self._send(_T.WORK_WARNING, self._key + b"\0" + chunk)


class _WorkerServer:
    """A worker's connection state for one job server (the Link's owner)."""

    def __init__(self, worker: AsyncWorker, address: ServerAddress) -> None:
        self.worker = worker
        self.address = address
        self.link: Link | None = None
        self.backoff = Backoff()
        self.grabbing = False  #: a GRAB_JOB_UNIQ is outstanding
        self.sleeping = False  #: PRE_SLEEP sent, waiting for NOOP
        self.wants_grab = False  #: would grab, but no slot is free
        self.lost: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.connected

    def packet_received(self, link: Link, ptype: int, body: bytes) -> None:
        worker = self.worker
        if ptype == _JOB_ASSIGN_UNIQ:
            self.grabbing = False
            worker._grabs_out -= 1
            parts = body.split(b"\0", 3)
            if len(parts) == 4:
                worker._start(self, link, parts[0], parts[1], parts[2], parts[3])
            worker._grab(self)
        elif ptype == _NO_JOB:
            self.grabbing = False
            worker._grabs_out -= 1
            if worker._can_grab():
                self.sleeping = True
                link.send(_PRE_SLEEP)
            worker._check_idle()
        elif ptype == _NOOP:
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
        if self.grabbing:
            self.grabbing = False
            self.worker._grabs_out -= 1
        self.sleeping = False
        self.wants_grab = False
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        self.worker._check_idle()


class AsyncWorker:
    """An asyncio Gearman worker for one or many job servers.

    *concurrency*: jobs run at once (across all servers). *codec*: how
    payloads are decoded and results encoded (default bytes). *executor*:
    where plain (non-async) functions run; default a thread pool of
    *concurrency* threads.
    """

    def __init__(
        self,
        servers: str | Iterable[str | tuple[str, int] | ServerAddress] | None = None,
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
        self._servers = [_WorkerServer(self, a) for a in self.addresses]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = 0
        self._grabs_out = 0
        self._started = 0
        self._max_jobs: int | None = None
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: jobs finished (completed, failed or raised) since run() began
        self.jobs_done = 0

    # -- functions
    def register(self, name: str, fn: JobFunction, *, timeout: float | None = None) -> None:
        """Serve *name* with *fn* (a plain or coroutine function taking a WorkerJob)."""
        if not name or "\0" in name:
            raise ValueError(f"bad function name {name!r}")
        reg = Registration(name, fn, timeout, inspect.iscoroutinefunction(fn))
        self._functions[name] = reg
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._announce, reg)

    def function(self, name: str | None = None, *, timeout: float | None = None
                 ) -> Callable[[JobFunction], JobFunction]:
        """Decorator form of :meth:`register` (the name defaults to the function's)."""
        def decorate(fn: JobFunction) -> JobFunction:
            self.register(name or fn.__name__, fn, timeout=timeout)
            return fn
        return decorate

    def unregister(self, name: str) -> None:
        """Stop serving *name* (CANT_DO on every server)."""
        if self._functions.pop(name, None) is not None and self._loop is not None:
            packet = request(_T.CANT_DO, name.encode())
            self._loop.call_soon_threadsafe(self._broadcast, packet)

    @property
    def functions(self) -> list[str]:
        return list(self._functions)

    def _announce(self, reg: Registration) -> None:
        self._broadcast(reg.packet())
        for srv in self._servers:  # it may have work waiting already
            if srv.sleeping:
                srv.sleeping = False
                self._grab(srv)

    def _broadcast(self, packet: bytes) -> None:
        for srv in self._servers:
            if srv.link is not None and srv.connected:
                srv.link.send(packet)

    # -- running
    async def run(self, *, max_jobs: int | None = None) -> None:
        """Work until :meth:`stop` (or after *max_jobs* jobs); returns once every
        running job has finished and the connections are closed."""
        if not self._functions:
            raise ValueError("no functions registered")
        self._loop = loop = asyncio.get_running_loop()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self._max_jobs = max_jobs
        self._started = 0
        self.jobs_done = 0
        if self._own_executor and self._executor is None and any(
                not r.is_async for r in self._functions.values()):
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="geartrain-worker")
        keepers = [loop.create_task(self._keep_connected(srv)) for srv in self._servers]
        try:
            await self._stopped.wait()
            self._check_idle()
            await self._idle.wait()
        finally:
            self._stopping = True
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for srv in self._servers:
                if srv.link is not None:
                    srv.link.close()
                    srv.link = None
            if self._own_executor and self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
            self._loop = None

    def stop(self) -> None:
        """Graceful stop: grab nothing new, let running jobs finish, then
        :meth:`run` returns. Safe to call from any thread or a signal handler."""
        loop = self._loop
        if loop is None:
            return
        if loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._stop_now()
            else:
                loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self._stopping = True
        if self._stopped is not None:
            self._stopped.set()
        self._check_idle()

    def _check_idle(self) -> None:
        if self._stopping and self._active == 0 and self._grabs_out == 0 and self._idle is not None:
            self._idle.set()

    async def _keep_connected(self, srv: _WorkerServer) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            link = Link(srv.address, srv)
            try:
                await link.open(self.connect_timeout)
            except NoServerAvailable as exc:
                delay = srv.backoff.failed(time.monotonic())
                log.info("%s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            srv.backoff.succeeded()
            srv.link = link
            srv.lost = loop.create_future()
            log.info("connected to %s", srv.address)
            if self.client_id:
                link.send(request(_T.SET_CLIENT_ID, self.client_id.encode()))
            for reg in self._functions.values():
                link.send(reg.packet())
            self._grab(srv)
            await srv.lost
            if not self._stopping:
                delay = srv.backoff.failed(time.monotonic())
                log.warning("lost connection to %s; reconnecting in %.1fs", srv.address, delay)
                await asyncio.sleep(delay)

    # -- grabbing
    def _can_grab(self) -> bool:
        if self._stopping:
            return False
        if self._max_jobs is not None and self._started + self._grabs_out >= self._max_jobs:
            return False
        return self._active + self._grabs_out < self.concurrency

    def _grab(self, srv: _WorkerServer) -> None:
        if srv.grabbing or srv.sleeping or srv.link is None:
            return
        if not self._can_grab():
            srv.wants_grab = not self._stopping
            return
        srv.wants_grab = False
        srv.grabbing = True
        self._grabs_out += 1
        srv.link.send(_GRAB)

    def _start(self, srv: _WorkerServer, link: Link, handle: bytes, function: bytes, unique: bytes,
               raw: bytes) -> None:
        name = function.decode("utf-8", "surrogateescape")
        reg = self._functions.get(name)
        if reg is None:  # unregistered while the grab was in flight
            link.send(request(_T.WORK_FAIL, handle))
            return
        try:
            payload = self.codec.decode(raw)
        except Exception as exc:
            link.send(request(_T.WORK_EXCEPTION, handle + b"\0" + _describe(exc)))
            return
        job = WorkerJob(self, link, handle, name, unique.decode("utf-8", "surrogateescape"), raw, payload)
        self._active += 1
        self._started += 1
        loop = self._loop
        assert loop is not None
        if reg.is_async:
            task = loop.create_task(self._run_async(reg, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            future = loop.run_in_executor(self._executor, reg.fn, job)
            future.add_done_callback(lambda f: self._finish(job, f))

    async def _run_async(self, reg: Registration, job: WorkerJob) -> None:
        try:
            result = await reg.fn(job)
        except JobFailed:
            self._done(job, request(_T.WORK_FAIL, job._key))
        except Exception as exc:
            log.info("job %s (%s) raised %r", job.handle, job.function, exc)
            self._done(job, request(_T.WORK_EXCEPTION, job._key + b"\0" + _describe(exc)))
        else:
            self._complete(job, result)

    def _finish(self, job: WorkerJob, future: asyncio.Future[Any]) -> None:
        exc = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if exc is None:
            self._complete(job, future.result())
        elif isinstance(exc, JobFailed):
            self._done(job, request(_T.WORK_FAIL, job._key))
        else:
            log.info("job %s (%s) raised %r", job.handle, job.function, exc)
            self._done(job, request(_T.WORK_EXCEPTION, job._key + b"\0" + _describe(exc)))

    def _complete(self, job: WorkerJob, result: Any) -> None:
        try:
            data = b"" if result is None else self.codec.encode(result)
        except Exception as exc:
            self._done(job, request(_T.WORK_EXCEPTION, job._key + b"\0" + _describe(exc)))
            return
        self._done(job, request(_T.WORK_COMPLETE, job._key + b"\0" + data))

    def _done(self, job: WorkerJob, packet: bytes) -> None:
        link = job._link
        if link.connected:
            link.send(packet)
        self._active -= 1
        self.jobs_done += 1
        if self._max_jobs is not None and self.jobs_done >= self._max_jobs:
            self._stop_now()
        for srv in self._servers:
            if srv.wants_grab:
                self._grab(srv)
        self._check_idle()

    def _emit(self, link: Link, packet: bytes) -> None:
        """Send a job's progress packet from the loop or from a worker thread."""
        if not link.connected:
            return
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            link.send(packet)
        else:
            link.send_threadsafe(packet)


def _describe(exc: BaseException) -> bytes:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__).encode("utf-8", "replace")


class Worker:
    """The blocking worker: register plain functions, then :meth:`work`.

    It runs an :class:`AsyncWorker` on a private event-loop thread; plain
    functions run in its thread pool, coroutine functions on its loop.
    :meth:`work` blocks until :meth:`stop` is called (from another thread or a
    signal handler) or Ctrl-C, and stops gracefully.
    """

    def __init__(
        self,
        servers: str | Iterable[str | tuple[str, int] | ServerAddress] | None = None,
        *,
        client_id: str | None = None,
        concurrency: int = 1,
        codec: Codec | str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._async = AsyncWorker(servers, client_id=client_id, concurrency=concurrency, codec=codec,
                                  connect_timeout=connect_timeout)

    @property
    def aio(self) -> AsyncWorker:
        return self._async

    @property
    def jobs_done(self) -> int:
        return self._async.jobs_done

    def register(self, name: str, fn: JobFunction, *, timeout: float | None = None) -> None:
        self._async.register(name, fn, timeout=timeout)

    def function(self, name: str | None = None, *, timeout: float | None = None
                 ) -> Callable[[JobFunction], JobFunction]:
        return self._async.function(name, timeout=timeout)

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
        """Graceful stop (thread-safe)."""
        self._async.stop()


def run_until_signalled(worker: AsyncWorker, *, max_jobs: int | None = None,
                        signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> Awaitable[None]:
    """``worker.run()`` that stops gracefully on SIGINT/SIGTERM (for command-line tools)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, worker.stop)
        try:
            await worker.run(max_jobs=max_jobs)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
    return main()
