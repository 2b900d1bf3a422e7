"""The blocking Client (a facade over AsyncClient on a loop thread) against
real servers: geartrain and C gearmand 1.1.20."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from geartrain.client import (
    Client,
    DataEvent,
    Job,
    JobStatus,
    Request,
    StatusEvent,
    SyncJob,
    WarningEvent,
)
from geartrain.errors import (
    ConnectionLost,
    GearmanError,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
)
from geartrain.worker import Worker, WorkerJob
from tests.support import process
from tests.support.wire import Wire, grab, status_of, wait_until


def addr(srv: process.ServerProcess) -> str:
    return f"{srv.host}:{srv.port}"


@contextlib.contextmanager
def serving(srv: process.ServerProcess, functions: dict[str, Callable[[WorkerJob], Any]],
            *, concurrency: int = 4) -> Iterator[Worker]:
    """A blocking Worker serving *functions* in a thread for the block's duration."""
    worker = Worker([addr(srv)], concurrency=concurrency)
    for name, fn in functions.items():
        worker.register(name, fn)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive(), "the worker did not stop"


def reverse(job: WorkerJob) -> bytes:
    return bytes(job.payload[::-1])


def steps(job: WorkerJob) -> bytes:
    job.send_status(1, 2)
    time.sleep(0.02)
    job.send_data(b"part\0one")
    job.send_warning("mind the gap")
    time.sleep(0.02)
    job.send_status(2, 2)
    return b"finished"


def client_threads() -> int:
    return sum(t.name == "geartrain-client" for t in threading.enumerate())


def test_submit_and_callbacks(any_server: process.ServerProcess) -> None:
    calls: list[tuple[Any, ...]] = []
    threads: set[str] = set()

    def on_status(job: Job, n: int, d: int) -> None:
        threads.add(threading.current_thread().name)
        calls.append(("status", job.handle, n, d))

    def on_data(job: Job, data: bytes) -> None:
        calls.append(("data", job.handle, data))

    def on_warning(job: Job, data: bytes) -> None:
        calls.append(("warning", job.handle, data))

    with Client([addr(any_server)]) as client, serving(any_server, {"reverse": reverse, "steps": steps}):
        assert client.submit("reverse", b"Rasmus", timeout=10) == b"sumsaR"
        assert client.submit("steps", b"", timeout=10, on_status=on_status, on_data=on_data,
                             on_warning=on_warning) == b"finished"
        handle = calls[0][1]
        assert isinstance(handle, str) and handle.startswith("H:")
        assert calls == [("status", handle, 1, 2), ("data", handle, b"part\0one"),
                         ("warning", handle, b"mind the gap"), ("status", handle, 2, 2)]
        assert threads == {"geartrain-client"}  # callbacks run on the client's loop thread
        assert client.echo(b"hi") == b"hi"


def test_sync_job_events_and_result(any_server: process.ServerProcess) -> None:
    with Client([addr(any_server)]) as client, serving(any_server, {"steps": steps}):
        job = client.submit_job("steps", b"")
        assert isinstance(job, SyncJob) and job.handle is not None and job.handle.startswith("H:")
        events = list(job.events(timeout=10))
        assert events == [StatusEvent(1, 2), DataEvent(b"part\0one"), WarningEvent(b"mind the gap"),
                          StatusEvent(2, 2)]
        assert job.done() and job.result() == b"finished"
        assert (job.numerator, job.denominator) == (2, 2)
        assert job.data == [b"part\0one"] and job.warnings == [b"mind the gap"]
        assert list(job.events()) == events  # replayed once finished


def test_sync_job_timeouts_are_bounded(any_server: process.ServerProcess) -> None:
    """events(timeout) and result(timeout) give up on a job that never ends;
    the job stays usable and completes later."""
    with Wire(any_server.address) as w, Client([addr(any_server)]) as client:
        w.send("CAN_DO", "stuck")
        job = client.submit_job("stuck", b"")
        _, args = grab(w)
        w.send("WORK_STATUS", args[0], b"1", b"9")
        got: list[Any] = []

        def iterate() -> None:
            try:
                for event in job.events(timeout=0.4):
                    got.append(event)
            except JobTimeout as exc:
                got.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=iterate)
        thread.start()
        thread.join(5)
        assert not thread.is_alive(), "events(timeout=0.4) did not return"
        assert 0.4 <= time.monotonic() - started < 3
        assert got[0] == StatusEvent(1, 9) and isinstance(got[1], JobTimeout) and len(got) == 2
        with pytest.raises(JobTimeout):
            job.result(timeout=0.1)
        w.send("WORK_COMPLETE", args[0], b"at last")
        assert job.result(timeout=5) == b"at last"


