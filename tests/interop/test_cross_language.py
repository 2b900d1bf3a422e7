"""geartrain's client and worker library against PHP (php-gearman, libgearman) and
the `gearman` tool, both ways, on a real server (geartrain, or C gearmand with
``GEARTRAIN_INTEROP_TARGET=gearmand``).

* PHP worker (tests/interop/php/worker.php) -> geartrain AsyncClient / Client:
  results, status 1/10..10/10 in order, WORK_DATA and WORK_WARNING callbacks,
  WORK_EXCEPTION / WORK_FAIL as JobException / JobFailed, background jobs.
* geartrain AsyncWorker / Worker (in a thread of the test process, with its own
  connection) -> PHP doNormal, addTask + runTasks, doBackground + jobStatus, the
  callbacks, and ``gearman -f``.
* Unique keys coalesce across languages: a PHP client and a geartrain client
  submitting the same unique while the job is queued share one handle, and the
  job runs once.

Every wait is bounded; workers are stopped (threads) or killed (``procs``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from geartrain import (
    AsyncClient,
    AsyncWorker,
    Client,
    DataEvent,
    JobException,
    JobFailed,
    Request,
    StatusEvent,
    WarningEvent,
    Worker,
    WorkerJob,
)
from tests.interop.util import (
    PHP_DIR,
    Procs,
    gearman,
    php,
    poll,
    status_lines,
    wait_exit,
    wait_status,
    wait_workers,
)
from tests.support.process import GEARMAND, ServerProcess
from tests.support.wire import status_of

HANDLE = re.compile(r"^H:[^:\s]+:\d+$")
PROGRESS = b"".join(b"%d%% Complete\n" % (10 * i) for i in range(1, 11))
STATUSES = [(n, 10) for n in range(1, 11)]
FUNCTIONS = ("reverse", "reverse_data", "warn", "throw", "fail")
WAIT = 10.0  # seconds any single wait may take


def servers(target: ServerProcess) -> list[str]:
    return [f"{target.host}:{target.port}"]


def is_gearmand(target: ServerProcess) -> bool:
    return target.argv[0] == GEARMAND


def arun(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    """Run an async test body on a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def records(path: Path) -> list[tuple[str, str]]:
    """(function, workload) of each job worker.php ran ("PID START END FUNCTION WORKLOAD")."""
    if not path.exists():
        return []
    return [tuple(line.split(" ", 4)[3:5]) for line in path.read_text().splitlines()]  # type: ignore[misc]


def php_tasks(procs: Procs, target: ServerProcess, spec: list[list[str]]) -> Any:
    """Start `php xl_tasks.php tasks SPEC` in the background (it prints JSON at exit)."""
    return procs.spawn(["php", str(PHP_DIR / "xl_tasks.php"), "tasks", json.dumps(spec)], target.address,
                       name="php-tasks")


def per_unique(events: list[list[Any]], unique: str) -> list[list[Any]]:
    """The events of one task (xl_tasks.php / two_tasks.php), without the unique."""
    return [e[:1] + e[2:] for e in events if e[1] == unique]


# ================================================================ a geartrain worker


