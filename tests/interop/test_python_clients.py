"""Third-party Python Gearman libraries, unchanged, against a real server:
OpenStack's `gear` (0.16) and `python3-gearman` (0.1).

Clients run in the test's thread, workers in a thread of their own with their
own connections; every wait is bounded and every fixture stops what it started.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import gear
import pytest
import python3_gearman
from python3_gearman.constants import JOB_COMPLETE, JOB_CREATED, JOB_FAILED, PRIORITY_HIGH, PRIORITY_LOW
from python3_gearman.errors import ProtocolError

from tests.interop.util import poll, status_lines, wait_status, wait_workers
from tests.support.process import ServerProcess
from tests.support.wire import Wire, admin, status_of

HANDLE = re.compile(r"^H:[^:\s]+:\d+$")
BHANDLE = re.compile(rb"^H:[^:\s]+:\d+$")
WAIT = 10.0  # seconds any single wait may take


# ================================================================ gear (OpenStack)


class GearWorker:
    """A gear.Worker whose thread runs getJob() in a loop and hands each job to
    ``handlers[job.name](job)``, which sends the WORK_* packets itself."""

    def __init__(self, address: tuple[str, int], client_id: str,
                 handlers: dict[str, Callable[[gear.WorkerJob], None]]) -> None:
        self.worker = gear.Worker(client_id)
        self.worker.addServer(*address)
        self.worker.waitForServer(timeout=WAIT)
        for name in handlers:
            self.worker.registerFunction(name)
        self.handlers = handlers
        self.jobs: list[gear.WorkerJob] = []
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"gear worker {client_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.worker.getJob()
            except gear.InterruptedError:
                return
            self.jobs.append(job)
            try:
                self.handlers[job.name](job)
            except BaseException as exc:  # reported by the test through self.errors
                self.errors.append(exc)

    def stop(self) -> None:
        # Interrupt getJob() while the poll thread still runs: gear.Worker.shutdown()
        # stops that thread first, and then waits 5 s for the answer to a GRAB_JOB_UNIQ
        # sent just before, which nobody reads any more.
        self.stopping.set()
        end = time.monotonic() + WAIT
        while self.thread.is_alive() and time.monotonic() < end:
            self.worker.stopWaitingForJobs()
            self.thread.join(0.05)
        self.worker.shutdown()
        assert not self.thread.is_alive(), "gear worker thread did not stop"


@pytest.fixture
def gear_env(target: ServerProcess) -> Iterator[Any]:
    """Factories for gear clients and workers on the target; all shut down at teardown."""
    clients: list[gear.Client] = []
    workers: list[GearWorker] = []

    class Env:
        address = target.address

        @staticmethod
        def client(client_id: str = "gear-client") -> gear.Client:
            c = gear.Client(client_id)
            clients.append(c)
            c.addServer(*target.address)
            c.waitForServer(timeout=WAIT)
            return c

        @staticmethod
        def worker(client_id: str, handlers: dict[str, Callable[[gear.WorkerJob], None]]) -> GearWorker:
            w = GearWorker(target.address, client_id, handlers)
            workers.append(w)
            for name in handlers:
                wait_workers(target.address, name)
            return w

    try:
        yield Env
    finally:
        try:
            for w in workers:
                w.stop()
        finally:
            for c in clients:
                c.shutdown()
    for w in workers:
        assert not w.errors, w.errors


def wait_complete(job: gear.Job, what: str = "the gear job to complete") -> None:
    poll(lambda: job.complete, what, timeout=WAIT)


def complete_with(result: bytes) -> Callable[[gear.WorkerJob], None]:
    return lambda job: job.sendWorkComplete(result + job.arguments)


def test_gear_foreground_job_status_data_warning_complete(gear_env: Any) -> None:
    def work(job: gear.WorkerJob) -> None:
        job.sendWorkStatus(1, 2)
        job.sendWorkData(b"d1")
        job.sendWorkWarning(b"w1")
        job.sendWorkComplete(b"result:" + job.arguments)

    worker = gear_env.worker("gear-w1", {"g_work": work})
    client = gear_env.client()
    job = gear.Job("g_work", b"payload")
    client.submitJob(job, timeout=WAIT)
    assert BHANDLE.match(job.handle), job.handle
    wait_complete(job)
    assert (job.complete, job.failure, job.exception) == (True, False, None)
    # gear keeps WORK_DATA, WORK_WARNING and WORK_COMPLETE payloads in job.data, in order
    assert job.data == [b"d1", b"w1", b"result:payload"]
    assert job.warning is True
    assert (job.numerator, job.denominator, job.fraction_complete) == (b"1", b"2", 0.5)

    # a unique reaches the worker through GRAB_JOB_UNIQ / JOB_ASSIGN_UNIQ
    job2 = gear.Job("g_work", b"two", unique="u-two")
    client.submitJob(job2, timeout=WAIT)
    wait_complete(job2)
    assert job2.data == [b"d1", b"w1", b"result:two"] and job2.failure is False
    seen = [(j.handle, j.name, j.arguments, j.unique) for j in worker.jobs]
    assert seen == [(job.handle, "g_work", b"payload", None), (job2.handle, "g_work", b"two", b"u-two")]
    assert status_of(gear_env.address, "g_work") == (0, 0, 1)


def test_gear_work_fail_and_work_exception(gear_env: Any) -> None:
    gear_env.worker("gear-w2", {
        "g_fail": lambda job: job.sendWorkFail(),
        "g_exc": lambda job: job.sendWorkException(b"boom: " + job.arguments),
    })
    plain = gear_env.client("gear-plain")
    results = {}
    for name in ("g_fail", "g_exc"):
        job = gear.Job(name, b"x")
        plain.submitJob(job, timeout=WAIT)
        wait_complete(job)
        results[name] = (job.complete, job.failure, job.exception, job.data)
    # without the exceptions option the exception arrives as a WORK_FAIL
    assert results == {"g_fail": (True, True, None, []), "g_exc": (True, True, None, [])}

    with_exc = gear_env.client("gear-exc")
    assert with_exc.setOption("exceptions", timeout=WAIT) is True
    job = gear.Job("g_exc", b"y")
    with_exc.submitJob(job, timeout=WAIT)
    wait_complete(job)
    assert (job.failure, job.exception, job.data) == (True, b"boom: y", [])


def test_gear_background_job_and_get_status(gear_env: Any) -> None:
    """gear has no getStatus call; a STATUS_RES for a job it submitted updates that
    gear.Job (known, running, numerator, denominator), so GET_STATUS goes out as a
    gear.Packet on the job's connection."""
    release = threading.Event()

    def slow(job: gear.WorkerJob) -> None:
        job.sendWorkStatus(2, 5)
        release.wait(WAIT)
        job.sendWorkComplete(b"done")

    client = gear_env.client()
    job = gear.Job("g_slow", b"bg", unique="bg-1")
    client.submitJob(job, background=True, timeout=WAIT)
    assert BHANDLE.match(job.handle)

    def status(expect: Callable[[gear.Job], bool], what: str) -> None:
        def ask() -> bool:
            job.known = None
            client.sendPacket(gear.Packet(gear.constants.REQ, gear.constants.GET_STATUS, job.handle),
                              job.connection)
            poll(lambda: job.known is not None, "STATUS_RES", timeout=WAIT, step=0.005)
            return expect(job)
        poll(ask, what, timeout=WAIT)

    status(lambda j: j.known is True, "the queued job known")
    assert (job.known, job.running, job.numerator, job.denominator) == (True, False, b"0", b"0")
    assert job.fraction_complete is None  # 0/0

    worker = gear_env.worker("gear-w3", {"g_slow": slow})
    try:
        status(lambda j: bool(j.running and j.numerator == b"2"), "the job running with status 2/5")
        assert (job.known, job.running, job.numerator, job.denominator, job.fraction_complete) == (
            True, True, b"2", b"5", 0.4)
    finally:
        release.set()
    wait_status(gear_env.address, "g_slow", (0, 0, 1))
    status(lambda j: j.known is False, "the finished job unknown")
    assert (job.known, job.running, job.numerator, job.denominator) == (False, False, b"0", b"0")
    # a background job never completes on the client side: no WORK_* reaches it
    assert (job.complete, job.data) == (False, [])
    assert [(j.name, j.arguments, j.unique) for j in worker.jobs] == [("g_slow", b"bg", b"bg-1")]


