"""The PostgreSQL store: its API against the real database, and real server processes on it.

The database is the machine's PostgreSQL (127.0.0.1:5432, trust auth, database
``test``, user ``root``); every test has its own table prefix, dropped after.
The service is never stopped here: a lost connection is simulated with
``pg_terminate_backend()`` from another session.

Every TCP login is ``trust`` on this machine (pg_hba), so PostgreSQL never asks
for a password and a test against it cannot show that one is used. The
password tests therefore point the store at a tiny fake PostgreSQL server
(``FakePostgres``) that asks for a cleartext password and records what the
driver sends, which proves the password reached the wire from each source.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from geartrain.protocol import REQ, PacketType
from geartrain.server.stores import StoredJob, StoreError, create_store, parse_store_url
from geartrain.server.stores.postgres import PostgresStore
from tests.stores.conftest import drop_everything, require_service
from tests.support import process
from tests.support.wire import Wire, admin, len_header

pytestmark = pytest.mark.timeout(60)

PG = {"host": "127.0.0.1", "port": 5432, "user": "root", "database": "test"}


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("postgresql")
    name = f"gtpg{uuid.uuid4().hex[:10]}_"
    yield name
    drop_everything("postgresql", name)


def url_of(prefix: str, auth: str = "root", port: int = 5432, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **params}.items())
    return f"postgresql://{auth}@127.0.0.1:{port}/test?{query}"


def store_of(url: str) -> PostgresStore:
    store = create_store(parse_store_url(url))
    assert isinstance(store, PostgresStore)
    return store


async def sql(query: str, *args: Any) -> list[Any]:
    """Run one statement in a session of its own (root on the test database)."""
    conn = await asyncpg.connect(**PG)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def sql_sync(query: str, *args: Any) -> list[Any]:
    return asyncio.run(sql(query, *args))


def terminate(application_name: str) -> int:
    """pg_terminate_backend() every session of *application_name*; wait until they are gone."""
    async def main() -> int:
        conn = await asyncpg.connect(**PG)
        try:
            pids = [r[0] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
                application_name)]
            for pid in pids:
                await conn.execute("SELECT pg_terminate_backend($1)", pid)
            end = time.monotonic() + 5
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                                      pids) and time.monotonic() < end:
                await asyncio.sleep(0.005)
            return len(pids)
        finally:
            await conn.close()

    return asyncio.run(main())


def job(n: int, function: bytes = b"f", unique: bytes = b"", priority: int = 1, **kw: Any) -> StoredJob:
    return StoredJob(b"H:pg:%d" % n, function, unique, b"data-%d\0\xff" % n, priority, **kw)


# ---------------------------------------------------------------- the store API


def test_jobs_come_back_in_order_keyed_by_handle(prefix: str) -> None:
    """Insertion order across transactions, every field intact; empty and equal
    uniques never overwrite each other; updates and deletes by handle."""
    async def main() -> None:
        store = store_of(url_of(prefix))
        await store.open()
        assert await store.replay() == []
        first = [job(1, unique=b""), job(2, unique=b""), job(3, unique=b"same"),
                 job(4, function=b"g", unique=b"same", priority=0, when=2_000_000_000,
                     reducer=b"red", retries=4),
                 job(5, unique=b"same", priority=2)]
        await store.apply(first, [], [])
        big = [job(n, function=b"f%d" % (n % 3), unique=b"" if n % 2 else b"u", priority=n % 3)
               for n in range(6, 1006)]
        await store.apply(big, [], [])
        assert await store.replay() == first + big
        assert await store.count() == 1005

        # updates (the last count given for a handle wins), deletes, and an add
        # deleted in the same transaction
        await store.apply([job(2000)], [(b"H:pg:2", 1), (b"H:pg:3", 7), (b"H:pg:2", 2)],
                          [b"H:pg:1", b"H:pg:2000", b"H:pg:999", b"H:pg:nope"])
        got = await store.replay()
        assert [j.handle for j in got] == [j.handle for j in first[1:] + big if j.handle != b"H:pg:999"]
        assert (got[0].retries, got[1].retries, got[2].retries) == (2, 7, 4)
        assert got[2] == first[3]  # untouched
        await store.apply([], [], [])  # nothing to do: no transaction at all
        await store.close()

    asyncio.run(main())
    rows = sql_sync(f'SELECT seq, handle, "function", unique_key, priority, when_to_run, reducer, retries '
                    f'FROM "{prefix}jobs" ORDER BY seq LIMIT 3')
    assert [(r["handle"], r["priority"], r["when_to_run"], r["reducer"]) for r in rows] == [
        (b"H:pg:2", 1, 0, b""), (b"H:pg:3", 1, 0, b""), (b"H:pg:4", 0, 2_000_000_000, b"red")]


def test_open_is_idempotent_and_migrates(prefix: str) -> None:
    async def main() -> None:
        store = store_of(url_of(prefix))
        await store.open()
        await store.open()  # again on the same instance: nothing happens
        await store.apply([job(1)], [], [])
        await store.close()
        await store.close()
        await store.open()  # opened again after close
        other = store_of(url_of(prefix))  # a second server's store on the same tables
        await other.open()
        assert [j.handle for j in await other.replay()] == [b"H:pg:1"]
        await other.close()
        await store.close()

    asyncio.run(main())
    assert sql_sync(f'SELECT key, value FROM "{prefix}meta"') == [("schema_version", "2")]
    # a schema from a newer geartrain is refused, with the reason
    sql_sync(f"UPDATE \"{prefix}meta\" SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99 .* newer than this geartrain knows"):
        asyncio.run(store_of(url_of(prefix)).open())
    # a meta table without a version (version 0) is migrated; existing rows are kept
    sql_sync(f'DELETE FROM "{prefix}meta"')

    async def reopen() -> list[StoredJob]:
        store = store_of(url_of(prefix))
        await store.open()
        try:
            return await store.replay()
        finally:
            await store.close()

    assert [j.handle for j in asyncio.run(reopen())] == [b"H:pg:1"]
    assert sql_sync(f'SELECT value FROM "{prefix}meta"') == [("2",)]


def test_concurrent_opens_on_one_prefix(prefix: str) -> None:
    """Two servers creating the same tables at once (advisory lock) both succeed."""
    async def main() -> None:
        stores = [store_of(url_of(prefix)) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        for s in stores:
            await s.close()

    asyncio.run(main())


@pytest.mark.parametrize("bad", ["a-b", "x;drop_table", 'q"q', "sp ace", "é", "p" * 49])
def test_bad_prefix_refused(bad: str) -> None:
    from urllib.parse import quote

    with pytest.raises(StoreError, match="prefix="):
        store_of(f"postgresql://root@127.0.0.1/test?prefix={quote(bad)}")


def test_bad_parameters_refused() -> None:
    with pytest.raises(StoreError, match="unknown URL parameter.*prefx"):
        store_of("postgresql://root@127.0.0.1/test?prefx=a_")
    with pytest.raises(StoreError, match="connect_timeout"):
        store_of("postgresql://root@127.0.0.1/test?connect_timeout=soon")
    with pytest.raises(StoreError, match="connect_timeout"):
        store_of("postgresql://root@127.0.0.1/test?connect_timeout=0")
    store = store_of("postgres://root@127.0.0.1/test?sslmode=disable&application_name=x")
    assert (store.jobs_table, store.meta_table, store.connect_timeout) == ("geartrain_jobs",
                                                                           "geartrain_meta", 2.0)


def test_a_failed_apply_leaves_nothing_and_the_store_goes_on(prefix: str) -> None:
    async def main() -> None:
        store = store_of(url_of(prefix))
        await store.apply([job(1), job(2)], [], [])  # opened lazily
        with pytest.raises(StoreError):  # priority does not fit SMALLINT: the 2nd row fails
            await store.apply([job(3), job(4, priority=70000)], [(b"H:pg:1", 5)], [b"H:pg:2"])
        assert [(j.handle, j.retries) for j in await store.replay()] == [(b"H:pg:1", 0), (b"H:pg:2", 0)]
        await store.apply([job(3)], [(b"H:pg:1", 5)], [b"H:pg:2"])
        assert [(j.handle, j.retries) for j in await store.replay()] == [(b"H:pg:1", 5), (b"H:pg:3", 0)]
        # a handle that is stored already keeps its row (as sqlite's INSERT OR IGNORE)
        await store.apply([job(1, unique=b"other"), job(4)], [], [])
        got = await store.replay()
        assert [(j.handle, j.unique) for j in got] == [(b"H:pg:1", b""), (b"H:pg:3", b""), (b"H:pg:4", b"")]
        await store.close()

    asyncio.run(main())


def test_a_terminated_backend_is_survived_without_an_error(prefix: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Whether the driver noticed the lost connection while idle (the next apply
    reconnects first) or not (the apply fails on the dead socket, reconnects and
    runs once more, inserting with ON CONFLICT DO NOTHING), the caller sees no error
    and nothing is stored twice."""
    name = f"gt-{prefix}"

    def terminate_blocking() -> None:
        # blocks the event loop: asyncpg cannot read the FATAL message and EOF before
        # the next apply writes to the dead socket
        thread = threading.Thread(target=terminate, args=(name,))
        thread.start()
        thread.join()

    async def main() -> None:
        store = store_of(url_of(prefix, application_name=name))
        await store.open()
        await store.apply([job(1)], [], [])
        for round_ in range(2):
            assert await asyncio.to_thread(terminate, name) == 1
            await store.apply([job(10 + round_)], [(b"H:pg:1", round_ + 1)], [])
        for round_ in range(2):
            terminate_blocking()
            assert store._conn is not None and not store._conn.is_closed()  # not noticed yet
            await store.apply([job(20 + round_)], [(b"H:pg:1", round_ + 3)], [b"H:pg:10"])
        terminate_blocking()
        assert [j.handle for j in await store.replay()] == [b"H:pg:1", b"H:pg:11", b"H:pg:20", b"H:pg:21"]
        assert (await store.replay())[0].retries == 4
        await store.close()

    asyncio.run(main())
    assert caplog.text.count("connection lost") == 5, caplog.text