class GtWorker:
    """A geartrain worker serving worker.php's functions with the same behaviour,
    run in a thread of this process: ``flavour`` "async" is an AsyncWorker with
    coroutine functions on its own asyncio.run() loop, "blocking" a Worker with
    plain functions (run in its thread pool). ``calls`` records every job run
    as (function, handle, unique, payload); ``step`` (seconds between updates)
    may be changed while it runs."""

    def __init__(self, address: tuple[str, int], flavour: str, step: float = 0.001) -> None:
        self.flavour = flavour
        self.step = step
        self.calls: list[tuple[str, str, str, bytes]] = []
        self.errors: list[BaseException] = []
        addr = [f"{address[0]}:{address[1]}"]
        self.worker: AsyncWorker | Worker
        self.worker = AsyncWorker(addr) if flavour == "async" else Worker(addr)
        functions = self._async_functions() if flavour == "async" else self._plain_functions()
        for name, fn in functions.items():
            self.worker.register(name, fn)
        self.thread = threading.Thread(target=self._main, name=f"geartrain {flavour} worker", daemon=True)
        self.thread.start()
        try:
            for name in FUNCTIONS:
                wait_workers(address, name)
        except BaseException:
            self.stop()
            raise

    def _main(self) -> None:
        try:
            if isinstance(self.worker, AsyncWorker):
                asyncio.run(self.worker.run())
            else:
                self.worker.work()
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)

    def _record(self, job: WorkerJob) -> None:
        self.calls.append((job.function, job.handle, job.unique, job.payload))

    def _async_functions(self) -> dict[str, Callable[[WorkerJob], Any]]:
        async def reverse(job: WorkerJob) -> bytes:
            self._record(job)
            for i in range(1, 11):
                job.send_status(i, 10)
                await asyncio.sleep(self.step)
            return job.payload[::-1]  # type: ignore[no-any-return]

        async def reverse_data(job: WorkerJob) -> bytes:
            self._record(job)
            for i, ch in enumerate(job.payload[:3]):
                job.send_data(b"chunk%d:%c" % (i, ch))
                await asyncio.sleep(self.step)
            return job.payload[::-1]  # type: ignore[no-any-return]

        async def warn(job: WorkerJob) -> bytes:
            self._record(job)
            job.send_warning(b"careful: " + job.payload)
            job.send_data(b"d1")
            return b"warned"

        async def throw(job: WorkerJob) -> bytes:
            self._record(job)
            raise RuntimeError("boom: " + job.payload.decode())

        async def fail(job: WorkerJob) -> bytes:
            self._record(job)
            raise JobFailed("failing on purpose")

        return {"reverse": reverse, "reverse_data": reverse_data, "warn": warn, "throw": throw, "fail": fail}

    def _plain_functions(self) -> dict[str, Callable[[WorkerJob], Any]]:
        def reverse(job: WorkerJob) -> bytes:
            self._record(job)
            for i in range(1, 11):
                job.send_status(i, 10)
                time.sleep(self.step)
            return job.payload[::-1]  # type: ignore[no-any-return]

        def reverse_data(job: WorkerJob) -> bytes:
            self._record(job)
            for i, ch in enumerate(job.payload[:3]):
                job.send_data(b"chunk%d:%c" % (i, ch))
                time.sleep(self.step)
            return job.payload[::-1]  # type: ignore[no-any-return]

        def warn(job: WorkerJob) -> bytes:
            self._record(job)
            job.send_warning(b"careful: " + job.payload)
            job.send_data(b"d1")
            return b"warned"

        def throw(job: WorkerJob) -> bytes:
            self._record(job)
            raise RuntimeError("boom: " + job.payload.decode())

        def fail(job: WorkerJob) -> bytes:
            self._record(job)
            raise JobFailed("failing on purpose")

        return {"reverse": reverse, "reverse_data": reverse_data, "warn": warn, "throw": throw, "fail": fail}

    def stop(self) -> None:
        """Graceful stop (stop() is thread-safe), bounded."""
        end = time.monotonic() + WAIT
        while self.thread.is_alive() and time.monotonic() < end:
            self.worker.stop()  # idempotent; repeated until the thread ends (bounded)
            self.thread.join(0.05)
        assert not self.thread.is_alive(), f"geartrain {self.flavour} worker did not stop"
        assert not self.errors, self.errors


@pytest.fixture(params=["async", "blocking"])
def gt_worker(request: pytest.FixtureRequest, target: ServerProcess, procs: Procs) -> Iterator[GtWorker]:
    """A geartrain worker (AsyncWorker, then blocking Worker) on the target."""
    w = GtWorker(target.address, request.param)
    try:
        yield w
    finally:
        w.stop()


# ================================================================ geartrain worker -> PHP clients, `gearman`