def test_gear_precedence(gear_env: Any) -> None:
    client = gear_env.client()
    jobs = {}
    for arg, precedence in (("low", gear.PRECEDENCE_LOW), ("normal", gear.PRECEDENCE_NORMAL),
                            ("high", gear.PRECEDENCE_HIGH)):
        jobs[arg] = gear.Job("g_prio", arg.encode())
        client.submitJob(jobs[arg], background=True, precedence=precedence, timeout=WAIT)
    fg = gear.Job("g_prio", b"fg-high")
    client.submitJob(fg, precedence=gear.PRECEDENCE_HIGH, timeout=WAIT)
    assert status_lines(gear_env.address, "prioritystatus")["g_prio"] == [2, 1, 1, 0]

    worker = gear_env.worker("gear-w4", {"g_prio": complete_with(b"ran:")})
    wait_complete(fg)
    wait_status(gear_env.address, "g_prio", (0, 0, 1))
    assert fg.data == [b"ran:fg-high"]
    assert [j.arguments for j in worker.jobs] == [b"high", b"fg-high", b"normal", b"low"]


def test_gear_unique_coalescing(gear_env: Any) -> None:
    first, second = gear_env.client("gear-c1"), gear_env.client("gear-c2")
    a = gear.Job("g_once", b"first", unique="same")
    b = gear.Job("g_once", b"second", unique="same")
    c = gear.Job("g_once", b"third", unique="other")
    first.submitJob(a, timeout=WAIT)
    second.submitJob(b, timeout=WAIT)
    second.submitJob(c, timeout=WAIT)
    assert a.handle == b.handle and c.handle != a.handle
    assert status_of(gear_env.address, "g_once") == (2, 0, 0)

    worker = gear_env.worker("gear-w5", {"g_once": complete_with(b"ran:")})
    for job in (a, b, c):
        wait_complete(job)
    assert a.data == b.data == [b"ran:first"]
    assert c.data == [b"ran:third"]
    assert [(j.arguments, j.unique) for j in worker.jobs] == [(b"first", b"same"), (b"third", b"other")]


