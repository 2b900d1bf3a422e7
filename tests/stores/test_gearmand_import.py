"""`geartrain import-gearmand-queue` on queues that a real C gearmand wrote.

gearmand (libsqlite3, MySQL, Postgres queue) gets background jobs of every
priority, with empty and non-empty uniques, binary data and an epoch job,
and is stopped with SIGTERM (its rows stay). The command adopts them into a
fresh geartrain store; then a real `geartrain server` on that store must
hand every job out exactly once, in priority order, with its data and unique,
and list them in `status` and `show unique jobs`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from geartrain.server.stores import StoredJob, create_store, parse_store_url
from geartrain.server.stores.gearmand_import import QueueRow, plan_import
from tests.stores.conftest import require_service
from tests.support import process
from tests.support.wire import Wire, admin, submit

PREFIX = "H:imp"
EPOCH = int(time.time()) + 3600


@dataclass(frozen=True)
class Job:
    function: bytes
    unique: bytes
    data: bytes
    priority: int  # 0 high, 1 normal, 2 low
    when: int = 0


_PACKET = {0: "SUBMIT_JOB_HIGH_BG", 1: "SUBMIT_JOB_BG", 2: "SUBMIT_JOB_LOW_BG"}

#: submitted in this order; the last one has the same (empty) unique as another pf job
SUBMITS = [
    Job(b"pf", b"u1", b"normal-1", 1),
    Job(b"pf", b"u2", b"high-1", 0),
    Job(b"pf", b"u3", b"low-1", 2),
    Job(b"pf", b"", b"empty-unique-1", 1),
    Job(b"pf", b"u4", b"high-2", 0),
    Job(b"pf", b"bin", b"bin\x00ary\\x00'\"\xff\xfe", 1),
    Job(b"pf", b"ep1", b"epoch-data", 1, EPOCH),
    Job(b"other", b"", b"other-low", 2),
    Job(b"other", b"o1", b"", 0),  # empty data
    Job(b"pf", b"", b"empty-unique-2", 1),
]


def expected_for(kind: str) -> list[Job]:
    """The jobs gearmand's *kind* queue keeps of SUBMITS, in table order.

    libsqlite3 INSERT OR REPLACEs: the second empty-unique pf job replaced the
    first (and moved to the end). MySQL and Postgres refuse it (QUEUE_ERROR)."""
    if kind == "sqlite":
        return [j for j in SUBMITS if j.data != b"empty-unique-1"]
    return SUBMITS[:-1]


def submit_all(address: tuple[str, int], kind: str) -> None:
    with Wire(address) as w:
        for job in SUBMITS:
            if job.when:
                w.send("SUBMIT_JOB_EPOCH", job.function, job.unique, str(job.when), job.data)
            else:
                w.send(_PACKET[job.priority], job.function, job.unique, job.data)
            name, args = w.recv()
            refused = kind != "sqlite" and job.data == b"empty-unique-2"
            assert name == ("ERROR" if refused else "JOB_CREATED"), (job, name, args)


def run_gearmand(queue_args: tuple[str, ...], kind: str, workdir: Path) -> None:
    """Start gearmand with a persistent queue, submit SUBMITS, SIGTERM it."""
    workdir.mkdir(parents=True, exist_ok=True)
    g = process.gearmand(*queue_args, workdir=workdir).start()
    try:
        submit_all(g.address, kind)
    finally:
        assert g.stop() == 0, g.log()


# ------------------------------------------------------------------ running the command


def _registered() -> bool:
    from geartrain.cli.main import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "import-gearmand-queue" in action.choices
    return False


COMMAND = ([sys.executable, "-m", "geartrain", "import-gearmand-queue"] if _registered()
           else [sys.executable, "-m", "geartrain.cli.import_queue"])


def run_import(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env=env)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    return res.stdout


def stored(url: str) -> list[StoredJob]:
    async def read() -> list[StoredJob]:
        store = create_store(parse_store_url(url))
        await store.open()
        try:
            return await store.replay()
        finally:
            await store.close()

    return asyncio.run(read())


def assert_adopted(url: str, expected: list[Job], workdir: Path, before: Sequence[StoredJob] = ()) -> None:
    """The store at *url* holds *before* plus *expected*, and a geartrain server on it
    serves each expected job exactly once, highest priority first, oldest first."""
    jobs = stored(url)
    assert jobs[:len(before)] == list(before)
    adopted = jobs[len(before):]
    assert [Job(j.function, j.unique, j.data, j.priority, j.when) for j in adopted] == expected
    handles = [j.handle for j in jobs]
    assert len(set(handles)) == len(handles)
    top = max((int(h.rpartition(b":")[2]) for h in handles[:len(before)]), default=0)
    assert [int(h.rpartition(b":")[2]) for h in handles[len(before):]] == \
        list(range(top + 1, top + 1 + len(expected)))

    everything = [Job(j.function, j.unique, j.data, j.priority, j.when) for j in jobs]
    workdir.mkdir(parents=True, exist_ok=True)
    srv = process.geartrain("--store", url, workdir=workdir).start()
    try:
        status, uniques = admin(srv.address, "status", "show unique jobs")
        counts = {}
        for line in status.decode().splitlines()[:-1]:
            name, total, running, workers = line.split("\t")
            counts[name.encode()] = int(total)
        assert counts == {f: sum(1 for j in everything if j.function == f)
                          for f in {j.function for j in everything}}
        assert sorted(uniques.splitlines()[:-1]) == sorted(j.unique for j in everything)
        for function in sorted({j.function for j in everything}):
            due = [j for j in everything if j.function == function and j.when == 0]
            due.sort(key=lambda j: j.priority)  # stable: oldest first within a priority
            with Wire(srv.address) as w:
                w.send("CAN_DO", function)
                got = []
                while True:
                    w.send("GRAB_JOB_UNIQ")
                    name, args = w.recv()
                    if name == "NO_JOB":
                        break
                    assert name == "JOB_ASSIGN_UNIQ", (name, args)
                    handle, fn, unique, data = args
                    assert fn == function
                    got.append((unique, data))
                assert got == [(j.unique, j.data) for j in due]
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def sqlite_rows(path: Path, table: str = "gearman_queue") -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def gearmand_sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue file written once by gearmand -q libsqlite3; tests copy it."""
    workdir = tmp_path_factory.mktemp("gearmand-sqlite")
    db = workdir / "gearmand.db"
    run_gearmand(("-q", "libsqlite3", "--libsqlite3-db", str(db)), "sqlite", workdir)
    return db


