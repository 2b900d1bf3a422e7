"""MariaDB / MySQL store: one aiomysql connection that reconnects by itself.

``mysql://user@host:3306/db?prefix=geartrain_`` (``mariadb://`` too). The
tables are ``{prefix}jobs``, ``{prefix}results`` (the kept results of ended
jobs, since schema version 2) and ``{prefix}meta`` (the schema version), all
InnoDB, in the URL's database; the server creates and migrates them under a
``GET_LOCK`` so that two servers starting at once do not race. One server per
prefix: two servers on the same tables would delete each other's jobs.

URL parameters: ``prefix`` (``[A-Za-z0-9_]``, at most 48 characters),
``connect_timeout`` (seconds, default 2), ``socket`` (a Unix socket path
instead of TCP) and ``read_default_file`` (the option file read when no
password is given, default ``~/.my.cnf``). Anything else is refused, so that a
typo does not go unnoticed.

Passwords: the URL's, else the one the server found (GEARTRAIN_STORE_PASSWORD,
the config file, --store-password-file), else the ``[client]`` group of
``~/.my.cnf``. That file is read the way PyMySQL's ``read_default_file`` reads
it (quotes removed, ``_`` and ``-`` alike) and with PyMySQL's precedence: it
only fills what the URL leaves out (user, password, host, port, socket,
database). aiomysql's own ``read_default_file`` is not used: it lets the file
override the URL's host and user and keeps quotes around passwords.

The committer runs one ``apply()`` at a time, so one connection is enough.
Each ``apply()`` is one transaction: new jobs in multi-row INSERTs of up to
4 MiB, retry counts in one ``UPDATE ... WHERE handle IN (...)`` per count,
finished jobs in ``DELETE ... WHERE handle IN (...)`` chunks, kept results in
multi-row ``REPLACE`` statements and forgotten ones in ``DELETE`` chunks; a single
statement runs on its own (autocommit makes it atomic) and saves the BEGIN and
COMMIT round trips. Values are written as hex literals (``X'...'``), never
bound by aiomysql (0.3 cannot bind ``bytes`` with PyMySQL 1.2), so a
statement's size is known before it is sent: a job too big for the server's
``max_allowed_packet`` (its data may be at most about half of it) fails its
``apply()`` with a message saying so, and nothing is sent. A kept result too big
for ``max_allowed_packet`` (its JSON record may be at most about half of it) is
left out of the transaction with a warning and the rest is applied: the result
is lost to a restart, but it can never hold up the jobs that share its batch.

When the connection was lost (the database restarted, ``KILL``,
``wait_timeout``) the operation that notices it reconnects and runs once more;
inserts use ``ON DUPLICATE KEY UPDATE`` as a no-op, so a transaction whose
COMMIT did reach the database is not applied twice, and the caller sees no
error. A database that cannot be reached fails within ``connect_timeout``
(the whole connect and handshake, not only the TCP part). A failed
``apply()`` leaves nothing applied (except when the connection broke during
COMMIT itself: then the database alone knows, and the jobs may come back at
the next start). The password never appears in messages or logs.
"""

from __future__ import annotations

import asyncio
import configparser
import hashlib
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiomysql  # type: ignore[import-untyped]  # aiomysql ships no type hints
import pymysql  # type: ignore[import-untyped]  # nor does PyMySQL
from pymysql.optionfile import Parser as OptionFileParser  # type: ignore[import-untyped]

from geartrain.results import JobResult
from geartrain.server.stores.base import (
    RejectedJobs,
    Store,
    StoredJob,
    StoreError,
    result_row,
)
from geartrain.server.stores.url import StoreURL

log = logging.getLogger("geartrain.server")

T = TypeVar("T")

SCHEMA_VERSION = 2
DEFAULT_PREFIX = "geartrain_"
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_OPTION_FILE = "~/.my.cnf"
OWN_PARAMS = ("prefix", "connect_timeout", "socket", "read_default_file")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_]{1,48}")

