"""The JSON API, /openapi.json, the bearer token and /metrics, against a real
server process over real sockets, with raw Wire workers."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from tests.http.util import Reply, Served, request, start
from tests.support import process
from tests.support.wire import Wire, admin, grab, run_job


def finish(srv: process.ServerProcess, function: str, *script: tuple[str, tuple[bytes, ...]]) -> bytes:
    """A raw worker runs one job of *function* through *script*; its handle."""
    return run_job(srv.address, function, *script)


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Reply]]:
    out: list[Reply] = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    return thread, out


# ---------------------------------------------------------------- submitting

def test_background_submit_then_result_by_handle_and_unique(served: Served) -> None:
    srv, port = served
    got = request(port, "POST", "/api/jobs", {"function": "api.r", "payload": {"base64": "AP8="},
                                               "unique": "k", "priority": "high"})
    assert got.status == 202, got.body
    handle = got.json()["handle"]
    assert got.headers["Location"] == f"/api/jobs/{handle}"
    live = request(port, "GET", f"/api/jobs/{handle}").json()
    assert live["state"] == "queued" and live["priority"] == "high" and live["finished_at"] is None
    with Wire(srv.address) as w:
        w.send("CAN_DO", "api.r")
        _, job = grab(w)
        assert job[0].decode() == handle and job[2] == b"\x00\xff"
        w.send("WORK_DATA", job[0], b"d")
        w.send("WORK_COMPLETE", job[0], b"done")
        w.send("ECHO_REQ", b"s")
        w.expect("ECHO_RES")
    ended = request(port, "GET", f"/api/jobs/{handle}").json()
    assert ended["state"] == "completed" and ended["result"] == {"text": "done"}
    assert ended["data"] == [{"text": "d"}] and ended["attempts"] == 1
    assert request(port, "GET", "/api/jobs?unique=k").json()["handle"] == handle
    assert request(port, "GET", "/api/jobs?unique=k&function=api.r").json()["handle"] == handle
    assert request(port, "GET", "/api/jobs?unique=k&function=other").status == 404
    assert request(port, "GET", "/api/jobs/H:nope:1").status == 404
    assert request(port, "GET", "/api/jobs").status == 400


def test_wait_mode_answers_with_the_result(served: Served) -> None:
    srv, port = served
    thread, out = in_thread(request, port, "POST", "/api/jobs",
                            {"function": "api.w", "payload": "in", "mode": "wait", "timeout": 20})
    finish(srv, "api.w", ("WORK_WARNING", (b"careful",)), ("WORK_EXCEPTION", (b"boom",)))
    thread.join(20)
    doc = out[0].json()
    assert out[0].status == 200 and doc["state"] == "exception" and doc["result"] == {"text": "boom"}
    assert doc["warnings"] == [{"text": "careful"}]
    # nobody works on it: the wait times out with 202 and the job runs on
    slow = request(port, "POST", "/api/jobs", {"function": "api.none", "mode": "wait", "timeout": 0.3})
    assert slow.status == 202 and slow.json()["state"] == "queued"
    assert request(port, "GET", f"/api/jobs/{slow.json()['handle']}").json()["state"] == "queued"


def test_foreground_mode_and_its_timeout_abandons_the_job(served: Served) -> None:
    srv, port = served
    thread, out = in_thread(request, port, "POST", "/api/jobs",
                            {"function": "api.f", "payload": "x", "mode": "foreground"})
    handle = finish(srv, "api.f", ("WORK_STATUS", (b"1", b"1")), ("WORK_COMPLETE", (b"r",)))
    thread.join(20)
    doc = out[0].json()
    assert doc == {"handle": handle.decode(), "state": "completed", "result": {"text": "r"}, "data": [],
                   "warnings": [], "numerator": 1, "denominator": 1, "background": False}
    late = request(port, "POST", "/api/jobs", {"function": "api.none2", "mode": "foreground", "timeout": 0.3})
    assert late.status == 504 and "abandoned" in late.json()["error"]
    abandoned = late.json()["error"].split()[1]
    for _ in range(100):  # the request's connection to the core closes right after the reply
        rows = [line.split(b"\t") for line in admin(srv.address, "show jobs")[0].splitlines()[:-1]]
        if [r[2] for r in rows if r[0] == abandoned.encode()] in ([b"1"], []):  # ignored, or gone
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"the timed-out foreground job is still wanted: {rows}")


@pytest.mark.parametrize("body, problem", [
    (b"not json", "not JSON"),
    ({}, "'function' is a required property"),
    ({"function": ""}, "function"),
    ({"function": "f", "priority": "urgent"}, "priority"),
    ({"function": "f", "mode": "later"}, "mode"),
    ({"function": "f", "payload": {"hex": "00"}}, "payload"),
    ({"function": "f", "payload": {"base64": "!!!"}}, "base64"),
    ({"function": "f", "timeout": -1}, "timeout"),
    ({"function": "f", "extra": 1}, "extra"),
    ({"function": "f", "unique": "u" * 65}, "unique"),
])
def test_bad_submits_get_400_with_the_reason(served: Served, body: Any, problem: str) -> None:
    _, port = served
    got = request(port, "POST", "/api/jobs", body)
    assert got.status == 400, got.body
    doc = got.json()
    assert problem in doc["error"] + " ".join(doc.get("details", []))


def test_cancel_unknown_endpoints_and_wrong_methods(served: Served) -> None:
    _, port = served
    handle = request(port, "POST", "/api/jobs", {"function": "api.c"}).json()["handle"]
    assert request(port, "DELETE", f"/api/jobs/{handle}").json() == {"handle": handle, "state": "cancelled"}
    assert request(port, "GET", f"/api/jobs/{handle}").json()["state"] == "cancelled"
    other = request(port, "POST", "/api/jobs", {"function": "api.c"}).json()["handle"]
    assert request(port, "POST", f"/api/jobs/{other}/cancel").status == 200
    assert request(port, "DELETE", "/api/jobs/H:nope:9").status == 404
    assert request(port, "GET", "/api/nothing").status == 404
    wrong = request(port, "PUT", "/api/functions")
    assert wrong.status in (404, 405) and "error" in wrong.json()


def test_functions_workers_and_server(served: Served) -> None:
    srv, port = served
    for priority in ("high", "normal", "normal", "low"):
        request(port, "POST", "/api/jobs", {"function": "api.l", "priority": priority})
    with Wire(srv.address) as w:
        w.send("SET_CLIENT_ID", "w-1")
        w.send("CAN_DO", "api.l")
        _, job = grab(w)
        functions = {f["name"]: f for f in request(port, "GET", "/api/functions").json()}
        f = functions["api.l"]
        assert f["queued"] == {"high": 0, "normal": 2, "low": 1} and f["running"] == 1 and f["workers"] == 1
        assert f["total"] == 4 and f["submitted"] == 4
        workers = request(port, "GET", "/api/workers").json()
        assert [(x["client_id"], x["functions"], x["running"]) for x in workers] == \
            [("w-1", ["api.l"], [job[0].decode()])]
    info = request(port, "GET", "/api/server").json()
    assert info["pid"] == srv.pid and info["store"].startswith("sqlite://") and info["uptime"] > 0


# ---------------------------------------------------------------- OpenAPI

def test_openapi_document_is_valid_and_describes_what_the_server_answers(served: Served) -> None:
    srv, port = served
    doc = request(port, "GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path in ("/api/jobs", "/api/jobs/{handle}", "/api/functions", "/api/workers", "/metrics"):
        assert path in doc["paths"]
    handle = request(port, "POST", "/api/jobs", {"function": "api.o"}).json()["handle"]
    validator = Draft202012Validator({"$ref": "#/components/schemas/Job", **doc})
    validator.validate(request(port, "GET", f"/api/jobs/{handle}").json())
    finish(srv, "api.o", ("WORK_COMPLETE", (b"\xff",)))
    validator.validate(request(port, "GET", f"/api/jobs/{handle}").json())
    functions = Draft202012Validator({"type": "array", "items": {"$ref": "#/components/schemas/Function"},
                                      **doc})
    functions.validate(request(port, "GET", "/api/functions").json())


# ---------------------------------------------------------------- token

def test_token_guards_submit_and_cancel(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    srv, port = start(tmp_path, "--http-token-file", str(token_file))
    try:
        assert request(port, "POST", "/api/jobs", {"function": "t"}).status == 401
        assert request(port, "POST", "/t", b"x", {"X-Gearman-Background": "true"}).status == 401
        wrong = request(port, "POST", "/api/jobs", {"function": "t"}, {"Authorization": "Bearer nope"})
        assert wrong.status == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        good = {"Authorization": "Bearer s3cret"}
        handle = request(port, "POST", "/api/jobs", {"function": "t"}, good).json()["handle"]
        assert request(port, "DELETE", f"/api/jobs/{handle}").status == 401
        assert request(port, "DELETE", f"/api/jobs/{handle}", headers=good).status == 200
        # reading stays open on loopback
        assert request(port, "GET", f"/api/jobs/{handle}").status == 200
        assert request(port, "GET", "/metrics").status == 200
        assert request(port, "GET", "/").status == 200
    finally:
        srv.stop()
    assert "s3cret" not in srv.log()


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret")
    token_file.chmod(0o644)
    port = process.free_port()
    srv = process.geartrain("--http-port", str(port), "--http-token-file", str(token_file), workdir=tmp_path)
    with pytest.raises(RuntimeError, match="exited during start-up"):
        srv.start()
    assert "other users may read it" in srv.log() and "chmod 600" in srv.log()


def test_http_port_taken_explicitly_fails_and_by_default_warns(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    try:
        srv = process.geartrain("--http-port", str(taken), workdir=tmp_path)
        with pytest.raises(RuntimeError, match="exited during start-up"):
            srv.start()
        assert f"cannot listen on HTTP port {taken}" in srv.log()
    finally:
        blocker.close()


# ---------------------------------------------------------------- metrics

def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = request(port, "GET", "/metrics").body.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_jobs_and_export_gearman_exporter_names(served: Served) -> None:
    srv, port = served
    for _ in range(3):
        request(port, "POST", "/api/jobs", {"function": "m.f"})
    request(port, "POST", "/api/jobs", {"function": "m.f", "priority": "low"})
    finish(srv, "m.f", ("WORK_COMPLETE", (b"ok",)))
    finish(srv, "m.f", ("WORK_FAIL", ()))
    with Wire(srv.address) as w:
        w.send("CAN_DO", "m.f")
        grab(w)  # one running
        m = metrics(port)
        fn = (("function", "m.f"),)
        assert m[("geartrain_jobs_submitted_total", (("function", "m.f"), ("priority", "normal")))] == 3
        assert m[("geartrain_jobs_submitted_total", (("function", "m.f"), ("priority", "low")))] == 1
        assert m[("geartrain_jobs_ended_total",
                  (("function", "m.f"), ("outcome", "completed"), ("priority", "normal")))] == 1
        assert m[("geartrain_jobs_ended_total",
                  (("function", "m.f"), ("outcome", "failed"), ("priority", "normal")))] == 1
        assert m[("geartrain_jobs_running", fn)] == 1
        assert m[("geartrain_jobs_queued", (("function", "m.f"), ("priority", "low")))] == 1
        assert m[("geartrain_job_queue_seconds_count", fn)] == 3
        assert m[("geartrain_job_run_seconds_count", fn)] == 2
        assert m[("geartrain_workers", fn)] == 1
        # gearman-exporter's names, as it derives them from `status`
        assert m[("gearman_jobs", fn)] == 2 and m[("gearman_jobs_running", fn)] == 1
        assert m[("gearman_jobs_waiting", fn)] == 1 and m[("gearman_workers", fn)] == 1
        assert m[("gearman_up", ())] == 1
        assert any(k[0] == "gearman_version_info" for k in m)
        assert m[("geartrain_connections", ())] >= 1
        assert m[("geartrain_store_commit_seconds_count", ())] >= 1
        assert m[("geartrain_results_kept", ())] == 2


def test_events_stream_history_then_snapshots(served: Served) -> None:
    srv, port = served
    request(port, "POST", "/api/jobs", {"function": "ev"})
    finish(srv, "ev", ("WORK_COMPLETE", (b"ok",)))
    time.sleep(1.2)  # the server samples its counters once a second
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while data.count(b"event: snapshot") < 2:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()
    assert b"text/event-stream" in data
    events = {}
    for block in data.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in block.splitlines() if b": " in line)
        if b"event" in lines and lines[b"event"] not in events:
            events[lines[b"event"]] = json.loads(lines[b"data"])
    history = events[b"history"]
    assert history and history[-1]["ended"] == {"ev": 1}
    assert all(a["time"] < b["time"] for a, b in zip(history, history[1:], strict=False))
    assert [f["name"] for f in events[b"snapshot"]["functions"]] == ["ev"]


def test_the_grafana_dashboard_asks_only_for_metrics_the_server_exports(served: Served) -> None:
    srv, port = served
    request(port, "POST", "/api/jobs", {"function": "g.f"})
    finish(srv, "g.f", ("WORK_COMPLETE", (b"ok",)))
    exported = {name for name, _ in metrics(port)}
    path = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    asked = set(re.findall(r"\b((?:gearman|geartrain)_[a-z_]+)", " ".join(queries)))
    assert asked and asked <= exported, asked - exported
