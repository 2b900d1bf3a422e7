"""Perl's Gearman::Client and Gearman::Worker (libgearman-client-perl 2.004.015),
unchanged, against a real server.

Each side is a separate perl process: tests/interop/perl/worker.pl registers the
functions, tests/interop/perl/client.pl drives Gearman::Client and prints JSON.
They also meet the other clients: a Perl worker serves the `gearman` tool and
php-gearman, and a `gearman -w` worker serves a Perl client.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.interop.util import (
    HERE,
    Procs,
    gearman,
    php,
    poll,
    require,
    run,
    status_lines,
    wait_exit,
    wait_status,
    wait_workers,
)
from tests.support.process import ServerProcess
from tests.support.wire import admin, status_of

PERL_DIR = HERE / "perl"
FUNCTIONS = ("chatter", "count", "die", "empty", "gated", "progress", "record", "reverse", "undef", "zero")
# Gearman::Client handles are "HOST:PORT//SERVER-HANDLE"
PERL_HANDLE = re.compile(r"^127\.0\.0\.1:\d+//H:[^:\s]+:\d+$")


@pytest.fixture(autouse=True, scope="module")
def _perl_installed() -> None:
    require("perl")
    probe = subprocess.run(["perl", "-MGearman::Client", "-MGearman::Worker", "-MJSON::PP", "-e", "1"],
                           capture_output=True, timeout=30)
    assert probe.returncode == 0, f"Perl modules missing (Debian: libgearman-client-perl): {probe.stderr!r}"


def perl(address: tuple[str, int], *args: str, timeout: float = 30.0) -> Any:
    """Run client.pl ARGS to completion; it must exit 0 and print one JSON document."""
    proc = run(["perl", str(PERL_DIR / "client.pl"), *args], address, timeout=timeout)
    detail = f"client.pl {args} rc={proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == 0, detail
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(detail) from None


def do(address: tuple[str, int], function: str, workload: str, **opts: Any) -> dict[str, Any]:
    return perl(address, "do", function, workload, json.dumps(opts))  # type: ignore[no-any-return]


def outcome(result: Any, **overrides: Any) -> dict[str, Any]:
    """What client.pl reports for a job: every callback list empty unless given."""
    base: dict[str, Any] = {"result": result, "fail": [], "status": [], "data": [], "warnings": [],
                            "exceptions": []}
    base.update(overrides)
    return base


def start_worker(procs: Procs, address: tuple[str, int], *args: str,
                 wait_for: str = "reverse") -> subprocess.Popen[bytes]:
    proc = procs.spawn(["perl", str(PERL_DIR / "worker.pl"), *args], address, name="perl-worker")
    wait_workers(address, wait_for)
    return proc


def spawn_client(procs: Procs, address: tuple[str, int], *args: str) -> subprocess.Popen[bytes]:
    return procs.spawn(["perl", str(PERL_DIR / "client.pl"), *args], address, name="perl-client")


def client_json(procs: Procs, proc: subprocess.Popen[bytes]) -> Any:
    rc = wait_exit(proc, timeout=30)
    out, err = procs.output(proc)
    assert rc == 0, (rc, out, err)
    return json.loads(out)


def stderr_handle(procs: Procs, proc: subprocess.Popen[bytes]) -> str:
    """The handle a `client.pl submit` printed once the server answered JOB_CREATED."""
    def handle() -> str | None:
        for line in procs.output(proc)[1].decode().splitlines():
            if line.startswith("handle "):
                return line[len("handle "):]
        assert proc.poll() is None, procs.output(proc)
        return None
    return poll(handle, "JOB_CREATED in a Perl client")  # type: ignore[no-any-return]


def record_lines(path: Path) -> list[tuple[int, str, str]]:
    """The worker's --record file: (pid, function, workload) per job, in start order."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, fn, workload = line.split(" ", 2)
        out.append((int(pid), fn, workload))
    return out


# ---------------------------------------------------------------- Gearman::Worker serving Gearman::Client


def test_do_task_foreground_result(target: ServerProcess, procs: Procs) -> None:
    worker = start_worker(procs, target.address, "--id", "perl-w1")
    assert do(target.address, "reverse", "Rasmus") == outcome("sumsaR")
    # the same worker process serves job after job
    assert do(target.address, "count", "a")["result"] == "1:a"
    assert do(target.address, "count", "b")["result"] == "2:b"
    assert worker.poll() is None
    # SET_CLIENT_ID and one CAN_DO per registered function, on one connection
    lines = admin(target.address, "workers")[0].decode().splitlines()
    mine = [line for line in lines if " perl-w1 : " in line]
    assert len(mine) == 1, lines
    assert sorted(mine[0].split(" : ", 1)[1].split()) == sorted(FUNCTIONS)
    assert status_of(target.address, "reverse") == (0, 0, 1)
    assert status_of(target.address, "count") == (0, 0, 1)