def test_php_do_normal_and_add_task_run_tasks_served_by_geartrain_worker(target, gt_worker):
    got = php(target.address, "two_tasks.php")
    assert (got["do"], got["do_rc"], got["ok"]) == ("!dlroW olleH", 0, True)
    events = got["events"]
    for unique, result in (("1", "!dlroW olleH"), ("2", "Hello World!")):
        created, *rest = per_unique(events, unique)
        assert created[0] == "created" and HANDLE.match(created[1]), created
        assert rest == [["status", n, d] for n, d in STATUSES] + [["complete", result]]
    # concurrency 1: one job after the other, so one task's events all come before the other's
    order = [e[1] for e in events if e[0] != "created"]
    assert order == [order[0]] * 11 + [order[-1]] * 11 and order[0] != order[-1]
    assert [c[0] for c in gt_worker.calls] == ["reverse"] * 3
    assert sorted(c[3] for c in gt_worker.calls) == [b"!dlroW olleH", b"Hello World!", b"Hello World!"]
    assert status_of(target.address, "reverse") == (0, 0, 1)


def test_php_callbacks_data_warning_exception_fail_from_geartrain_worker(target, gt_worker):
    got = php(target.address, "callbacks.php")
    runs = got["runs"]
    assert runs["reverse_data"] == {"ok": True, "events": [
        ["data", "u-reverse_data", "chunk0:a"], ["data", "u-reverse_data", "chunk1:b"],
        ["data", "u-reverse_data", "chunk2:c"], ["complete", "u-reverse_data", "fedcba"]]}
    assert runs["warn"] == {"ok": True, "events": [
        ["warning", "u-warn", "careful: w"], ["data", "u-warn", "d1"], ["complete", "u-warn", "warned"]]}
    # a Python exception reaches PHP's exception callback as "Type: message" (WORK_EXCEPTION)
    assert runs["throw"] == {"ok": True, "events": [["exception", "u-throw", "RuntimeError: boom: x"]]}
    # raising JobFailed is WORK_FAIL
    assert runs["fail"] == {"ok": True, "events": [["fail", "u-fail"]]}
    assert got["do_data"] == [["SUCCESS", "chunk0:xchunk1:ychunk2:zzyx"]]
    assert got["do_fail"] == ["", True]
    assert status_lines(target.address)["throw"] == [0, 0, 1]


def test_php_tasks_of_every_kind_in_one_run_tasks(target, gt_worker):
    spec = [["fg", "reverse", "abc", "t-rev"], ["high", "reverse_data", "xyz", "t-data"],
            ["fg", "throw", "bad", "t-throw"], ["fg", "fail", "f", "t-fail"],
            ["bg", "reverse", "background", "t-bg"], ["fg", "warn", "ww", "t-warn"]]
    got = php(target.address, "xl_tasks.php", "tasks", json.dumps(spec))
    assert got["ok"] is True
    ev = got["events"]
    handles = {e[1]: e[2] for e in ev if e[0] == "created"}
    assert sorted(handles) == sorted(s[3] for s in spec)
    assert all(HANDLE.match(h) for h in handles.values()) and len(set(handles.values())) == len(spec)
    assert per_unique(ev, "t-rev")[1:] == [["status", n, d] for n, d in STATUSES] + [["complete", "cba"]]
    assert per_unique(ev, "t-data")[1:] == [["data", "chunk0:x"], ["data", "chunk1:y"], ["data", "chunk2:z"],
                                            ["complete", "zyx"]]
    assert per_unique(ev, "t-throw")[1:] == [["exception", "RuntimeError: boom: bad"]]
    assert per_unique(ev, "t-fail")[1:] == [["fail"]]
    assert per_unique(ev, "t-warn")[1:] == [["warning", "careful: ww"], ["data", "d1"],
                                            ["complete", "warned"]]
    assert per_unique(ev, "t-bg")[1:] == []  # a background task only gets JOB_CREATED
    for fn in ("reverse", "throw"):
        wait_status(target.address, fn, (0, 0, 1))
    # each job ran once, with its unique and handle (the order of jobs of different
    # functions is the server's choice: priority only orders one function's queue)
    ran = {c[2]: (c[0], c[1], c[3]) for c in gt_worker.calls}
    assert len(gt_worker.calls) == len(spec)
    assert ran == {s[3]: (s[1], handles[s[3]], s[2].encode()) for s in spec}