@pytest.fixture
def source_db(gearmand_sqlite_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "gearmand.db"
    shutil.copy(gearmand_sqlite_db, copy)
    return copy


# ------------------------------------------------------------------ the three gearmand queues


def test_sqlite_queue_is_adopted_after_existing_jobs(source_db: Path, tmp_path: Path) -> None:
    target = tmp_path / "geartrain.db"
    url = f"sqlite://{target}"
    # the store already holds a job of a geartrain server: the new handles come after it
    srv = process.geartrain("--store", url, "--job-handle-prefix", "H:old", workdir=tmp_path).start()
    with Wire(srv.address) as w:
        for i in range(3):
            submit(w, "pf", b"kept-%d" % i, b"", "SUBMIT_JOB_LOW_BG")
    srv.stop()
    before = stored(url)
    assert [j.handle for j in before] == [b"H:old:1", b"H:old:2", b"H:old:3"]

    out = ok(run_import(f"sqlite://{source_db}", "--store", url, "--job-handle-prefix", PREFIX,
                        cwd=tmp_path))
    expected = expected_for("sqlite")
    assert f"imported {len(expected)} jobs, handles {PREFIX}:4 to {PREFIX}:{3 + len(expected)}" in out
    assert re.search(r"\n +pf +2 +4 +1 +1\n", out), out  # high normal low run-at
    assert re.search(r"\n +other +1 +0 +1 +0\n", out), out
    assert sqlite_rows(source_db) == len(expected)  # without --delete-source the rows stay
    assert_adopted(url, expected, tmp_path / "serve", before)


def test_mysql_queue_is_adopted_and_deleted(tmp_path: Path) -> None:
    require_service("mysql")
    import pymysql

    table = f"gq_{uuid.uuid4().hex[:12]}"
    source = "mysql://root@127.0.0.1:3306/test"
    if Path("/run/mysqld/mysqld.sock").exists():  # the socket gearmand used for "localhost"
        source = "mysql://root@localhost/test?socket=/run/mysqld/mysqld.sock"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
    try:
        run_gearmand(("-q", "MySQL", "--mysql-host", "localhost", "--mysql-user", "root",
                      "--mysql-db", "test", "--mysql-table", table), "mysql", tmp_path / "gearmand")
        url = f"sqlite://{tmp_path / 'geartrain.db'}"
        out = ok(run_import(source, "--table", table, "--store", url, "--job-handle-prefix", PREFIX,
                            "--delete-source", cwd=tmp_path))
        expected = expected_for("mysql")
        assert f"imported {len(expected)} jobs" in out
        assert f"deleted {len(expected)} rows from gearmand's table {table}" in out
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            assert cur.fetchone() == (0,)
        assert_adopted(url, expected, tmp_path / "serve")
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.close()


def test_postgres_queue_is_adopted_and_deleted(tmp_path: Path) -> None:
    require_service("postgresql")
    import asyncpg

    table = f"gq_{uuid.uuid4().hex[:12]}"

    async def sql(query: str) -> object:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="root", database="test")
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    try:
        run_gearmand(("-q", "Postgres", "--libpq-conninfo", "host=127.0.0.1 dbname=test user=root",
                      "--libpq-table", table), "postgresql", tmp_path / "gearmand")
        url = f"sqlite://{tmp_path / 'geartrain.db'}"
        # gearmand 1.1.20's own Postgres replay forgets when_to_run; the import keeps it
        out = ok(run_import("postgresql://root@127.0.0.1:5432/test", "--table", table, "--store", url,
                            "--job-handle-prefix", PREFIX, "--delete-source", cwd=tmp_path))
        expected = expected_for("postgresql")
        assert f"imported {len(expected)} jobs" in out
        assert f"deleted {len(expected)} rows" in out
        assert asyncio.run(sql(f"SELECT COUNT(*) FROM {table}")) == 0
        assert_adopted(url, expected, tmp_path / "serve")
    finally:
        asyncio.run(sql(f"DROP TABLE IF EXISTS {table}"))


