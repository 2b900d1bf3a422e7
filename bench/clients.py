#!/usr/bin/env python3
"""Client-library benchmark: geartrain's AsyncClient/AsyncWorker/Worker against the
third-party Python libraries `gear` (OpenStack, 0.16) and `python3-gearman` (0.1),
all talking to C gearmand 1.1.20 ``-t 0`` (and, with ``--servers``, to a geartrain
server too).

Two measurements, each in a fresh child process against a fresh server, with
repetitions interleaved (A B C, C B A, ...) so every library sees the same
machine conditions:

* client: ONE connection submits N background jobs (100-byte payloads), as
  pipelined as the library allows; jobs/s from the first submit until the last
  JOB_CREATED is in the client's hands.
* worker: N background echo jobs are queued first (by a geartrain client, not
  timed), then ONE worker process drains them; jobs/s from the first job's start
  until the worker loop has sent the last WORK_COMPLETE.

Every measurement is checked: the client got N distinct handles and the server's
admin ``status`` shows exactly N queued jobs; the worker ran N distinct jobs exactly
once and ``status`` then shows an empty queue (nothing running, nothing lost).

    .venv/bin/python bench/clients.py                 # ~2.5 min, 5 repetitions, gearmand
    .venv/bin/python bench/clients.py --servers gearmand,geartrain
    .venv/bin/python bench/clients.py --reps 1 --scale 0.1   # smoke run

The children are this script (``--child CASE``); the report is a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GEARMAND = "/usr/sbin/gearmand"
PAYLOAD_SIZE = 100
CLIENT_FN = "bench_bg"
WORKER_FN = "bench_echo"


def payload(i: int) -> bytes:
    """100 bytes whose first 10 are the job's number (so the worker can tell jobs apart)."""
    head = b"%010d" % i
    return head + b"x" * (PAYLOAD_SIZE - len(head))


# ====================================================================== cases


@dataclass(frozen=True)
class Case:
    name: str  #: child case id
    kind: str  #: "client" or "worker"
    label: str  #: row label in the report
    n: int  #: jobs per measurement at --scale 1
    note: str = ""


CASES = [
    Case("client-geartrain", "client", "geartrain AsyncClient.submit_background_many", 100_000,
         "one call, one pipelined write"),
    Case("client-gear-pipelined", "client", "gear Client, hand-pipelined SUBMIT_JOB_BG", 100_000,
         "SubmitJobTask + one sendRaw per 1000 jobs, <= 8000 unacknowledged"),
    Case("client-gear-submitjob", "client", "gear Client.submitJob(background=True)", 20_000,
         "public API: one round trip per job"),
    Case("client-python3-gearman", "client", "python3-gearman submit_multiple_jobs(background)", 100_000,
         "wait_until_complete=False, batches of 2000"),
    Case("worker-geartrain-async", "worker", "geartrain AsyncWorker, coroutine echo", 60_000,
         "concurrency=1 (default)"),
    Case("worker-geartrain-async-c16", "worker", "geartrain AsyncWorker, coroutine echo, concurrency=16",
         60_000, "16 jobs in flight"),
    Case("worker-geartrain-blocking", "worker", "geartrain Worker, plain-function echo", 20_000,
         "concurrency=1 (default), function in the thread pool"),
    Case("worker-gear", "worker", "gear.Worker getJob/sendWorkComplete loop", 100,
         "as shipped: no TCP_NODELAY"),
    Case("worker-gear-nodelay", "worker", "gear.Worker loop, TCP_NODELAY set by hand", 20_000,
         "setsockopt on gear's socket after connecting"),
    Case("worker-python3-gearman", "worker", "python3-gearman GearmanWorker.work()", 20_000, ""),
]
BY_NAME = {c.name: c for c in CASES}


# ====================================================================== children
# Each prints one JSON object: {"elapsed": seconds, "cpu": seconds, "n": jobs, ...checks}.


def now() -> tuple[float, float]:
    """(wall clock, CPU time of this whole process: every thread of the library)."""
    return time.perf_counter(), time.process_time()


