"""The flows of "Playing with Gearman" (2009), with the php-gearman extension and the
`gearman` tool against a real server.

The worker is tests/interop/php/worker.php (the blog's `reverse` worker sending
ten status updates); clients are the small PHP scripts next to it, which print
JSON for the assertions here.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.interop.util import gearman, php, poll, status_lines, wait_status, wait_workers
from tests.support.wire import Wire, admin, status_of, submit

HANDLE = re.compile(r"^H:[^:\s]+:\d+$")
PROGRESS = b"".join(b"%d%% Complete\n" % (10 * i) for i in range(1, 11))
UNKNOWN_HANDLE = "H:nohost:424242"


def get_status(address: tuple[str, int], handle: bytes) -> list[bytes]:
    with Wire(address) as w:
        w.send("GET_STATUS", handle)
        return w.expect("STATUS_RES")


def records(path: Path) -> list[tuple[int, float, float, str, str]]:
    """Lines "PID START END FUNCTION WORKLOAD" the PHP worker appends after each job."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, start, end, fn, workload = line.split(" ", 4)
        out.append((int(pid), float(start), float(end), fn, workload))
    return out


# ---------------------------------------------------------------- the reverse worker and the gearman tool


def test_gearman_tool_against_php_reverse_worker(target, procs):
    procs.php_worker(target.address, step=0.02)
    wait_workers(target.address, "reverse")
    r = gearman(target.address, "-f", "reverse", "Rasmus", line_buffered=True)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == PROGRESS + b"sumsaR"
    # the blog's second form: the workload on stdin, newline included (so it comes first reversed)
    r = gearman(target.address, "-f", "reverse", input=b"Rasmus\n", line_buffered=True)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == PROGRESS + b"\nsumsaR"
    assert status_of(target.address, "reverse") == (0, 0, 1)


def test_gearman_tool_reports_php_worker_failure(target, procs):
    procs.php_worker(target.address, step=0.01)
    wait_workers(target.address, "fail")
    r = gearman(target.address, "-f", "fail", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"Job failed\n")
    # the worker survives a failed job and serves the next one
    r = gearman(target.address, "-f", "reverse", "abc", line_buffered=True)
    assert (r.returncode, r.stdout) == (0, PROGRESS + b"cba")


def test_gearman_tool_prefix_warning_and_data_from_php_worker(target, procs):
    procs.php_worker(target.address, step=0.001)
    wait_workers(target.address, "warn")
    r = gearman(target.address, "-P", "-f", "reverse", "ab", line_buffered=True)
    assert r.returncode == 0
    assert r.stdout == b"".join(b"reverse: %d%% Complete\n" % (10 * i) for i in range(1, 11)) + b"reverse: ba"
    # WORK_WARNING goes to stderr, WORK_DATA and the result to stdout
    r = gearman(target.address, "-f", "warn", "ab")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"d1warned", b"careful: ab")


def test_gearman_tool_gets_job_failed_for_a_worker_exception(server, procs):
    """The `gearman` tool does not ask for exceptions: the server must turn the
    worker's WORK_EXCEPTION into a WORK_FAIL the tool understands. (gearmand
    1.1.20 appends a NUL to that WORK_FAIL and the tool waits until its timeout,
    #108; geartrain only, see docs/compatibility.md.)"""
    procs.php_worker(server.address, step=0.001)
    wait_workers(server.address, "throw")
    r = gearman(server.address, "-f", "throw", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"Job failed\n")
    # php-gearman asks for exceptions (OPTION_REQ) and gets the exception itself
    got = php(server.address, "client.php", "do", "throw", "x")
    assert got == {"result": "", "rc": 23}  # GEARMAN_WORK_EXCEPTION


# ---------------------------------------------------------------- addTask + runTasks


def test_do_normal_and_two_tasks_with_callbacks(target, procs):
    procs.php_worker(target.address, step=0.005)
    wait_workers(target.address, "reverse")
    got = php(target.address, "two_tasks.php")
    assert got["do"] == "!dlroW olleH"
    assert got["do_rc"] == 0
    assert got["ok"] is True
    events = got["events"]
    for unique, result in (("1", "!dlroW olleH"), ("2", "Hello World!")):
        mine = [e[0:1] + e[2:] for e in events if e[1] == unique]
        created, *rest = mine
        assert created[0] == "created" and HANDLE.match(created[1]), created
        # ten status updates n/10 in order, then the result
        assert rest == [["status", n, 10] for n in range(1, 11)] + [["complete", result]]
    handles = {e[2] for e in events if e[0] == "created"}
    assert len(handles) == 2
    # with ONE worker the jobs run one after the other: all of one job's events before the other's
    order = [e[1] for e in events if e[0] != "created"]
    assert order == [order[0]] * 11 + [order[-1]] * 11 and order[0] != order[-1]
    assert status_of(target.address, "reverse") == (0, 0, 1)