def test_empty_result_completes_the_job(server: ServerProcess, procs: Procs) -> None:
    """Gearman::Worker sends WORK_COMPLETE with only the handle (no NUL, no data)
    for a false result ("" and also "0"). geartrain completes the job with an
    empty result. geartrain only: gearmand 1.1.20 stalls that worker connection and
    the client waits until its timeout (see docs/compatibility.md)."""
    start_worker(procs, server.address)
    assert do(server.address, "empty", "x", timeout=10) == outcome("")
    # Gearman::Worker's own quirk: it tests the result for truth, so "0" is lost too
    assert do(server.address, "zero", "x", timeout=10) == outcome("")
    # the worker's connection is still in step: it serves the next job
    assert do(server.address, "reverse", "abc") == outcome("cba")
    assert status_of(server.address, "empty") == (0, 0, 1)


def test_set_status_data_and_warning_reach_the_callbacks(target: ServerProcess, procs: Procs) -> None:
    start_worker(procs, target.address)
    got = do(target.address, "progress", "4")
    assert got == outcome("done 4", status=[[str(i), "4"] for i in range(1, 5)])
    got = do(target.address, "chatter", "x")
    assert got == outcome("end", data=["d1", "d2"], warnings=["w1"])


def test_on_fail_when_the_worker_returns_undef(target: ServerProcess, procs: Procs) -> None:
    start_worker(procs, target.address)
    # WORK_FAIL: on_fail is called ("jshandle fail" is Gearman::Taskset's reason text), no result
    assert do(target.address, "undef", "x") == outcome(None, fail=["jshandle fail"])
    assert do(target.address, "reverse", "ok") == outcome("ko")


def test_dying_worker_reaches_a_client_asking_for_exceptions(target: ServerProcess, procs: Procs) -> None:
    worker = start_worker(procs, target.address)
    got = do(target.address, "die", "x", exceptions=1)
    # WORK_EXCEPTION carries Storable::nfreeze(\$@), thawed by client.pl. Gearman::Client
    # calls neither on_fail nor on_complete after an exception: do_task just returns undef.
    assert got == outcome(None, exceptions=["boom: x\n"])
    # The worker sends WORK_FAIL after its WORK_EXCEPTION; the job is gone by then, so
    # the server answers ERROR JOB_NOT_FOUND, which makes Gearman::Worker::work() die
    # (worker.pl re-enters it). Both servers do this.
    poll(lambda: b"JOB_NOT_FOUND" in procs.output(worker)[1], "ERROR JOB_NOT_FOUND in the worker's stderr")
    err = procs.output(worker)[1].decode()
    assert "Job 'die' died: boom: x" in err
    assert "work() died: unexpected packet type: error [JOB_NOT_FOUND -- " in err
    assert do(target.address, "reverse", "still here") == outcome("ereh llits")
    assert status_of(target.address, "die") == (0, 0, 1)


def test_dying_worker_fails_a_plain_client(server: ServerProcess, procs: Procs) -> None:
    """A client without the exceptions option gets the WORK_EXCEPTION as a WORK_FAIL
    with the bare handle, so on_fail runs. geartrain only: gearmand 1.1.20 sends
    WORK_FAIL "handle\\0" (#108), and Gearman::Client dies with "Got work_fail for
    unknown handle: H:...\\0"."""
    start_worker(procs, server.address)
    assert do(server.address, "die", "y") == outcome(None, fail=["jshandle fail"])
    assert do(server.address, "reverse", "next") == outcome("txen")