def test_shared_by_eight_threads(any_server: process.ServerProcess) -> None:
    errors: list[BaseException] = []
    results: dict[int, list[bytes]] = {}
    handles: dict[int, list[str]] = {}

    def user(n: int) -> None:
        try:
            mine = results[n] = []
            bg = handles[n] = []
            for i in range(25):
                mine.append(client.submit("reverse", b"t%d-%d" % (n, i), timeout=20))
                bg.append(client.submit_background("nobody", b"%d" % i))
            assert client.run([Request("reverse", b"r%d" % n)] * 3, timeout=20) == [b"%dr" % n] * 3
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with Client([addr(any_server)]) as client, serving(any_server, {"reverse": reverse}, concurrency=8):
        threads = [threading.Thread(target=user, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        for n in range(8):
            assert results[n] == [(b"t%d-%d" % (n, i))[::-1] for i in range(25)]
        every = [h for n in range(8) for h in handles[n]]
        assert len(set(every)) == 200
        assert status_of(any_server.address, "nobody") == (200, 0, 0)
        assert all(s.known for s in client.statuses(every))
        assert client.aio._servers[0].jobs == {}


def test_background_status_and_errors(any_server: process.ServerProcess) -> None:
    def work(job: WorkerJob) -> bytes:
        if job.payload == b"raise":
            raise RuntimeError("broken")
        if job.payload == b"fail":
            raise JobFailed("no")
        return b"ok"

    with Client([addr(any_server)]) as client:
        handle = client.submit_background("later", b"x", unique="bg-key", priority="low")
        assert client.status(handle) == JobStatus(handle, True, False, 0, 0)
        assert client.statuses([handle, "H:none:1"]) == [JobStatus(handle, True, False, 0, 0),
                                                          JobStatus("H:none:1", False, False, 0, 0)]
        unique = client.status_unique("bg-key")
        assert (unique.known, unique.running) == (True, False)
        assert len(client.submit_background_many([Request("later", b"%d" % i) for i in range(10)])) == 10
        assert status_of(any_server.address, "later") == (11, 0, 0)
        with serving(any_server, {"work": work}):
            with pytest.raises(JobException) as info:
                client.submit("work", b"raise", timeout=10)
            assert info.value.payload == b"RuntimeError: broken"
            with pytest.raises(JobFailed):
                client.submit("work", b"fail", timeout=10)
            out = client.run([Request("work", b"a"), Request("work", b"fail")], timeout=10,
                             return_exceptions=True)
            assert out[0] == b"ok" and isinstance(out[1], JobFailed)
        with pytest.raises(JobTimeout):
            client.submit("nobody-serves-this", b"", timeout=0.2)
        assert client.aio._servers[0].jobs == {}


def test_default_servers_from_the_environment(any_server: process.ServerProcess,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARMAN_SERVERS", f"127.0.0.1:{process.free_port()}, {addr(any_server)}")
    with Client() as client:
        assert [a.port for a in client.aio.addresses][1] == any_server.port
        assert len(client.connect()) == 1  # the first address is dead, the second answers
        with serving(any_server, {"reverse": reverse}):
            assert client.submit("reverse", b"env", timeout=10) == b"vne"


def test_close_fails_waiting_jobs_and_is_final(any_server: process.ServerProcess) -> None:
    before = client_threads()
    client = Client([addr(any_server)])
    assert client_threads() == before + 1
    job = client.submit_job("never", b"")
    outcomes: list[BaseException] = []

    def waiter() -> None:
        try:
            client.submit("never", b"blocked")
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_until(lambda: status_of(any_server.address, "never") == (5, 0, 0))
    client.close()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "a blocked caller hangs after close()"
    assert len(outcomes) == 4 and all(isinstance(e, ConnectionLost) for e in outcomes)
    with pytest.raises(ConnectionLost):
        job.result(timeout=5)
    with pytest.raises(GearmanError, match="closed"):
        client.submit("never")
    client.close()  # idempotent
    assert wait_until(lambda: client_threads() == before, timeout=5)


def test_bad_arguments_leak_no_thread() -> None:
    before = client_threads()
    with pytest.raises(ValueError):
        Client("127.0.0.1:notaport")
    with pytest.raises(ValueError):
        Client(codec="yaml")
    assert client_threads() == before
    with Client([f"127.0.0.1:{process.free_port()}"]) as client:
        with pytest.raises(ValueError):
            client.submit("bad\0name")
        started = time.monotonic()
        with pytest.raises(NoServerAvailable):
            client.submit("x", timeout=5)
        with pytest.raises(NoServerAvailable):
            client.submit_background("x")
        assert time.monotonic() - started < 2