def test_a_timed_out_apply_leaves_nothing(prefix: str) -> None:
    """The committer cancels an apply that takes too long (here: a row locked by
    another session): the connection is dropped, nothing of it is committed, and
    the next apply works on a new connection."""
    async def main() -> None:
        store = store_of(url_of(prefix))
        await store.apply([job(1)], [], [])
        locker = await asyncpg.connect(**PG)
        try:
            locker_tx = locker.transaction()
            await locker_tx.start()
            await locker.execute(f'SELECT 1 FROM "{prefix}jobs" WHERE handle = $1 FOR UPDATE', b"H:pg:1")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.apply([job(2)], [], [b"H:pg:1"]), 0.5)
            assert store._conn is None
            await locker_tx.rollback()
        finally:
            await locker.close()
        await asyncio.wait_for(store.apply([job(3)], [(b"H:pg:1", 1)], []), 5)
        assert [(j.handle, j.retries) for j in await store.replay()] == [(b"H:pg:1", 1), (b"H:pg:3", 0)]
        await store.close()

    asyncio.run(main())


def test_url_forms(prefix: str) -> None:
    """Host and port from libpq's defaults (the Unix socket); ssl parameters reach
    asyncpg (this server has ssl=off, so sslmode=require is refused by it)."""
    async def main() -> None:
        for url in (f"postgresql://root@/test?prefix={prefix}",
                    f"postgres://127.0.0.1/test?prefix={prefix}&sslmode=disable"):
            store = store_of(url)
            await store.open()
            await store.apply([job(len(url))], [], [])
            await store.close()
        with pytest.raises(StoreError, match="rejected SSL upgrade"):
            await store_of(f"postgresql://root@127.0.0.1/test?prefix={prefix}&sslmode=require").open()
        with pytest.raises(StoreError, match="sslmode"):
            await store_of(f"postgresql://root@127.0.0.1/test?prefix={prefix}&sslmode=bogus").open()

    if sql_sync("SHOW ssl")[0][0] != "off":
        pytest.skip("this PostgreSQL has ssl on")
    asyncio.run(main())
    assert sql_sync(f'SELECT count(*) FROM "{prefix}jobs"')[0][0] == 2


