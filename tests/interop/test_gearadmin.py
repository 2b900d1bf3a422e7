"""Every `gearadmin` option (Debian gearman-tools 1.1.20) against a real server,
checked structurally: columns, counts, handles, the pid."""

from __future__ import annotations

import re

from tests.interop.util import gearadmin, gearman, status_lines, wait_exit, wait_status, wait_workers
from tests.support.wire import Wire, admin, submit

HANDLE = re.compile(r"^H:[^:\s]+:\d+$")
LEVELS = ("FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")


def out(address: tuple[str, int], *args: str) -> list[str]:
    """stdout lines of a successful gearadmin call with nothing on stderr."""
    r = gearadmin(address, *args)
    assert (r.returncode, r.stderr) == (0, b""), (args, r)
    return r.stdout.decode().splitlines()


def test_info_options(target):
    assert out(target.address, "--getpid") == [str(target.pid)]
    version = out(target.address, "--server-version")
    assert len(version) == 1 and version[0].strip() == version[0] and version[0]
    assert admin(target.address, "version")[0] == b"OK %s\n" % version[0].encode()
    level = out(target.address, "--server-verbose")
    assert len(level) == 1 and level[0] in LEVELS
    # several options on one connection: gearadmin's fixed order, not the command line's
    combined = out(target.address, "--status", "--server-version", "--getpid")
    assert combined == [str(target.pid), version[0], "."]


def test_status_priority_status_workers(target, procs):
    assert out(target.address, "--status") == ["."]
    assert out(target.address, "--priority-status") == ["."]
    procs.gearman_worker(target.address, "-f", "alpha", "-f", "beta", "--", "cat")
    procs.gearman_worker(target.address, "-f", "alpha", "--", "cat")
    wait_workers(target.address, "alpha", 2)
    wait_workers(target.address, "beta", 1)
    for args in (["-f", "gamma", "g1"], ["-f", "gamma", "g2"], ["-I", "-f", "gamma", "g3"],
                 ["-L", "-f", "gamma", "g4"]):
        assert gearman(target.address, "-b", *args).returncode == 0

    status = out(target.address, "--status")
    assert status[-1] == "."
    assert sorted(status[:-1]) == ["alpha\t0\t0\t2", "beta\t0\t0\t1", "gamma\t4\t0\t0"]
    prio = out(target.address, "--priority-status")
    assert prio[-1] == "."
    assert sorted(prio[:-1]) == ["alpha\t0\t0\t0\t2", "beta\t0\t0\t0\t1", "gamma\t1\t2\t1\t0"]

    workers = out(target.address, "--workers")
    assert workers[-1] == "."
    parsed = []
    for line in workers[:-1]:
        m = re.match(r"^(\d+) (\S+) (\S+) :(.*)$", line)
        assert m, line
        parsed.append((int(m.group(1)), m.group(2), m.group(3), m.group(4).split()))
    fds = [p[0] for p in parsed]
    assert len(set(fds)) == len(fds), "an fd listed twice"
    assert {p[1] for p in parsed} == {"127.0.0.1"}
    assert {p[2] for p in parsed} == {"-"}
    # the two workers and gearadmin's own connection (no functions)
    functions = sorted(" ".join(p[3]) for p in parsed)
    assert functions == ["", "alpha", "alpha beta"]


def test_jobs_cancel_create_drop(target, procs, tmp_path):
    handles = []
    with Wire(target.address) as c:
        for u, data in (("u-one", b"one"), ("u-two", b"two"), ("u-three", b"three")):
            handles.append(submit(c, "queued", data, u.encode(), "SUBMIT_JOB_BG").decode())
    jobs = out(target.address, "--show-jobs")
    assert jobs[-1] == "."
    # HANDLE RETRIES IGNORE QUEUED
    assert sorted(jobs[:-1]) == sorted(f"{h}\t0\t0\t1" for h in handles)
    assert all(HANDLE.match(h) for h in handles)
    uniques = out(target.address, "--show-unique-jobs")
    assert uniques[-1] == "." and sorted(uniques[:-1]) == ["u-one", "u-three", "u-two"]

    assert out(target.address, "--cancel-job", handles[1]) == ["OK"]
    r = gearadmin(target.address, "--cancel-job", "H:nohost:999999")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"Error: UNKNOWN_JOB\r\n")
    # a cancelled queued job stays listed, ignored and no longer queued, until a worker reaches it
    jobs = out(target.address, "--show-jobs")
    assert f"{handles[1]}\t0\t1\t0" in jobs
    assert status_lines(target.address)["queued"] == [3, 0, 0]

    ran = tmp_path / "ran.txt"
    worker = procs.gearman_worker(target.address, "-c", "2", "-f", "queued", "--",
                                  "sh", "-c", f"cat >> '{ran}'; echo >> '{ran}'")
    assert wait_exit(worker, 20) == 0
    assert ran.read_text().splitlines() == ["one", "three"]
    wait_status(target.address, "queued", (0, 0, 0))
    assert out(target.address, "--show-jobs") == ["."]
    assert out(target.address, "--show-unique-jobs") == ["."]

    assert out(target.address, "--create-function", "fresh_fn") == ["OK"]
    assert status_lines(target.address)["fresh_fn"] == [0, 0, 0]
    assert out(target.address, "--drop-function", "fresh_fn") == ["OK"]
    assert "fresh_fn" not in status_lines(target.address)
    r = gearadmin(target.address, "--drop-function", "fresh_fn")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"Error: function not found\r\n")

    procs.gearman_worker(target.address, "-f", "busy_fn", "--", "cat")
    wait_workers(target.address, "busy_fn")
    r = gearadmin(target.address, "--drop-function", "busy_fn")
    assert (r.returncode, r.stdout) == (0, b"")
    assert r.stderr == b"Error: there are still connected workers or executing clients\r\n"
    assert status_lines(target.address)["busy_fn"] == [0, 0, 1]
    assert out(target.address, "--status")[-1] == "."


def test_drop_function_keeps_queued_jobs(server, procs):
    """geartrain refuses to drop a function that still has queued jobs, even with
    no workers. (gearmand 1.1.20 answers OK and orphans them: still listed in
    `show jobs`, never handed to a worker, their foreground clients never answered,
    their uniques never freed.)"""
    with Wire(server.address) as c:
        bg = submit(c, "nowork", b"data", b"u-bg", "SUBMIT_JOB_BG")
        fg = submit(c, "nowork", b"fgdata", b"u-fg")
        r = gearadmin(server.address, "--drop-function", "nowork")
        assert (r.returncode, r.stdout) == (0, b"")
        assert r.stderr.startswith(b"Error: ")
        assert status_lines(server.address)["nowork"] == [2, 0, 0]
        procs.gearman_worker(server.address, "-f", "nowork", "--", "tr", "a-z", "A-Z")
        assert c.expect("WORK_COMPLETE", timeout=10) == [fg, b"FGDATA"]
        wait_status(server.address, "nowork", (0, 0, 1))
        assert out(server.address, "--show-jobs") == ["."]
        assert HANDLE.match(bg.decode())