def test_dispatch_background_and_get_status(target: ServerProcess, procs: Procs, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    [handle] = perl(target.address, "bg", json.dumps([["gated", str(gate), {"uniq": "bg-gated"}]]))
    assert PERL_HANDLE.match(handle), handle
    unknown = handle.rsplit(":", 1)[0] + ":987654"
    # queued, no worker yet: known, not running, no progress; an unknown handle: not known
    got = perl(target.address, "status", handle, unknown)
    assert got == [
        {"known": "1", "running": "0", "progress": ["0", "0"], "percent": None},
        {"known": "0", "running": "0", "progress": ["0", "0"], "percent": None},
    ]
    assert status_of(target.address, "gated") == (1, 0, 0)

    start_worker(procs, target.address, wait_for="gated")

    def running() -> dict[str, Any] | None:
        [st] = perl(target.address, "status", handle)
        return st if st["running"] == "1" and st["progress"] == ["3", "7"] else None
    st = poll(running, "the background job running with status 3/7")
    assert (st["known"], st["progress"], st["percent"]) == ("1", ["3", "7"], pytest.approx(3 / 7))
    assert status_of(target.address, "gated") == (1, 1, 1)

    gate.touch()
    wait_status(target.address, "gated", (0, 0, 1))
    [st] = perl(target.address, "status", handle)
    assert st == {"known": "0", "running": "0", "progress": ["0", "0"], "percent": None}


def test_uniq_coalesces_two_clients_onto_one_job(target: ServerProcess, procs: Procs, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    first = spawn_client(procs, target.address, "submit", "count", "first", json.dumps({"uniq": "same"}))
    handle = stderr_handle(procs, first)
    assert PERL_HANDLE.match(handle), handle
    second = spawn_client(procs, target.address, "submit", "count", "second", json.dumps({"uniq": "same"}))
    assert stderr_handle(procs, second) == handle
    # a different uniq is a different job
    other = spawn_client(procs, target.address, "submit", "count", "third", json.dumps({"uniq": "other"}))
    other_handle = stderr_handle(procs, other)
    assert other_handle != handle
    assert status_of(target.address, "count") == (2, 0, 0)

    start_worker(procs, target.address, "--record", str(record), wait_for="count")
    a, b, c = (client_json(procs, p) for p in (first, second, other))
    # the job ran once, with the first submission's workload; both clients got its result
    assert a["result"] == b["result"] == "1:first"
    assert c["result"] == "2:third"
    assert a["handle"] == b["handle"] == handle and c["handle"] == other_handle
    assert sorted(fn_arg for _, *fn_arg in record_lines(record)) == [["count", "first"], ["count", "third"]]
    wait_status(target.address, "count", (0, 0, 1))


def test_priorities_and_job_server_status(target: ServerProcess, procs: Procs, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    jobs = [
        ["record", "n1", {}],
        ["record", "l1", {"priority": "low"}],
        ["record", "h1", {"high_priority": 1}],  # the deprecated spelling of priority => "high"
        ["record", "n2", {"priority": "normal"}],
        ["record", "h2", {"priority": "high"}],
    ]
    proc = run(["perl", str(PERL_DIR / "client.pl"), "bg", json.dumps(jobs)], target.address)
    assert proc.returncode == 0, proc
    handles = json.loads(proc.stdout)
    assert len(handles) == 5 and len(set(handles)) == 5
    assert b"Gearman::Task key high_priority is deprecated." in proc.stderr
    assert status_lines(target.address, "prioritystatus")["record"] == [2, 2, 1, 0]
    # Gearman::Client's own parser of the `status` admin reply
    got = perl(target.address, "server_status")
    assert got == {"record": {"queued": "5", "running": "0", "capable": "0"}}

    worker = start_worker(procs, target.address, "--record", str(record), wait_for="record")
    wait_status(target.address, "record", (0, 0, 1))
    assert record_lines(record) == [(worker.pid, "record", w) for w in ("h1", "h2", "n1", "n2", "l1")]
    got = perl(target.address, "server_status")
    for fn in FUNCTIONS:
        assert got[fn] == {"queued": "0", "running": "0", "capable": "1"}, (fn, got)


# ---------------------------------------------------------------- with the other clients


def test_gearman_tool_and_php_clients_of_a_perl_worker(target: ServerProcess, procs: Procs) -> None:
    start_worker(procs, target.address)
    r = gearman(target.address, "-f", "reverse", "Rasmus")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"sumsaR", b"")
    r = gearman(target.address, "-f", "progress", "4", line_buffered=True)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == b"25% Complete\n50% Complete\n75% Complete\n100% Complete\ndone 4"
    # WORK_DATA to stdout, WORK_WARNING to stderr
    r = gearman(target.address, "-f", "chatter", "x")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"d1d2end", b"w1")
    r = gearman(target.address, "-f", "undef", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"Job failed\n")
    got = php(target.address, "client.php", "do", "reverse", "php to perl")
    assert got == {"result": "lrep ot php", "rc": 0}
    assert php(target.address, "client.php", "do", "count", "p") == {"result": "1:p", "rc": 0}


def test_perl_client_of_gearman_tool_workers(target: ServerProcess, procs: Procs) -> None:
    procs.gearman_worker(target.address, "-f", "upper", "--", "tr", "a-z", "A-Z")
    procs.gearman_worker(target.address, "-f", "failer", "--", "false")
    echo = procs.gearman_worker(target.address, "-f", "echo")
    for fn in ("upper", "failer", "echo"):
        wait_workers(target.address, fn)
    assert do(target.address, "upper", "hello perl") == outcome("HELLO PERL")
    assert do(target.address, "failer", "x") == outcome(None, fail=["jshandle fail"])
    # no command: the tool prints the workload and completes with an empty result
    assert do(target.address, "echo", "to stdout") == outcome("")
    poll(lambda: procs.output(echo)[0] == b"to stdout", "the workload on the worker's stdout")
    assert status_of(target.address, "upper") == (0, 0, 1)
