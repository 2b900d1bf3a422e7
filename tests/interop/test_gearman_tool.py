"""The `gearman` command-line tool (Debian gearman-tools 1.1.20) as client and as
worker (`-w`, running a command per job) against a real server."""

from __future__ import annotations

import re
from pathlib import Path

from tests.interop.util import gearman, poll, status_lines, wait_exit, wait_status, wait_workers
from tests.support.wire import admin, status_of

HANDLE = re.compile(rb"^H:[^:\s]+:\d+$")


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_worker_runs_a_command_per_job(target, procs):
    procs.gearman_worker(target.address, "-f", "wc", "--", "wc", "-l")
    procs.gearman_worker(target.address, "-f", "upper", "-f", "shout", "--", "tr", "a-z", "A-Z")
    for fn in ("wc", "upper", "shout"):
        wait_workers(target.address, fn)
    r = gearman(target.address, "-f", "wc", input=b"a\nb\nc\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"3\n", b"")
    r = gearman(target.address, "-f", "wc", "no newline")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"0\n", b"")
    # one `gearman -w` process serves both of its functions
    assert gearman(target.address, "-f", "upper", "hello").stdout == b"HELLO"
    assert gearman(target.address, "-f", "shout", "world").stdout == b"WORLD"
    # each remaining argument is a job of its own
    r = gearman(target.address, "-f", "upper", "one", "two")
    assert (r.returncode, r.stdout) == (0, b"ONETWO")
    st = status_lines(target.address)
    assert st["wc"] == [0, 0, 1] and st["upper"] == [0, 0, 1] and st["shout"] == [0, 0, 1]


def test_worker_count_exits_after_n_jobs(target, procs):
    worker = procs.gearman_worker(target.address, "-c", "2", "-f", "once", "--", "tr", "a-z", "A-Z")
    wait_workers(target.address, "once")
    assert gearman(target.address, "-f", "once", "first").stdout == b"FIRST"
    assert worker.poll() is None
    assert gearman(target.address, "-f", "once", "second").stdout == b"SECOND"
    assert wait_exit(worker) == 0
    wait_status(target.address, "once", (0, 0, 0))


def test_worker_without_command_prints_the_workload(target, procs):
    worker = procs.gearman_worker(target.address, "-f", "echo")
    wait_workers(target.address, "echo")
    r = gearman(target.address, "-f", "echo", "hello there")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    poll(lambda: procs.output(worker)[0] == b"hello there", "the workload on the worker's stdout")


def test_failing_command_gives_job_failed(target, procs):
    procs.gearman_worker(target.address, "-f", "failer", "--", "false")
    procs.gearman_worker(target.address, "-f", "partial", "--", "sh", "-c", "echo out; exit 3")
    wait_workers(target.address, "failer")
    wait_workers(target.address, "partial")
    r = gearman(target.address, "-f", "failer", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"Job failed\n")
    r = gearman(target.address, "-P", "-f", "failer", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"failer: Job failed\n")
    # output before the failure still arrives (as WORK_DATA), then the failure
    r = gearman(target.address, "-f", "partial", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"out\n", b"Job failed\n")
    # the failing worker keeps serving
    r = gearman(target.address, "-f", "failer", "y")
    assert r.returncode == 1
    assert status_lines(target.address)["failer"] == [0, 0, 1]


def test_client_modes(target, procs):
    procs.gearman_worker(target.address, "-f", "upper", "-f", "rev", "--", "tr", "a-z", "A-Z")
    wait_workers(target.address, "upper")
    wait_workers(target.address, "rev")
    # argument; stdin as one job
    assert gearman(target.address, "-f", "upper", "hello world").stdout == b"HELLO WORLD"
    r = gearman(target.address, "-f", "upper", input=b"from\nstdin\n")
    assert (r.returncode, r.stdout) == (0, b"FROM\nSTDIN\n")
    # -n: one job per line (newline kept); -N: same, newline stripped
    r = gearman(target.address, "-n", "-f", "upper", input=b"l1\nl2\nl3\n", line_buffered=True)
    assert r.returncode == 0
    assert sorted(r.stdout.splitlines()) == [b"L1", b"L2", b"L3"]
    assert r.stdout.count(b"\n") == 3
    r = gearman(target.address, "-N", "-f", "upper", input=b"l1\nl2\nl3\n", line_buffered=True)
    assert (r.returncode, r.stdout) == (0, b"L1L2L3")
    # -s: an empty workload, stdin not read
    r = gearman(target.address, "-s", "-f", "upper", input=b"ignored\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    # -P: output prefixed with the function name; several -f: the job goes to each
    r = gearman(target.address, "-P", "-f", "upper", input=b"prefixed\n")
    assert (r.returncode, r.stdout) == (0, b"upper: PREFIXED\n")
    r = gearman(target.address, "-P", "-f", "upper", "-f", "rev", input=b"both\n", line_buffered=True)
    assert r.returncode == 0
    assert sorted(r.stdout.splitlines()) == [b"rev: BOTH", b"upper: BOTH"]
    # -v: the job handle
    r = gearman(target.address, "-v", "-f", "upper", "x")
    assert r.returncode == 0
    assert r.stdout.startswith(b"X")
    created = r.stdout[1:].decode().strip()
    assert created.startswith("Task created: ") and HANDLE.match(created.split(": ")[1].encode())
    assert status_lines(target.address)["upper"] == [0, 0, 1]


def test_background_priorities_and_unique(target, procs, tmp_path):
    # -b returns at once (no worker yet) with nothing on stdout
    for args in (["-f", "job", "normal-1"], ["-L", "-f", "job", "low-1"], ["-I", "-f", "job", "high-1"],
                 ["-f", "job", "normal-2"], ["-u", "same-key", "-f", "job", "uniq-A"]):
        r = gearman(target.address, "-b", *args)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"", b""), args
    # -u with a key still queued: coalesced, no new job
    r = gearman(target.address, "-b", "-v", "-u", "same-key", "-f", "job", "uniq-B")
    assert r.returncode == 0
    assert r.stdout.startswith(b"Task created: H:")
    assert status_lines(target.address)["job"] == [5, 0, 0]
    assert status_lines(target.address, "prioritystatus")["job"] == [1, 3, 1, 0]
    uniques = admin(target.address, "show unique jobs")[0].decode().splitlines()
    assert uniques.count("same-key") == 1
    assert len(uniques) == 6 and uniques[-1] == "."
    # -b without -u gets a client-made unique (a UUID)
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    assert sum(1 for u in uniques if uuid.match(u)) == 4

    # a worker exits after the five jobs; it ran them by priority, FIFO within one
    out = tmp_path / "ran.txt"
    worker = procs.gearman_worker(target.address, "-c", "5", "-f", "job", "--",
                                  "sh", "-c", f"cat >> '{out}'; echo >> '{out}'")
    assert wait_exit(worker, 20) == 0
    assert lines_of(out) == ["high-1", "normal-1", "normal-2", "uniq-A", "low-1"]
    assert status_of(target.address, "job") == (0, 0, 0)