def span(t0: tuple[float, float], t1: tuple[float, float]) -> dict[str, float]:
    return {"elapsed": t1[0] - t0[0], "cpu": t1[1] - t0[1]}


def _uvloop_run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        import asyncio
        return asyncio.run(coro)
    return uvloop.run(coro)


def child_client_geartrain(host: str, port: int, n: int) -> dict[str, Any]:
    from geartrain import AsyncClient, Request

    payloads = [payload(i) for i in range(n)]

    async def main() -> dict[str, Any]:
        async with AsyncClient([f"{host}:{port}"]) as client:
            await client.connect()
            t0 = now()
            handles = await client.submit_background_many([Request(CLIENT_FN, p) for p in payloads])
            t1 = now()
        ok = all(isinstance(h, str) and h.startswith("H:") for h in handles)
        return {**span(t0, t1), "n": len(handles), "distinct": len(set(handles)), "ok": ok}

    return _uvloop_run(main())  # type: ignore[no-any-return]


def child_client_gear_pipelined(host: str, port: int, n: int) -> dict[str, Any]:
    """gear has no batch submit. Its fastest correct pipelining: queue a SubmitJobTask per
    job on the connection (gear pops one per JOB_CREATED, in order) and send the packets
    in batches with one sendRaw; wait for an old batch's last task to bound what is in
    flight (gear pops pending_tasks with list.pop(0): a deep list is quadratic)."""
    import gear
    from gear import constants

    batch, window = 1000, 8
    payloads = [payload(i) for i in range(n)]
    client = gear.Client("bench")
    client.addServer(host, port)
    client.waitForServer(timeout=10)
    conn = client.active_connections[0]
    jobs: list[gear.Job] = []
    in_flight: deque[gear.SubmitJobTask] = deque()
    t0 = now()
    for start in range(0, n, batch):
        raw = []
        task = None
        for p in payloads[start:start + batch]:
            job = gear.Job(CLIENT_FN, p)
            jobs.append(job)
            task = gear.SubmitJobTask(job)
            conn.pending_tasks.append(task)
            raw.append(gear.Packet(constants.REQ, constants.SUBMIT_JOB_BG,
                                   b"\0".join((job.binary_name, b"", job.binary_arguments))).toBinary())
        conn.sendRaw(b"".join(raw))
        in_flight.append(task)
        if len(in_flight) > window:
            assert in_flight.popleft().wait(30), "JOB_CREATED timeout"
    while in_flight:
        assert in_flight.popleft().wait(30), "JOB_CREATED timeout"
    t1 = now()
    handles = [j.handle for j in jobs]
    client.shutdown()
    ok = all(h and h.startswith(b"H:") for h in handles)
    return {**span(t0, t1), "n": len(handles), "distinct": len(set(handles)), "ok": ok}


def child_client_gear_submitjob(host: str, port: int, n: int) -> dict[str, Any]:
    import gear

    payloads = [payload(i) for i in range(n)]
    client = gear.Client("bench")
    client.addServer(host, port)
    client.waitForServer(timeout=10)
    jobs = []
    t0 = now()
    for p in payloads:
        job = gear.Job(CLIENT_FN, p)
        client.submitJob(job, background=True, timeout=30)
        jobs.append(job)
    t1 = now()
    handles = [j.handle for j in jobs]
    client.shutdown()
    ok = all(h and h.startswith(b"H:") for h in handles)
    return {**span(t0, t1), "n": len(handles), "distinct": len(set(handles)), "ok": ok}


