"""gearmand's HTTP protocol on geartrain's HTTP port, over real sockets, with
real workers (the `gearman` tool and raw Wire workers): what gearmand 1.1.20
answers (reference §5, its transcript), and its bugs fixed."""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from tests.http.util import Served, request
from tests.support import process
from tests.support.wire import Wire, grab, run_job


def rev_worker(srv: process.ServerProcess) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["gearman", "-h", srv.host, "-p", str(srv.port), "-w", "-f", "rev", "--", "rev"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_post_function_runs_the_job_and_answers_like_gearmand(served: Served) -> None:
    srv, port = served
    worker = rev_worker(srv)
    try:
        got = request(port, "POST", "/rev", b"hello\n")
        assert got.status == 200
        assert got.headers["X-Gearman-Command"] == "WORK_COMPLETE"
        assert got.headers["X-Gearman-Job-Handle"].startswith("H:")
        assert got.headers["Server"].startswith("geartrain/")
        assert got.body == b"olleh\n"
        head = request(port, "HEAD", "/rev")  # runs the job (empty workload), headers only
        assert head.status == 200 and head.body == b""
        assert head.headers["X-Gearman-Command"] == "WORK_COMPLETE"
    finally:
        worker.kill()
        worker.wait()


def test_background_and_priority_headers(served: Served) -> None:
    srv, port = served
    got = request(port, "POST", "/later", b"payload", {"X-Gearman-Background": "true",
                                                     "X-Gearman-Priority": "high"})
    assert (got.status, got.headers["X-Gearman-Command"], got.body) == (200, "JOB_CREATED", b"")
    handle = got.headers["X-Gearman-Job-Handle"].encode()
    request(port, "POST", "/later", b"low one", {"X-Gearman-Background": "true", "X-Gearman-Priority": "low",
                                                "X-Gearman-Unique": "u-low"})
    with Wire(srv.address) as w:
        w.send("CAN_DO", "later")
        _, first = grab(w, "GRAB_JOB_UNIQ")
        assert first[0] == handle and first[2] == b"-" and first[3] == b"payload"  # default unique "-"
        _, second = grab(w, "GRAB_JOB_UNIQ")
        assert second[2] == b"u-low"


def test_default_unique_coalesces_identical_payloads_as_gearmand_does(served: Served) -> None:
    _, port = served
    a = request(port, "POST", "/same", b"x", {"X-Gearman-Background": "true"})
    b = request(port, "POST", "/same", b"x", {"X-Gearman-Background": "true"})
    c = request(port, "POST", "/same", b"y", {"X-Gearman-Background": "true"})
    assert a.headers["X-Gearman-Job-Handle"] == b.headers["X-Gearman-Job-Handle"]
    assert c.headers["X-Gearman-Job-Handle"] != a.headers["X-Gearman-Job-Handle"]


def test_gearmand_bugs_fixed_data_status_and_fail(served: Served) -> None:
    """gearmand: WORK_DATA overwrote the status line, WORK_STATUS ended the reply
    early, WORK_FAIL truncated the handle. Here: data then result in the body,
    status ignored, the whole handle."""
    srv, port = served
    replies = []

    def call(path: str) -> None:
        replies.append(request(port, "POST", path, b"in"))

    for script in ([("WORK_STATUS", (b"1", b"2")), ("WORK_DATA", (b"DATA1",)), ("WORK_WARNING", (b"w",)),
                    ("WORK_COMPLETE", (b"RESULT",))],
                   [("WORK_FAIL", ())]):
        thread = threading.Thread(target=call, args=("/steps",))
        thread.start()
        handle = run_job(srv.address, "steps", *script)
        thread.join(20)
        reply = replies[-1]
        assert reply.status == 200
        assert reply.headers["X-Gearman-Job-Handle"] == handle.decode()
    done, failed = replies
    assert done.headers["X-Gearman-Command"] == "WORK_COMPLETE" and done.body == b"DATA1RESULT"
    assert failed.headers["X-Gearman-Command"] == "WORK_FAIL" and failed.body == b""


def test_exception_is_reported(served: Served) -> None:
    srv, port = served
    replies = []
    thread = threading.Thread(target=lambda: replies.append(request(port, "PUT", "/exc", b"in")))
    thread.start()
    run_job(srv.address, "exc", ("WORK_EXCEPTION", (b"trace",)))
    thread.join(20)
    assert replies[0].headers["X-Gearman-Command"] == "WORK_EXCEPTION" and replies[0].body == b"trace"


def test_no_function_unsupported_methods_and_refusals(served: Served) -> None:
    srv, port = served
    for path in ("/", "//"):  # no function: 404, as gearmand (GET / is the dashboard)
        assert request(port, "POST", path, b"x").status == 404
    for method in ("DELETE", "PATCH", "TRACE"):
        got = request(port, method, "/rev")
        assert got.status == 405 and got.headers["Allow"] == "GET, HEAD, POST, PUT"  # gearmand: no answer
    with Wire(srv.address) as w:
        w.admin("maxqueue full 1")
        assert w.read_admin() == b"OK\r\n"
    assert request(port, "POST", "/full", b"1", {"X-Gearman-Background": "true"}).status == 200
    refused = request(port, "POST", "/full", b"2", {"X-Gearman-Background": "true"})
    assert refused.status == 503 and refused.headers["X-Gearman-Error"] == "QUEUE_ERROR"


def test_a_foreground_http_client_that_leaves_abandons_its_job(served: Served) -> None:
    srv, port = served
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    with Wire(srv.address) as admin:
        for _ in range(100):
            admin.admin("status")
            if b"gone\t1\t0\t0" in admin.read_admin():
                break
        else:
            pytest.fail("the HTTP job never showed up")
        s.close()
        for _ in range(100):
            admin.admin("show jobs")
            listing = admin.read_admin()
            if b"\t1\t" in listing or listing == b".\n":  # ignored (abandoned) or gone
                break
        else:
            pytest.fail(f"the job of a departed HTTP client is still wanted: {listing!r}")
