"""The worker's connection life against real servers (geartrain and C gearmand
1.1.20): sleeping without polling (seen through a packet-counting proxy),
CAN_DO_TIMEOUT, several servers, reconnecting after a restart, graceful and
hard stops, and the blocking Worker in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geartrain import AsyncClient, AsyncWorker, Client, Worker, WorkerJob
from geartrain.client import Request
from tests.support import process
from tests.support.wire import Wire, submit
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


@pytest.fixture
def proxy(any_server: process.ServerProcess) -> Iterator[Proxy]:
    p = Proxy(any_server.address)
    yield p
    p.close()


def test_sleeps_without_polling_and_wakes_on_noop(any_server: process.ServerProcess, proxy: Proxy) -> None:
    """After NO_JOB the worker sends PRE_SLEEP and then nothing at all while idle
    (1.5 s through a packet-recording proxy); a job submitted later wakes it with
    NOOP and is done promptly, after which it sleeps again."""

    async def main() -> None:
        worker = AsyncWorker(addr(proxy.address), client_id="sleeper")

        @worker.function("echo")
        async def echo(job: WorkerJob) -> bytes:
            return job.raw

        async with running(worker), AsyncClient(addr(any_server)) as client:
            await proxy.wait_for("up", "PRE_SLEEP")
            assert proxy.seen("up") == [("SET_CLIENT_ID", b"sleeper"), ("CAN_DO", b"echo"),
                                        ("GRAB_JOB_UNIQ", b""), ("PRE_SLEEP", b"")]
            assert proxy.seen("down") == [("NO_JOB", b"")]
            idle_from = proxy.count()
            await asyncio.sleep(1.5)
            assert proxy.seen(since=idle_from) == []  # not one packet either way
            t0 = time.monotonic()
            job = await client.submit_job("echo", b"wake up")
            assert await job.wait(WAIT) == b"wake up"
            took = time.monotonic() - t0
            await proxy.wait_for("up", "PRE_SLEEP", since=idle_from)
            await asyncio.sleep(0.2)  # anything more would show now
            handle = job.handle.encode()  # type: ignore[union-attr]
            assert proxy.seen("down", since=idle_from) == [
                ("NOOP", b""), ("JOB_ASSIGN_UNIQ", handle + b"\0echo\0\0wake up"), ("NO_JOB", b"")]
            assert proxy.seen("up", since=idle_from) == [
                ("GRAB_JOB_UNIQ", b""), ("WORK_COMPLETE", handle + b"\0wake up"),
                ("GRAB_JOB_UNIQ", b""), ("PRE_SLEEP", b"")]
            assert took < 0.5

    arun(main())


def test_grabs_pipeline_while_a_server_has_jobs(any_server: process.ServerProcess, proxy: Proxy) -> None:
    """With concurrency 4 and a backlog, several GRAB_JOB_UNIQs are in flight at
    once (no round trip per job), never more than the free slots; once the
    backlog is gone the worker sleeps and sends nothing more."""
    spans: list[tuple[float, float]] = []

    async def main() -> None:
        worker = AsyncWorker(addr(proxy.address), concurrency=4)

        @worker.function("job")
        async def job(j: WorkerJob) -> bytes:
            start = time.monotonic()
            await asyncio.sleep(0.01)
            spans.append((start, time.monotonic()))
            return j.raw

        async with AsyncClient(addr(any_server)) as client:
            await client.submit_background_many([Request("job", b"%d" % i) for i in range(40)])
            async with running(worker):
                await until(lambda: len(spans) == 40, what="40 jobs done")
                await asyncio.sleep(0.3)  # the last answers and the PRE_SLEEP
                quiet_from = proxy.count()
                await asyncio.sleep(0.5)
                assert proxy.seen(since=quiet_from) == []
        outstanding = most = 0
        answers = ("JOB_ASSIGN_UNIQ", "NO_JOB")
        ups = [name for name, _ in proxy.seen("up")]
        downs = [name for name, _ in proxy.seen("down") if name in answers]
        assert ups.count("GRAB_JOB_UNIQ") == len(downs)  # every grab answered
        assert downs.count("JOB_ASSIGN_UNIQ") == 40
        assert ups.count("WORK_COMPLETE") == 40
        # asleep at the end: after its last PRE_SLEEP only the results of jobs
        # still running went out
        last_sleep = len(ups) - 1 - ups[::-1].index("PRE_SLEEP")
        assert set(ups[last_sleep + 1:]) <= {"WORK_COMPLETE"}
        # replay the worker's view: grabs sent minus answers seen, in the order the
        # proxy recorded them (an answer is recorded after the grab it answers)
        for _, way, name, _ in list(proxy.packets):
            if way == "up" and name == "GRAB_JOB_UNIQ":
                outstanding += 1
                most = max(most, outstanding)
            elif way == "down" and name in answers:
                outstanding -= 1
        assert outstanding == 0
        assert 2 <= most <= 4
        assert max_overlap(spans) == 4

    arun(main())


def test_can_do_timeout_requeues(any_server: process.ServerProcess, proxy: Proxy) -> None:
    """timeout=0.25 goes out as CAN_DO_TIMEOUT in milliseconds ("250"); the server
    (which counts it as one second) requeues the job when it expires: another
    worker, asleep until then, runs it again and the client gets that result;
    the first run's late result is refused with an ERROR."""
    runs: list[tuple[str, str, float]] = []

    async def main() -> None:
        first = AsyncWorker(addr(proxy.address))  # concurrency 1: see the geartrain-only test below
        second = AsyncWorker(addr(any_server))
        second_done = asyncio.Event()

        @first.function("slow", timeout=0.25)
        async def slow(job: WorkerJob) -> bytes:
            runs.append(("first", job.handle, time.monotonic()))
            await asyncio.wait_for(second_done.wait(), WAIT)
            return b"first"

        @second.function("slow")
        async def slow2(job: WorkerJob) -> bytes:
            runs.append(("second", job.handle, time.monotonic()))
            second_done.set()
            return b"second"

        async with running(first), AsyncClient(addr(any_server)) as client:
            await workers_for(any_server.address, "slow")
            assert ("CAN_DO_TIMEOUT", b"slow\x00250") in proxy.seen("up")
            job = await client.submit_job("slow", b"")
            await until(lambda: len(runs) == 1, what="first run started")
            async with running(second):
                await workers_for(any_server.address, "slow", 2)
                # the server requeues the job after a second; gearmand 1.1.20 sends the
                # sleeping second worker its NOOP only at its next event, which this
                # `status` poll provides (geartrain sends it at once)
                await until(lambda: len(runs) == 2 or queue_state(any_server.address, "slow")[1] == 0,
                            what="job requeued")
                assert await job.wait(WAIT) == b"second"
                await proxy.wait_for("down", "ERROR")  # for the first run's late WORK_COMPLETE
        assert [(who, h) for who, h, _ in runs] == [("first", job.handle), ("second", job.handle)]
        assert 0.9 < runs[1][2] - runs[0][2] < 3.0
        assert first.jobs_done == 1 and second.jobs_done == 1

    arun(main())
    assert queue_state(any_server.address, "slow")[:2] == (0, 0)