def admin_request(client: gear.Client, request: gear.AdminRequest) -> bytes:
    client.getConnection().sendAdminRequest(request, timeout=WAIT)
    return request.response  # type: ignore[no-any-return]


def test_gear_admin_requests(gear_env: Any) -> None:
    gear_env.worker("gear-admin-w", {"g_adm": complete_with(b"")})
    client = gear_env.client("gear-admin-c")
    queued = gear.Job("g_adm_q", b"waiting", unique="adm-u1")
    client.submitJob(queued, background=True, timeout=WAIT)

    status = admin_request(client, gear.StatusAdminRequest())
    assert status.endswith(b"\n.\n")
    rows = {line.split(b"\t")[0]: line.split(b"\t")[1:] for line in status.splitlines()[:-1]}
    assert rows == {b"g_adm": [b"0", b"0", b"1"], b"g_adm_q": [b"1", b"0", b"0"]}
    assert status == admin(gear_env.address, "status")[0]

    workers = admin_request(client, gear.WorkersAdminRequest()).decode()
    assert workers.endswith("\n.\n")
    mine = [line for line in workers.splitlines() if " gear-admin-w : " in line]
    assert len(mine) == 1 and mine[0].endswith(" : g_adm"), workers
    fd, ip, *_ = mine[0].split(" ")
    assert fd.isdigit() and ip == "127.0.0.1"
    # gear.Client sends no SET_CLIENT_ID: its own connection is listed with the default id
    assert any(line.endswith(" - :") for line in workers.splitlines()), workers

    jobs = admin_request(client, gear.ShowJobsAdminRequest())
    assert jobs.endswith(b"\n.\n")
    assert [line.split(b"\t") for line in jobs.splitlines()[:-1]] == [[queued.handle, b"0", b"0", b"1"]]
    uniques = admin_request(client, gear.ShowUniqueJobsAdminRequest())
    assert uniques == b"adm-u1\n.\n"

    version = admin_request(client, gear.VersionAdminRequest())
    assert version == admin(gear_env.address, "version")[0]
    assert re.fullmatch(rb"OK \S+\n", version), version

    assert admin_request(client, gear.CancelJobAdminRequest(queued.handle)) == b"OK\r\n"
    assert admin_request(client, gear.CancelJobAdminRequest("H:nohost:424242")) == b"ERR UNKNOWN_JOB\r\n"
    # the connection is still in step for binary packets after the text replies
    job = gear.Job("g_adm", b"after")
    client.submitJob(job, timeout=WAIT)
    wait_complete(job)
    assert (job.failure, job.data) == (False, [b"after"])


