"""`geartrain worker` as a process: commands run per job next to `gearman -w` running
the same commands (the clients are `gearman -f` and `geartrain call`), -c, -n/-N, -j,
failing commands, MODULE:OBJECT, and the graceful stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli.test_call import Procs, call, clean_env, gearman, outcome, poll, wait_workers
from tests.support import process
from tests.support.wire import admin, status_of


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop()

# (name, gearman -w/geartrain worker options and command): served by both tools, as
# g_<name> by `gearman -w` and t_<name> by `geartrain worker`.
COMMANDS: list[tuple[str, list[str]]] = [
    ("rev", ["--", "rev"]),
    ("wc", ["--", "wc", "-l"]),
    ("fail", ["--", "false"]),
    ("partial", ["--", "sh", "-c", "echo out; exit 3"]),
    ("plain", []),  # no command: the workload goes to the worker's stdout
]

# (name, client arguments, stdin) run against g_<name> and t_<name>
CALLS: list[tuple[str, list[str], bytes | None]] = [
    ("rev", ["Rasmus"], None),
    ("rev", ["one", "two"], None),
    ("rev", [], b"line one\nline two\n"),
    ("rev", ["-s"], None),
    ("wc", [], b"a\nb\nc\n"),
    ("wc", ["no newline"], None),
    ("fail", ["x"], None),
    ("partial", ["x"], None),
    ("plain", ["hello there"], None),
    ("plain", ["-v"], b"from stdin\n"),
]


def worker_pair(procs: Procs, addr: tuple[str, int], name: str, options: list[str]
                ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    theirs = procs.gearman_worker(addr, "-f", f"g_{name}", *options)
    ours = procs.geartrain_worker(addr, "-f", f"t_{name}", *options)
    return theirs, ours


def test_commands_behave_like_gearman_w(any_server: process.ServerProcess, procs: Procs) -> None:
    addr = any_server.address
    pairs = {name: worker_pair(procs, addr, name, options) for name, options in COMMANDS}
    wait_workers(addr, *(f"{side}_{name}" for name, _ in COMMANDS for side in "gt"))

    def compare(case: tuple[Callable[..., subprocess.CompletedProcess[bytes]], str, list[str], bytes | None]
                ) -> str | None:
        client, name, args, stdin = case
        theirs = outcome(client(addr, "-f", f"g_{name}", *args, input=stdin))
        ours = outcome(client(addr, "-f", f"t_{name}", *args, input=stdin))
        if ours == theirs:
            return None
        return (f"{client.__name__} -f {name} {args} {stdin!r}\n"
                f"  gearman -w:       {theirs!r}\n  geartrain worker: {ours!r}")

    with ThreadPoolExecutor(4) as pool:
        cases = [(client, *c) for c in CALLS for client in (gearman, call)]
        mismatches = [m for m in pool.map(compare, cases) if m]
    assert not mismatches, "\n".join(mismatches)
    # what it is, in gearman's words
    assert outcome(gearman(addr, "-f", "t_rev", "Rasmus")) == (0, b"sumsaR", b"")
    assert outcome(gearman(addr, "-f", "t_partial", "x")) == (1, b"out\n", b"Job failed\n")
    # no command: each workload on the worker's stdout, as gearman -w prints it
    g_plain, t_plain = pairs["plain"]
    def printed(proc: subprocess.Popen[bytes]) -> list[int]:
        out = procs.output(proc)[0]
        return [out.count(b"hello there"), out.count(b"from stdin\n"), len(out)]
    expected = [2, 2, 2 * len(b"hello there") + 2 * len(b"from stdin\n")]
    poll(lambda: printed(t_plain) == printed(g_plain) == expected, "the workloads on both workers' stdout")
    # one `geartrain worker` serves several functions with one command
    procs.geartrain_worker(addr, "-f", "upper", "-f", "shout", "--", "tr", "a-z", "A-Z")
    wait_workers(addr, "upper", "shout")
    code, out, err = outcome(call(addr, "-P", "-f", "upper", "-f", "shout", "hey"))
    assert (code, err) == (0, b"")
    assert out in (b"upper: HEYshout: HEY", b"shout: HEYupper: HEY")  # the server picks the order
    # every worker is still there, serving
    assert all(p.poll() is None for pair in pairs.values() for p in pair)


def test_lines_are_sent_once_each(server: process.ServerProcess, procs: Procs) -> None:
    addr = server.address
    script = ["--", "printf", "a\\nbb\\nccc\\n"]
    worker_pair(procs, addr, "lines", ["-n", *script])
    worker_pair(procs, addr, "strip", ["-N", *script])
    worker_pair(procs, addr, "nofinal", ["-N", "--", "printf", "a\\nbb"])
    worker_pair(procs, addr, "linefail", ["-n", "--", "sh", "-c", "printf 'x\\ny\\n'; exit 3"])
    wait_workers(addr, *(f"{s}_{n}" for n in ("lines", "strip", "nofinal", "linefail") for s in "gt"))
    # each output line is one WORK_DATA (here with -P: one prefix each), then an empty result
    assert outcome(call(addr, "-P", "-f", "t_lines", "x")) == (
        0, b"t_lines: a\nt_lines: bb\nt_lines: ccc\nt_lines: ", b"")
    assert outcome(call(addr, "-P", "-f", "t_strip", "x")) == (
        0, b"t_strip: at_strip: bbt_strip: ccct_strip: ", b"")
    assert outcome(gearman(addr, "-f", "t_nofinal", "x")) == (0, b"abb", b"")
    assert outcome(gearman(addr, "-f", "t_linefail", "x")) == (1, b"x\ny\n", b"Job failed\n")
    # gearman -w 1.1.20 re-sends every line read so far with each new line, and -N
    # drops the last byte whether or not it is a newline: deliberate differences
    assert outcome(gearman(addr, "-f", "g_lines", "x")) == (0, b"a\na\nbb\na\nbb\nccc\n", b"")
    assert outcome(gearman(addr, "-f", "g_strip", "x")) == (0, b"aa\nbba\nbb\nccc", b"")
    assert outcome(gearman(addr, "-f", "g_nofinal", "x")) == (0, b"aa\nb", b"")
    assert outcome(gearman(addr, "-f", "g_linefail", "x")) == (1, b"x\nx\ny\n", b"Job failed\n")


def test_count_exits_after_n_jobs(any_server: process.ServerProcess, procs: Procs) -> None:
    addr = any_server.address
    worker = procs.geartrain_worker(addr, "-c", "2", "-f", "once", "--", "tr", "a-z", "A-Z")
    wait_workers(addr, "once")
    assert outcome(gearman(addr, "-f", "once", "first")) == (0, b"FIRST", b"")
    assert worker.poll() is None
    assert outcome(call(addr, "-f", "once", "second")) == (0, b"SECOND", b"")
    assert worker.wait(10) == 0
    # a third job waits for another worker
    assert outcome(call(addr, "-b", "-f", "once", "third")) == (0, b"", b"")
    poll(lambda: status_of(addr, "once") == (1, 0, 0), "the third job queued, no worker")


def test_failures_signals_and_timeouts(server: process.ServerProcess, procs: Procs) -> None:
    addr = server.address
    # a command killed by a signal fails its job (gearman -w reports success: exit status 0 of wait())
    worker_pair(procs, addr, "killed", ["--", "sh", "-c", "kill -9 $$"])
    # -t: a command still running after MS milliseconds is killed, its job fails
    procs.geartrain_worker(addr, "-t", "300", "-f", "hang", "--", "sleep", "30.1")
    wait_workers(addr, "g_killed", "t_killed", "hang")
    assert outcome(gearman(addr, "-f", "g_killed", "x")) == (0, b"", b"")
    assert outcome(call(addr, "-f", "t_killed", "x")) == (1, b"", b"Job failed\n")
    started = time.monotonic()
    assert outcome(call(addr, "-f", "hang", "x")) == (1, b"", b"Job failed\n")
    assert time.monotonic() - started < 5
    # a command that does not read its stdin still gets its job done
    procs.geartrain_worker(addr, "-f", "noread", "--", "echo", "ignored")
    wait_workers(addr, "noread")
    assert outcome(call(addr, "-f", "noread", input=b"x" * 1_000_000)) == (0, b"ignored\n", b"")
    # large workloads both ways: written while the output is read (gearman -w deadlocks)
    procs.geartrain_worker(addr, "-f", "cat", "--", "cat")
    wait_workers(addr, "cat")
    big = os.urandom(3_000_000).replace(b"\0", b"x")
    res = call(addr, "-f", "cat", input=big)
    assert (res.returncode, res.stdout == big, res.stderr) == (0, True, b"")


def test_concurrency(server: process.ServerProcess, procs: Procs) -> None:
    addr = server.address
    procs.geartrain_worker(addr, "-j", "3", "-f", "nap", "--", "sh", "-c", "sleep 1; cat")
    wait_workers(addr, "nap")
    assert outcome(call(addr, "-b", "-f", "nap", "0", "1", "2", "3")) == (0, b"", b"")
    poll(lambda: status_of(addr, "nap") == (4, 3, 1), "three jobs running at once, one queued")
    poll(lambda: status_of(addr, "nap") == (0, 0, 1), "all done")


def test_usage_errors(tmp_path: Path) -> None:
    def worker(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*process.geartrain_command(), "worker", "-p", "1", *args], capture_output=True,
                              timeout=20, env=clean_env(), cwd=tmp_path, stdin=subprocess.DEVNULL)

    (tmp_path / "empty_mod.py").write_text(
        "from geartrain.worker import AsyncWorker\nw = AsyncWorker()\nx = 3\n")
    for args, message in (
        (["--", "rev"], b"no function given"),
        (["-f", "x", "--", "no-such-command-here"], b"cannot run no-such-command-here: command not found"),
        (["no_such_module:worker"], b"cannot import no_such_module"),
        (["empty_mod:nothing"], b"has no attribute 'nothing'"),
        (["empty_mod:x"], b"is int, not an AsyncWorker"),
        (["empty_mod:w"], b"has no functions registered"),
        (["empty_mod:w", "-n"], b"-n, -N and -t apply to a COMMAND"),
    ):
        res = worker(*args)
        assert res.returncode == 2, (args, res)
        assert message in res.stderr, (args, res.stderr)
    res = subprocess.run([*process.geartrain_command(), "worker", "--help"], capture_output=True, timeout=20)
    for flag in ("-f NAME", "-h HOST", "-p PORT", "-c N", "-n", "-N", "-j N", "-t MS", "MODULE:OBJECT",
                 "GEARMAN_SERVER", "SIGTERM"):
        assert flag.encode() in res.stdout, flag


MODULE = '''\
import asyncio
import os

from geartrain.errors import JobFailed
from geartrain.worker import AsyncWorker, Worker

# servers that do not exist: -h/-p or GEARMAN_SERVER must replace them
async_worker = AsyncWorker("127.0.0.1:1")


@async_worker.function("m_upper")
async def upper(job):
    job.send_status(1, 2)
    await asyncio.sleep(0)
    return job.payload.upper()


@async_worker.function("m_refuse")
async def refuse(job):
    raise JobFailed("no")


blocking = Worker("127.0.0.1:1", concurrency=2)


@blocking.function("m_thread")
def in_a_thread(job):  # a plain function: runs in the worker's thread pool
    job.send_data(b"working\\n")
    return b"pid " + str(os.getpid()).encode()


def make_worker():
    w = AsyncWorker(concurrency=2)
    w.register("m_factory", lambda job: job.payload[::-1])
    return w


class Namespace:
    own = AsyncWorker("{server}", client_id="own-servers")


@Namespace.own.function("m_own")
async def own(job):
    return b"served by the object's own servers"
'''


def test_module_object(server: process.ServerProcess, procs: Procs, tmp_path: Path) -> None:
    addr = server.address
    (tmp_path / "mod.py").write_text(MODULE.replace("{server}", f"{addr[0]}:{addr[1]}"))
    procs.geartrain_worker(addr, "mod:async_worker", cwd=tmp_path)                       # -h/-p replace
    blocking = procs.geartrain_worker(None, "mod:blocking", cwd=tmp_path,                 # GEARMAN_SERVER
                                      env=clean_env(GEARMAN_SERVER=f"{addr[0]}:{addr[1]}"))
    factory = procs.geartrain_worker(None, "mod:make_worker", "-p", str(addr[1]), "-c", "1",  # options after
                                     cwd=tmp_path)
    procs.geartrain_worker(None, "mod:Namespace.own", cwd=tmp_path)                      # the object's own
    wait_workers(addr, "m_upper", "m_refuse", "m_thread", "m_factory", "m_own")
    assert outcome(call(addr, "-f", "m_upper", "abc")) == (0, b"50% Complete\nABC", b"")
    assert outcome(gearman(addr, "-f", "m_upper", "abc")) == (0, b"50% Complete\nABC", b"")
    assert outcome(call(addr, "-f", "m_refuse", "x")) == (1, b"", b"Job failed\n")
    assert outcome(call(addr, "-f", "m_thread", "x")) == (0, f"working\npid {blocking.pid}".encode(), b"")
    assert outcome(call(addr, "-f", "m_own", "x")) == (0, b"served by the object's own servers", b"")
    assert "own-servers" in admin(addr, "workers")[0].decode()
    assert outcome(call(addr, "-f", "m_factory", "olleh")) == (0, b"hello", b"")
    assert factory.wait(10) == 0  # -c 1, given after MODULE:OBJECT


def test_sigterm_lets_the_running_job_finish(any_server: process.ServerProcess, procs: Procs) -> None:
    addr = any_server.address
    worker = procs.geartrain_worker(addr, "-f", "slow", "--", "sh", "-c", "sleep 0.8; rev")
    wait_workers(addr, "slow")
    client = subprocess.Popen([*process.geartrain_command(), "call", "-h", addr[0], "-p", str(addr[1]),
                               "-f", "slow", "finish me"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=clean_env())
    try:
        poll(lambda: status_of(addr, "slow") == (1, 1, 1), "the job to run")
        assert call(addr, "-b", "-f", "slow", "queued").returncode == 0
        worker.send_signal(signal.SIGTERM)
        out, err = client.communicate(timeout=15)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert (client.returncode, out, err) == (0, b"em hsinif", b"")
    assert worker.wait(10) == 0
    # the queued job was not taken: it waits for another worker
    poll(lambda: status_of(addr, "slow") == (1, 0, 0), "the queued job left for another worker")


def test_second_signal_aborts_and_the_job_is_requeued(server: process.ServerProcess, procs: Procs) -> None:
    addr = server.address
    worker = procs.geartrain_worker(addr, "-f", "long", "--", "sleep", "30.2")
    wait_workers(addr, "long")
    assert call(addr, "-b", "-f", "long", "x").returncode == 0
    poll(lambda: status_of(addr, "long") == (1, 1, 1), "the job to run")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert worker.poll() is None  # still waiting for its job
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 128 + signal.SIGTERM
    poll(lambda: status_of(addr, "long") == (1, 0, 0), "the job back in the queue")
    # and the command was terminated with it
    poll(lambda: b"sleep 30.2" not in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout,
         "the command to be gone")
