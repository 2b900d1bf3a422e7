"""AsyncWorker running jobs against real servers (geartrain and C gearmand 1.1.20):
what a function gets, what it can send, how it ends a job, codecs, sizes,
concurrency and max_jobs."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import pytest

from geartrain import AsyncClient, AsyncWorker, JobException, JobFailed, WorkerJob
from geartrain.client import DataEvent, Request, StatusEvent, WarningEvent
from tests.support import process
from tests.support.wire import Wire, submit, wait_until
from tests.worker.util import (
    WAIT,
    Proxy,
    addr,
    max_overlap,
    queue_state,
    running,
    until,
    workers_for,
    workers_lines,
)


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def test_functions_and_job_fields(any_server: process.ServerProcess) -> None:
    """Coroutine and plain functions, registered by decorator and by method; the
    job shows handle, function, unique and payload; the return value completes it."""
    seen: dict[str, tuple[str, str, str, bytes, bytes, bool]] = {}

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2)

        @worker.function("co")
        async def co(job: WorkerJob) -> bytes:
            seen["co"] = (job.handle, job.function, job.unique, job.payload, job.raw,
                          threading.current_thread() is threading.main_thread())
            await asyncio.sleep(0)
            return b"co:" + job.raw

        def plain(job: WorkerJob) -> str:
            seen["plain"] = (job.handle, job.function, job.unique, job.payload, job.raw,
                             threading.current_thread() is threading.main_thread())
            return "plain:" + job.raw.decode()  # str is sent as UTF-8

        class Callable:  # an object with an async __call__ runs on the loop too
            async def __call__(self, job: WorkerJob) -> bytes:
                seen["obj"] = (job.handle, job.function, job.unique, job.payload, job.raw,
                               threading.current_thread() is threading.main_thread())
                return job.raw.upper()

        def returns_coroutine(job: WorkerJob) -> Any:  # a plain function handing back a coroutine
            async def later() -> bytes:
                await asyncio.sleep(0)
                return b"awaited " + job.raw
            return later()

        def nothing(job: WorkerJob) -> None:
            return None

        worker.register("plain", plain)
        worker.register("obj", Callable())
        worker.register("coro_result", returns_coroutine)
        worker.register("nothing", nothing)
        assert worker.functions == ["co", "plain", "obj", "coro_result", "nothing"]
        async with running(worker), AsyncClient(addr(any_server)) as client:
            job = await client.submit_job("co", b"one", unique="u-1")
            assert await job.wait(WAIT) == b"co:one"
            assert seen["co"] == (job.handle, "co", "u-1", b"one", b"one", True)
            job = await client.submit_job("plain", b"two", unique="u-\u00e9")
            assert await job.wait(WAIT) == b"plain:two"
            assert seen["plain"] == (job.handle, "plain", "u-\u00e9", b"two", b"two", False)
            job = await client.submit_job("obj", b"three")
            assert await job.wait(WAIT) == b"THREE"
            assert seen["obj"][:4] == (job.handle, "obj", "", b"three")
            assert seen["obj"][5] is True
            assert await client.submit("coro_result", b"four", timeout=WAIT) == b"awaited four"
            assert await client.submit("nothing", b"five", timeout=WAIT) == b""
        assert worker.jobs_done == 5

    arun(main())


def test_status_data_and_warnings_from_loop_and_thread(any_server: process.ServerProcess) -> None:
    """send_status/send_data/send_warning reach the client in order, from a coroutine
    on the loop and from the thread a plain function runs in."""

    def progress(job: WorkerJob) -> None:
        job.send_status(1, 3)
        job.send_data(b"chunk-1")
        job.send_warning("careful")
        job.send_status(2, 3)
        job.send_data("chunk-2")

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2)

        @worker.function("co")
        async def co(job: WorkerJob) -> bytes:
            progress(job)
            await asyncio.sleep(0.01)
            job.send_status(3, 3)
            return b"done-co"

        @worker.function("thread")
        def thread(job: WorkerJob) -> bytes:
            progress(job)
            time.sleep(0.01)
            job.send_status(3, 3)
            return b"done-thread"

        expected = [StatusEvent(1, 3), DataEvent(b"chunk-1"), WarningEvent(b"careful"),
                    StatusEvent(2, 3), DataEvent(b"chunk-2"), StatusEvent(3, 3)]
        async with running(worker), AsyncClient(addr(any_server)) as client:
            for name in ("co", "thread"):
                job = await client.submit_job(name, b"x")
                assert await job.wait(WAIT) == b"done-" + name.encode()
                assert job.history == expected, name
                assert (job.numerator, job.denominator) == (3, 3)

    arun(main())


class Oops(Exception):
    pass


def test_exceptions_and_failures(any_server: process.ServerProcess) -> None:
    """Raising sends WORK_EXCEPTION "Type: message" (a client with exceptions on
    gets JobException); JobFailed sends WORK_FAIL; the worker goes on."""

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2)

        @worker.function("co_raise")
        async def co_raise(job: WorkerJob) -> bytes:
            raise ValueError("bad input: " + job.payload.decode())

        @worker.function("thread_raise")
        def thread_raise(job: WorkerJob) -> bytes:
            raise Oops()  # no message: just the type

        @worker.function("co_fail")
        async def co_fail(job: WorkerJob) -> bytes:
            raise JobFailed("no")

        @worker.function("thread_fail")
        def thread_fail(job: WorkerJob) -> bytes:
            raise JobFailed("no")

        @worker.function("own_cancel")
        async def own_cancel(job: WorkerJob) -> bytes:
            fut = asyncio.get_running_loop().create_future()
            fut.cancel()
            return await fut  # type: ignore[no-any-return]  # CancelledError of its own making

        @worker.function("bad_result")
        async def bad_result(job: WorkerJob) -> Any:
            return 12  # the bytes codec cannot encode an int

        @worker.function("ok")
        async def ok(job: WorkerJob) -> bytes:
            return b"still working"

        async with running(worker), AsyncClient(addr(any_server), exceptions=True) as client:
            with pytest.raises(JobException) as info:
                await client.submit("co_raise", b"42", timeout=WAIT)
            assert info.value.payload == b"ValueError: bad input: 42"
            with pytest.raises(JobException) as info:
                await client.submit("thread_raise", b"", timeout=WAIT)
            assert info.value.payload == b"Oops"
            for name in ("co_fail", "thread_fail"):
                with pytest.raises(JobFailed):
                    await client.submit(name, b"", timeout=WAIT)
            with pytest.raises(JobException) as info:
                await client.submit("own_cancel", b"", timeout=WAIT)
            assert info.value.payload == b"CancelledError"
            with pytest.raises(JobException) as info:
                await client.submit("bad_result", b"", timeout=WAIT)
            assert info.value.payload.startswith(b"TypeError: payload must be bytes or str, not int")
            assert await client.submit("ok", b"", timeout=WAIT) == b"still working"
        assert worker.jobs_done == 7

    arun(main())


def test_codecs_per_function(any_server: process.ServerProcess) -> None:
    """codec="json"/"str" per function (the worker's default stays bytes); a payload
    the codec cannot decode is a WORK_EXCEPTION and counts as a job."""

    async def main() -> None:
        worker = AsyncWorker(addr(any_server))

        @worker.function("js", codec="json")
        async def js(job: WorkerJob) -> Any:
            assert job.raw == b'{"a":[1,2],"b":"\xc3\xa9"}' or job.raw == b"not json"
            return {"sum": sum(job.payload["a"]), "b": job.payload["b"] * 2, "n": None}

        def text(job: WorkerJob) -> str:
            assert isinstance(job.payload, str)
            return job.payload[::-1]

        worker.register("text", text, codec="str")

        @worker.function("raw")
        async def raw(job: WorkerJob) -> bytes:
            assert isinstance(job.payload, bytes)
            return job.payload * 2

        async with running(worker):
            async with AsyncClient(addr(any_server), codec="json") as client:
                got = await client.submit("js", {"a": [1, 2], "b": "\u00e9"}, timeout=WAIT)
                assert got == {"sum": 3, "b": "\u00e9\u00e9", "n": None}
            async with AsyncClient(addr(any_server), codec="str") as client:
                assert await client.submit("text", "h\u00e9llo", timeout=WAIT) == "oll\u00e9h"
            async with AsyncClient(addr(any_server)) as client:
                assert await client.submit("raw", b"\xff\x00", timeout=WAIT) == b"\xff\x00\xff\x00"
                with pytest.raises(JobException) as info:
                    await client.submit("js", b"not json", timeout=WAIT)
                assert info.value.payload.startswith(b"JSONDecodeError: Expecting value")
        assert worker.jobs_done == 4

    arun(main())


def test_result_larger_than_10_mib(any_server: process.ServerProcess) -> None:
    """An 11 MiB result (and a 3 MiB payload) arrive intact."""
    payload = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)
    block = hashlib.sha256(b"x").digest()

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2)

        @worker.function("big")
        async def big(job: WorkerJob) -> bytes:
            assert job.payload == payload
            return hashlib.sha256(job.payload).digest() + block * (11 * 1024 * 1024 // 32)

        @worker.function("big_thread")
        def big_thread(job: WorkerJob) -> bytes:
            return job.raw[::-1] + block * (11 * 1024 * 1024 // 32)

        async with running(worker), AsyncClient(addr(any_server)) as client:
            got = await client.submit("big", payload, timeout=WAIT)
            assert len(got) == 32 + 11 * 1024 * 1024
            assert got == hashlib.sha256(payload).digest() + block * (11 * 1024 * 1024 // 32)
            got = await client.submit("big_thread", payload, timeout=WAIT)
            assert got == payload[::-1] + block * (11 * 1024 * 1024 // 32)

    arun(main())


@pytest.mark.parametrize("kind", ["coroutine", "thread"])
def test_concurrency_overlap_is_exactly_n(any_server: process.ServerProcess, kind: str) -> None:
    """concurrency=N runs N jobs at once and never more: 3N queued jobs that take
    0.15 s each run with a maximum overlap of exactly N, in about 3 rounds."""
    n = 3
    spans: list[tuple[float, float]] = []

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=n)
        if kind == "coroutine":
            @worker.function("slow")
            async def slow(job: WorkerJob) -> bytes:
                start = time.monotonic()
                await asyncio.sleep(0.15)
                spans.append((start, time.monotonic()))
                return b""
        else:
            @worker.function("slow")
            def slow_thread(job: WorkerJob) -> bytes:
                start = time.monotonic()
                time.sleep(0.15)
                spans.append((start, time.monotonic()))
                return b""

        async with AsyncClient(addr(any_server)) as client:
            await client.submit_background_many([Request("slow", b"%d" % i) for i in range(3 * n)])
            t0 = time.monotonic()
            await asyncio.wait_for(worker.run(max_jobs=3 * n), WAIT)
            elapsed = time.monotonic() - t0
        assert len(spans) == 3 * n
        assert max_overlap(spans) == n
        assert 0.45 <= elapsed < 0.45 + 1.0

    arun(main())
    assert wait_until(lambda: queue_state(any_server.address, "slow") == (0, 0, 0))


def test_max_jobs(any_server: process.ServerProcess) -> None:
    """run(max_jobs=3) with concurrency 4 (room for more grabs in flight) takes
    exactly 3 of 6 queued jobs, then returns by itself; the other 3 stay
    queued. run() may be called again."""
    calls: list[bytes] = []

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=4)

        @worker.function("count")
        async def count(job: WorkerJob) -> bytes:
            calls.append(job.raw)
            await asyncio.sleep(0.05)
            return b""

        with Wire(any_server.address) as w:
            for i in range(6):
                submit(w, "count", b"%d" % i, ptype="SUBMIT_JOB_BG")
        await asyncio.wait_for(worker.run(max_jobs=3), WAIT)
        assert worker.jobs_done == 3
        assert sorted(calls) == [b"0", b"1", b"2"]
        # 3 left, and the server sees the worker gone
        await until(lambda: queue_state(any_server.address, "count") == (3, 0, 0), what="3 left")
        await asyncio.wait_for(worker.run(max_jobs=3), WAIT)  # a second run() works too
        assert sorted(calls) == [b"0", b"1", b"2", b"3", b"4", b"5"]
        await until(lambda: queue_state(any_server.address, "count") == (0, 0, 0), what="none left")

    arun(main())


def test_client_id_in_admin_workers(any_server: process.ServerProcess) -> None:
    """client_id is sent as SET_CLIENT_ID: admin `workers` lists it with the functions."""

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), client_id="gt-worker-7")

        @worker.function("alpha")
        async def alpha(job: WorkerJob) -> bytes:
            return b""

        worker.register("beta", alpha)
        async with running(worker):
            await workers_for(any_server.address, "beta")
            lines = await until(
                lambda: [ln for ln in workers_lines(any_server.address) if "gt-worker-7" in ln],
                what="worker line")
        assert len(lines) == 1
        cols = lines[0].split()
        assert cols[2] == "gt-worker-7" and cols[3] == ":", lines
        assert sorted(cols[4:]) == ["alpha", "beta"]

    arun(main())


def test_register_and_unregister_while_running(any_server: process.ServerProcess) -> None:
    """A function registered while the worker runs (even one with jobs already
    queued while the worker slept) is served at once; an unregistered one
    (CANT_DO) is no longer taken, the others still are."""
    address = any_server.address

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2)

        @worker.function("a")
        async def a(job: WorkerJob) -> bytes:
            return b"a:" + job.raw

        async def b(job: WorkerJob) -> bytes:
            return b"b:" + job.raw

        async with running(worker), AsyncClient(addr(any_server)) as client:
            await workers_for(address, "a")
            handle = await client.submit_background("b", b"early")  # nobody can do b yet
            await asyncio.sleep(0.2)  # the worker is asleep (PRE_SLEEP)
            assert queue_state(address, "b") == (1, 0, 0)
            worker.register("b", b)
            await until(lambda: queue_state(address, "b") == (0, 0, 1), what="early b job done")
            assert not (await client.status(handle)).known
            assert await client.submit("b", b"x", timeout=WAIT) == b"b:x"
            # from another thread, as a blocking caller would
            await asyncio.to_thread(worker.unregister, "b")
            assert worker.functions == ["a"]
            await workers_for(address, "b", 0)
            await client.submit_background("b", b"late")
            await asyncio.sleep(0.3)
            assert queue_state(address, "b") == (1, 0, 0)  # queued, not taken
            assert await client.submit("a", b"y", timeout=WAIT) == b"a:y"
            assert queue_state(address, "b") == (1, 0, 0)

    arun(main())


def test_unregister_hands_running_jobs_back(any_server: process.ServerProcess) -> None:
    """Both servers requeue a worker's running jobs of a function it drops
    (CANT_DO), as unregister() documents: another worker runs the job again and
    its client gets that result; the first worker's late result is refused."""
    address = any_server.address

    async def main() -> None:
        release = asyncio.Event()
        started = asyncio.Event()
        first = AsyncWorker(addr(any_server))
        second = AsyncWorker(addr(any_server))

        @first.function("f")
        async def f1(job: WorkerJob) -> bytes:
            started.set()
            await asyncio.wait_for(release.wait(), WAIT)
            return b"first"

        async def f2(job: WorkerJob) -> bytes:
            release.set()
            return b"second"

        async with running(first), AsyncClient(addr(any_server)) as client:
            job = await client.submit_job("f", b"")
            await asyncio.wait_for(started.wait(), WAIT)
            assert queue_state(address, "f") == (1, 1, 1)
            first.unregister("f")
            await until(lambda: queue_state(address, "f") == (1, 0, 0), what="job requeued")
            second.register("f", f2)
            async with running(second):
                assert await job.wait(WAIT) == b"second"
            await until(lambda: queue_state(address, "f") == (0, 0, 0), what="job done, second worker gone")
        assert first.jobs_done == 1 and second.jobs_done == 1

    arun(main())


def test_job_assigned_as_its_function_is_unregistered(any_server: process.ServerProcess) -> None:
    """A JOB_ASSIGN that was on its way when unregister() ran (the server got our
    GRAB before our CANT_DO) is left alone: the CANT_DO made the server requeue
    it, so the worker neither runs nor fails it, and another worker does it.
    A proxy holds the server's answers back to stage the race."""
    address = any_server.address
    proxy = Proxy(address)
    calls: list[bytes] = []

    async def main() -> None:
        worker = AsyncWorker(addr(proxy.address))

        @worker.function("f")
        async def f(job: WorkerJob) -> bytes:
            calls.append(job.raw)
            return b"first"

        @worker.function("g")
        async def g(job: WorkerJob) -> bytes:
            return b"g"

        async with running(worker), AsyncClient(addr(any_server)) as client:
            await proxy.wait_for("up", "PRE_SLEEP")
            proxy.hold_after("down", "NOOP")
            await client.submit_background("f", b"J")
            noop = await proxy.wait_for("down", "NOOP")
            await proxy.wait_for("up", "GRAB_JOB_UNIQ", since=noop)
            await until(lambda: queue_state(address, "f") == (1, 1, 1), what="J assigned")
            worker.unregister("f")
            await until(lambda: queue_state(address, "f") == (1, 0, 0), what="J requeued")
            mark = proxy.count()
            proxy.release()
            await proxy.wait_for("up", "PRE_SLEEP", since=mark)
            assert [name for name, _ in proxy.seen("up", since=mark)] == ["GRAB_JOB_UNIQ", "PRE_SLEEP"]
            assert calls == [] and worker.jobs_done == 0
            assert await client.submit("g", b"", timeout=WAIT) == b"g"  # still working
            other = AsyncWorker(addr(any_server))
            other.register("f", g)
            async with running(other):
                await until(lambda: other.jobs_done == 1, what="J done by another worker")
        assert calls == []
        await until(lambda: queue_state(address, "f") == (0, 0, 0), what="J gone")

    try:
        arun(main())
    finally:
        proxy.close()
