"""The SQLite store, geartrain's default: its file, a store that refuses
writes, ``--store-timeout``, and files it cannot use. Real server processes,
real files, a real second sqlite connection holding the lock."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from geartrain.server.stores.sqlite import SQLiteFile
from tests.stores import _durable as d
from tests.support import process
from tests.support.wire import Wire

pytestmark = pytest.mark.timeout(60)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def stored_jobs(db: Path) -> list[list[Any]]:
    """The jobs in the file, read as the helper reads them at start-up."""
    file = SQLiteFile(str(db), "FULL", 5000)
    try:
        return file.replay()
    finally:
        file.close()


def test_default_store_is_a_file_named_after_the_port(tmp_path: Path) -> None:
    data = tmp_path / "data dir"
    port = process.free_port()
    db = data / f"geartrain-{port}.db"

    runs: list[process.ServerProcess] = []

    def start(run: str) -> process.ServerProcess:
        runs.append(d.start(None, "--data-dir", str(data), workdir=tmp_path / run, port=port))
        return runs[-1]

    srv = start("run1")
    assert db.exists()
    assert f"(store: sqlite://{db}, pid {srv.pid})" in srv.log()
    with Wire(srv.address) as w:
        handles = [d.submit_bg(w, "sq.default", b"job %d" % i) for i in range(3)]
    assert srv.stop() == 0
    assert "stopping: 3 queued job(s) stay in sqlite://" in srv.log()
    assert db.exists()
    assert [job[0] for job in stored_jobs(db)] == handles

    srv = start("run2")  # after SIGTERM
    assert set(d.show_jobs(srv.address)) == set(handles)
    assert "replayed 3 job(s)" in srv.log()
    d.kill(srv)

    srv = start("run3")  # after SIGKILL
    assert set(d.show_jobs(srv.address)) == set(handles)
    worker = d.Worker(srv.address, "sq.default")
    assert [j.handle for j in worker.drain()] == handles
    worker.w.send("ECHO_REQ", b"sync")
    worker.w.expect("ECHO_RES")
    worker.close()
    assert srv.stop() == 0
    # nothing queued at a clean shutdown: no file left behind (nor its WAL)
    assert not [n for n in files(data) if n.startswith(f"geartrain-{port}.db")], files(data)
    for run in runs:
        d.assert_clean(run)


def test_default_store_of_an_idle_server_leaves_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = d.start(None, "--data-dir", str(data), workdir=tmp_path / "run")
    assert (data / f"geartrain-{srv.port}.db").exists()
    assert srv.stop() == 0
    assert files(data) == []
    d.assert_clean(srv)


def test_explicit_empty_sqlite_file_is_kept(tmp_path: Path) -> None:
    """Only the default file is removed when empty: a --store file is the user's."""
    db = tmp_path / "mine.db"
    srv = d.start(f"sqlite://{db}", workdir=tmp_path / "run")
    assert srv.stop() == 0
    assert db.exists()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM geartrain_batches").fetchone() == (0,)
    conn.close()
    d.assert_clean(srv)


@contextmanager
def exclusive_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Another process's writer holding the database (BEGIN EXCLUSIVE) until the block ends."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def refused(w: Wire, function: str, data: bytes, within: float) -> bytes:
    """Submit a background job that must be refused with ERROR QUEUE_ERROR within *within* s."""
    started = time.monotonic()
    w.send("SUBMIT_JOB_BG", function, b"", data)
    name, args = w.recv(timeout=within + 5)
    elapsed = time.monotonic() - started
    assert name == "ERROR" and args[0] == b"QUEUE_ERROR", (name, args)
    assert elapsed < within, f"the refusal took {elapsed:.2f}s"
    return args[1]


def test_locked_store_refuses_submits_promptly_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    with d.serving(f"sqlite://{db}?busy_timeout=200", workdir=tmp_path / "run") as srv:
        client = Wire(srv.address)
        before = d.submit_bg(client, "sq.lock", b"before")
        other = Wire(srv.address)
        worker = d.Worker(srv.address, "sq.lock", "sq.fg")
        running = worker.grab_wait()
        assert running.handle == before

        with exclusive_lock(db):
            text = refused(client, "sq.lock", b"refused 1", within=2.0)
            assert b"sqlite store unavailable" in text and b"locked" in text, text
            # the same connection keeps its order: ERROR, then the echo
            d.pipeline(client, [("SUBMIT_JOB_BG", ("sq.lock", b"", b"refused 2")),
                                ("ECHO_REQ", (b"after",))])
            assert client.expect("ERROR", timeout=3)[0] == b"QUEUE_ERROR"
            assert client.expect("ECHO_RES") == [b"after"]
            # other connections are served while the store fails
            started = time.monotonic()
            other.send("ECHO_REQ", b"still here")
            assert other.expect("ECHO_RES", timeout=1) == [b"still here"]
            assert time.monotonic() - started < 0.5
            other.send("SUBMIT_JOB", "sq.fg", b"", b"foreground")  # not stored: works
            fg = other.expect("JOB_CREATED", timeout=1)[0]
            job = worker.grab_wait()
            assert job.handle == fg
            worker.w.send("WORK_COMPLETE", fg, b"fg result")
            assert other.expect("WORK_COMPLETE", timeout=2) == [fg, b"fg result"]
            # a stored job finishing while the store fails: its delete waits for the store
            worker.complete(running)
            worker.w.send("ECHO_REQ", b"sync")
            worker.w.expect("ECHO_RES")
            jobs = d.show_jobs(srv.address)
            assert jobs == {}, jobs
            assert d.status(srv.address)[b"sq.lock"][0] == 0

        # lock released: submits succeed again without a restart
        end = time.monotonic() + 5
        while True:
            client.send("SUBMIT_JOB_BG", "sq.lock", b"", b"after")
            name, args = client.recv(timeout=5)
            if name == "JOB_CREATED":
                after = args[0]
                break
            assert name == "ERROR" and args[0] == b"QUEUE_ERROR", (name, args)
            assert time.monotonic() < end, "submits still refused 5s after the lock was released"
            time.sleep(0.1)
        d.barrier(srv.address)
        client.close()
        other.close()
        worker.close()
        d.kill(srv)
        log = srv.log()
        assert "refusing background submits until it is back" in log
        assert "is back after" in log

    with d.serving(f"sqlite://{db}", workdir=tmp_path / "run2") as srv:
        jobs = d.show_jobs(srv.address)
        assert after in jobs
        assert before not in jobs  # its delete reached the store once it was back
        assert len(jobs) == 2  # `after` and the barrier: nothing refused came back
        worker = d.Worker(srv.address, "sq.lock")
        assert [j.data for j in worker.drain()] == [b"after"]
        worker.close()