def test_php_do_background_and_job_status_of_geartrain_worker(target, gt_worker):
    gt_worker.step = 0.05  # 0.5 s a job: long enough to watch it run
    sub = php(target.address, "client.php", "bg", "reverse", "Hello World!", "xl-bg-1")
    handle = sub["handle"]
    assert HANDLE.match(handle) and sub["rc"] == 0
    watch = php(target.address, "client.php", "watch", handle)
    seen = watch["seen"]
    running = [s for s in seen if s[0] and s[1]]
    numerators = [s[2] for s in running if s[3] == 10]
    assert len(set(numerators)) >= 3 and numerators == sorted(numerators), seen
    assert set(numerators) <= set(range(1, 11))
    assert all(s in ([True, False, 0, 0], [False, False, 0, 0]) for s in seen if not s[1]), seen
    assert watch["after"] == [False, False, 0, 0]
    assert gt_worker.calls == [("reverse", handle, "xl-bg-1", b"Hello World!")]


def test_gearman_tool_served_by_geartrain_worker(target, gt_worker):
    r = gearman(target.address, "-f", "reverse", "Rasmus", line_buffered=True)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == PROGRESS + b"sumsaR"
    r = gearman(target.address, "-f", "reverse", input=b"Rasmus\n", line_buffered=True)
    assert (r.returncode, r.stdout) == (0, PROGRESS + b"\nsumsaR")
    r = gearman(target.address, "-f", "warn", "ab")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"d1warned", b"careful: ab")
    r = gearman(target.address, "-f", "fail", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"Job failed\n")
    if not is_gearmand(target):
        # the tool does not ask for exceptions: the server turns the WORK_EXCEPTION into
        # a WORK_FAIL. (gearmand 1.1.20 appends a NUL to it and the tool then waits for
        # its timeout, #108: see test_php_walkthrough.)
        r = gearman(target.address, "-f", "throw", "x")
        assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"Job failed\n")
    # the worker is still serving after a failure and an exception
    r = gearman(target.address, "-f", "reverse", "abc", line_buffered=True)
    assert (r.returncode, r.stdout) == (0, PROGRESS + b"cba")
    assert status_of(target.address, "reverse") == (0, 0, 1)


# ================================================================ PHP worker -> geartrain clients


def test_async_client_served_by_php_worker(target, procs):
    procs.php_worker(target.address, step=0.002)
    for name in FUNCTIONS:
        wait_workers(target.address, name)

    async def body() -> None:
        async with AsyncClient(servers(target)) as client:
            statuses: list[tuple[int, int]] = []
            result = await client.submit("reverse", b"Hello World!",
                                         on_status=lambda job, n, d: statuses.append((n, d)))
            assert (result, statuses) == (b"!dlroW olleH", STATUSES)

            job = await client.submit_job("reverse", b"Rasmus")
            assert HANDLE.match(job.handle or "")
            events = [e async for e in job.events()]
            assert events == [StatusEvent(n, d) for n, d in STATUSES]
            assert await job.wait(WAIT) == b"sumsaR"
            assert (job.numerator, job.denominator) == (10, 10)

            chunks: list[bytes] = []
            result = await client.submit("reverse_data", b"abcdef",
                                         on_data=lambda job, data: chunks.append(data))
            assert (result, chunks) == (b"fedcba", [b"chunk0:a", b"chunk1:b", b"chunk2:c"])

            job = await client.submit_job("warn", b"w")
            assert await job.wait(WAIT) == b"warned"
            assert job.history == [WarningEvent(b"careful: w"), DataEvent(b"d1")]

            with pytest.raises(JobException) as exc:
                await client.submit("throw", b"x", timeout=WAIT)
            assert exc.value.payload == b"boom: x" and HANDLE.match(exc.value.handle or "")
            with pytest.raises(JobFailed):
                await client.submit("fail", b"f", timeout=WAIT)

            # many at once (addTask + runTasks), failures in place
            got = await client.run([Request("reverse", b"one"), Request("throw", b"two"),
                                    Request("fail", b"three"), Request("reverse_data", b"four", "u4")],
                                   timeout=WAIT, return_exceptions=True)
            assert got[0] == b"eno" and got[3] == b"ruof"
            assert isinstance(got[1], JobException) and got[1].payload == b"boom: two"
            assert isinstance(got[2], JobFailed)

    arun(body())
    assert status_lines(target.address)["reverse"] == [0, 0, 1]


