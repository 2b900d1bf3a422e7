"""`geartrain result` as a process against a real geartrain server: the
payload on stdout and the exit status for each way a job ends, --json,
--wait (and its timeout), by unique key, unknown jobs, and C gearmand
(which keeps no results)."""

from __future__ import annotations

import json
import subprocess
import threading
import time

from tests.support import process
from tests.support.wire import Wire, admin, run_job, submit


def result_cmd(srv: process.ServerProcess, *args: str,
               timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    argv = [*process.geartrain_command(), "result", "-h", srv.host, "-p", str(srv.port), *args]
    return subprocess.run(argv, capture_output=True, timeout=timeout, check=False)


def ended(srv: process.ServerProcess, last: str, *args: bytes, unique: bytes = b"") -> bytes:
    """A background job that a raw worker ran and ended with *last*."""
    with Wire(srv.address) as c:
        handle = submit(c, "cli.r", b"in", unique=unique, ptype="SUBMIT_JOB_BG")
    run_job(srv.address, "cli.r", ("WORK_DATA", (b"some data",)), (last, args), expect=handle)
    return handle


def test_completed_job_prints_its_payload_and_exits_0(server: process.ServerProcess) -> None:
    handle = ended(server, "WORK_COMPLETE", b"the\0result\n", unique=b"cli-key")
    got = result_cmd(server, handle.decode())
    assert (got.returncode, got.stdout, got.stderr) == (0, b"the\0result\n", b"")
    by_unique = result_cmd(server, "-u", "cli-key")
    assert (by_unique.returncode, by_unique.stdout) == (0, b"the\0result\n")
    assert result_cmd(server, "-u", "cli-key", "-f", "other").returncode == 5


def test_json_shows_everything_recorded(server: process.ServerProcess) -> None:
    handle = ended(server, "WORK_COMPLETE", b"r")
    got = result_cmd(server, "--json", handle.decode())
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)
    assert doc["handle"] == handle.decode() and doc["state"] == "completed"
    assert doc["result"] == {"text": "r"} and doc["data"] == [{"text": "some data"}]
    assert doc["attempts"] == 1 and doc["finished_at"] >= doc["submitted_at"] > 0


def test_failed_exception_and_cancelled_jobs_exit_1_with_the_reason(server: process.ServerProcess) -> None:
    failed = ended(server, "WORK_FAIL")
    got = result_cmd(server, failed.decode())
    assert got.returncode == 1 and got.stdout == b"" and b"failed" in got.stderr
    raised = ended(server, "WORK_EXCEPTION", b"stack trace")
    got = result_cmd(server, raised.decode())
    assert got.returncode == 1 and got.stdout == b"stack trace" and b"raised an exception" in got.stderr
    with Wire(server.address) as c:
        queued = submit(c, "cli.nobody", b"x", ptype="SUBMIT_JOB_BG")
    got = result_cmd(server, queued.decode())
    assert got.returncode == 6 and b"queued" in got.stderr and b"--wait" in got.stderr
    assert admin(server.address, "cancel job " + queued.decode()) == [b"OK\r\n"]
    got = result_cmd(server, queued.decode())
    assert got.returncode == 1 and b"was cancelled" in got.stderr


def test_unknown_job_exits_5(server: process.ServerProcess) -> None:
    got = result_cmd(server, "H:nowhere:12")
    assert got.returncode == 5 and b"no server knows H:nowhere:12" in got.stderr


def test_wait_blocks_until_the_job_ends_and_times_out(server: process.ServerProcess) -> None:
    with Wire(server.address) as c:
        handle = submit(c, "cli.slow", b"x", ptype="SUBMIT_JOB_BG")
    got = result_cmd(server, "--wait", "--timeout", "0.5", handle.decode())
    assert got.returncode == 4 and b"did not end within 0.5s" in got.stderr

    def finish() -> None:
        time.sleep(1.0)
        run_job(server.address, "cli.slow", ("WORK_COMPLETE", (b"late",)))

    thread = threading.Thread(target=finish)
    thread.start()
    started = time.monotonic()
    got = result_cmd(server, "--wait", handle.decode())
    thread.join()
    assert (got.returncode, got.stdout) == (0, b"late"), got.stderr
    assert time.monotonic() - started >= 0.9


def test_gearmand_keeps_no_results(gearmand: process.ServerProcess) -> None:
    got = result_cmd(gearmand, "H:x:1")
    assert got.returncode == 3 and b"keeps no results" in got.stderr