def test_store_timeout_refuses_submits_the_store_does_not_answer(tmp_path: Path) -> None:
    """--store-timeout 0.5 with a lock sqlite waits on for 5 s: the submit is
    refused after about 0.5 s; once the lock is gone submits work again."""
    db = tmp_path / "queue.db"
    with d.serving(f"sqlite://{db}?busy_timeout=5000", "--store-timeout", "0.5",
                   workdir=tmp_path / "run") as srv:
        w = Wire(srv.address)
        d.submit_bg(w, "sq.timeout", b"first")
        with exclusive_lock(db):
            started = time.monotonic()
            text = refused(w, "sq.timeout", b"refused", within=2.0)
            assert time.monotonic() - started >= 0.45
            assert b"no answer within 0.5s" in text, text
        end = time.monotonic() + 10
        while True:
            w.send("SUBMIT_JOB_BG", "sq.timeout", b"", b"after")
            name, args = w.recv(timeout=10)
            if name == "JOB_CREATED":
                break
            assert time.monotonic() < end, "submits still refused 10s after the lock was released"
            time.sleep(0.1)
        w.close()


def test_a_submit_refused_on_timeout_does_not_come_back(tmp_path: Path) -> None:
    """The client was told QUEUE_ERROR (no handle): the job must not exist,
    even when the timed-out transaction gets the lock later and commits."""
    db = tmp_path / "queue.db"
    srv = d.start(f"sqlite://{db}?busy_timeout=5000", "--store-timeout", "0.5", workdir=tmp_path / "run")
    try:
        w = Wire(srv.address)
        first = d.submit_bg(w, "sq.ghost", b"first")
        with exclusive_lock(db):
            refused(w, "sq.ghost", b"refused", within=2.0)
            time.sleep(0.3)
        # the lock is gone well within the store's own 5 s busy timeout
        time.sleep(1.0)
        d.barrier(srv.address)
        w.close()
        d.kill(srv)
    finally:
        srv.stop()
    with d.serving(f"sqlite://{db}", workdir=tmp_path / "run2") as srv:
        jobs = d.show_jobs(srv.address)
        worker = d.Worker(srv.address, "sq.ghost")
        datas = [j.data for j in worker.drain()]
        worker.close()
    assert first in jobs
    assert datas == [b"first"], f"a job refused with QUEUE_ERROR was stored anyway: {datas}"


@pytest.mark.parametrize("damage", ["garbage", "directory", "newer-schema", "truncated", "parent-is-a-file"])
def test_unusable_file_fails_start_with_a_clear_message(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "queue.db"
    if damage == "parent-is-a-file":  # (a mode-000 file would not do: the suite may run as root)
        (tmp_path / "plain").write_text("not a directory")
        db = tmp_path / "plain" / "queue.db"
    expect = {
        "garbage": "file is not a database",
        "directory": "unable to open database file",
        "newer-schema": "schema version 99 is newer than this geartrain knows",
        "truncated": "database disk image is malformed",
        "parent-is-a-file": "is not a directory",
    }[damage]
    if damage == "parent-is-a-file":
        pass
    elif damage == "garbage":
        db.write_bytes(b"this is not a database\n" * 200)
    elif damage == "directory":
        db.mkdir()
    else:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE filler (x)")
        conn.executemany("INSERT INTO filler VALUES (?)", [(b"x" * 500,) for _ in range(200)])
        conn.commit()
        if damage == "newer-schema":
            conn.execute("PRAGMA user_version = 99")
            conn.commit()
        conn.close()
        if damage == "truncated":
            raw = db.read_bytes()
            db.write_bytes(raw[: len(raw) // 3])
    srv = d.start(f"sqlite://{db}", workdir=tmp_path / "run", wait=False)
    try:
        code = srv.wait(15)
    finally:
        if srv.alive():
            srv.signal(signal.SIGKILL)
    log = srv.log()
    assert code == 1, log
    assert "cannot use the store: sqlite" in log and str(db) in log and expect in log, log
    assert "listening" not in log and "Traceback" not in log, log
    if damage not in ("directory", "parent-is-a-file"):
        assert db.is_file()  # left as it was found, for the operator
