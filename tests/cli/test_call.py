"""`geartrain call` against the real `gearman` tool (gearman-tools 1.1.20) in client mode:
same server, same workers, same output byte for byte for each flag combination, on
geartrain and on C gearmand; then the deliberate differences (exit status, exceptions,
zero denominator, unreachable server, timeout) and the progress bar on a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import process
from tests.support.wire import admin, status_of

RUN_TIMEOUT = 20.0
HANDLE = re.compile(rb"H:\S+")

# A Python worker module served with `geartrain worker jobs:worker` (it also tests that mode).
JOBS_MODULE = '''\
import asyncio

from geartrain.worker import AsyncWorker

worker = AsyncWorker(concurrency=4)


@worker.function("st")
async def st(job):
    # the transcript's status worker (reference, section 7)
    job.send_status(1, 4)
    job.send_data(b"chunk\\n")
    job.send_status(2, 4)
    job.send_warning(b"warn\\n")
    job.send_status(3, 3)
    return b"final\\n"


@worker.function("exc")
async def exc(job):
    raise ValueError("boom")


@worker.function("zero")
async def zero(job):
    job.send_status(1, 0)
    job.send_status(1, 2)
    return b"done\\n"


@worker.function("slow")
async def slow(job):
    await asyncio.sleep(float(job.payload or b"0.5"))
    return b"late"


@worker.function("ticker")
async def ticker(job):
    for i in range(1, 5):
        job.send_status(i, 4)
        await asyncio.sleep(0.02)
    job.send_data(b"half")
    job.send_status(5, 0)
    return b"done\\n"
'''


# ----------------------------------------------------------------- helpers

def clean_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, LC_ALL="C")
    env.pop("GEARMAN_SERVER", None)
    env.pop("GEARMAN_SERVERS", None)
    env.update(extra)
    return env


def run(argv: Sequence[str], *, input: bytes | None = None, env: dict[str, str] | None = None,
        timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, env=env or clean_env())


def gearman(address: tuple[str, int], *args: str, input: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
    """The reference tool, line-buffered (``stdbuf -oL``): it prints status and "Task
    created" lines with stdio but results with write(2), so a pipe would move its
    status lines to the end; line buffering gives the order a terminal shows."""
    assert shutil.which("gearman"), "gearman is missing (Debian: gearman-tools)"
    return run(["stdbuf", "-oL", "gearman", "-t", "15000", "-h", address[0], "-p", str(address[1]), *args],
               input=input)


def call(address: tuple[str, int] | None, *args: str, input: bytes | None = None,
         env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT
         ) -> subprocess.CompletedProcess[bytes]:
    where = ["-h", address[0], "-p", str(address[1])] if address else []
    return run([*process.geartrain_command(), "call", *where, *args], input=input, env=env, timeout=timeout)


def outcome(res: subprocess.CompletedProcess[bytes]) -> tuple[int, bytes, bytes]:
    return res.returncode, HANDLE.sub(b"H:*", res.stdout), HANDLE.sub(b"H:*", res.stderr)


def poll(predicate, what: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(0.02)


def wait_workers(address: tuple[str, int], *functions: str, n: int = 1) -> None:
    for fn in functions:
        poll(lambda fn=fn: (status_of(address, fn) or (0, 0, 0))[2] >= n, f"a worker for {fn}")


class Procs:
    """Background processes of one test, each leading its own process group; the
    groups still led by a live process are terminated (then killed) at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[subprocess.Popen[bytes], Path, Path]] = []

    def spawn(self, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              name: str = "proc") -> subprocess.Popen[bytes]:
        n = len(self.started)
        out, err = self.workdir / f"{name}-{n}.out", self.workdir / f"{name}-{n}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                    env=env or clean_env(), cwd=cwd, start_new_session=True)
        self.started.append((proc, out, err))
        return proc

    def gearman_worker(self, address: tuple[str, int], *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(["gearman", "-w", "-h", address[0], "-p", str(address[1]), *args],
                          name="gearman-worker")

    def geartrain_worker(self, address: tuple[str, int] | None, *args: str, env: dict[str, str] | None = None,
                         cwd: Path | None = None) -> subprocess.Popen[bytes]:
        where = ["-h", address[0], "-p", str(address[1])] if address else []
        return self.spawn([*process.geartrain_command(), "worker", *where, *args], env=env, cwd=cwd,
                          name="geartrain-worker")

    def output(self, proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        for p, out, err in self.started:
            if p is proc:
                return out.read_bytes(), err.read_bytes()
        raise KeyError(proc)

    def stop(self) -> None:
        live = [p for p, _, _ in self.started if p.poll() is None]
        for p in live:
            _killpg(p, signal.SIGTERM)
        for p in live:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                _killpg(p, signal.SIGKILL)  # still unreaped: the group id cannot be reused yet
                p.wait(3)
        self.started.clear()


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop()


def python_worker(procs: Procs, address: tuple[str, int], tmp_path: Path) -> subprocess.Popen[bytes]:
    (tmp_path / "jobs.py").write_text(JOBS_MODULE)
    proc = procs.geartrain_worker(address, "jobs:worker", cwd=tmp_path)
    wait_workers(address, "st", "exc", "zero", "slow", "ticker")
    return proc


@pytest.fixture
def workers(any_server: process.ServerProcess, procs: Procs, tmp_path: Path) -> tuple[str, int]:
    """The transcript's workers (`gearman -w` running commands) and the Python one."""
    addr = any_server.address
    procs.gearman_worker(addr, "-f", "rev", "--", "rev")
    procs.gearman_worker(addr, "-f", "up", "-n", "--", "tr", "a-z", "A-Z")
    procs.gearman_worker(addr, "-f", "upper", "--", "tr", "a-z", "A-Z")
    procs.gearman_worker(addr, "-f", "failer", "--", "false")
    procs.gearman_worker(addr, "-f", "partial", "--", "sh", "-c", "echo out; exit 3")
    procs.gearman_worker(addr, "-f", "slowrev", "--", "sh", "-c", "sleep 0.4; rev")
    python_worker(procs, addr, tmp_path)
    wait_workers(addr, "rev", "up", "upper", "failer", "partial", "slowrev")
    return addr


# ------------------------------------------------------- same output as gearman

# (arguments, stdin): each is run by `gearman` and by `geartrain call` in turn.
SAME: list[tuple[list[str], bytes | None]] = [
    (["-f", "rev", "Rasmus"], None),
    (["-f", "rev"], b"from stdin"),
    (["-f", "rev"], b""),                                        # empty stdin: one empty job
    (["-f", "rev", "one", "two", "three"], None),                # one job per argument
    (["-n", "-f", "rev"], b"line one\nline two\n"),
    (["-N", "-f", "rev"], b"line one\nline two\n"),
    (["-s", "-f", "rev"], b"not read"),
    (["-P", "-f", "up"], b"x\ny\n"),                              # per-line WORK_DATA, empty result
    (["-P", "-f", "upper", "-f", "slowrev", "ab", "cd"], None),  # every job goes to each function
    (["-f", "st", "x"], None),                                   # status, data, warning, result
    (["-P", "-f", "st", "x"], None),
    (["-f", "failer", "x"], None),                               # Job failed, exit 1
    (["-P", "-f", "failer", "x"], None),
    (["-f", "partial", "x"], None),                              # output sent before the failure
    (["-P", "-f", "failer", "-f", "rev", "x"], None),
    (["-I", "-f", "rev", "high"], None),
    (["-L", "-f", "rev", "low"], None),
    (["-u", "the-key", "-f", "rev", "unique"], None),
    (["-t", "5000", "-f", "rev", "timeout not reached"], None),
    (["-v", "-f", "rev", "verbose"], None),
    (["-v", "-P", "-f", "upper", "-f", "slowrev", "a", "b"], None),
    (["-b", "-v", "-I", "-f", "rev", "background"], None),
    (["-b", "-v", "-f", "rev", "-f", "upper", "bg1", "bg2"], None),
]


def test_output_matches_gearman_byte_for_byte(workers: tuple[str, int]) -> None:
    addr = workers
    ours: dict[str, tuple[int, bytes, bytes]] = {}

    def compare(case: tuple[list[str], bytes | None]) -> str | None:
        args, stdin = case
        theirs = outcome(gearman(addr, *args, input=stdin))
        ours[str(case)] = outcome(call(addr, *args, input=stdin))
        if ours[str(case)] == theirs:
            return None
        return f"{args} stdin={stdin!r}\n  gearman:   {theirs!r}\n  geartrain: {ours[str(case)]!r}"

    # Cases run side by side (the workers serve them in turn, the output does not
    # change), except those whose output order rests on slowrev being the slower.
    timed = [c for c in SAME if "slowrev" in c[0]]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(compare, [c for c in SAME if c not in timed]))
    results += [compare(c) for c in timed]
    mismatches = [r for r in results if r]
    assert not mismatches, "\n".join(mismatches)
    # and what the reference transcript (section 7) says
    assert ours[str((["-f", "rev", "Rasmus"], None))] == (0, b"sumsaR", b"")
    assert ours[str((["-f", "st", "x"], None))] == (
        0, b"25% Complete\nchunk\n50% Complete\n100% Complete\nfinal\n", b"warn\n")
    assert ours[str((["-f", "failer", "x"], None))] == (1, b"", b"Job failed\n")
    assert ours[str((["-v", "-P", "-f", "upper", "-f", "slowrev", "a", "b"], None))] == (
        0, b"Task created: H:*\nTask created: H:*\nupper: Aslowrev: a"
           b"Task created: H:*\nTask created: H:*\nupper: Bslowrev: b", b"")
    # deliberate difference: -N removes a newline, not whatever the last byte is
    assert outcome(call(addr, "-N", "-f", "rev", input=b"ab\ncd")) == (0, b"badc", b"")
    assert gearman(addr, "-N", "-f", "rev", input=b"ab\ncd").stdout == b"bac"


# ------------------------------------------------------ deliberate differences

def test_exception_ends_the_job_with_exit_1(any_server: process.ServerProcess, procs: Procs,
                                            tmp_path: Path) -> None:
    addr = any_server.address
    python_worker(procs, addr, tmp_path)
    # gearman 1.1.20 hangs on gearmand here (WORK_EXCEPTION); geartrain call prints the
    # payload on stderr and exits 1 at once
    started = time.monotonic()
    assert outcome(call(addr, "-f", "exc", "x", timeout=10)) == (1, b"", b"ValueError: boom\n")
    assert outcome(call(addr, "-P", "-f", "exc", "x")) == (1, b"", b"exc: ValueError: boom\n")
    # one job raising does not stop the others (each argument, each function)
    code, out, err = outcome(call(addr, "-P", "-f", "exc", "-f", "st", "x", "y"))
    assert code == 1
    assert out == b"st: 25% Complete\nst: chunk\nst: 50% Complete\nst: 100% Complete\nst: final\n" * 2
    assert sorted(err.splitlines()) == [b"exc: ValueError: boom"] * 2 + [b"st: warn"] * 2
    assert time.monotonic() - started < 8


def test_zero_denominator_prints_no_percentage(any_server: process.ServerProcess, procs: Procs,
                                               tmp_path: Path) -> None:
    addr = any_server.address
    python_worker(procs, addr, tmp_path)
    res = gearman(addr, "-f", "zero", "x")
    assert res.returncode != 0  # SIGFPE: gearman divides by the zero denominator
    assert outcome(call(addr, "-f", "zero", "x")) == (0, b"50% Complete\ndone\n", b"")
    assert outcome(call(addr, "-P", "-f", "zero", "x")) == (0, b"zero: 50% Complete\nzero: done\n", b"")


def test_unreachable_server_exits_3() -> None:
    port = process.free_port()
    started = time.monotonic()
    res = call(("127.0.0.1", port), "-f", "rev", "x")
    assert res.returncode == 3
    assert res.stdout == b""
    assert res.stderr.startswith(b"geartrain call: ") and f"127.0.0.1:{port}".encode() in res.stderr
    # gearman prints a libgearman error and exits 0
    assert gearman(("127.0.0.1", port), "-f", "rev", "x").returncode == 0
    assert call(("127.0.0.1", port), "-f", "rev", input=b"data").returncode == 3
    assert call(("127.0.0.1", port), "-b", "-f", "rev", "x").returncode == 3
    assert time.monotonic() - started < 10


def test_connection_lost_mid_job_exits_3(server: process.ServerProcess, procs: Procs, tmp_path: Path) -> None:
    addr = server.address
    worker = python_worker(procs, addr, tmp_path)
    client = subprocess.Popen([*process.geartrain_command(), "call", "-h", addr[0], "-p", str(addr[1]),
                               "-f", "slow", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=clean_env())
    try:
        poll(lambda: (status_of(addr, "slow") or (0, 0, 0))[1] == 1, "the slow job to run")
        server.signal(signal.SIGKILL)
        out, err = client.communicate(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 3
    assert out == b""
    assert b"geartrain call: slow: connection to" in err and b"lost" in err
    os.killpg(worker.pid, signal.SIGKILL)  # its job is still running: a graceful stop would wait


def test_timeout_exits_4(any_server: process.ServerProcess, procs: Procs, tmp_path: Path) -> None:
    addr = any_server.address
    started = time.monotonic()
    res = call(addr, "-t", "300", "-f", "nobody", "x")
    assert outcome(res) == (4, b"", b"geartrain call: timed out after 300 ms waiting for nobody\n")
    assert time.monotonic() - started < 5
    # gearman says so on stderr but exits 0
    assert gearman(addr, "-t", "300", "-f", "nobody", "x").returncode == 0
    # the timeout bounds each job: the first times out, the next one still runs
    python_worker(procs, addr, tmp_path)
    res = call(addr, "-t", "400", "-P", "-f", "slow", "1", "0")
    assert outcome(res) == (4, b"slow: late", b"geartrain call: timed out after 400 ms waiting for slow\n")


def test_gearman_server_variable(server: process.ServerProcess, procs: Procs) -> None:
    addr = server.address
    procs.gearman_worker(addr, "-f", "rev", "--", "rev")
    wait_workers(addr, "rev")
    here = f"{addr[0]}:{addr[1]}"
    dead = f"127.0.0.1:{process.free_port()}"
    # like gearman: GEARMAN_SERVER (a comma separated list) when -h/-p are not given
    res = call(None, "-f", "rev", "env", env=clean_env(GEARMAN_SERVER=here))
    assert outcome(res) == (0, b"vne", b"")
    assert run(["gearman", "-f", "rev", "env"], env=clean_env(GEARMAN_SERVER=here)).stdout == b"vne"
    # a server that is down is skipped (gearman reports a lost connection and exits 0)
    res = call(None, "-f", "rev", "a", "b", "c", env=clean_env(GEARMAN_SERVER=f"{dead},{here}"))
    assert outcome(res) == (0, b"abc", b"")
    # unlike gearman, -h/-p win over the variable
    res = call(addr, "-f", "rev", "flags", env=clean_env(GEARMAN_SERVER=dead))
    assert outcome(res) == (0, b"sgalf", b"")
    # GEARMAN_SERVERS (the library's variable) is the fallback
    res = call(None, "-f", "rev", "lib", env=clean_env(GEARMAN_SERVERS=here))
    assert outcome(res) == (0, b"bil", b"")


def test_background_priorities_and_uniques(any_server: process.ServerProcess) -> None:
    addr = any_server.address
    for args in (["-I", "h"], ["-L", "l"], ["n1"], ["n2"]):
        assert outcome(call(addr, "-b", "-f", "queued", *args)) == (0, b"", b"")
    res = call(addr, "-b", "-v", "-u", "my-key", "-f", "queued", "u1")
    assert outcome(res) == (0, b"Task created: H:*\n", b"")
    # the same unique while queued: the same job (coalesced), the same handle
    again = call(addr, "-b", "-v", "-u", "my-key", "-f", "queued", "u2")
    assert again.stdout == res.stdout
    assert status_of(addr, "queued") == (5, 0, 0)
    prio = admin(addr, "prioritystatus")[0].decode().splitlines()
    assert [line for line in prio if line.startswith("queued")] == ["queued\t1\t3\t1\t0"]
    uniques = admin(addr, "show unique jobs")[0].decode().splitlines()
    assert "my-key" in uniques
    # like libgearman, a job without -u gets a fresh UUID as its unique key
    uuids = [u for u in uniques if re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", u)]
    assert len(uuids) == 4


def test_progress_bar_on_a_terminal(server: process.ServerProcess, procs: Procs, tmp_path: Path) -> None:
    addr = server.address
    python_worker(procs, addr, tmp_path)
    screen, code = run_on_terminal([*process.geartrain_command(), "call", "-h", addr[0], "-p", str(addr[1]),
                                    "-f", "ticker", "x"])
    assert code == 0
    # the bar is drawn and redrawn in place, then erased; no percentage lines
    for pct, n in ((25, 1), (50, 2), (75, 3), (100, 4)):
        filled = pct * 20 // 100
        bar = f"\r\x1b[K[{'#' * filled}{'-' * (20 - filled)}] {pct:3d}% ({n}/4)".encode()
        assert bar in screen, (bar, screen)
    assert b"Complete" not in screen
    # output is not drawn over: "half" had no newline, so the next bar starts a line
    assert b"\r\x1b[Khalf\r\n\r\x1b[K[--------------------]    ? (5/0)" in screen
    assert screen.endswith(b"\r\x1b[Kdone\r\n")
    # --progress lines keeps gearman's lines on a terminal too
    screen, code = run_on_terminal([*process.geartrain_command(), "call", "-h", addr[0], "-p", str(addr[1]),
                                    "--progress", "lines", "-f", "ticker", "x"])
    assert (code, screen) == (0, b"25% Complete\r\n50% Complete\r\n75% Complete\r\n100% Complete\r\n"
                                 b"halfdone\r\n")


def run_on_terminal(argv: Sequence[str], timeout: float = 15.0) -> tuple[bytes, int]:
    """Run *argv* with stdout and stderr on a pseudo-terminal; what it wrote, and its exit status."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                env=clean_env(TERM="xterm"))
    finally:
        os.close(slave)
    screen = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        return screen, proc.wait(timeout=5)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -------------------------------------------------------------------- usage

def test_help_and_usage_errors() -> None:
    res = call(None, "--help")
    assert res.returncode == 0
    text = res.stdout.decode()
    for flag in ("-f FUNC", "-h HOST", "-p PORT", "-t MS", "-b", "-I", "-L", "-n", "-N", "-P", "-s",
                 "-u UNIQUE", "-v", "-i FILE", "--progress", "GEARMAN_SERVER", "exit status"):
        assert flag in text, flag
    assert call(None, "-H").stdout == res.stdout
    for args, message in ((["x"], b"no function given"), (["-h"], b"-h/--host: expected one argument"),
                          (["-p", "99999", "-f", "x"], b"not a TCP port"),
                          (["-t", "soon", "-f", "x"], b"not a number of milliseconds"),
                          (["-t", "0", "-f", "x"], b"must be positive")):
        res = call(None, *args)
        assert res.returncode == 2, args
        assert message in res.stderr, (args, res.stderr)