# ================================================================ python3-gearman


class P3Worker(python3_gearman.GearmanWorker):  # type: ignore[misc]
    """GearmanWorker.work() runs until after_poll() says stop."""

    def __init__(self, host_list: list[tuple[str, int]]) -> None:
        super().__init__(host_list)
        self.stopping = threading.Event()
        self.jobs: list[tuple[str, str, str]] = []  # (task, unique, data) in start order

    def after_poll(self, any_activity: bool) -> bool:
        return not self.stopping.is_set()


Task = Callable[[P3Worker, Any], str]  # a GearmanWorker task: (worker, job) -> result


@pytest.fixture
def p3_env(target: ServerProcess) -> Iterator[Any]:
    clients: list[Any] = []
    workers: list[tuple[P3Worker, threading.Thread, list[BaseException]]] = []

    class Env:
        address = target.address

        @staticmethod
        def client() -> python3_gearman.GearmanClient:
            c = python3_gearman.GearmanClient([target.address])
            clients.append(c)
            return c

        @staticmethod
        def admin() -> python3_gearman.GearmanAdminClient:
            c = python3_gearman.GearmanAdminClient([target.address], poll_timeout=WAIT)
            clients.append(c)
            return c

        @staticmethod
        def worker(tasks: dict[str, Task], client_id: str | None = None) -> P3Worker:
            w = P3Worker([target.address])
            if client_id:
                w.set_client_id(client_id)
            for name, fn in tasks.items():
                def wrapped(worker: P3Worker, job: Any, fn: Task = fn) -> str:
                    worker.jobs.append((job.task, job.unique, job.data))
                    return fn(worker, job)
                w.register_task(name, wrapped)
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    w.work(poll_timeout=0.05)
                except BaseException as exc:  # reported at teardown
                    errors.append(exc)
            t = threading.Thread(target=run, name="python3-gearman worker", daemon=True)
            t.start()
            workers.append((w, t, errors))
            for name in tasks:
                wait_workers(target.address, name)
            return w

    try:
        yield Env
    finally:
        for w, t, _ in workers:
            w.stopping.set()
            t.join(WAIT)
        for c in clients:
            c.shutdown()
    for _, t, errors in workers:
        assert not t.is_alive(), "python3-gearman worker thread did not stop"
        assert not errors, errors