def test_blocking_client_served_by_php_worker(target, procs):
    procs.php_worker(target.address, step=0.002)
    for name in FUNCTIONS:
        wait_workers(target.address, name)
    with Client(servers(target)) as client:
        statuses: list[tuple[int, int]] = []
        assert client.submit("reverse", "Hello World!", timeout=WAIT,
                             on_status=lambda job, n, d: statuses.append((n, d))) == b"!dlroW olleH"
        assert statuses == STATUSES

        job = client.submit_job("reverse", b"Rasmus")
        assert HANDLE.match(job.handle or "")
        assert list(job.events(timeout=WAIT)) == [StatusEvent(n, d) for n, d in STATUSES]
        assert job.result(WAIT) == b"sumsaR"

        chunks: list[bytes] = []
        assert client.submit("reverse_data", b"xyz", timeout=WAIT,
                             on_data=lambda job, data: chunks.append(data)) == b"zyx"
        assert chunks == [b"chunk0:x", b"chunk1:y", b"chunk2:z"]

        job = client.submit_job("warn", b"w")
        assert job.result(WAIT) == b"warned"
        assert (job.warnings, job.data) == ([b"careful: w"], [b"d1"])

        with pytest.raises(JobException) as exc:
            client.submit("throw", b"x", timeout=WAIT)
        assert exc.value.payload == b"boom: x"
        with pytest.raises(JobFailed):
            client.submit("fail", b"f", timeout=WAIT)
        got = client.run([Request("reverse", b"ab"), Request("fail", b"")], timeout=WAIT,
                         return_exceptions=True)
        assert got[0] == b"ba" and isinstance(got[1], JobFailed)


def test_geartrain_background_jobs_run_by_php_worker(target, procs, tmp_path):
    record = tmp_path / "record.txt"
    with Client(servers(target)) as client:
        handles = client.submit_background_many(
            [Request("reverse_data", b"bg-%d" % i, unique=f"xl-bgd-{i}") for i in range(5)]
            + [Request("reverse_data", b"bg-high", priority="high"), Request("reverse", b"bg-status")])
        assert all(HANDLE.match(h) for h in handles) and len(set(handles)) == 7
        assert status_lines(target.address)["reverse_data"] == [6, 0, 0]
        assert [(s.known, s.running) for s in client.statuses(handles)] == [(True, False)] * 7

        procs.php_worker(target.address, step=0.05, record=record)  # `reverse` runs 0.5 s

        def reverse_running() -> bool:
            st = client.status(handles[6])
            return st.running and st.denominator == 10 and st.numerator >= 2
        poll(reverse_running, "the PHP worker's reverse job running at >= 2/10 (GET_STATUS)")
        wait_status(target.address, "reverse_data", (0, 0, 1), timeout=WAIT)
        wait_status(target.address, "reverse", (0, 0, 1), timeout=WAIT)
        assert [(s.known, s.running) for s in client.statuses(handles)] == [(False, False)] * 7
    ran = records(record)
    assert sorted(ran) == sorted([("reverse_data", f"bg-{i}") for i in range(5)]
                                 + [("reverse_data", "bg-high"), ("reverse", "bg-status")])
    # within one function's queue, the high-priority job (submitted last) ran first
    assert [w for fn, w in ran if fn == "reverse_data"][0] == "bg-high"


# ================================================================ unique keys across languages


