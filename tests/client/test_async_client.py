"""AsyncClient against real servers: geartrain and C gearmand 1.1.20.

Jobs are served either by an AsyncWorker running on the test's event loop or
by a raw Wire worker, when a test must control exactly what the worker sends
(WORK_STATUS/DATA/WARNING one by one, a late result, nothing at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

from geartrain.client import (
    AsyncClient,
    DataEvent,
    Event,
    Job,
    JobStatus,
    Request,
    StatusEvent,
    WarningEvent,
)
from geartrain.errors import (
    ConnectionLost,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    QueueFull,
    ServerError,
)
from geartrain.worker import AsyncWorker, WorkerJob
from tests.support import process
from tests.support.wire import Wire, admin, grab, status_of

# --------------------------------------------------------------------- helpers


def arun(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run a test coroutine on a fresh loop, bounded: a hang fails the test."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def addr(srv: process.ServerProcess) -> str:
    return f"{srv.host}:{srv.port}"


@contextlib.asynccontextmanager
async def serving(srv: process.ServerProcess, functions: dict[str, Callable[[WorkerJob], Any]],
                  *, concurrency: int = 4, codec: str | None = None) -> AsyncIterator[AsyncWorker]:
    """An AsyncWorker serving *functions* on this loop for the block's duration."""
    worker = AsyncWorker([addr(srv)], concurrency=concurrency, codec=codec)
    for name, fn in functions.items():
        worker.register(name, fn)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


async def reverse(job: WorkerJob) -> bytes:
    return bytes(job.payload[::-1])


def assert_clean(client: AsyncClient) -> None:
    """Nothing left behind: no job routed by handle, no waiter for a reply."""
    for srv in client._servers:
        assert srv.jobs == {}
        assert srv._rr == {}
        assert len(srv.pending) == 0


async def grab_async(w: Wire) -> list[bytes]:
    """A raw worker's GRAB, off the loop (the blocking socket must not stall it)."""
    _, args = await asyncio.to_thread(grab, w)
    return args


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        await asyncio.sleep(0.01)


# ------------------------------------------------------------ foreground jobs


