"""The MariaDB/MySQL store, on the machine's real MariaDB (127.0.0.1:3306, root
without password, database ``test``).

First the store API directly, then real ``geartrain server --store mysql://``
processes: SIGKILL and restart, a connection KILLed from another session, and
every way of giving the password. MariaDB itself is never stopped (other tests
do outages): a lost server is a KILL, or a TCP proxy in front of it that the
test closes and opens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pymysql  # type: ignore[import-untyped]
import pytest

from geartrain.server.stores import StoredJob, StoreError, create_store, parse_store_url
from geartrain.server.stores import mysql as mysql_store
from geartrain.server.stores.mysql import MySQLStore, read_option_file
from tests.stores.conftest import drop_everything, require_service
from tests.support import process
from tests.support.wire import Wire

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
HOST, PORT, DB = "127.0.0.1", 3306, "test"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def admin_conn() -> Any:
    return pymysql.connect(host=HOST, port=PORT, user="root", database=DB, autocommit=True)


def sql(query: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = admin_conn()
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)  # always formatted: %% is a literal %
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("mysql")
    name = f"gt{uuid.uuid4().hex[:10]}_"
    yield name
    drop_everything("mysql", name)


@pytest.fixture
def url(prefix: str) -> str:
    return f"mysql://root@{HOST}:{PORT}/{DB}?prefix={prefix}"


def store(url: str) -> MySQLStore:
    s = create_store(parse_store_url(url))
    assert isinstance(s, MySQLStore)
    return s


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[MySQLStore]:
    s = store(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def job(n: int, function: bytes = b"fn", unique: bytes = b"", data: bytes | None = None,
        priority: int = 1, when: int = 0, reducer: bytes = b"", retries: int = 0) -> StoredJob:
    return StoredJob(f"H:t:{n}".encode(), function, unique, f"data{n}".encode() if data is None else data,
                     priority, when, reducer, retries)


# --------------------------------------------------------------- the store API


def test_replay_gives_back_every_job_whole_in_order(url: str, prefix: str) -> None:
    jobs = [
        job(1, unique=b""),  # two empty uniques on one function: both kept
        job(2, unique=b""),
        job(3, unique=b"same"),  # equal uniques: kept apart by handle
        job(4, unique=b"same"),
        job(5, function=b"other", unique=b"same", priority=0),
        job(6, priority=2, when=4_102_444_800, reducer=b"reduce-fn"),  # 2100-01-01: beyond 32 bits
        job(7, data=bytes(range(256)) * 3 + b"'\"\\%s\0"),  # every byte value, quotes, a %s
        job(8, data=b""),
        job(9, function="fn-é".encode(), unique="ü".encode(), retries=2),
    ]

    async def go() -> None:
        async with opened(url) as s:
            assert await s.replay() == [] and await s.count() == 0
            await s.apply(jobs[:4], [], [])
            await s.apply(jobs[4:], [], [])
            assert await s.replay() == jobs
            assert await s.count() == len(jobs)
        async with opened(url) as s:  # a new store on the same tables
            assert await s.replay() == jobs

    run(go())
    engines = sql("SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                  "AND TABLE_NAME LIKE %s ORDER BY 1", DB, prefix.replace("_", "\\_") + "%")
    assert engines == [(f"{prefix}jobs", "InnoDB"), (f"{prefix}meta", "InnoDB"),
                       (f"{prefix}results", "InnoDB")]


def test_updates_and_deletes(url: str) -> None:
    jobs = [job(i) for i in range(2500)]

    async def go() -> None:
        async with opened(url) as s:
            await s.apply(jobs, [], [])
            # the last count given for a handle wins; an unknown handle is no error
            await s.apply([], [(b"H:t:1", 1), (b"H:t:2", 5), (b"H:t:1", 3), (b"H:t:nope", 9)], [])
            # more than one DELETE ... IN chunk, an unknown handle, a job added and done at once
            extra = job(9999)
            dones = [j.handle for j in jobs[3:2400]] + [b"H:t:nope", extra.handle]
            await s.apply([extra], [(b"H:t:0", 7)], dones)
            left = await s.replay()
            assert [j.handle for j in left] == [j.handle for j in jobs[:3] + jobs[2400:]]
            assert [j.retries for j in left[:3]] == [7, 3, 5]
            assert await s.count() == 103

    run(go())


def test_a_second_job_with_a_stored_handle_keeps_the_first(url: str) -> None:
    async def go() -> None:
        async with opened(url) as s:
            first = job(1, data=b"first")
            await s.apply([first], [], [])
            await s.apply([job(1, data=b"second"), job(2)], [], [])  # no error, the rest is added
            await s.apply([job(3, data=b"a"), job(3, data=b"b")], [], [])  # twice in one batch
            assert await s.replay() == [first, job(2), job(3, data=b"a")]

    run(go())


def test_open_migrates_once_and_refuses_a_newer_schema(url: str, prefix: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mysql_store, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(mysql_store.MIGRATIONS, 3, [
        "INSERT INTO {meta} (`name`, `value`) VALUES ('migration3_runs', 1) "
        "ON DUPLICATE KEY UPDATE `value` = `value` + 1"])

    async def go() -> None:
        async with opened(url) as s:
            await s.apply([job(1)], [], [])
        async with opened(url) as s:  # nothing to do the second time; the data stays
            assert await s.replay() == [job(1)]
        s2 = store(url)
        await s2.open()  # and once more without closing the first connection's lock
        await s2.close()

    run(go())
    assert sorted(sql(f"SELECT name, value FROM `{prefix}meta`")) == [
        ("migration3_runs", 1), ("schema_version", 3)]

    sql(f"UPDATE `{prefix}meta` SET value = 99 WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99, newer than this geartrain knows"):
        run(store(url).open())


def test_a_jobs_table_without_transactions_is_refused(url: str, prefix: str) -> None:
    sql(f"CREATE TABLE `{prefix}jobs` (seq INT) ENGINE=MyISAM")
    with pytest.raises(StoreError, match="MyISAM engine, not InnoDB"):
        run(store(url).open())


def test_a_failing_transaction_leaves_nothing(url: str) -> None:
    """Several statements (more than 4 MiB of INSERTs, updates, deletes) in one
    transaction; the last one fails (a function name too long for its column):
    nothing of it was applied and the store goes on."""
    jobs = [job(i, data=b"x" * 300) for i in range(12000)]

    async def go() -> None:
        async with opened(url) as s:
            await s.apply([job(-1), job(-2)], [], [])
            bad = job(-3, function=b"f" * 70000)
            with pytest.raises(StoreError, match="Data too long"):
                await s.apply([*jobs, bad], [(b"H:t:-1", 4)], [b"H:t:-2"])
            assert await s.replay() == [job(-1), job(-2)]
            await s.apply(jobs, [(b"H:t:-1", 4)], [b"H:t:-2"])
            assert await s.count() == 12001

    run(go())


def test_a_job_larger_than_max_allowed_packet_fails_clearly(url: str) -> None:
    async def go() -> None:
        async with opened(url) as s:
            connection = s.connection_id
            big = job(1, data=b"\xab" * (s.max_allowed_packet // 2 + 1))
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                await s.apply([job(0), big], [], [])
            assert time.monotonic() - started < 2
            message = str(info.value)
            assert "H:t:1" in message and "max_allowed_packet" in message, message
            assert await s.replay() == []
            assert s.connection_id == connection  # nothing was sent: the connection is fine
            # just under the limit goes through, alone in its statement
            fits = job(2, data=b"\xcd" * (s.max_allowed_packet // 2 - mysql_store.PACKET_SLACK))
            await s.apply([job(0), fits, job(3)], [], [])
            assert [j.handle for j in await s.replay()] == [b"H:t:0", b"H:t:2", b"H:t:3"]

    run(go())


def test_a_killed_connection_is_replaced_by_the_next_operation(url: str) -> None:
    async def go() -> None:
        async with opened(url) as s:
            first = s.connection_id
            assert first is not None
            sql(f"KILL {first}")
            await s.apply([job(1)], [], [])  # notices, reconnects, runs again: no error
            assert s.connection_id not in (None, first)
            sql(f"KILL {s.connection_id}")
            assert await s.replay() == [job(1)]

    run(go())


class Proxy:
    """A TCP proxy to MariaDB that the test can take down and bring back on the same port."""

    def __init__(self) -> None:
        self.port = process.free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()  # cleared: bytes wait in the proxy (a hung server)
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, HOST, self.port, reuse_address=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, PORT)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()


def test_a_database_that_went_away_fails_promptly_and_comes_back(prefix: str) -> None:
    async def go() -> None:
        proxy = Proxy()
        await proxy.start()
        async with opened(f"mysql://root@{HOST}:{proxy.port}/{DB}?prefix={prefix}") as s:
            await s.apply([job(1)], [], [])
            await proxy.stop()  # the server "restarts": connections drop, nothing listens
            for n in (2, 3):
                started = time.monotonic()
                with pytest.raises(StoreError, match="Can't connect|Lost connection"):
                    await s.apply([job(n)], [], [])
                assert time.monotonic() - started < 1.0
            await proxy.start()
            await s.apply([job(4)], [], [b"H:t:1"])  # connects again by itself
            assert await s.replay() == [job(4)]
            await proxy.stop()

    run(go())


def test_a_hung_database_is_given_up_on_and_a_new_connection_used(prefix: str) -> None:
    """The committer bounds apply() with a timeout: the cancelled apply must not
    leave a half-read connection behind for the next one."""
    async def go() -> None:
        proxy = Proxy()
        await proxy.start()
        async with opened(f"mysql://root@{HOST}:{proxy.port}/{DB}?prefix={prefix}") as s:
            first = s.connection_id
            proxy.flowing.clear()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(s.apply([job(1)], [], []), 0.3)
            proxy.flowing.set()
            await s.apply([job(2)], [], [])
            assert s.connection_id != first
            assert [j.handle for j in await s.replay()] in ([b"H:t:2"], [b"H:t:1", b"H:t:2"])
        await proxy.stop()

    run(go())


def test_a_server_that_accepts_and_never_answers_fails_within_connect_timeout() -> None:
    with socket.socket() as silent:  # the kernel completes the handshake; nobody reads
        silent.bind((HOST, 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        s = store(f"mysql://root@{HOST}:{port}/{DB}?connect_timeout=0.5")
        started = time.monotonic()
        with pytest.raises(StoreError, match="no answer within 0.5s"):
            run(s.open())
        assert time.monotonic() - started < 2
    unused = process.free_port()
    started = time.monotonic()
    with pytest.raises(StoreError, match="Connection refused"):
        run(store(f"mysql://root@{HOST}:{unused}/{DB}").open())
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("text", "message"), [
    ("mysql://root@h/test?prefx=a", "unknown URL parameter"),
    ("mysql://root@h/test?prefix=a-b", "prefix='a-b'"),
    ("mysql://root@h/test?prefix=" + "a" * 49, "1 to 48"),
    ("mysql://root@h/test?connect_timeout=soon", "connect_timeout"),
])
def test_bad_urls_are_refused(text: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        store(text)


def test_a_url_without_database_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(StoreError, match="needs a database"):
        run(store("mysql://root@127.0.0.1").open())


def test_option_files_are_read_like_pymysql_does(tmp_path: Path) -> None:
    path = tmp_path / "my.cnf"
    path.write_text("!includedir /nonexistent/conf.d/\n[mysqld]\nskip-name-resolve\n"
                    "[client]\nuser = alice\npassword = \"p w'd\"\n[client]\ndefault_character_set=utf8\n")
    assert read_option_file(str(path)) == {"user": "alice", "password": "p w'd",
                                           "default-character-set": "utf8"}
    assert read_option_file(str(tmp_path / "missing.cnf")) == {}
    path.write_text("password=hunter2\n")  # no [group]: not an option file; the line is not quoted
    with pytest.raises(StoreError, match="line 1") as info:
        read_option_file(str(path))
    assert "hunter2" not in str(info.value)


# --------------------------------------------------------------- real servers


@pytest.fixture
def mysql_user() -> Iterator[tuple[str, str]]:
    """A MariaDB user with a password (URL-unsafe characters in it), for this test only."""
    require_service("mysql")
    name = f"gt{secrets.token_hex(5)}"
    password = f"pw:@/%?é{secrets.token_hex(8)}"
    sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", password)
    sql(f"GRANT ALL PRIVILEGES ON `{DB}`.* TO '{name}'@'%%'")
    yield name, password
    sql(f"DROP USER IF EXISTS '{name}'@'%%'")


def server(store_url: str, tmp_path: Path, *args: str) -> process.ServerProcess:
    workdir = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    workdir.mkdir()
    return process.geartrain("--store", store_url, "--job-handle-prefix", "H:my", *args,
                             workdir=workdir)


@contextlib.contextmanager
def serving(store_url: str, tmp_path: Path, *args: str) -> Iterator[process.ServerProcess]:
    srv = server(store_url, tmp_path, *args).start()
    try:
        yield srv
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def submit_bg(w: Wire, ptype: str, *args: bytes | str) -> bytes:
    w.send(ptype, *args)
    name, reply = w.recv()
    assert name == "JOB_CREATED", (name, reply)
    return reply[0]


def grab_all(address: tuple[str, int], *functions: str) -> list[list[bytes]]:
    """Every job the server hands out now, as JOB_ASSIGN_ALL arguments
    (handle, function, unique, reducer, data)."""
    got: list[list[bytes]] = []
    with Wire(address) as w:
        for f in functions:
            w.send("CAN_DO", f)
        while True:
            w.send("GRAB_JOB_ALL")
            name, args = w.recv()
            if name == "NO_JOB":
                return got
            if name == "JOB_ASSIGN_UNIQ":  # no reducer: the server answers like gearmand
                args = [*args[:3], b"", args[3]]
            else:
                assert name == "JOB_ASSIGN_ALL", (name, args)
            got.append(args)


def test_background_jobs_survive_sigkill(url: str, tmp_path: Path) -> None:
    when = int(time.time()) + 3600
    srv = server(url, tmp_path).start()
    try:
        with Wire(srv.address) as w:
            low = submit_bg(w, "SUBMIT_JOB_LOW_BG", "f1", "", "low")
            n1 = submit_bg(w, "SUBMIT_JOB_BG", "f1", "", "normal-1")
            n2 = submit_bg(w, "SUBMIT_JOB_BG", "f1", "", "normal-2")  # empty unique again
            high = submit_bg(w, "SUBMIT_JOB_HIGH_BG", "f1", "u-high", "high")
            same = submit_bg(w, "SUBMIT_JOB_BG", "f2", "u-high", "same unique, other function")
            epoch = submit_bg(w, "SUBMIT_JOB_EPOCH", "f1", "u-epoch", str(when), "later")
            reduce = submit_bg(w, "SUBMIT_REDUCE_JOB_BACKGROUND", "f2", "u-red", "reducer-fn", "", "mapped")
        srv.signal(signal.SIGKILL)
        srv.wait(10)
    finally:
        srv.stop()

    async def replayed() -> list[StoredJob]:
        async with opened(url) as s:
            return await s.replay()

    rows = {j.handle: j for j in run(replayed())}
    assert rows[low].priority == 2 and rows[n1].priority == 1 and rows[high].priority == 0
    assert rows[epoch].when == when and rows[epoch].unique == b"u-epoch"
    assert rows[reduce].reducer == b"reducer-fn" and rows[reduce].data == b"mapped"
    assert rows[n2].unique == b"" and rows[same].unique == b"u-high"

    with serving(url, tmp_path) as srv2:
        assert "replayed 7 job(s)" in srv2.log()
        assigned = grab_all(srv2.address, "f1", "f2")
        by_function: dict[bytes, list[list[bytes]]] = {}
        for a in assigned:
            by_function.setdefault(a[1], []).append(a)
        assert by_function[b"f1"] == [  # priority first, then submission order; epoch not yet
            [high, b"f1", b"u-high", b"", b"high"],
            [n1, b"f1", b"", b"", b"normal-1"],
            [n2, b"f1", b"", b"", b"normal-2"],
            [low, b"f1", b"", b"", b"low"],
        ]
        assert by_function[b"f2"] == [
            [same, b"f2", b"u-high", b"", b"same unique, other function"],
            [reduce, b"f2", b"u-red", b"reducer-fn", b"mapped"],
        ]
        with Wire(srv2.address) as w:  # new handles continue after the replayed ones
            fresh = submit_bg(w, "SUBMIT_JOB_BG", "f3", "", "x")
        assert int(fresh.rpartition(b":")[2]) > max(int(h.rpartition(b":")[2]) for h in rows)


def test_a_killed_store_connection_is_survived(url: str, prefix: str, tmp_path: Path,
                                                mysql_user: tuple[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's connection is KILLed from another session (its own user
    tells it apart from other tests'): the next submits succeed all the same."""
    user, password = mysql_user
    monkeypatch.setenv("GEARTRAIN_STORE_PASSWORD", password)
    with serving(url.replace("root@", f"{user}@"), tmp_path, "--verbose", "INFO") as srv, \
            Wire(srv.address) as w:
        submit_bg(w, "SUBMIT_JOB_BG", "k", "", "before")
        for round_ in range(3):
            ids = [r[0] for r in sql("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s "
                                     "AND COMMAND <> 'Killed'", user)]
            assert ids
            for connection in ids:
                with contextlib.suppress(pymysql.err.OperationalError):  # gone already
                    sql(f"KILL {connection}")
            for i in range(5):
                submit_bg(w, "SUBMIT_JOB_BG", "k", "", f"after-{round_}-{i}")
        assert sql(f"SELECT COUNT(*) FROM `{prefix}jobs`") == [(16,)]
        assert "Lost connection" in srv.log()
        assert password not in srv.log() and quote(password, safe="") not in srv.log()