#: the session's sql_mode, whatever the server's default: errors instead of silent
#: truncation, InnoDB or nothing, no ANSI_QUOTES or other surprises
SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
#: largest statement built (smaller still when max_allowed_packet is smaller)
MAX_STATEMENT = 4 << 20
#: room left in max_allowed_packet for the packet's command byte and such
PACKET_SLACK = 1024
HANDLES_PER_STATEMENT = 1000
#: seconds open() waits for another server migrating the same tables
MIGRATION_LOCK_WAIT = 10

META_TABLE = """CREATE TABLE IF NOT EXISTS {meta} (
    `name`  VARCHAR(64) NOT NULL PRIMARY KEY,
    `value` BIGINT NOT NULL
) ENGINE=InnoDB"""

#: schema version -> statements taking the previous version to it ({jobs},
#: {results}, {meta}: quoted names). DDL commits implicitly, so each statement
#: must be idempotent.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS {jobs} (
            `seq`         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
            `handle`      VARBINARY(255) NOT NULL,
            `function`    BLOB NOT NULL,
            `unique_key`  BLOB NOT NULL,
            `priority`    TINYINT NOT NULL,
            `data`        LONGBLOB NOT NULL,
            `when_to_run` BIGINT NOT NULL DEFAULT 0,
            `reducer`     BLOB NOT NULL,
            `retries`     INT NOT NULL DEFAULT 0,
            PRIMARY KEY (`seq`),
            UNIQUE KEY `handle` (`handle`)
        ) ENGINE=InnoDB""",
    ],
    2: [
        # the results of ended jobs (geartrain.results; `record` is its JSON);
        # LONG* columns: no value of a result can be "too long" for its column
        """CREATE TABLE IF NOT EXISTS {results} (
            `handle`      VARBINARY(255) NOT NULL,
            `function`    LONGBLOB NOT NULL,
            `unique_key`  LONGBLOB NOT NULL,
            `state`       VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            `finished`    DOUBLE NOT NULL,
            `record`      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            PRIMARY KEY (`handle`)
        ) ENGINE=InnoDB""",
    ],
}

COLUMNS = ("handle", "function", "unique_key", "priority", "data", "when_to_run", "reducer", "retries")
RESULT_COLUMNS = ("handle", "function", "unique_key", "state", "finished", "record")
#: the widths of the results table's bounded columns (bytes; `state` in characters)
RESULT_HANDLE_MAX = 255
RESULT_STATE_MAX = 32

#: client and server error codes that mean the connection is gone
_LOST_CODES = frozenset({
    2002, 2003,  # CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR
    2006, 2013, 2055,  # server gone away, lost connection during query
    1053, 1077,  # server shutdown in progress, normal shutdown
    1927,  # MariaDB ER_CONNECTION_KILLED
    4031,  # MySQL 8 ER_CLIENT_INTERACTION_TIMEOUT (wait_timeout)
})
_PACKET_TOO_LARGE = 1153  # the server drops the connection after it
_DEADLOCK = 1213  # InnoDB rolled the transaction back: running it again is safe


def _hex(value: bytes) -> str:
    return "X'" + value.hex() + "'"


def _double(value: float) -> str:
    """A DOUBLE literal (a time that is not a finite number is stored as 0)."""
    value = float(value)
    return repr(value) if math.isfinite(value) else "0"


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def read_option_file(path: str, group: str = "client") -> dict[str, str]:
    """The options of *group* in a MySQL option file as PyMySQL's
    ``read_default_file`` reads them ({} if the file is missing or unreadable),
    except that ``!include`` lines are skipped instead of refused.
    Raises StoreError for a file that is not an option file, without quoting
    any of its lines (one may hold the password)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise StoreError(f"{path} is not a MySQL option file (not UTF-8)") from None
    except OSError:
        return {}
    # !include and !includedir are not followed (blanked, so line numbers stay)
    text = "\n".join("" if line.lstrip().startswith("!") else line for line in text.split("\n"))
    parser = OptionFileParser(strict=False)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        lines = sorted({n for n, _ in getattr(exc, "errors", [])} |
                       ({exc.lineno} if isinstance(exc, configparser.MissingSectionHeaderError) else set()))
        where = f" (line {', '.join(map(str, lines))})" if lines else ""
        raise StoreError(f"{path} is not a MySQL option file{where}") from None
    if not parser.has_section(group):
        return {}
    out: dict[str, str] = {}
    for key in parser.options(group):
        value = parser.get(group, key)
        if value is not None:
            out[key] = value
    return out