def test_a_dead_server_fails_promptly(tmp_path: Path) -> None:
    """Nothing listening: refused at once. Listening but silent: connect_timeout.
    The password never shows in the error."""
    port = process.free_port()
    store = store_of(f"postgresql://root:hunter2-pw@127.0.0.1:{port}/test")
    started = time.monotonic()
    with pytest.raises(StoreError) as refused:
        asyncio.run(store.apply([job(1)], [], []))
    assert time.monotonic() - started < 1.0
    assert "hunter2-pw" not in str(refused.value) and "127.0.0.1" in str(refused.value)

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever answers
    try:
        store = store_of(f"postgresql://root:hunter2-pw@127.0.0.1:{silent.getsockname()[1]}/test"
                         "?connect_timeout=0.5")
        started = time.monotonic()
        with pytest.raises(StoreError, match="no answer within 0.5s") as hung:
            asyncio.run(store.open())
        assert 0.4 < time.monotonic() - started < 2.0
        assert "hunter2-pw" not in str(hung.value)
    finally:
        silent.close()


# ---------------------------------------------------------------- passwords reach the driver


class FakePostgres:
    """Speaks just enough of the PostgreSQL protocol to ask for a cleartext
    password, records it, and refuses the login."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.logins: list[tuple[str, str, str | None]] = []  # (user, database, password)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self._login(conn)
                except (OSError, struct.error):
                    pass

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _login(self, conn: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!ii", self._read(conn, 8))
            body = self._read(conn, length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                conn.sendall(b"N")
                continue
            break
        fields = body.split(b"\0")
        params = dict(zip(fields[0::2], fields[1::2], strict=False))
        user = params.get(b"user", b"").decode()
        database = params.get(b"database", b"").decode()
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        password: str | None = None
        try:
            kind = self._read(conn, 1)
            if kind == b"p":
                (length,) = struct.unpack("!i", self._read(conn, 4))
                password = self._read(conn, length - 4).rstrip(b"\0").decode()
        except OSError:
            pass
        self.logins.append((user, database, password))
        message = f'password authentication failed for user "{user}"'.encode()
        fields_out = b"SFATAL\0VFATAL\0C28P01\0M" + message + b"\0\0"
        conn.sendall(b"E" + struct.pack("!i", 4 + len(fields_out)) + fields_out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def fake_pg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakePostgres]:
    for var in ("PGPASSWORD", "PGPASSFILE", "PGUSER", "PGHOST", "PGSSLMODE", "GEARTRAIN_STORE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass of the machine's user
    server = FakePostgres()
    yield server
    server.close()


def test_the_store_sends_the_password_it_is_given(fake_pg: FakePostgres, tmp_path: Path) -> None:
    url = parse_store_url(f"postgresql://gtuser@127.0.0.1:{fake_pg.port}/gtdb")
    url.password = "pw from the server's config"  # as ServerConfig.store_url() fills it in
    with pytest.raises(StoreError, match='password authentication failed for user "gtuser"') as exc:
        asyncio.run(create_store(url).open())
    assert "pw from" not in str(exc.value)
    assert fake_pg.logins == [("gtuser", "gtdb", "pw from the server's config")]

    # no password given: asyncpg's own sources, here ~/.pgpass in $HOME
    pgpass = tmp_path / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{fake_pg.port}:gtdb:gtuser:from pgpass\n")
    pgpass.chmod(0o600)
    with pytest.raises(StoreError):
        asyncio.run(store_of(f"postgresql://gtuser@127.0.0.1:{fake_pg.port}/gtdb").open())
    assert fake_pg.logins[-1] == ("gtuser", "gtdb", "from pgpass")

    # ?passfile= (passed through to asyncpg) names another one
    other = tmp_path / "other.pgpass"
    other.write_text("*:*:*:gtuser:from passfile\n")
    other.chmod(0o600)
    with pytest.raises(StoreError):
        asyncio.run(store_of(f"postgresql://gtuser@127.0.0.1:{fake_pg.port}/gtdb?passfile={other}").open())
    assert fake_pg.logins[-1] == ("gtuser", "gtdb", "from passfile")


def start_failing(*args: str, workdir: Path) -> tuple[int, str]:
    """A server that must exit during start-up: (exit code, its log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    srv = process.geartrain(*args, workdir=workdir).start(wait=False)
    try:
        code = srv.wait(15)
    finally:
        srv.stop()
    return code, srv.log()


def test_the_server_passes_each_password_source_to_the_driver(
        fake_pg: FakePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = f"postgresql://gtuser@127.0.0.1:{fake_pg.port}/gtdb?prefix=gtpw_"

    monkeypatch.setenv("GEARTRAIN_STORE_PASSWORD", "pw-from-env")
    code, log = start_failing("--store", store, workdir=tmp_path / "env")
    assert code == 1
    assert fake_pg.logins[-1] == ("gtuser", "gtdb", "pw-from-env")
    assert 'cannot use the store: postgresql://gtuser:***@127.0.0.1' in log
    assert 'password authentication failed for user "gtuser"' in log
    assert "pw-from-env" not in log and "Traceback" not in log
    monkeypatch.delenv("GEARTRAIN_STORE_PASSWORD")

    secret = tmp_path / "store-password"
    secret.write_text("pw-from-file\n")
    secret.chmod(0o600)
    code, log = start_failing("--store", store, "--store-password-file", str(secret),
                              workdir=tmp_path / "file")
    assert code == 1
    assert fake_pg.logins[-1] == ("gtuser", "gtdb", "pw-from-file")
    assert "pw-from-file" not in log and "Traceback" not in log

    pgpass = tmp_path / ".pgpass"  # HOME is tmp_path
    pgpass.write_text(f"*:{fake_pg.port}:gtdb:gtuser:pw-from-pgpass\n")
    pgpass.chmod(0o600)
    code, log = start_failing("--store", store, workdir=tmp_path / "pgpass")
    assert code == 1
    assert fake_pg.logins[-1] == ("gtuser", "gtdb", "pw-from-pgpass")
    assert "pw-from-pgpass" not in log and "Traceback" not in log
    assert len(fake_pg.logins) == 3


def test_a_password_file_others_may_read_is_refused_at_start(fake_pg: FakePostgres, tmp_path: Path) -> None:
    secret = tmp_path / "store-password"
    secret.write_text("pw-readable\n")
    secret.chmod(0o644)
    code, log = start_failing("--store", f"postgresql://gtuser@127.0.0.1:{fake_pg.port}/gtdb",
                              "--store-password-file", str(secret), workdir=tmp_path / "srv")
    assert code != 0
    assert fake_pg.logins == []  # refused before any connection
    assert "other users may read it (mode 644); run: chmod 600" in log
    assert "pw-readable" not in log
    assert "Traceback" not in log, log


def test_a_password_in_the_url_is_warned_about_and_hidden(prefix: str, tmp_path: Path) -> None:
    """Trust auth accepts it; the server warns, never logs it, and rewrites its
    command line once started."""
    password = "url-pw-" + uuid.uuid4().hex[:8]
    srv = process.geartrain("--store", url_of(prefix, auth=f"root:{password}"), workdir=tmp_path).start()
    try:
        with Wire(srv.address) as w:
            w.send("SUBMIT_JOB_BG", "pg.pw", b"", b"x")
            w.expect("JOB_CREATED")
        cmdline = Path(f"/proc/{srv.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        assert b"root:***@127.0.0.1" in cmdline
    finally:
        srv.stop()
    log = srv.log()
    assert "the store password is on the command line" in log
    assert password not in log
    assert f"store: postgresql://root:***@127.0.0.1:5432/test?prefix={prefix}" in log
    assert "Traceback" not in log


def test_a_role_with_a_password_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-superuser from the URL, its password from GEARTRAIN_STORE_PASSWORD: the
    tables are created by and belong to that role (in its own schema). Its
    synchronous_commit=off is warned about."""
    require_service("postgresql")
    role = f"gtrole{uuid.uuid4().hex[:10]}"
    sql_sync(f"CREATE ROLE {role} LOGIN PASSWORD 'role-pw'")
    try:
        sql_sync(f"CREATE SCHEMA AUTHORIZATION {role}")  # "$user" comes first in search_path
        sql_sync(f"ALTER ROLE {role} SET synchronous_commit = off")  # worth a warning
        monkeypatch.setenv("GEARTRAIN_STORE_PASSWORD", "role-pw")
        srv = process.geartrain("--store", f"postgresql://{role}@127.0.0.1:5432/test?prefix=gt_",
                                workdir=tmp_path).start()
        try:
            with Wire(srv.address) as w:
                w.send("SUBMIT_JOB_BG", "pg.role", b"", b"x")
                w.expect("JOB_CREATED")
            rows = sql_sync("SELECT schemaname, tableowner FROM pg_tables WHERE tablename = 'gt_jobs' "
                            "AND schemaname = $1", role)
            assert [tuple(r) for r in rows] == [(role, role)]
            assert sql_sync(f'SELECT count(*) FROM "{role}".gt_jobs')[0][0] == 1
        finally:
            srv.stop()
        assert "role-pw" not in srv.log()
        assert "PostgreSQL runs with synchronous_commit=off" in srv.log()
    finally:
        sql_sync(f"DROP SCHEMA IF EXISTS {role} CASCADE")
        sql_sync(f"DROP ROLE {role}")


# ---------------------------------------------------------------- a real server on PostgreSQL


def start_server(prefix: str, workdir: Path, *args: str, name: str = "geartrain") -> process.ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return process.geartrain("--store", url_of(prefix, application_name=name), "--job-handle-prefix", "H:pg",
                             *args, workdir=workdir).start()


def show_jobs(address: tuple[str, int]) -> dict[bytes, int]:
    """`show jobs`: handle -> retries."""
    out = {}
    for line in admin(address, "show jobs")[0].splitlines():
        cols = line.split(b"\t")
        if len(cols) == 4:
            out[cols[0]] = int(cols[1])
    return out


def created(w: Wire, ptype: str, *args: bytes | str) -> bytes:
    w.send(ptype, *args)
    return w.expect("JOB_CREATED")[0]


def number(handle: bytes) -> int:
    return int(handle.rpartition(b":")[2])


def kill(srv: process.ServerProcess) -> None:
    srv.signal(signal.SIGKILL)
    srv.wait(10)


def test_background_jobs_survive_sigkill(prefix: str, tmp_path: Path) -> None:
    srv = start_server(prefix, tmp_path / "run1")
    far = int(time.time()) + 3600
    with Wire(srv.address) as w:
        low = created(w, "SUBMIT_JOB_LOW_BG", "pg.f", b"same", b"low data")
        empty1 = created(w, "SUBMIT_JOB_BG", "pg.f", b"", b"empty one")
        high = created(w, "SUBMIT_JOB_HIGH_BG", "pg.f", b"u-high", b"high \0 data")
        empty2 = created(w, "SUBMIT_JOB_BG", "pg.f", b"", b"empty two")
        same = created(w, "SUBMIT_JOB_BG", "pg.g", b"same", b"same unique, other function")
        epoch = created(w, "SUBMIT_JOB_EPOCH", "pg.f", b"u-epoch", str(far), b"epoch data")
        reduce = created(w, "SUBMIT_REDUCE_JOB_BACKGROUND", "pg.f", b"u-red", b"the.reducer", b"",
                         b"reduce data")
        retried = created(w, "SUBMIT_JOB_BG", "pg.r", b"u-retry", b"retry data")
    worker = Wire(srv.address)  # runs pg.r and disconnects: one retry, written to the store
    worker.send("CAN_DO", "pg.r")
    worker.send("GRAB_JOB")
    assert worker.expect("JOB_ASSIGN")[0] == retried
    worker.close()
    end = time.monotonic() + 5
    while sql_sync(f'SELECT retries FROM "{prefix}jobs" WHERE handle = $1', retried)[0][0] != 1:
        assert time.monotonic() < end, "the retry count never reached the store"
        time.sleep(0.02)
    kill(srv)

    srv = start_server(prefix, tmp_path / "run2")
    try:
        handles = [low, empty1, high, empty2, same, epoch, reduce, retried]
        assert show_jobs(srv.address) == {h: int(h == retried) for h in handles}
        assert "replayed 8 job(s)" in srv.log()
        got = []
        with Wire(srv.address) as wk:
            for f in ("pg.f", "pg.g", "pg.r"):  # one function after the other
                wk.send("CAN_DO", f)
                while True:
                    wk.send("GRAB_JOB_ALL")
                    name, args = wk.recv()
                    if name == "NO_JOB":
                        break
                    if name == "JOB_ASSIGN_UNIQ":  # no reducer: gearmand sends this one
                        args.insert(3, b"")
                    else:
                        assert name == "JOB_ASSIGN_ALL", (name, args)
                    got.append(tuple(args))
                    wk.send("WORK_COMPLETE", args[0], b"")
        assert got == [
            (high, b"pg.f", b"u-high", b"", b"high \0 data"),
            (empty1, b"pg.f", b"", b"", b"empty one"),
            (empty2, b"pg.f", b"", b"", b"empty two"),
            (reduce, b"pg.f", b"u-red", b"the.reducer", b"reduce data"),
            (low, b"pg.f", b"same", b"", b"low data"),
            (same, b"pg.g", b"same", b"", b"same unique, other function"),
            (retried, b"pg.r", b"u-retry", b"", b"retry data"),
        ]
        assert show_jobs(srv.address) == {epoch: 0}  # not due yet: its run-at time came back
        with Wire(srv.address) as w:  # new handles continue after the replayed ones
            assert created(w, "SUBMIT_JOB_BG", "pg.f", b"", b"new") == b"H:pg:%d" % (number(retried) + 1)
        end = time.monotonic() + 5
        while [r[0] for r in sql_sync(f'SELECT handle FROM "{prefix}jobs" ORDER BY seq')] != [
                epoch, b"H:pg:%d" % (number(retried) + 1)]:
            assert time.monotonic() < end, "completed jobs were never deleted"
            time.sleep(0.02)
        assert sql_sync(f'SELECT when_to_run, priority FROM "{prefix}jobs" WHERE handle = $1',
                        epoch)[0] == (far, 1)
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_the_server_survives_terminated_backends(prefix: str, tmp_path: Path) -> None:
    """Defined behaviour: when the backend was terminated while idle, the next
    transaction reconnects and runs once more, so no submit gets an error. When
    backends are terminated again and again under load, a submit may get
    ERROR QUEUE_ERROR (its job is not created), but every JOB_CREATED job is stored."""
    name = f"gt-{prefix}"
    srv = start_server(prefix, tmp_path / "run1", name=name)
    try:
        _terminated_backends(srv, name, prefix, tmp_path)
    finally:
        if srv.alive():  # a failed assertion must not leave the server running
            kill(srv)


def _terminated_backends(srv: process.ServerProcess, name: str, prefix: str, tmp_path: Path) -> None:
    acknowledged: list[bytes] = []
    with Wire(srv.address) as w:
        acknowledged.append(created(w, "SUBMIT_JOB_BG", "pg.t", b"", b"before"))
        for i in range(3):
            assert terminate(name) == 1
            for k in range(5):  # no QUEUE_ERROR at all
                acknowledged.append(created(w, "SUBMIT_JOB_BG", "pg.t", b"", b"after %d.%d" % (i, k)))
    assert srv.log().count("connection lost") >= 3

    # under load: 4 connections x 15 waves of 100 pipelined submits while backends keep
    # being terminated
    errors: list[bytes] = []
    stop = threading.Event()
    kills: list[int] = []
    sent: list[int] = []

    def killer() -> None:
        while not stop.wait(0.04):
            kills.append(terminate(name))

    def client(n: int) -> None:
        deadline = time.monotonic() + 15
        with Wire(srv.address, timeout=20) as c:
            wave = 0
            # at least 15 waves, and on until backends were terminated three times meanwhile
            while wave < 15 or (sum(kills) < 3 and time.monotonic() < deadline):
                c.sendraw(b"".join(_packet("SUBMIT_JOB_BG", b"pg.t", b"", b"load %d.%d.%d" % (n, wave, i))
                                   for i in range(100)))
                for _ in range(100):
                    kind, args = c.recv()
                    if kind == "JOB_CREATED":
                        acknowledged.append(args[0])
                    else:
                        assert (kind, args[0]) == ("ERROR", b"QUEUE_ERROR"), (kind, args)
                        errors.append(args[1])
                wave += 1
            sent.append(wave * 100)

    chaos = threading.Thread(target=killer)
    chaos.start()
    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    started = time.monotonic()
    for t in clients:
        t.start()
    for t in clients:
        t.join(30)
    took = time.monotonic() - started
    stop.set()
    chaos.join(5)
    assert took < 25 and sum(kills) >= 3
    assert len(sent) == 4 and len(acknowledged) + len(errors) == 16 + sum(sent)
    assert all(e.startswith(b"postgresql store unavailable: ") for e in errors), errors[:3]
    with Wire(srv.address) as w:  # and afterwards it just works
        acknowledged.append(created(w, "SUBMIT_JOB_BG", "pg.t", b"", b"at the end"))
    kill(srv)

    stored = {r[0] for r in sql_sync(f'SELECT handle FROM "{prefix}jobs"')}
    assert set(acknowledged) <= stored, "a job got JOB_CREATED but is not stored"
    srv = start_server(prefix, tmp_path / "run2")
    try:
        assert set(acknowledged) <= set(show_jobs(srv.address))
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def _packet(ptype: str, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return REQ + len_header(PacketType[ptype], body) + body


def test_a_server_whose_database_is_unreachable_exits_promptly(tmp_path: Path) -> None:
    port = process.free_port()
    started = time.monotonic()
    code, log = start_failing("--store", f"postgresql://root@127.0.0.1:{port}/test", workdir=tmp_path)
    assert code == 1
    assert time.monotonic() - started < 8
    assert f"cannot use the store: postgresql://root@127.0.0.1:{port}/test: cannot connect: " in log
    assert "Traceback" not in log