def child_client_python3_gearman(host: str, port: int, n: int) -> dict[str, Any]:
    """submit_multiple_jobs scans every request of the call after every poll round
    (wait_until_jobs_accepted), so one huge call is quadratic: batches of 2000 are
    its sweet spot here."""
    import python3_gearman
    from python3_gearman.constants import JOB_CREATED

    batch = 2000
    payloads = [payload(i).decode() for i in range(n)]  # it takes str only (NoopEncoder)
    client = python3_gearman.GearmanClient([f"{host}:{port}"])
    client.establish_connection(client.connection_list[0])
    requests = []
    t0 = now()
    for start in range(0, n, batch):
        requests += client.submit_multiple_jobs(
            [{"task": CLIENT_FN, "data": p} for p in payloads[start:start + batch]],
            background=True, wait_until_complete=False, poll_timeout=30)
    t1 = now()
    handles = [r.job.handle for r in requests]
    ok = all(r.state == JOB_CREATED and not r.timed_out for r in requests)
    client.shutdown()
    return {**span(t0, t1), "n": len(handles), "distinct": len(set(handles)), "ok": ok}


class _Tally:
    """What a worker saw: job numbers (from the payload) and when the first one started."""

    def __init__(self) -> None:
        self.seen: set[bytes | str] = set()
        self.calls = 0
        self.t_first = (0.0, 0.0)

    def hit(self, data: bytes | str) -> None:
        if not self.calls:
            self.t_first = now()
        self.calls += 1
        self.seen.add(data[:10])

    def result(self, t_last: tuple[float, float], n: int) -> dict[str, Any]:
        return {**span(self.t_first, t_last), "n": self.calls, "distinct": len(self.seen),
                "ok": self.calls == n}


def child_worker_geartrain_async(host: str, port: int, n: int, concurrency: int = 1) -> dict[str, Any]:
    from geartrain import AsyncWorker, WorkerJob

    tally = _Tally()
    worker = AsyncWorker([f"{host}:{port}"], concurrency=concurrency)

    async def echo(job: WorkerJob) -> bytes:
        tally.hit(job.payload)
        return job.payload  # type: ignore[no-any-return]

    worker.register(WORKER_FN, echo)

    async def main() -> dict[str, Any]:
        await worker.run(max_jobs=n)
        return tally.result(now(), n)

    return _uvloop_run(main())  # type: ignore[no-any-return]


def child_worker_geartrain_blocking(host: str, port: int, n: int) -> dict[str, Any]:
    from geartrain import Worker, WorkerJob

    tally = _Tally()
    worker = Worker([f"{host}:{port}"])

    def echo(job: WorkerJob) -> bytes:
        tally.hit(job.payload)
        return job.payload  # type: ignore[no-any-return]

    worker.register(WORKER_FN, echo)
    worker.work(max_jobs=n)
    return tally.result(now(), n)


def child_worker_gear(host: str, port: int, n: int, nodelay: bool = False) -> dict[str, Any]:
    """gear never sets TCP_NODELAY: its WORK_COMPLETE and the next GRAB_JOB_UNIQ are two
    small writes, and Nagle holds the second until the server's delayed ACK (~40 ms).
    With *nodelay* the socket gets it by hand, to show what the library could do."""
    import gear

    tally = _Tally()
    worker = gear.Worker("bench")
    worker.addServer(host, port)
    worker.waitForServer(timeout=10)
    if nodelay:
        for conn in worker.active_connections:
            conn.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    worker.registerFunction(WORKER_FN)
    for _ in range(n):
        job = worker.getJob()
        tally.hit(job.arguments)
        job.sendWorkComplete(job.arguments)
    t_last = now()
    worker.shutdown()
    return tally.result(t_last, n)


def child_worker_python3_gearman(host: str, port: int, n: int) -> dict[str, Any]:
    import python3_gearman

    tally = _Tally()

    class Worker(python3_gearman.GearmanWorker):  # type: ignore[misc]
        def after_poll(self, any_activity: bool) -> bool:
            # the N-th WORK_COMPLETE is already sent: send_job_complete waits until it is
            return tally.calls < n

    def echo(worker: Any, job: Any) -> str:
        tally.hit(job.data)  # str: python3-gearman decodes nothing, it only accepts str
        return job.data  # type: ignore[no-any-return]

    worker = Worker([f"{host}:{port}"])
    worker.register_task(WORKER_FN, echo)
    worker.work(poll_timeout=1.0)
    t_last = now()
    worker.shutdown()
    return tally.result(t_last, n)