def test_background_unique_coalesces_across_php_and_geartrain(target, procs, tmp_path):
    php_first = php(target.address, "client.php", "bg", "reverse", "from php", "xl-u-1")
    assert HANDLE.match(php_first["handle"]) and php_first["rc"] == 0

    async def body() -> tuple[str, str, str]:
        async with AsyncClient(servers(target)) as client:
            same = await client.submit_background("reverse", b"from geartrain", unique="xl-u-1")
            mine = await client.submit_background("reverse", b"geartrain first", unique="xl-u-2")
            other = await client.submit_background("reverse", b"no unique")
            return same, mine, other

    same, mine, other = arun(body())
    assert same == php_first["handle"]
    php_second = php(target.address, "client.php", "bg", "reverse", "php second", "xl-u-2")
    assert php_second == {"handle": mine, "rc": 0}
    assert len({same, mine, other}) == 3
    assert status_of(target.address, "reverse") == (3, 0, 0)

    record = tmp_path / "record.txt"
    procs.php_worker(target.address, step=0.001, record=record)
    wait_status(target.address, "reverse", (0, 0, 1))
    # each job ran once, with the workload of its first submission
    assert sorted(records(record)) == [("reverse", "from php"), ("reverse", "geartrain first"),
                                       ("reverse", "no unique")]


def test_foreground_unique_coalesces_php_then_geartrain(target, procs, tmp_path):
    """A PHP doNormal() waits on a queued job; a geartrain client submitting the same
    unique joins it (same handle); the PHP worker runs it once and both get the result."""
    waiting = php_tasks(procs, target, [["fg", "reverse", "php workload", "xl-fg-1"]])
    with Client(servers(target)) as client:
        poll(lambda: client.status_unique("xl-fg-1").clients == 1, "the PHP client waiting on xl-fg-1")
        job = client.submit_job("reverse", b"geartrain workload", unique="xl-fg-1")
        st = client.status_unique("xl-fg-1")
        assert (st.known, st.running, st.clients) == (True, False, 2)
        assert status_of(target.address, "reverse") == (1, 0, 0)

        record = tmp_path / "record.txt"
        procs.php_worker(target.address, step=0.002, record=record)
        statuses: list[StatusEvent] = [e for e in job.events(timeout=WAIT) if isinstance(e, StatusEvent)]
        assert job.result(WAIT) == b"daolkrow php"
    assert statuses == [StatusEvent(n, d) for n, d in STATUSES]
    assert wait_exit(waiting) == 0
    got = json.loads(procs.output(waiting)[0])
    assert got["ok"] is True
    assert per_unique(got["events"], "xl-fg-1") == (
        [["created", job.handle]] + [["status", n, d] for n, d in STATUSES] + [["complete", "daolkrow php"]])
    assert records(record) == [("reverse", "php workload")]


@pytest.mark.parametrize("flavour", ["async", "blocking"])
def test_foreground_unique_coalesces_geartrain_then_php_on_geartrain_worker(target, procs, flavour):
    """The other way round, and run by a geartrain worker: an AsyncClient job is
    queued first, PHP addTask() with the same unique joins it."""

    async def body() -> None:
        async with AsyncClient(servers(target)) as client:
            job = await client.submit_job("reverse", b"geartrain workload", unique="xl-fg-2")
            waiting = php_tasks(procs, target, [["fg", "reverse", "php workload", "xl-fg-2"]])
            for _ in range(int(WAIT / 0.02)):
                if (await client.status_unique("xl-fg-2")).clients == 2:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the PHP task never joined xl-fg-2")
            assert status_of(target.address, "reverse") == (1, 0, 0)
            worker = await asyncio.to_thread(GtWorker, target.address, flavour)
            try:
                assert await job.wait(WAIT) == b"daolkrow niartraeg"
                assert [e for e in job.history] == [StatusEvent(n, d) for n, d in STATUSES]
                rc = await asyncio.to_thread(wait_exit, waiting)
            finally:
                await asyncio.to_thread(worker.stop)
            assert rc == 0
            got = json.loads(procs.output(waiting)[0])
            assert got["ok"] is True
            assert per_unique(got["events"], "xl-fg-2") == (
                [["created", job.handle]] + [["status", n, d] for n, d in STATUSES]
                + [["complete", "daolkrow niartraeg"]])
            assert worker.calls == [("reverse", job.handle, "xl-fg-2", b"geartrain workload")]

    arun(body(), timeout=30)