def test_two_workers_run_the_two_tasks_in_parallel(target, procs, tmp_path):
    """The blog's "half the time with two workers", proven structurally: with one worker
    the two jobs run in one process one after the other; with two they run in two
    processes at the same time (overlapping intervals)."""
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    expected = {"1": "!dlroW olleH", "2": "Hello World!"}

    first = procs.php_worker(target.address, step=0.05, record=one)
    wait_workers(target.address, "reverse", 1)
    got = php(target.address, "two_tasks.php", "nodo")
    assert got["ok"] is True
    assert {e[1]: e[2] for e in got["events"] if e[0] == "complete"} == expected
    jobs = records(one)
    assert len(jobs) == 2, jobs
    (pid_a, start_a, end_a, _, _), (pid_b, start_b, end_b, _, _) = sorted(jobs, key=lambda r: r[1])
    assert pid_a == pid_b == first.pid
    assert end_a <= start_b, "one worker cannot run two jobs at once"

    procs.terminate(first)
    wait_status(target.address, "reverse", (0, 0, 0))
    for _ in range(2):
        procs.php_worker(target.address, step=0.05, record=two)
    wait_workers(target.address, "reverse", 2)
    got = php(target.address, "two_tasks.php", "nodo")
    assert got["ok"] is True
    assert {e[1]: e[2] for e in got["events"] if e[0] == "complete"} == expected
    jobs = records(two)
    assert len(jobs) == 2, jobs
    (pid_a, start_a, end_a, _, _), (pid_b, start_b, end_b, _, _) = jobs
    assert pid_a != pid_b, "both jobs ran on the same worker: no parallelism"
    assert start_a < end_b and start_b < end_a, f"intervals do not overlap: {jobs}"


# ---------------------------------------------------------------- background jobs and their handles


def test_add_task_background_handles_and_unique_coalescing(target, procs, tmp_path):
    got = php(target.address, "background.php", "bg")
    assert got["options"] is True
    assert got["ok"] is True
    assert sorted(got["handles"]) == ["bg-1", "bg-2"]
    assert all(HANDLE.match(h) for h in got["handles"].values()), got
    assert len(set(got["handles"].values())) == 2
    assert got["after_run"] is False  # php-gearman 2.x: the handle is only valid inside callbacks
    assert HANDLE.match(got["do_bg"]) and got["do_bg_rc"] == 0
    assert got["do_bg"] not in got["handles"].values()
    handles = [*got["handles"].values(), got["do_bg"]]
    # handles count up on one server
    numbers = [int(h.rsplit(":", 1)[1]) for h in handles]
    assert len(set(numbers)) == 3
    assert status_of(target.address, "reverse") == (3, 0, 0)

    # the same unique while the job is still queued: coalesced onto the same handle
    again = php(target.address, "client.php", "bg", "reverse", "other workload", "bg-1")
    assert again == {"handle": got["handles"]["bg-1"], "rc": 0}
    again = php(target.address, "background.php", "bg")
    assert again["handles"] == got["handles"]
    assert again["do_bg"] == got["do_bg"]
    assert status_of(target.address, "reverse") == (3, 0, 0)
    uniques = admin(target.address, "show unique jobs")[0].decode().splitlines()
    assert sorted(uniques) == [".", "bg-1", "bg-2", "bg-3"]

    # a worker runs each job once, with the first submission's workload
    record = tmp_path / "bg-record.txt"
    procs.php_worker(target.address, step=0.001, record=record)
    wait_status(target.address, "reverse", (0, 0, 1))
    assert sorted(r[4] for r in records(record)) == ["!dlroW olleH", "Hello World!", "third"]
    # once done, the unique is free again: a new job with a new handle
    later = php(target.address, "client.php", "bg", "reverse", "later", "bg-1")
    assert HANDLE.match(later["handle"]) and later["handle"] not in handles


def test_job_status_queued_running_done(target, procs):
    sub = php(target.address, "client.php", "bg", "reverse", "Hello World!")
    handle = sub["handle"]
    assert HANDLE.match(handle) and sub["rc"] == 0
    queued = php(target.address, "client.php", "status", handle, UNKNOWN_HANDLE)
    assert queued == [[True, False, 0, 0], [False, False, 0, 0]]

    procs.php_worker(target.address, step=0.05)
    watch = php(target.address, "client.php", "watch", handle)
    seen = watch["seen"]
    assert seen[-1] == [False, False, 0, 0]
    running = [s for s in seen if s[0] and s[1]]
    assert running, seen
    # while running: known, running, denominator 10 (0/0 only before the first update)
    assert all(s[3] == 10 for s in running if s[2:] != [0, 0]), seen
    numerators = [s[2] for s in running if s[3] == 10]
    assert numerators == sorted(numerators), "numerator went backwards"
    assert len(set(numerators)) >= 3, f"numerator did not grow: {seen}"
    assert set(numerators) <= set(range(1, 11))
    # nothing but queued -> running -> unknown
    assert all(s in ([True, False, 0, 0], [False, False, 0, 0]) for s in seen if not s[1]), seen
    assert watch["after"] == [False, False, 0, 0]
    assert php(target.address, "client.php", "status", handle) == [[False, False, 0, 0]]