def test_p3_foreground_job_with_status_data_warning(p3_env: Any) -> None:
    def work(worker: P3Worker, job: Any) -> str:
        worker.send_job_status(job, 1, 3)
        worker.send_job_data(job, "d1")
        worker.send_job_warning(job, "w1")
        return "RESULT:" + job.data

    worker = p3_env.worker({"p3_work": work}, client_id="p3-w1")
    client = p3_env.client()
    req = client.submit_job("p3_work", "abc", poll_timeout=WAIT)
    assert (req.state, req.complete, req.timed_out) == (JOB_COMPLETE, True, False)
    assert req.result == "RESULT:abc"
    assert HANDLE.match(req.job.handle), req.job.handle
    assert req.data_updates == deque(["d1"]) and req.warning_updates == deque(["w1"])
    assert req.exception is None
    st = dict(req.status)
    assert isinstance(st.pop("time_received"), float)
    assert st == {"handle": req.job.handle, "known": True, "running": True, "numerator": 1, "denominator": 3}
    # python3-gearman makes up a random unique for every job, which the worker sees
    [(task, unique, data)] = worker.jobs
    assert (task, data) == ("p3_work", "abc") and unique == req.job.unique and len(unique) == 32


def test_p3_background_job_and_get_job_status(p3_env: Any) -> None:
    release = threading.Event()

    def slow(worker: P3Worker, job: Any) -> str:
        worker.send_job_status(job, 2, 5)
        release.wait(WAIT)
        return "done"

    client = p3_env.client()
    req = client.submit_job("p3_slow", "bg", background=True, poll_timeout=WAIT)
    # a background request is "complete" as soon as the server accepted it
    assert (req.state, req.complete, req.timed_out, req.result) == (JOB_CREATED, True, False, None)
    assert HANDLE.match(req.job.handle)

    def status() -> dict[str, Any]:
        got = client.get_job_status(req, poll_timeout=WAIT)
        assert got is req and not req.timed_out
        return {k: v for k, v in req.status.items() if k != "time_received"}

    assert status() == {"handle": req.job.handle, "known": True, "running": False, "numerator": 0,
                        "denominator": 0}
    p3_env.worker({"p3_slow": slow})
    running = {"handle": req.job.handle, "known": True, "running": True, "numerator": 2, "denominator": 5}
    try:
        poll(lambda: status() == running, "the background job running with status 2/5")
    finally:
        release.set()
    wait_status(p3_env.address, "p3_slow", (0, 0, 1))
    assert status() == {"handle": req.job.handle, "known": False, "running": False, "numerator": 0,
                        "denominator": 0}


def test_p3_priorities_wait_until_complete_and_poll(p3_env: Any) -> None:
    client = p3_env.client()
    # no worker yet: a foreground submit that may wait 0.2 s comes back accepted but timed out
    early = client.submit_job("p3_prio", "t", poll_timeout=0.2)
    assert (early.state, early.complete, early.timed_out) == (JOB_CREATED, False, True)
    reqs = [client.submit_job("p3_prio", data, priority=priority, wait_until_complete=False)
            for data, priority in (("l", PRIORITY_LOW), ("n", None), ("h", PRIORITY_HIGH))]
    assert [(r.state, r.complete, r.priority) for r in reqs] == [
        (JOB_CREATED, False, PRIORITY_LOW), (JOB_CREATED, False, None), (JOB_CREATED, False, PRIORITY_HIGH)]
    assert status_lines(p3_env.address, "prioritystatus")["p3_prio"] == [1, 2, 1, 0]

    worker = p3_env.worker({"p3_prio": lambda w, job: job.data.upper()})
    done = client.wait_until_jobs_completed([early, *reqs], poll_timeout=WAIT)
    assert [(r.state, r.result, r.timed_out) for r in done] == [
        (JOB_COMPLETE, "T", False), (JOB_COMPLETE, "L", False), (JOB_COMPLETE, "N", False),
        (JOB_COMPLETE, "H", False)]
    assert [data for _, _, data in worker.jobs] == ["h", "t", "n", "l"]
    # several jobs in one call, background ones with priorities
    bg = client.submit_multiple_jobs(
        [{"task": "p3_prio", "data": "x", "priority": PRIORITY_HIGH}, {"task": "p3_prio", "data": "y"}],
        background=True, poll_timeout=WAIT)
    assert [(r.state, r.complete) for r in bg] == [(JOB_CREATED, True), (JOB_CREATED, True)]
    wait_status(p3_env.address, "p3_prio", (0, 0, 1))
    assert [data for _, _, data in worker.jobs[4:]] == ["x", "y"]