CHILDREN = {
    "client-geartrain": child_client_geartrain,
    "client-gear-pipelined": child_client_gear_pipelined,
    "client-gear-submitjob": child_client_gear_submitjob,
    "client-python3-gearman": child_client_python3_gearman,
    "worker-geartrain-async": child_worker_geartrain_async,
    "worker-geartrain-async-c16": lambda h, p, n: child_worker_geartrain_async(h, p, n, concurrency=16),
    "worker-geartrain-blocking": child_worker_geartrain_blocking,
    "worker-gear": child_worker_gear,
    "worker-gear-nodelay": lambda h, p, n: child_worker_gear(h, p, n, nodelay=True),
    "worker-python3-gearman": child_worker_python3_gearman,
}


# ====================================================================== servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A fresh job server on a free port, stopped (and reaped) by stop()."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.host, self.port = "127.0.0.1", free_port()
        log = workdir / f"{kind}-{self.port}.log"
        if kind == "gearmand":
            argv = [GEARMAND, "-p", str(self.port), "-L", self.host, "-t", "0", "-l", str(log),
                    "-P", str(workdir / f"gearmand-{self.port}.pid")]
        else:
            exe = Path(sys.executable).with_name("geartrain")
            cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "geartrain"]
            argv = [*cmd, "server", "--port", str(self.port), "--listen", self.host, "--log-file", str(log)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
        end = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited at start-up ({self.proc.returncode}); see {log}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"{kind} not listening after 15 s") from None
                time.sleep(0.02)

    def status(self, function: str) -> tuple[int, int, int] | None:
        """(queued, running, workers) of *function* in admin `status`, or None."""
        with socket.create_connection((self.host, self.port), timeout=10) as s:
            s.sendall(b"status\n")
            data = b""
            while not data.endswith(b".\n") and b"\n.\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode().splitlines():
            cols = line.split("\t")
            if len(cols) == 4 and cols[0] == function:
                return int(cols[1]), int(cols[2]), int(cols[3])
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def prefill(server: Server, n: int) -> None:
    """Queue n background echo jobs with geartrain's client (not timed)."""
    from geartrain import AsyncClient, Request

    async def main() -> None:
        async with AsyncClient([f"{server.host}:{server.port}"]) as client:
            for start in range(0, n, 20_000):
                await client.submit_background_many(
                    [Request(WORKER_FN, payload(i)) for i in range(start, min(n, start + 20_000))])

    _uvloop_run(main())


# ====================================================================== one measurement


class CheckFailed(Exception):
    pass