def test_can_do_timeout_requeue_to_the_same_worker(server: process.ServerProcess) -> None:
    """With concurrency 2 the job requeued on expiry comes back to the worker's
    other slot, which was asleep. geartrain only: gearmand 1.1.20 drops the
    timeout of a job whose worker sends PRE_SLEEP while running it (which a
    worker with a free slot does), so the job is never requeued there."""
    runs: list[tuple[str, float]] = []

    async def main() -> None:
        worker = AsyncWorker(addr(server), concurrency=2)
        second_started = asyncio.Event()

        @worker.function("slow", timeout=0.25)
        async def slow(job: WorkerJob) -> bytes:
            runs.append((job.handle, time.monotonic()))
            if len(runs) == 1:
                await asyncio.wait_for(second_started.wait(), WAIT)
                return b"first"
            second_started.set()
            return b"second"

        async with running(worker), AsyncClient(addr(server)) as client:
            job = await client.submit_job("slow", b"")
            assert await job.wait(WAIT) == b"second"
        assert [h for h, _ in runs] == [job.handle, job.handle]
        assert 0.9 < runs[1][1] - runs[0][1] < 3.0
        assert worker.jobs_done == 2

    arun(main())


@pytest.fixture
def two_servers(any_server: process.ServerProcess, tmp_path: Path) -> Iterator[list[process.ServerProcess]]:
    """any_server and a second server of the same kind."""
    workdir = tmp_path / "second"
    workdir.mkdir()
    kind = process.gearmand if "gearmand" in any_server.argv[0] else process.geartrain
    other = kind(workdir=workdir).start()
    yield [any_server, other]
    other.stop()