def test_every_target_store_kind(source_db: Path, store_url: str, store_kind: str, tmp_path: Path) -> None:
    module = {"sqlite": "sqlite", "mysql": "mysql", "postgresql": "postgres", "redis": "redis"}[store_kind]
    if importlib.util.find_spec(f"geartrain.server.stores.{module}") is None:
        pytest.skip(f"no {store_kind} store in this checkout")
    ok(run_import(f"sqlite://{source_db}", "--store", store_url, "--job-handle-prefix", PREFIX,
                  cwd=tmp_path))
    assert_adopted(store_url, expected_for("sqlite"), tmp_path / "serve")


# ------------------------------------------------------------------ options


def test_default_store_and_prefix_like_the_server(source_db: Path, tmp_path: Path) -> None:
    """--data-dir and --port name the server's default store; handles get H:<hostname>."""
    port = process.free_port()
    ok(run_import(f"sqlite://{source_db}", "--data-dir", str(tmp_path / "data"), "--port", str(port),
                  cwd=tmp_path))
    db = tmp_path / "data" / f"geartrain-{port}.db"
    jobs = stored(f"sqlite://{db}")
    assert [j.handle for j in jobs][:2] == [f"H:{socket.gethostname()}:{n}".encode() for n in (1, 2)]
    # a server with the same --data-dir and --port replays them
    srv = process.geartrain(workdir=tmp_path, port=port)  # its --data-dir is workdir/data
    srv.start()
    try:
        status = admin(srv.address, "status")[0].decode()
        assert f"pf\t{sum(1 for j in expected_for('sqlite') if j.function == b'pf')}\t0\t0" in status
        # ... and while it runs, the import refuses (the server would not see the jobs)
        res = run_import(f"sqlite://{source_db}", "--data-dir", str(tmp_path / "data"), "--port",
                         str(port), cwd=tmp_path)
        assert res.returncode == 1
        assert "something is listening on 127.0.0.1:" in res.stderr
        assert "stop the geartrain server" in res.stderr
    finally:
        srv.stop()