def run_child(case: Case, server: Server, n: int, timeout: float) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", case.name,
            "--host", server.host, "--port", str(server.port), "--n", str(n)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=REPO)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise CheckFailed(f"{case.name}: child still running after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise CheckFailed(f"{case.name}: child exited {proc.returncode}: {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(case: Case, kind: str, n: int, workdir: Path, timeout: float) -> tuple[float, float]:
    """One fresh server, one child; returns (jobs/s, the library process's CPU
    microseconds per job) after the correctness checks."""
    server = Server(kind, workdir)
    try:
        if case.kind == "client":
            got = run_child(case, server, n, timeout)
            if not (got["ok"] and got["n"] == n and got["distinct"] == n):
                raise CheckFailed(f"{case.name}: {got} (wanted {n} distinct handles)")
            st = server.status(CLIENT_FN)
            if st != (n, 0, 0):
                raise CheckFailed(f"{case.name}: status {CLIENT_FN} = {st}, wanted ({n}, 0, 0)")
        else:
            prefill(server, n)
            st = server.status(WORKER_FN)
            if st != (n, 0, 0):
                raise CheckFailed(f"{case.name}: prefill left status {st}, wanted ({n}, 0, 0)")
            got = run_child(case, server, n, timeout)
            if not (got["ok"] and got["n"] == n and got["distinct"] == n):
                raise CheckFailed(f"{case.name}: {got} (wanted {n} distinct jobs, each once)")
            # the worker process is gone: nothing may be queued or running (a lost
            # WORK_COMPLETE would put its job back in the queue)
            end = time.monotonic() + 10
            while True:
                st = server.status(WORKER_FN)
                if st is None or st == (0, 0, 0):
                    break
                if time.monotonic() > end:
                    raise CheckFailed(f"{case.name}: status {WORKER_FN} = {st} after the worker exited")
                time.sleep(0.02)
        return float(n / got["elapsed"]), float(got["cpu"] / n * 1e6)
    finally:
        server.stop()


# ====================================================================== report


def fmt_rate(r: float) -> str:
    return f"{r / 1000:.1f}k" if r >= 1000 else f"{r:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="repetitions, interleaved (default 5)")
    ap.add_argument("--servers", default="gearmand",
                    help="comma-separated: gearmand, geartrain (default gearmand)")
    ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every job count (default 1)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one child may take")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(CHILDREN[args.child](args.host, args.port, args.n)))
        return 0

    sys.path.insert(0, str(REPO))  # geartrain from this checkout (prefill)
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    assert set(kinds) <= {"gearmand", "geartrain"}, kinds
    if "gearmand" in kinds and not os.path.exists(GEARMAND):
        print(f"{GEARMAND} missing (Debian: gearman-job-server)", file=sys.stderr)
        return 2
    cases = [BY_NAME[c] for c in args.only.split(",")] if args.only else list(CASES)
    sizes = {c.name: max(100, int(c.n * args.scale)) for c in cases}
    command = " ".join(["bench/clients.py", *sys.argv[1:]])

    rates: dict[tuple[str, str], list[float]] = {(c.name, k): [] for c in cases for k in kinds}
    cpus: dict[tuple[str, str], list[float]] = {(c.name, k): [] for c in cases for k in kinds}
    failures: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="geartrain-bench-clients-"))
    started = time.monotonic()
    try:
        for rep in range(args.reps):
            order = [(c, k) for c in cases for k in kinds]
            if rep % 2:
                order.reverse()
            for case, kind in order:
                try:
                    r, cpu = measure(case, kind, sizes[case.name], workdir, args.timeout)
                except CheckFailed as exc:
                    failures.append(f"rep {rep + 1}, {kind}: {exc}")
                    print(f"  FAILED {exc}", file=sys.stderr)
                    continue
                rates[case.name, kind].append(r)
                cpus[case.name, kind].append(cpu)
                print(f"rep {rep + 1}/{args.reps} {kind:9} {case.name:28} n={sizes[case.name]:<7} "
                      f"{fmt_rate(r):>8} jobs/s {cpu:7.1f} CPU us/job", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - started

    print(f"\nCommand: `.venv/bin/python {command}`  ")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{args.reps} interleaved repetitions, {wall:.0f} s wall, "
          f"{len(failures)} failed correctness checks.\n")
    head = "| measurement | library / usage | jobs per run |" + "".join(
        f" {k}: median jobs/s | min–max | CPU µs/job |" for k in kinds)
    print(head)
    print("|" + "---|" * (3 + 3 * len(kinds)))
    for case in cases:
        label = f"{case.label} ({case.note})" if case.note else case.label
        row = f"| {case.kind} | {label} | {sizes[case.name]:,} |"
        for k in kinds:
            rs, cs = rates[case.name, k], cpus[case.name, k]
            if rs:
                row += (f" **{fmt_rate(statistics.median(rs))}** | {fmt_rate(min(rs))}–{fmt_rate(max(rs))} |"
                        f" {statistics.median(cs):.1f} |")
            else:
                row += " – | – | – |"
        print(row)
    print("\nCPU µs/job: CPU time of the library's process (all its threads) over the timed span, "
          "per job (median); the server's CPU is not in it.")
    for f in failures:
        print(f"\nFAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