def test_p3_worker_exception_fails_the_job(p3_env: Any) -> None:
    def broken(worker: P3Worker, job: Any) -> str:
        raise RuntimeError("worker bug")

    p3_env.worker({"p3_broken": broken, "p3_ok": lambda w, job: "ok " + job.data})
    client = p3_env.client()
    req = client.submit_job("p3_broken", "x", poll_timeout=WAIT)
    # GearmanWorker turns the exception into WORK_FAIL
    assert (req.state, req.complete, req.result, req.timed_out) == (JOB_FAILED, True, None, False)
    assert client.submit_job("p3_ok", "y", poll_timeout=WAIT).result == "ok y"


def test_p3_unique_coalescing(p3_env: Any) -> None:
    one, two = p3_env.client(), p3_env.client()
    a = one.submit_job("p3_once", "first", unique="same", wait_until_complete=False)
    b = two.submit_job("p3_once", "second", unique="same", wait_until_complete=False)
    assert a.job.handle == b.job.handle
    worker = p3_env.worker({"p3_once": lambda w, job: "ran " + job.data})
    for client, req in ((one, a), (two, b)):
        [done] = client.wait_until_jobs_completed([req], poll_timeout=WAIT)
        assert (done.state, done.result) == (JOB_COMPLETE, "ran first")
    assert worker.jobs == [("p3_once", "same", "first")]


def test_p3_admin_client(p3_env: Any) -> None:
    p3_env.worker({"p3_adm": lambda w, job: job.data, "p3_adm2": lambda w, job: job.data},
                  client_id="p3-admin-w")
    client = p3_env.client()
    client.submit_job("p3_adm_q", "queued", background=True, poll_timeout=WAIT)
    adm = p3_env.admin()

    elapsed = adm.ping_server()  # ECHO_REQ "ping? pong!" answered with the same bytes
    assert isinstance(elapsed, float) and elapsed >= 0

    version = adm.get_version()
    assert version == admin(p3_env.address, "version")[0].decode().rstrip("\n")
    assert re.fullmatch(r"OK \S+", version), version

    status = {row["task"]: row for row in adm.get_status()}
    assert status == {
        "p3_adm": {"task": "p3_adm", "queued": 0, "running": 0, "workers": 1},
        "p3_adm2": {"task": "p3_adm2", "queued": 0, "running": 0, "workers": 1},
        "p3_adm_q": {"task": "p3_adm_q", "queued": 1, "running": 0, "workers": 0},
    }

    workers = adm.get_workers()
    mine = [w for w in workers if w["client_id"] == "p3-admin-w"]
    assert len(mine) == 1, workers
    assert mine[0]["ip"] == "127.0.0.1" and mine[0]["file_descriptor"].isdigit()
    assert sorted(mine[0]["tasks"]) == ["p3_adm", "p3_adm2"]
    # connections without functions (clients, this admin connection) are listed with no tasks
    assert all(w["tasks"] == () for w in workers if w["client_id"] != "p3-admin-w")
    assert len(workers) >= 3

    # python3-gearman's maxqueue expects "OK" but both servers answer "OK\r\n" and the
    # library only strips the "\n": it raises, though the server took the limit.
    with pytest.raises(ProtocolError, match=r"Expected 'OK', received: OK\r"):
        adm.send_maxqueue("p3_adm_q", 1)
    with Wire(p3_env.address) as w:
        w.send("SUBMIT_JOB_BG", "p3_adm_q", "", "one too many")
        assert w.expect("ERROR") == [b"QUEUE_ERROR", b"Job queue is full"]