def test_dry_run_changes_nothing(source_db: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256(source_db.read_bytes()).hexdigest()
    target = tmp_path / "new" / "geartrain.db"
    out = ok(run_import(f"sqlite://{source_db}", "--store", f"sqlite://{target}", "--dry-run",
                        "--delete-source", cwd=tmp_path))
    assert f"would import {len(expected_for('sqlite'))} jobs" in out
    assert "dry run: nothing was written or deleted" in out
    assert not target.exists() and not target.parent.exists()
    assert hashlib.sha256(source_db.read_bytes()).hexdigest() == digest
    # on an existing store too
    url = f"sqlite://{tmp_path / 'old.db'}"
    ok(run_import(f"sqlite://{source_db}", "--store", url, cwd=tmp_path))
    before = stored(url)
    out = ok(run_import(f"sqlite://{source_db}", "--store", url, "--dry-run", cwd=tmp_path))
    assert "would import 0 jobs" in out
    assert stored(url) == before


def test_running_again_adopts_nothing_twice(source_db: Path, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'geartrain.db'}"
    expected = expected_for("sqlite")
    res = run_import(f"sqlite://{source_db}", "--store", url, cwd=tmp_path)
    ok(res)
    assert "warning: the rows are still in gearmand's table gearman_queue" in res.stderr
    first = stored(url)
    assert len(first) == len(expected)

    out = ok(run_import(f"sqlite://{source_db}", "--store", url, cwd=tmp_path))
    assert "imported 0 jobs" in out
    assert out.count("already queued in the target store") == len(expected)
    assert stored(url) == first

    # --delete-source on a later run removes the rows of the jobs already adopted
    out = ok(run_import(f"sqlite://{source_db}", "--store", url, "--delete-source", cwd=tmp_path))
    assert "imported 0 jobs" in out
    assert f"deleted {len(expected)} rows" in out
    assert sqlite_rows(source_db) == 0
    assert stored(url) == first

    out = ok(run_import(f"sqlite://{source_db}", "--store", url, "--delete-source", cwd=tmp_path))
    assert "0 rows" in out and "imported 0 jobs" in out
    assert_adopted(url, expected, tmp_path / "serve")


def test_rows_gearmand_could_not_replay_are_skipped_and_kept(tmp_path: Path) -> None:
    """A hand-made table of gearmand's oldest layout (no when_to_run column)."""
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE jobs (unique_key TEXT, function_name TEXT, priority INTEGER, data BLOB)")
        conn.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?)", [
            ("a", "f", 1, b"ok-a"),
            ("b", "f", 7, b"bad priority"),
            ("c", "", 1, b"no function"),
            ("x" * 65, "f", 1, b"long unique"),
            ("d", "f", "2", b"priority as text"),
            (None, "f", 0, None),  # NULL unique and data: empty
            ("a", "f", 0, b"same unique as the first row"),
        ])
    url = f"sqlite://{tmp_path / 'geartrain.db'}"
    res = run_import(f"sqlite://{db}", "--table", "jobs", "--store", url, "--job-handle-prefix", PREFIX,
                     "--delete-source", cwd=tmp_path)
    out = ok(res)
    assert "imported 3 jobs" in out
    assert "f unique 'b': priority 7 is not 0 (high), 1 (normal) or 2 (low)" in out
    assert "(none) unique 'c': no function name" in out
    assert "the unique key is longer than 64 bytes" in out
    assert "f unique 'a': same function and unique key as an earlier row" in out
    assert "warning: 3 rows could not be imported" in res.stderr
    assert [(j.unique, j.data, j.priority, j.when) for j in stored(url)] == [
        (b"a", b"ok-a", 1, 0), (b"d", b"priority as text", 2, 0), (b"", b"", 0, 0)]
    with sqlite3.connect(db) as conn:  # the three bad rows stay, the merged one went
        assert sorted(r[0] for r in conn.execute("SELECT data FROM jobs")) == \
            [b"bad priority", b"long unique", b"no function"]


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("source, message", [
    ("redis://127.0.0.1:6379/0", "gearmand's redis queue cannot be imported"),
    ("memory", "gearmand's memory queue cannot be imported"),
    ("ftp://host/x", "unknown kind 'ftp'"),
    ("/var/lib/gearmand.db", "unknown kind ''"),
    ("mysql://root@127.0.0.1:3306", "needs a database"),
    ("mysql://root@127.0.0.1:3306/test?bogus=1", "unknown parameter 'bogus'"),
    ("postgresql://root@127.0.0.1/test?prefix=x", "unknown parameter 'prefix'"),
])
def test_bad_source_url_is_a_usage_error(source: str, message: str, tmp_path: Path) -> None:
    res = run_import(source, "--store", f"sqlite://{tmp_path / 't.db'}", cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "t.db").exists()


def test_bad_target_is_a_usage_error(source_db: Path, tmp_path: Path) -> None:
    res = run_import(f"sqlite://{source_db}", "--store", "bogus://x", cwd=tmp_path)
    assert res.returncode == 2 and "unknown kind 'bogus'" in res.stderr
    res = run_import(f"sqlite://{source_db}", "--store", "memory", cwd=tmp_path)
    assert res.returncode == 1 and "'memory', which keeps nothing" in res.stderr