def test_every_server_is_served_fairly(two_servers: list[process.ServerProcess]) -> None:
    """A worker with concurrency 1 connects to both servers and does the jobs
    queued on each, before it started and while it slept; a server with a
    backlog does not starve the other (free slots go round)."""
    order: list[bytes] = []

    async def main() -> None:
        worker = AsyncWorker([addr(s) for s in two_servers])

        @worker.function("job")
        async def job(j: WorkerJob) -> bytes:
            order.append(j.payload)
            await asyncio.sleep(0.01)
            return b""

        for i, srv in enumerate(two_servers):
            async with AsyncClient(addr(srv)) as client:
                await client.submit_background_many([Request("job", b"s%d-%d" % (i, n)) for n in range(6)])
        async with running(worker):
            await until(lambda: len(order) == 12, what="12 jobs done")
            await asyncio.sleep(0.3)  # asleep on both now
            for i, srv in enumerate(two_servers):
                async with AsyncClient(addr(srv)) as client:
                    assert await client.submit("job", b"late-%d" % i, timeout=WAIT) == b""
        assert sorted(order[:12]) == sorted(b"s%d-%d" % (i, n) for i in range(2) for n in range(6))
        # both servers get turns from the start, not one server's whole backlog first
        assert {p[:2] for p in order[:4]} == {b"s0", b"s1"}
        assert order[12:] == [b"late-0", b"late-1"]
        for srv in two_servers:
            assert queue_state(srv.address, "job")[:2] == (0, 0)

    arun(main())


def test_concurrency_counts_across_servers(two_servers: list[process.ServerProcess]) -> None:
    """concurrency=3 is the limit for all servers together: with backlogs on two
    servers at most 3 jobs run at once, and both servers' jobs run side by side."""
    spans: dict[bytes, tuple[float, float]] = {}

    async def main() -> None:
        worker = AsyncWorker([addr(s) for s in two_servers], concurrency=3)

        @worker.function("job")
        async def job(j: WorkerJob) -> bytes:
            start = time.monotonic()
            await asyncio.sleep(0.08)
            spans[j.raw] = (start, time.monotonic())
            return b""

        for i, srv in enumerate(two_servers):
            async with AsyncClient(addr(srv)) as client:
                await client.submit_background_many([Request("job", b"s%d-%d" % (i, n)) for n in range(6)])
        await asyncio.wait_for(worker.run(max_jobs=12), WAIT)
        assert len(spans) == 12
        assert max_overlap(list(spans.values())) == 3
        first = [k for k, _ in sorted(spans.items(), key=lambda kv: kv[1][0])[:3]]
        assert {k[:2] for k in first} == {b"s0", b"s1"}

    arun(main())