class MySQLStore(Store):
    scheme = "mysql"

    def __init__(self, url: StoreURL) -> None:
        super().__init__(url)
        unknown = sorted(set(url.params) - set(OWN_PARAMS))
        if unknown:
            raise StoreError(f"mysql store: unknown URL parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(OWN_PARAMS)}")
        self.prefix = url.params.get("prefix", DEFAULT_PREFIX)
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise StoreError(f"mysql store: prefix={self.prefix!r}: use 1 to 48 letters, digits "
                             "or underscores")
        try:
            self.connect_timeout = float(url.params.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        except ValueError:
            raise StoreError("mysql store: connect_timeout must be a number of seconds") from None
        if not 0 < self.connect_timeout <= 3600:
            raise StoreError("mysql store: connect_timeout must be > 0 (seconds)")
        self.jobs_table = f"`{self.prefix}jobs`"
        self.meta_table = f"`{self.prefix}meta`"
        self.results_table = f"`{self.prefix}results`"
        self._insert_head = (f"INSERT INTO {self.jobs_table} ("
                             + ",".join(f"`{c}`" for c in COLUMNS) + ") VALUES ")
        # a no-op on a handle already stored: keeps the first row, like the
        # other stores, and makes running a transaction again harmless
        self._insert_tail = " ON DUPLICATE KEY UPDATE `seq` = `seq`"
        # REPLACE: a result kept again under its handle replaces the old one
        # (a later row of the same statement wins), and running it again is harmless
        self._result_head = (f"REPLACE INTO {self.results_table} ("
                             + ",".join(f"`{c}`" for c in RESULT_COLUMNS) + ") VALUES ")
        self._settings: dict[str, Any] | None = None
        self._password = ""
        self._conn: Any = None
        self._lock = asyncio.Lock()
        #: of the current connection (tests KILL it)
        self.connection_id: int | None = None
        self.max_allowed_packet = 0

    # ------------------------------------------------------------ connecting

    def _resolve(self) -> dict[str, Any]:
        """Where to connect and as whom: the URL, then (without a password) the option file."""
        url = self.url
        user = url.user or None
        password = url.password
        host = url.host or None
        port = url.port
        socket_path = url.params.get("socket")
        database = url.database or None
        if password is None:
            given = url.params.get("read_default_file")
            path = os.path.expanduser(given or DEFAULT_OPTION_FILE)
            if given and not os.path.exists(path):
                raise StoreError(f"mysql store: read_default_file {path} does not exist")
            options = read_option_file(path)
            password = options.get("password", "")
            user = user or options.get("user")
            host = host or options.get("host")
            socket_path = socket_path or options.get("socket")
            database = database or options.get("database")
            if port is None and options.get("port"):
                try:
                    port = int(options["port"])
                except ValueError:
                    raise StoreError(f"{path}: port {options['port']!r} is not a number") from None
        if not database:
            raise StoreError("mysql store: the URL needs a database: mysql://user@host/DATABASE")
        self._password = password
        return {"host": host or "localhost", "port": port or 3306, "user": user,
                "db": database, "unix_socket": socket_path}

    def _target(self) -> str:
        s = self._settings
        if s is None:
            return "mysql"
        where = s["unix_socket"] or f"{s['host']}:{s['port']}"
        return f"mysql {(s['user'] + '@') if s['user'] else ''}{where}/{s['db']}"

    def _explain(self, exc: BaseException) -> str:
        """An error as one line for messages, without the password."""
        if isinstance(exc, TimeoutError):
            text = f"no answer within {self.connect_timeout:g}s"
        elif isinstance(exc, pymysql.err.Error) and len(exc.args) >= 2:
            text = f"{exc.args[1]} (error {exc.args[0]})"
            cause = exc.__cause__
            if isinstance(cause, TimeoutError):
                text += f": no answer within {self.connect_timeout:g}s"
            elif isinstance(cause, OSError):  # asyncio's strerror is "Connect call failed (...)"
                text += f": {os.strerror(cause.errno) if cause.errno else cause}"
        else:
            text = str(exc) or type(exc).__name__
        text = text.splitlines()[0] if text else type(exc).__name__
        if self._password and self._password in text:
            text = text.replace(self._password, "***")
        return text

    async def _connect(self) -> Any:
        assert self._settings is not None
        conn = aiomysql.Connection(
            # aiomysql sends str.encode("latin-1"): hand it the UTF-8 bytes as latin-1
            # text, so a non-ASCII password works as with the mysql client
            password=self._password.encode("utf-8").decode("latin-1"), charset="utf8mb4",
            autocommit=True,
            connect_timeout=self.connect_timeout, program_name="geartrain", **self._settings)
        try:
            # connect_timeout alone covers the TCP connect, not a server that
            # accepts and then says nothing: bound the handshake too
            async with asyncio.timeout(self.connect_timeout):
                await conn.ping(reconnect=True)  # connects (it is not yet)
                cur = await conn.cursor()
                # sql_notes: no "table already exists" notes (aiomysql makes them Python warnings)
                await cur.execute(f"SET SESSION sql_mode = '{SQL_MODE}', sql_notes = 0")
                await cur.execute("SELECT CONNECTION_ID(), @@max_allowed_packet")
                connection_id, max_packet = await cur.fetchone()
                await cur.close()
        except BaseException:
            conn.close()
            raise
        self.connection_id = int(connection_id)
        self.max_allowed_packet = int(max_packet)
        log.debug("store %s: connected (connection %d, max_allowed_packet %d)", self.describe(),
                  self.connection_id, self.max_allowed_packet)
        return conn

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        if self._settings is None:
            raise StoreError("mysql store is not open")
        try:
            self._conn = await self._connect()
        except (pymysql.err.Error, OSError) as exc:  # OSError: TimeoutError included
            raise StoreError(f"{self._target()}: {self._explain(exc)}") from None
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.connection_id = None
        if conn is not None:
            conn.close()

    async def _run(self, what: str, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run *op* on the connection; once more on a new connection when the
        one it had turned out to be lost. Raises StoreError."""
        async with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None and not self._conn.closed
                conn = await self._connection()
                try:
                    return await op(conn)
                except pymysql.err.Error as exc:
                    code = _code(exc)
                    lost = (conn.closed or code in _LOST_CODES or code == _PACKET_TOO_LARGE
                            or isinstance(exc, (pymysql.err.InterfaceError, pymysql.err.InternalError)))
                    if lost:
                        self._drop()
                    else:
                        try:
                            await conn.rollback()
                        except BaseException as failed:  # cancelled included: drop it then
                            self._drop()
                            if not isinstance(failed, Exception):
                                raise
                    again = (lost and reused and code != _PACKET_TOO_LARGE) or code == _DEADLOCK
                    if attempt == 1 and again:
                        log.warning("store %s: %s; running the %s again%s", self.describe(),
                                    self._explain(exc), what, " on a new connection" if lost else "")
                        continue
                    raise StoreError(f"{self._target()}: {what} failed: {self._explain(exc)}") from None
                except StoreError:
                    raise
                except BaseException:  # cancelled (the committer's timeout) mid-statement
                    self._drop()
                    raise
            raise AssertionError("unreachable")

    # ------------------------------------------------------------ the verbs

    async def open(self) -> None:
        self._settings = self._resolve()
        try:
            await self._run("open", self._migrate)
        except BaseException:
            self._drop()
            raise

    async def _migrate(self, conn: Any) -> None:
        assert self._settings is not None
        cur = await conn.cursor()
        # at most 64 characters whatever the database and prefix
        lock = "geartrain-" + hashlib.sha1(f"{self._settings['db']}.{self.prefix}".encode()).hexdigest()
        await cur.execute(f"SELECT GET_LOCK('{lock}', {MIGRATION_LOCK_WAIT})")
        (got,) = await cur.fetchone()
        if got != 1:
            raise StoreError(f"{self._target()}: another server has been creating the tables "
                             f"{self.prefix}* for {MIGRATION_LOCK_WAIT}s")
        try:
            names = {"jobs": self.jobs_table, "results": self.results_table, "meta": self.meta_table}
            await cur.execute(META_TABLE.format(**names))
            await cur.execute(f"SELECT `value` FROM {self.meta_table} WHERE `name` = 'schema_version'")
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self._target()}: tables {self.prefix}* have schema version "
                                 f"{version}, newer than this geartrain knows ({SCHEMA_VERSION}); "
                                 "upgrade geartrain")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    await cur.execute(statement.format(**names))
                await cur.execute(f"INSERT INTO {self.meta_table} (`name`, `value`) VALUES "
                                  f"('schema_version', {target}) ON DUPLICATE KEY UPDATE "
                                  f"`value` = {target}")
                log.info("store %s: tables %s* at schema version %d", self.describe(), self.prefix,
                         target)
            await cur.execute(
                "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                f"DATABASE() AND TABLE_NAME IN ('{self.prefix}jobs', '{self.prefix}results') "
                "ORDER BY TABLE_NAME")
            for table, found in await cur.fetchall():
                engine = str(found) if found is not None else ""
                if engine and engine.lower() != "innodb":  # say, created by hand with MyISAM
                    raise StoreError(f"{self._target()}: table {table} uses the {engine} "
                                     "engine, not InnoDB: its transactions would not be atomic")
        finally:
            if not conn.closed:
                await cur.execute(f"SELECT RELEASE_LOCK('{lock}')")
                await cur.fetchall()
            await cur.close()

    async def replay(self) -> list[StoredJob]:
        return await self._run("replay", self._replay)

    async def _replay(self, conn: Any) -> list[StoredJob]:
        cur = await conn.cursor()
        await cur.execute("SELECT " + ",".join(f"`{c}`" for c in (
            "handle", "function", "unique_key", "data", "priority", "when_to_run", "reducer", "retries"))
            + f" FROM {self.jobs_table} ORDER BY `seq`")
        rows = await cur.fetchall()
        await cur.close()
        return [StoredJob(bytes(h), bytes(f), bytes(u), bytes(d), int(p), int(w), bytes(r), int(n))
                for h, f, u, d, p, w, r, n in rows]

    async def count(self) -> int:
        async def op(conn: Any) -> int:
            cur = await conn.cursor()
            await cur.execute(f"SELECT COUNT(*) FROM {self.jobs_table}")
            (n,) = await cur.fetchone()
            await cur.close()
            return int(n)
        return await self._run("count", op)

    async def load_results(self) -> list[JobResult]:
        async def op(conn: Any) -> list[tuple[Any, ...]]:
            cur = await conn.cursor()
            await cur.execute("SELECT `handle`, `function`, `unique_key`, `record` "
                              f"FROM {self.results_table} ORDER BY `finished`, `handle`")
            rows = await cur.fetchall()
            await cur.close()
            return list(rows)

        return self._results_from_rows(await self._run("load_results", op))

    async def apply(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes], results: Sequence[JobResult] = (),
                    result_drops: Sequence[bytes] = ()) -> None:
        if not (adds or updates or dones or results or result_drops):
            return
        # the JSON of each result once, not on every attempt
        rows = [result_row(r) for r in {r.handle: r for r in results}.values()]

        async def op(conn: Any) -> None:
            # built on every attempt: a new connection may have another max_allowed_packet
            statements = self._statements(adds, updates, dones, rows, result_drops)
            if not statements:  # only results that can never be stored
                return
            cur = await conn.cursor()
            if len(statements) == 1:  # one statement is a transaction by itself
                await cur.execute(statements[0])
            else:
                await conn.begin()
                for statement in statements:
                    await cur.execute(statement)
                await conn.commit()
            await cur.close()

        await self._run("apply", op)

    def _statements(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes],
                    results: Sequence[tuple[bytes, bytes, bytes, str, float, str]] = (),
                    result_drops: Sequence[bytes] = ()) -> list[str]:
        """The SQL of one apply(), each statement within max_allowed_packet.
        Every literal is ASCII, so a statement's length is its size in bytes.
        *results* are ``base.result_row()`` tuples, one per handle; one that can
        never be stored is left out, with a warning."""
        packet = self.max_allowed_packet - PACKET_SLACK
        limit = max(1, min(MAX_STATEMENT, packet))
        out: list[str] = []

        def chunks(head: str, items: list[str], tail: str, per: int) -> None:
            parts: list[str] = []
            size = len(head) + len(tail)
            for item in items:
                if parts and (size + 1 + len(item) > limit or len(parts) >= per):
                    out.append(head + ",".join(parts) + tail)
                    parts = []
                    size = len(head) + len(tail)
                parts.append(item)
                size += len(item) + 1
            if parts:
                out.append(head + ",".join(parts) + tail)

        rows: list[str] = []
        for j in adds:
            row = (f"({_hex(j.handle)},{_hex(j.function)},{_hex(j.unique)},{int(j.priority)},"
                   f"{_hex(j.data)},{int(j.when)},{_hex(j.reducer)},{int(j.retries)})")
            needed = len(self._insert_head) + len(row) + len(self._insert_tail)
            if needed > packet:
                raise RejectedJobs(
                    f"{self._target()}: job {j.handle.decode(errors='replace')} ({len(j.data)} bytes "
                    f"of data) needs a {needed}-byte statement, more than the server's "
                    f"max_allowed_packet ({self.max_allowed_packet} bytes; data is sent hex-encoded, "
                    "so a job may carry about half of it): raise max_allowed_packet on the server "
                    "or lower --max-packet-size", [j.handle])
            rows.append(row)
        chunks(self._insert_head, rows, self._insert_tail, len(rows) or 1)

        latest: dict[bytes, int] = {}
        for handle, retries in updates:  # the last count given for a handle wins
            latest[handle] = retries
        by_count: dict[int, list[str]] = {}
        for handle, retries in latest.items():
            by_count.setdefault(int(retries), []).append(_hex(handle))
        for retries, handles in by_count.items():
            chunks(f"UPDATE {self.jobs_table} SET `retries` = {retries} WHERE `handle` IN (",
                   handles, ")", HANDLES_PER_STATEMENT)

        chunks(f"DELETE FROM {self.jobs_table} WHERE `handle` IN (", [_hex(h) for h in dones], ")",
               HANDLES_PER_STATEMENT)

        rows = []
        for handle, function, unique, state, finished, record in results:
            row = (f"({_hex(handle)},{_hex(function)},{_hex(unique)},{_hex(state.encode())},"
                   f"{_double(finished)},{_hex(record.encode())})")
            why = self._unstorable(handle, state, len(self._result_head) + len(row))
            if why:
                # dropped, not raised: the committer would retry the batch forever
                log.warning("store %s: the result of job %s is not kept: %s", self.describe(),
                            handle.decode(errors="replace"), why)
                continue
            rows.append(row)
        chunks(self._result_head, rows, "", len(rows) or 1)
        chunks(f"DELETE FROM {self.results_table} WHERE `handle` IN (",
               [_hex(h) for h in result_drops], ")", HANDLES_PER_STATEMENT)
        return out

    def _unstorable(self, handle: bytes, state: str, needed: int) -> str:
        """Why a result row can never be stored ("" if it can)."""
        if len(handle) > RESULT_HANDLE_MAX:
            return f"its handle is longer than {RESULT_HANDLE_MAX} bytes"
        if len(state) > RESULT_STATE_MAX:
            return f"its state is longer than {RESULT_STATE_MAX} characters"
        if needed > self.max_allowed_packet - PACKET_SLACK:
            return (f"it needs a {needed}-byte statement, more than the server's max_allowed_packet "
                    f"({self.max_allowed_packet} bytes; the record is sent hex-encoded, so it may be "
                    "about half of it): raise max_allowed_packet on the server or lower "
                    "--result-max-bytes")
        return ""

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            self.connection_id = None
            if conn is None:
                return
            try:
                async with asyncio.timeout(1.0):
                    await conn.ensure_closed()  # COM_QUIT, then close the socket
            except Exception:  # TimeoutError included: closed below anyway
                pass
            finally:
                conn.close()