def test_password_from_the_environment(url: str, tmp_path: Path, mysql_user: tuple[str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = mysql_user
    user_url = url.replace("root@", f"{user}@")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.my.cnf to fall back on
    monkeypatch.setenv("GEARTRAIN_STORE_PASSWORD", "wrong-" + password)
    srv = server(user_url, tmp_path).start(wait=False)
    assert srv.wait(15) != 0
    assert "Access denied" in srv.log() and password not in srv.log(), srv.log()
    monkeypatch.setenv("GEARTRAIN_STORE_PASSWORD", password)
    with serving(user_url, tmp_path) as srv, Wire(srv.address) as w:
        submit_bg(w, "SUBMIT_JOB_BG", "e", "", "x")


def test_password_from_a_private_file(url: str, tmp_path: Path, mysql_user: tuple[str, str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = mysql_user
    user_url = url.replace("root@", f"{user}@")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GEARTRAIN_STORE_PASSWORD", raising=False)
    secret = tmp_path / "store-password"
    secret.write_text(password + "\n")
    secret.chmod(0o644)
    srv = server(user_url, tmp_path, "--store-password-file", str(secret)).start(wait=False)
    assert srv.wait(15) != 0
    assert "other users may read it (mode 644); run: chmod 600" in srv.log(), srv.log()
    assert "Traceback" not in srv.log() and password not in srv.log(), srv.log()
    secret.chmod(0o600)
    with serving(user_url, tmp_path, "--store-password-file", str(secret)) as srv, \
            Wire(srv.address) as w:
        submit_bg(w, "SUBMIT_JOB_BG", "f", "", "x")


def test_password_from_my_cnf(url: str, tmp_path: Path, mysql_user: tuple[str, str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No password anywhere else: ~/.my.cnf's [client] group gives user and
    password (quoted, as the mysql client allows); the URL has neither."""
    user, password = mysql_user
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GEARTRAIN_STORE_PASSWORD", raising=False)
    (tmp_path / ".my.cnf").write_text(f"[mysql]\nno-auto-rehash\n[client]\nuser={user}\n"
                                      f"password=\"{password}\"\n")
    (tmp_path / ".my.cnf").chmod(0o600)
    with serving(url.replace("root@", ""), tmp_path) as srv, Wire(srv.address) as w:
        submit_bg(w, "SUBMIT_JOB_BG", "c", "", "x")
        assert sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", user) == [(1,)]


def test_password_in_the_url_works_is_warned_about_and_hidden(url: str, tmp_path: Path,
                                                              mysql_user: tuple[str, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = mysql_user
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GEARTRAIN_STORE_PASSWORD", raising=False)
    encoded = quote(password, safe="")
    with serving(url.replace("root@", f"{user}:{encoded}@"), tmp_path, "--verbose", "DEBUG") as srv:
        with Wire(srv.address) as w:
            submit_bg(w, "SUBMIT_JOB_BG", "p", "", "x")
        cmdline = Path(f"/proc/{srv.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline and encoded.encode() not in cmdline, cmdline
        assert b":***@" in cmdline
        log = srv.log()
        assert "the store password is on the command line" in log
        assert password not in log and encoded not in log