def test_reconnects_after_server_restart(any_server: process.ServerProcess) -> None:
    """The server process is stopped and a new one started on the same port: the
    worker reconnects, sends its client id and registers again, and does the
    jobs queued there."""
    done: list[bytes] = []

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2, client_id="phoenix")

        @worker.function("echo")
        async def echo(job: WorkerJob) -> bytes:
            done.append(job.payload)
            return job.raw

        async with running(worker):
            await workers_for(any_server.address, "echo")
            async with AsyncClient(addr(any_server)) as client:
                assert await client.submit("echo", b"before", timeout=WAIT) == b"before"
            await asyncio.to_thread(any_server.stop)
            await asyncio.sleep(0.3)  # the worker finds it gone and retries
            fresh = process.ServerProcess(any_server.argv, any_server.host, any_server.port,
                                          any_server.workdir)
            try:
                await asyncio.to_thread(fresh.start)
                with Wire(fresh.address) as w:  # queued before the worker is back
                    for i in range(3):
                        submit(w, "echo", b"queued-%d" % i, ptype="SUBMIT_JOB_BG")
                await until(lambda: len(done) == 4, what="queued jobs done after the restart")
                assert sorted(done[1:]) == [b"queued-0", b"queued-1", b"queued-2"]
                await until(lambda: queue_state(fresh.address, "echo") == (0, 0, 1), what="all done")
                lines = [ln.split() for ln in workers_lines(fresh.address) if "phoenix" in ln]
                assert [cols[2:] for cols in lines] == [["phoenix", ":", "echo"]]
                async with AsyncClient(addr(fresh)) as client:
                    assert await client.submit("echo", b"after", timeout=WAIT) == b"after"
            finally:
                worker.stop()
                await asyncio.sleep(0)
                fresh.stop()
        assert done[0] == b"before" and done[-1] == b"after"

    arun(main())


@pytest.mark.parametrize("kind", ["coroutine", "thread"])
def test_graceful_stop(any_server: process.ServerProcess, kind: str) -> None:
    """stop() while a long job runs: the job finishes and its client gets the
    result; a job queued after stop() is not taken (even though the server
    wakes the sleeping worker for it); run() then returns."""
    address = any_server.address
    started = threading.Event()

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2)  # a free slot: it sleeps on the server
        if kind == "coroutine":
            @worker.function("long")
            async def long(job: WorkerJob) -> bytes:
                started.set()
                await asyncio.sleep(0.6)
                return b"finished " + job.raw
        else:
            @worker.function("long")
            def long_thread(job: WorkerJob) -> bytes:
                started.set()
                time.sleep(0.6)
                return b"finished " + job.raw

        task = asyncio.create_task(worker.run())
        async with AsyncClient(addr(any_server)) as client:
            job = await client.submit_job("long", b"L")
            await until(started.is_set, what="long job started")
            await asyncio.sleep(0.05)  # its second slot has gone to sleep on the server
            worker.stop()
            t0 = time.monotonic()
            await client.submit_background("long", b"after stop")
            assert await job.wait(WAIT) == b"finished L"
            await asyncio.wait_for(task, WAIT)
            assert time.monotonic() - t0 < 1.5
        assert worker.jobs_done == 1
        # still queued, nobody to do it
        await until(lambda: queue_state(address, "long") == (1, 0, 0), what="worker gone")

    arun(main())


def test_hard_stop_hands_jobs_back(any_server: process.ServerProcess) -> None:
    """Cancelling run() cancels running coroutine jobs and closes the connection
    at once; the server requeues the job and another worker completes it."""
    address = any_server.address

    async def main() -> None:
        started = asyncio.Event()
        cancelled: list[bool] = []
        first = AsyncWorker(addr(any_server))

        @first.function("f")
        async def f1(job: WorkerJob) -> bytes:
            started.set()
            try:
                await asyncio.sleep(WAIT)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return b"first"

        second = AsyncWorker(addr(any_server))

        @second.function("f")
        async def f2(job: WorkerJob) -> bytes:
            return b"second"

        async with AsyncClient(addr(any_server)) as client:
            job = await client.submit_job("f", b"")
            task = asyncio.create_task(first.run())
            await asyncio.wait_for(started.wait(), WAIT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)
            assert cancelled == [True]
            await until(lambda: queue_state(address, "f") == (1, 0, 0), what="job requeued")
            async with running(second):
                assert await job.wait(WAIT) == b"second"
        assert first.jobs_done == 0

    arun(main())