def test_add_task_status_running_queued_unknown_in_one_batch(target, procs):
    h1 = php(target.address, "client.php", "bg", "reverse", "first")["handle"]
    h2 = php(target.address, "client.php", "bg", "reverse", "second")["handle"]
    procs.php_worker(target.address, step=0.1)  # job 1 takes 1 s: long enough to look at it

    def running_at_2() -> bool:
        _, known, running, num, den = get_status(target.address, h1.encode())
        return (known, running, den) == (b"1", b"1", b"10") and int(num) >= 2
    poll(running_at_2, "first job running at >= 2/10")
    got = php(target.address, "client.php", "taskstatus", h1, h2, UNKNOWN_HANDLE)
    assert got["ok"] is True
    assert sorted(got["got"]) == sorted([h1, h2, UNKNOWN_HANDLE])
    known, running, num, den = got["got"][h1]
    assert (known, running, den) == (True, True, 10) and 2 <= num <= 10
    assert got["got"][h2] == [True, False, 0, 0]
    assert got["got"][UNKNOWN_HANDLE] == [False, False, 0, 0]


# ---------------------------------------------------------------- what the worker sends while a job runs


def test_data_warning_exception_fail_callbacks(target, procs):
    procs.php_worker(target.address, step=0.001)
    wait_workers(target.address, "throw")
    got = php(target.address, "callbacks.php")
    # the blog's setClientCallback is gone from php-gearman 2.x; the split callbacks exist
    assert got["method_exists"] == {"setClientCallback": False, "setWarningCallback": True,
                                    "setExceptionCallback": True}
    runs = got["runs"]
    assert runs["reverse_data"] == {"ok": True, "events": [
        ["data", "u-reverse_data", "chunk0:a"], ["data", "u-reverse_data", "chunk1:b"],
        ["data", "u-reverse_data", "chunk2:c"], ["complete", "u-reverse_data", "fedcba"]]}
    assert runs["warn"] == {"ok": True, "events": [
        ["warning", "u-warn", "careful: w"], ["data", "u-warn", "d1"], ["complete", "u-warn", "warned"]]}
    # php-gearman always asks for the `exceptions` option (OPTION_REQ): WORK_EXCEPTION arrives
    assert runs["throw"] == {"ok": True, "events": [["exception", "u-throw", "boom: x"]]}
    assert runs["fail"] == {"ok": True, "events": [["fail", "u-fail"]]}
    # doNormal() of php-gearman 2.1 returns the WORK_DATA chunks and the result as one string
    assert got["do_data"] == [["SUCCESS", "chunk0:xchunk1:ychunk2:zzyx"]]
    assert got["do_fail"] == ["", True]
    assert status_lines(target.address)["throw"] == [0, 0, 1]


def test_background_work_packets_never_reach_the_submitter(target, procs):
    """The submitting connection gets JOB_CREATED for a background job and nothing
    else: not its WORK_DATA/WORK_STATUS/WORK_COMPLETE, while the same connection's
    foreground job gets exactly its own packets."""
    with Wire(target.address) as c:
        bg = submit(c, "reverse_data", b"abc", b"bg-data-1", "SUBMIT_JOB_BG")
        bg2 = submit(c, "reverse", b"st", b"bg-status-1", "SUBMIT_JOB_BG")
        fg = submit(c, "reverse_data", b"xyz")
        assert len({bg, bg2, fg}) == 3
        procs.php_worker(target.address, step=0.001)
        got = []
        while True:
            name, args = c.recv(timeout=10)
            got.append((name, args))
            if name == "WORK_COMPLETE":
                break
        assert got == [("WORK_DATA", [fg, b"chunk0:x"]), ("WORK_DATA", [fg, b"chunk1:y"]),
                       ("WORK_DATA", [fg, b"chunk2:z"]), ("WORK_COMPLETE", [fg, b"zyx"])]
        wait_status(target.address, "reverse_data", (0, 0, 1))
        wait_status(target.address, "reverse", (0, 0, 1))
        assert c.silent(0.3) is None
        # the connection is still in step
        c.send("ECHO_REQ", b"still-alive")
        assert c.expect("ECHO_RES") == [b"still-alive"]