def test_missing_file_table_or_server_fails(source_db: Path, tmp_path: Path) -> None:
    target = ("--store", f"sqlite://{tmp_path / 't.db'}")
    cases = [
        ((f"sqlite://{tmp_path / 'nope.db'}",), "no such file"),
        ((f"sqlite://{source_db}", "--table", "nope"),
         "there is no table 'nope' (gearmand's libsqlite3 queue uses 'gearman_queue'"),
        (("mysql://root@127.0.0.1:1/test",), "cannot connect to mysql://root@127.0.0.1:1/test"),
        (("postgresql://root@127.0.0.1:1/test",), "cannot connect to postgresql://root@127.0.0.1:1/test"),
    ]
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("hello\n" * 100)
    cases.append(((f"sqlite://{not_a_db}",), "file is not a database"))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE gearman_queue (id INTEGER, payload BLOB)")
    cases.append(((f"sqlite://{other}",), "not a gearmand queue table (no column unique_key"))
    for args, message in cases:
        res = run_import(*args, *target, cwd=tmp_path)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "t.db").exists()


def test_missing_server_tables(tmp_path: Path) -> None:
    require_service("mysql")
    require_service("postgresql")
    target = ("--store", f"sqlite://{tmp_path / 't.db'}")
    res = run_import("mysql://root@127.0.0.1:3306/test", "--table", "no_such_gq", *target, cwd=tmp_path)
    assert res.returncode == 1 and "there is no table 'no_such_gq'" in res.stderr, res.stderr
    res = run_import("postgresql://root@127.0.0.1:5432/test", *target, "--table", "no_such_gq",
                     cwd=tmp_path)
    assert res.returncode == 1 and "there is no table 'no_such_gq'" in res.stderr, res.stderr


def test_source_password_is_its_own_and_never_printed(tmp_path: Path) -> None:
    """GEARMAND_QUEUE_PASSWORD is the source's; GEARTRAIN_STORE_PASSWORD only the target's."""
    require_service("mysql")  # root@127.0.0.1 has no password: any password is refused
    target = ("--store", f"sqlite://{tmp_path / 't.db'}", "--table", "no_such_gq")
    env = dict(os.environ, GEARMAND_QUEUE_PASSWORD="pw-source-123")
    res = run_import("mysql://root@127.0.0.1:3306/test", *target, cwd=tmp_path, env=env)
    assert res.returncode == 1 and "Access denied" in res.stderr, res.stderr
    env = dict(os.environ, GEARTRAIN_STORE_PASSWORD="pw-target-123")
    res = run_import("mysql://root@127.0.0.1:3306/test", *target, cwd=tmp_path, env=env)
    assert res.returncode == 1 and "there is no table 'no_such_gq'" in res.stderr, res.stderr
    res = run_import("mysql://root:pw-url-123@127.0.0.1:3306/test", *target, cwd=tmp_path)
    assert res.returncode == 1 and "Access denied" in res.stderr, res.stderr
    assert "the source password is on the command line" in res.stderr
    assert "mysql://root:***@127.0.0.1:3306/test" in res.stderr
    assert "pw-" not in res.stderr + res.stdout


def test_failed_target_deletes_nothing(source_db: Path, tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    res = run_import(f"sqlite://{source_db}", "--store", f"sqlite://{tmp_path / 'dir.db'}", "--delete-source",
                     cwd=tmp_path)
    assert res.returncode == 1 and "cannot use the target store" in res.stderr, res.stderr
    assert sqlite_rows(source_db) == len(expected_for("sqlite"))


# ------------------------------------------------------------------ planning, without processes


def test_plan_keeps_order_and_numbers_after_every_prefix() -> None:
    existing = [StoredJob(b"H:a:7", b"f", b"", b"x", 1), StoredJob(b"JH:12", b"f", b"k", b"y", 1),
                StoredJob(b"weird", b"f", b"-", b"same", 2)]
    rows = [QueueRow(b"k", b"f", 0, b"other data", 0),  # coalesces onto JH:12
            QueueRow(b"-", b"f", 2, b"same", 0),  # '-' coalesces on the payload
            QueueRow(b"-", b"f", 2, b"new", 0),
            QueueRow(b"", b"f", 1, b"x", 0),  # identical empty-unique job: imported before
            QueueRow(b"", b"f", 1, b"x", 5),  # ... but not with another run-at time
            QueueRow(b"n", b"g", 1, None, -3)]
    plan = plan_import(rows, existing, b"P")
    assert [(j.handle, j.unique, j.data, j.when) for j in plan.adds] == [
        (b"P:13", b"-", b"new", 0), (b"P:14", b"", b"x", 5), (b"P:15", b"n", b"", 0)]
    assert [s.covered for s in plan.skipped] == [True, True, True]
    assert plan.counts() == {b"f": [0, 1, 1, 1], b"g": [0, 1, 0, 0]}
    assert len(plan.deletable()) == 6