def test_stop_before_run_returns_at_once() -> None:
    """A stop() that comes before run() (another thread racing its start) is not
    lost: run() returns at once, without needing a server."""
    port = process.free_port()

    async def main() -> None:
        worker = AsyncWorker(f"127.0.0.1:{port}")
        worker.register("f", lambda job: b"")
        worker.stop()
        await asyncio.wait_for(worker.run(), 2)
        assert worker.jobs_done == 0
        # and after that run, a new run() works normally until stopped
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.2)
        assert not task.done()
        worker.stop()
        await asyncio.wait_for(task, 2)

    arun(main())


def test_blocking_worker_in_a_thread(any_server: process.ServerProcess) -> None:
    """Worker.work() in a thread does jobs sent by the blocking Client and returns
    when Worker.stop() is called from another thread; a stop() racing work()'s
    start is honoured too."""
    worker = Worker(addr(any_server), concurrency=2, client_id="blocking")
    threads_seen: set[str] = set()

    @worker.function("upper")
    def upper(job: WorkerJob) -> bytes:
        threads_seen.add(threading.current_thread().name)
        job.send_status(1, 1)
        time.sleep(0.05)
        return job.raw.upper()

    errors: list[BaseException] = []

    def work() -> None:
        try:
            worker.work()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=work, name="blocking worker")
    thread.start()
    try:
        with Client(addr(any_server)) as client:
            assert client.submit("upper", b"abc", timeout=WAIT) == b"ABC"
            jobs = [client.submit_job("upper", b"x%d" % i) for i in range(4)]
            assert [j.result(WAIT) for j in jobs] == [b"X0", b"X1", b"X2", b"X3"]
    finally:
        worker.stop()
        thread.join(WAIT)
    assert not thread.is_alive() and not errors
    assert worker.jobs_done == 5
    assert threads_seen and all(n.startswith("geartrain-worker") for n in threads_seen)

    for _ in range(5):  # stop() right after starting the thread: work() must still return
        thread = threading.Thread(target=work)
        thread.start()
        worker.stop()
        thread.join(WAIT)
        assert not thread.is_alive() and not errors


def test_blocking_function_does_not_stall_the_loop(any_server: process.ServerProcess) -> None:
    """A plain function blocked in time.sleep() runs in a thread: a second job
    (a coroutine that needs the loop) starts, sleeps and completes meanwhile."""
    release = threading.Event()
    blocked = threading.Event()
    finished: list[str] = []

    async def main() -> None:
        worker = AsyncWorker(addr(any_server), concurrency=2)

        @worker.function("block")
        def block(job: WorkerJob) -> bytes:
            blocked.set()
            end = time.monotonic() + WAIT
            while not release.is_set() and time.monotonic() < end:
                time.sleep(0.01)
            finished.append("block")
            return b"unblocked"

        @worker.function("quick")
        async def quick(job: WorkerJob) -> bytes:
            for i in range(5):
                job.send_status(i, 5)
                await asyncio.sleep(0.02)
            finished.append("quick")
            return b"quick"

        async with running(worker), AsyncClient(addr(any_server)) as client:
            slow = await client.submit_job("block", b"")
            await until(blocked.is_set, what="block started")
            assert await client.submit("quick", b"", timeout=2) == b"quick"
            assert finished == ["quick"]  # block is still sleeping
            release.set()
            assert await slow.wait(WAIT) == b"unblocked"
        assert finished == ["quick", "block"]

    arun(main())