def test_submit_returns_the_result(any_server: process.ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client, serving(any_server, {"reverse": reverse}):
            assert await client.submit("reverse", b"Rasmus", timeout=10) == b"sumsaR"
            assert await client.submit("reverse", "héllo", timeout=10) == "héllo".encode()[::-1]  # str: UTF-8
            job = await client.submit_job("reverse", b"abc")
            assert job.handle is not None and job.handle.startswith("H:")
            assert job.server is not None and job.server.port == any_server.port
            assert await job == b"cba"
            assert job.done() and job.result() == b"cba"
            assert await client.echo(b"are you there") == b"are you there"
            assert_clean(client)
    arun(main())


def test_events_arrive_as_they_happen_through_callbacks_and_async_for(
        any_server: process.ServerProcess) -> None:
    """A raw worker sends one packet at a time; each is seen before the next is sent."""
    async def main() -> None:
        calls: list[tuple[Any, ...]] = []
        with Wire(any_server.address) as w:
            w.send("CAN_DO", "events")
            async with AsyncClient([addr(any_server)]) as client:
                job = await client.submit_job(
                    "events", b"in",
                    on_status=lambda j, n, d: calls.append(("status", j, n, d)),
                    on_data=lambda j, data: calls.append(("data", j, data)),
                    on_warning=lambda j, data: calls.append(("warning", j, data)))
                handle = (await grab_async(w))[0]
                assert handle.decode() == job.handle
                # two more consumers iterate concurrently from the start
                others = [asyncio.create_task(collect(job)) for _ in range(2)]
                events = job.events().__aiter__()

                steps: list[tuple[str, list[bytes], Event]] = [
                    ("WORK_STATUS", [handle, b"1", b"3"], StatusEvent(1, 3)),
                    ("WORK_DATA", [handle, b"chunk\0with NUL"], DataEvent(b"chunk\0with NUL")),
                    ("WORK_WARNING", [handle, b"careful"], WarningEvent(b"careful")),
                    ("WORK_STATUS", [handle, b"3", b"3"], StatusEvent(3, 3)),
                ]
                for ptype, args, expected in steps:
                    w.send(ptype, *args)
                    assert await asyncio.wait_for(events.__anext__(), 5) == expected
                assert (job.numerator, job.denominator) == (3, 3)
                w.send("WORK_COMPLETE", handle, b"result")
                assert [e async for e in events] == []  # ends with the job
                assert await job.wait(5) == b"result"
                expected_events = [e for _, _, e in steps]
                for task in others:
                    assert await asyncio.wait_for(task, 5) == expected_events
                assert job.history == expected_events
                assert job.data == [b"chunk\0with NUL"] and job.warnings == [b"careful"]
                assert calls == [("status", job, 1, 3), ("data", job, b"chunk\0with NUL"),
                                 ("warning", job, b"careful"), ("status", job, 3, 3)]
                # iterating a finished job replays its events and ends
                assert await collect(job) == expected_events
                assert_clean(client)
    arun(main())


async def collect(job: Job) -> list[Event]:
    return [e async for e in job.events()]


def test_a_raising_callback_does_not_break_the_connection(any_server: process.ServerProcess) -> None:
    def bad(job: Job, n: int, d: int) -> None:
        raise RuntimeError("callback bug")

    async def progress(job: WorkerJob) -> bytes:
        job.send_status(1, 2)
        return b"fine"

    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client, serving(any_server, {"p": progress}):
            assert await client.submit("p", on_status=bad, timeout=10) == b"fine"
            assert await client.submit("p", timeout=10) == b"fine"
    arun(main())


def test_two_jobs_with_one_handle_on_one_connection_both_resolve(any_server: process.ServerProcess) -> None:
    """The same unique submitted twice on one connection: one handle, the server
    sends every WORK_* once per submit, each Job gets its share."""
    async def main() -> None:
        with Wire(any_server.address) as w:
            w.send("CAN_DO", "dup")
            async with AsyncClient([addr(any_server)]) as client:
                j1 = await client.submit_job("dup", b"x", unique="same")
                j2 = await client.submit_job("dup", b"x", unique="same")
                assert j1.handle == j2.handle and j1 is not j2
                handle = (await grab_async(w))[0]
                assert w.silent(0.2) is None  # one job only
                w.send("WORK_STATUS", handle, b"1", b"2")
                w.send("WORK_COMPLETE", handle, b"twice")
                assert await j1.wait(5) == b"twice"
                assert await j2.wait(5) == b"twice"
                assert j1.history == [StatusEvent(1, 2)] and j2.history == [StatusEvent(1, 2)]
                assert_clean(client)
                # one of two such jobs times out: the other still gets each packet once
                kept = await client.submit_job("dup", b"y", unique="again")
                with pytest.raises(JobTimeout):
                    await client.submit("dup", b"y", unique="again", timeout=0.2)
                handle = (await grab_async(w))[0]
                assert handle.decode() == kept.handle
                w.send("WORK_DATA", handle, b"chunk")
                w.send("WORK_COMPLETE", handle, b"once")
                assert await kept.wait(5) == b"once"
                assert kept.history == [DataEvent(b"chunk")]
                assert await client.echo() == b"ping"  # the second copies have arrived
                assert_clean(client)
    arun(main())


# ----------------------------------------------------------- background jobs


def test_background_job_handle_and_status_of_many_handles(any_server: process.ServerProcess) -> None:
    async def main() -> None:
        with Wire(any_server.address) as w:
            async with AsyncClient([addr(any_server)]) as client:
                running = await client.submit_background("bg", b"one", unique="bg-1")
                queued = await client.submit_background("bg", b"two")
                assert running.startswith("H:") and queued.startswith("H:") and running != queued
                assert status_of(any_server.address, "bg") == (2, 0, 0)
                w.send("CAN_DO", "bg")
                handle, fn, payload = await grab_async(w)
                assert (handle.decode(), fn, payload) == (running, b"bg", b"one")
                w.send("WORK_STATUS", handle, b"2", b"5")
                assert await until(lambda: status_of(any_server.address, "bg") == (2, 1, 1))
                got = await client.statuses([running, queued, "H:nowhere:99"])
                assert got == [JobStatus(running, True, True, 2, 5), JobStatus(queued, True, False, 0, 0),
                               JobStatus("H:nowhere:99", False, False, 0, 0)]
                assert got[0].progress == 0.4 and got[1].progress is None
                unique = await client.status_unique("bg-1")
                assert (unique.unique, unique.known, unique.running) == ("bg-1", True, True)
                assert (unique.numerator, unique.denominator, unique.clients) == (2, 5, 0)
                w.send("WORK_COMPLETE", handle, b"")
                assert await until(lambda: status_of(any_server.address, "bg") == (1, 0, 1))
                assert await client.status(running) == JobStatus(running, False, False, 0, 0)
                assert (await client.status_unique("bg-1")).known is False
                assert await client.statuses([]) == []
    arun(main())


def test_priorities_are_served_high_normal_low(any_server: process.ServerProcess) -> None:
    order: list[bytes] = []

    async def record(job: WorkerJob) -> bytes:
        order.append(job.payload)
        return b""

    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client:
            for i in (1, 2):
                await client.submit_background("prio", b"low%d" % i, priority="low")
                await client.submit_background("prio", b"normal%d" % i)
                await client.submit_background("prio", b"high%d" % i, priority="HIGH")
            handles = await client.submit_background_many(
                [Request("prio", b"high3", priority="high"), Request("prio", b"low3", priority="low")])
            assert len(set(handles)) == 2
            assert status_of(any_server.address, "prio") == (8, 0, 0)
            async with serving(any_server, {"prio": record}, concurrency=1) as worker:
                assert await until(lambda: worker.jobs_done == 8)
        assert order == [b"high1", b"high2", b"high3", b"normal1", b"normal2", b"low1", b"low2", b"low3"]
    arun(main())


def test_run_at_job_does_not_run_before_its_time(any_server: process.ServerProcess) -> None:
    """SUBMIT_JOB_EPOCH. A polling raw worker: C gearmand does not wake a
    sleeping worker when an epoch job falls due, so PRE_SLEEP would wait forever."""
    async def main() -> None:
        with Wire(any_server.address) as w:
            w.send("CAN_DO", "later")
            async with AsyncClient([addr(any_server)]) as client:
                run_at = int(time.time()) + 2
                when = datetime.datetime.fromtimestamp(run_at, tz=datetime.UTC)
                handle = await client.submit_background("later", b"tick", run_at=when)
                assert (await client.status(handle)).known
                assigned_at = None
                while time.time() < run_at + 3:
                    w.send("GRAB_JOB")
                    name, args = w.recv(2)
                    if name == "JOB_ASSIGN":
                        assigned_at = time.time()
                        assert args == [handle.encode(), b"later", b"tick"]
                        break
                    assert name == "NO_JOB"
                    await asyncio.sleep(0.05)
                assert assigned_at is not None, "the job never ran"
                assert assigned_at >= run_at
    arun(main())


def test_twenty_thousand_pipelined_background_submits(any_server: process.ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client:
            handles = await client.submit_background_many(
                Request("bulk", b"%d" % i) for i in range(20_000))
            assert len(handles) == 20_000 and len(set(handles)) == 20_000
            numbers = [int(h.rsplit(":", 1)[1]) for h in handles]
            assert numbers == sorted(numbers)  # the servers number handles in arrival order
            assert status_of(any_server.address, "bulk") == (20_000, 0, 0)
            assert_clean(client)
    arun(main())


# ---------------------------------------------------------------- many jobs


def test_run_gathers_jobs_concurrently(any_server: process.ServerProcess) -> None:
    """Eight jobs must all be running at once to finish: submitted one after
    another's result, they would dead-lock (and fail after 5 s)."""
    active = 0
    all_in = asyncio.Event()

    async def rendezvous(job: WorkerJob) -> bytes:
        nonlocal active
        active += 1
        if active == 8:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)
        return bytes(job.payload) + b"!"

    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client, \
                serving(any_server, {"meet": rendezvous, "reverse": reverse}, concurrency=8):
            results = await client.run([Request("meet", b"%d" % i) for i in range(8)], timeout=10)
            assert results == [b"%d!" % i for i in range(8)]
            jobs = await client.submit_jobs([Request("reverse", b"x%d" % i) for i in range(5)])
            assert all(j.handle for j in jobs) and len({j.handle for j in jobs}) == 5
            assert [await j.wait(10) for j in jobs] == [b"%d" % i + b"x" for i in range(5)]
            assert_clean(client)
    arun(main())


def test_run_with_return_exceptions(any_server: process.ServerProcess) -> None:
    async def work(job: WorkerJob) -> bytes:
        if job.payload == b"fail":
            raise JobFailed("no")
        if job.payload == b"raise":
            raise KeyError("missing")
        return b"ok:" + bytes(job.payload)

    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client, serving(any_server, {"mixed": work}):
            out = await client.run([Request("mixed", b"a"), Request("mixed", b"fail"),
                                    Request("mixed", b"raise"), Request("mixed", b"b")],
                                   timeout=10, return_exceptions=True)
            assert out[0] == b"ok:a" and out[3] == b"ok:b"
            assert isinstance(out[1], JobFailed) and out[1].handle
            assert isinstance(out[2], JobException) and out[2].payload == b"KeyError: 'missing'"
            with pytest.raises(JobFailed):
                await client.run([Request("mixed", b"c"), Request("mixed", b"fail")], timeout=10)
            await asyncio.sleep(0.1)
            assert_clean(client)
    arun(main())


# -------------------------------------------------------------------- errors


def test_worker_exception_arrives_typed_with_its_payload(any_server: process.ServerProcess) -> None:
    async def boom(job: WorkerJob) -> bytes:
        raise ValueError("boom \u2603")

    async def fail(job: WorkerJob) -> bytes:
        raise JobFailed("nope")

    async def main() -> None:
        async with serving(any_server, {"boom": boom, "fail": fail}):
            async with AsyncClient([addr(any_server)]) as client:
                with pytest.raises(JobException) as info:
                    await client.submit("boom", b"", timeout=10)
                assert info.value.payload == "ValueError: boom \u2603".encode()
                assert info.value.handle is not None and info.value.handle.startswith("H:")
                with pytest.raises(JobFailed) as failed:
                    await client.submit("fail", b"", timeout=10)
                assert not isinstance(failed.value, JobException)
                assert_clean(client)
            # without the option the server reports the exception as a plain failure
            async with AsyncClient([addr(any_server)], exceptions=False) as client:
                with pytest.raises(JobFailed) as plain:
                    await client.submit("boom", b"", timeout=10)
                assert not isinstance(plain.value, JobException)
    arun(main())


def test_timeout_forgets_the_job_and_a_late_result_is_harmless(any_server: process.ServerProcess) -> None:
    async def main() -> None:
        with Wire(any_server.address) as w:
            w.send("CAN_DO", "slow")
            async with AsyncClient([addr(any_server)]) as client:
                started = time.monotonic()
                with pytest.raises(JobTimeout) as info:
                    await client.submit("slow", b"1", timeout=0.3)
                assert 0.3 <= time.monotonic() - started < 3
                assert isinstance(info.value, TimeoutError)
                assert_clean(client)
                handle = (await grab_async(w))[0]
                assert info.value.handle == handle.decode()
                # the worker answers long after the caller gave up
                w.send("WORK_STATUS", handle, b"1", b"1")
                w.send("WORK_DATA", handle, b"late data")
                w.send("WORK_COMPLETE", handle, b"late")
                assert await client.echo(b"still fine") == b"still fine"
                assert_clean(client)
                # run() with a timeout forgets its unfinished jobs too
                with pytest.raises(JobTimeout):
                    await client.run([Request("slow", b"2"), Request("slow", b"3")], timeout=0.3)
                assert_clean(client)
                for _ in range(2):
                    h = (await grab_async(w))[0]
                    w.send("WORK_COMPLETE", h, b"late")
                # the connection still works for new jobs
                job = await client.submit_job("slow", b"4")
                h = (await grab_async(w))[0]
                w.send("WORK_COMPLETE", h, b"on time")
                assert await job.wait(5) == b"on time"
                assert_clean(client)
    arun(main())


def test_job_wait_timeout_keeps_the_job(any_server: process.ServerProcess) -> None:
    """job.wait(timeout) is a caller's bounded look: the job can be awaited again."""
    async def main() -> None:
        with Wire(any_server.address) as w:
            w.send("CAN_DO", "slow")
            async with AsyncClient([addr(any_server)]) as client:
                job = await client.submit_job("slow")
                with pytest.raises(JobTimeout):
                    await job.wait(0.1)
                assert not job.done()
                h = (await grab_async(w))[0]
                w.send("WORK_COMPLETE", h, b"eventually")
                assert await job.wait(5) == b"eventually"
    arun(main())


def test_queue_full_is_a_typed_server_error(any_server: process.ServerProcess) -> None:
    with Wire(any_server.address) as w:
        w.send("CAN_DO", "limited")  # C gearmand applies maxqueue only to a function it knows
        w.send("ECHO_REQ", b"sync")
        w.expect("ECHO_RES")
        assert admin(any_server.address, "maxqueue limited 1") == [b"OK\r\n"]

        async def main() -> None:
            async with AsyncClient([addr(any_server)]) as client:
                first = await client.submit_background("limited", b"1")
                with pytest.raises(QueueFull) as info:
                    await client.submit_background("limited", b"2")
                assert isinstance(info.value, ServerError)
                assert info.value.code == "QUEUE_ERROR" and info.value.server == addr(any_server)
                with pytest.raises(QueueFull):
                    await client.submit("limited", b"3", timeout=5)
                out = await client.submit_background_many(
                    [Request("limited", b"4"), Request("other", b"5")], return_exceptions=True)
                assert isinstance(out[0], QueueFull) and out[1].startswith("H:")
                assert (await client.status(first)).known
                assert_clean(client)
        arun(main())


def test_connection_lost_when_the_server_dies_then_the_client_recovers(
        any_server: process.ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client:
            with Wire(any_server.address) as w:
                w.send("CAN_DO", "doomed")
                job = await client.submit_job("doomed", b"x")
                await grab_async(w)
                any_server.signal(signal.SIGKILL)
                started = time.monotonic()
                with pytest.raises(ConnectionLost):
                    await job.wait(10)
                assert time.monotonic() - started < 2
                await asyncio.to_thread(any_server.wait, 5)
            with pytest.raises(NoServerAvailable):
                await client.submit_background("doomed")
            assert_clean(client)
            await asyncio.to_thread(any_server.start)
            # the failed attempt above started a back-off (0.05-0.1 s): wait it out
            handle = None
            end = time.monotonic() + 5
            while handle is None and time.monotonic() < end:
                try:
                    handle = await client.submit_background("again", b"y")
                except NoServerAvailable:
                    await asyncio.sleep(0.05)
            assert handle is not None and handle.startswith("H:")
            async with serving(any_server, {"reverse": reverse}):
                assert await client.submit("reverse", b"back", timeout=10) == b"kcab"
    arun(main())


def test_a_server_that_does_not_answer_the_greeting_leaves_no_stale_waiter(
        any_server: process.ServerProcess) -> None:
    """A stopped server (SIGSTOP) still accepts connections in the kernel but
    never answers OPTION_REQ: the connect fails with NoServerAvailable, and the
    next connection's replies are not taken by the dead greeting's waiter."""
    async def main() -> None:
        async with AsyncClient([addr(any_server)], connect_timeout=0.3, client_id="greeter") as client:
            any_server.signal(signal.SIGSTOP)
            try:
                with pytest.raises(NoServerAvailable, match="did not answer"):
                    await client.submit_background("x", b"")
            finally:
                any_server.signal(signal.SIGCONT)
            assert await until(lambda: client._servers[0].backoff.ready(time.monotonic()))
            assert await client.echo(b"first") == b"first"
            handle = await client.submit_background("x", b"")
            assert handle.startswith("H:")
            assert await client.status(handle) == JobStatus(handle, True, False, 0, 0)
            assert await client.echo(b"second") == b"second"
            assert b" greeter " in admin(any_server.address, "workers")[0]
            assert_clean(client)
    arun(main())


def test_no_server_is_a_typed_error() -> None:
    async def main() -> None:
        async with AsyncClient([f"127.0.0.1:{process.free_port()}"]) as client:
            with pytest.raises(NoServerAvailable, match="cannot connect"):
                await client.submit("x")
            with pytest.raises(NoServerAvailable, match="retrying in"):
                await client.status("H:x:1")  # within the back-off: not even tried
    arun(main())


def test_validation_errors_send_nothing() -> None:
    async def main() -> None:
        async with AsyncClient([f"127.0.0.1:{process.free_port()}"]) as client:
            bad: list[Callable[[], Awaitable[Any]]] = [
                lambda: client.submit("a\0b"),
                lambda: client.submit(""),
                lambda: client.submit("fn", unique="u\0"),
                lambda: client.submit_background("fn", unique=b"\0"),
                lambda: client.submit("fn", priority="urgent"),
                lambda: client.run([Request("fn", run_at=time.time())]),
                lambda: client.submit_background("fn", run_at=time.time(), priority="high"),
                lambda: client.submit_background_many([Request("ok"), Request("b\0d")]),
                lambda: client.status("H\0x"),
            ]
            for call in bad:
                with pytest.raises(ValueError):
                    await call()
            with pytest.raises(TypeError):
                await client.submit("fn", 42)  # the bytes codec takes bytes or str
            assert client._servers[0].link is None  # nothing was sent: not even a connection
    arun(main())


# ------------------------------------------------------- payloads and codecs


def test_payloads_with_nul_bytes_and_ten_mebibytes(any_server: process.ServerProcess) -> None:
    async def echo(job: WorkerJob) -> bytes:
        return bytes(job.payload)

    async def main() -> None:
        big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
        async with AsyncClient([addr(any_server)]) as client, serving(any_server, {"echo": echo}):
            nul = b"\0a\0\0b\0"
            assert await client.submit("echo", nul, timeout=10) == nul
            assert await client.submit("echo", b"", timeout=10) == b""
            started = time.monotonic()
            assert await client.submit("echo", big, timeout=30) == big
            assert time.monotonic() - started < 15
    arun(main(), 60)


def test_str_and_json_codecs(any_server: process.ServerProcess) -> None:
    async def shout(job: WorkerJob) -> str:
        return str(job.payload).upper()

    async def stats(job: WorkerJob) -> dict[str, Any]:
        numbers = job.payload["numbers"]
        return {"sum": sum(numbers), "n": len(numbers), "name": job.payload["name"]}

    async def main() -> None:
        async with serving(any_server, {"shout": shout}, codec="str"), \
                serving(any_server, {"stats": stats}, codec="json"):
            async with AsyncClient([addr(any_server)], codec="str") as client:
                assert await client.submit("shout", "grüße", timeout=10) == "GRÜSSE"
            async with AsyncClient([addr(any_server)], codec="json") as client:
                got = await client.submit("stats", {"numbers": [1, 2, 3.5], "name": "é"}, timeout=10)
                assert got == {"sum": 6.5, "n": 3, "name": "é"}
                handle = await client.submit_background("stats", {"numbers": [], "name": "bg"})
                assert isinstance(handle, str)
            async with AsyncClient([addr(any_server)]) as client:  # bytes: the JSON as sent
                raw = await client.submit("stats", json.dumps({"numbers": [2], "name": "x"}), timeout=10)
                assert json.loads(raw) == {"sum": 2, "n": 1, "name": "x"}
    arun(main())


# -------------------------------------------------------------------- memory


def test_ten_thousand_jobs_leave_nothing_behind(any_server: process.ServerProcess) -> None:
    async def main() -> None:
        async with AsyncClient([addr(any_server)]) as client, \
                serving(any_server, {"reverse": reverse}, concurrency=64):
            for batch in range(10):
                requests = [Request("reverse", b"%d-%d" % (batch, i)) for i in range(1000)]
                results = await client.run(requests, timeout=30)
                assert results == [r.payload[::-1] for r in requests]
            assert_clean(client)
    arun(main(), 60)
