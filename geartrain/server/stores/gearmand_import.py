"""Adopt the jobs that C gearmand's persistent queue left behind.

gearmand's ``libsqlite3``, ``MySQL`` and ``Postgres`` queue plugins keep one
row per background job in a table (``gearman_queue``; ``queue`` for
Postgres)::

    unique_key, function_name, priority (0 high, 1 normal, 2 low), data, when_to_run

:func:`import_gearmand_queue` reads every row, gives each job a new handle
after the highest one already in the geartrain store, writes them with
``Store.apply(adds, [], [])`` in batches, and optionally deletes the adopted
rows from gearmand's table once the store has committed them.

Rules (see docs/migrating.md):

* A row whose job is already queued in the target store is skipped: same
  function and non-empty unique key (a submit would coalesce onto it), for
  the unique ``-`` same function and payload, and for an empty unique the
  same function, payload, priority and run-at time. So running the import
  again before geartrain has run those jobs adopts nothing twice.
* Rows of one function with the same non-empty unique key (possible only in a
  hand-made table) are merged as gearmand's own replay merges them: the first
  one wins.
* Rows gearmand itself could not replay (no function, priority not 0-2, a
  unique key over 64 bytes, NUL bytes in a name) are skipped and reported.
* NULL ``when_to_run`` (rows written before gearmand added the column) and
  tables without that column mean "run now".

The source drivers (sqlite3, PyMySQL, asyncpg) are imported only when their
kind of queue is read; PyMySQL comes with aiomysql.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import importlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

from geartrain.server.core.job import handle_number
from geartrain.server.core.settings import MAX_UNIQUE_SIZE
from geartrain.server.stores import create_store
from geartrain.server.stores.base import Store, StoredJob, StoreError
from geartrain.server.stores.url import StoreURL, StoreURLError, parse_store_url, read_password_file

#: gearmand's default table name of each queue plugin
DEFAULT_TABLES = {"sqlite": "gearman_queue", "mysql": "gearman_queue", "postgresql": "queue"}
#: the gearmand ``-q`` name of each kind, for messages
PLUGINS = {"sqlite": "libsqlite3", "mysql": "MySQL", "postgresql": "Postgres"}
#: environment variable with the source database's password
PASSWORD_ENV = "GEARMAND_QUEUE_PASSWORD"
BATCH_SIZE = 1000
PRIORITY_NAMES = ("high", "normal", "low")

REQUIRED_COLUMNS = ("unique_key", "function_name", "priority", "data")


class QueueImportError(Exception):
    """The import could not be done; the message says why (no secrets).
    ``result`` tells how far it got, when it got anywhere."""

    def __init__(self, message: str, result: ImportResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class SourceURLError(QueueImportError):
    """The source URL is unusable (a usage error: the command exits 2)."""


# ------------------------------------------------------------------ rows


@dataclasses.dataclass(slots=True)
class QueueRow:
    """One row of gearmand's table, as read (None for SQL NULL)."""

    unique: bytes | None
    function: bytes | None
    priority: Any
    data: bytes | None
    when: Any
    key: Any = None  #: how the source finds the row again (rowid, ctid, key values)


@dataclasses.dataclass(slots=True)
class Skipped:
    row: QueueRow
    reason: str
    #: its job is in the target store anyway (already there, or merged into an
    #: earlier row), so --delete-source removes the row too
    covered: bool = False


@dataclasses.dataclass
class ImportPlan:
    """What an import does: the jobs to add (with their source rows) and the rows skipped."""

    adds: list[StoredJob] = dataclasses.field(default_factory=list)
    rows: list[QueueRow] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    existing: int = 0  #: jobs that were in the target store before

    def counts(self) -> dict[bytes, list[int]]:
        """function -> [high, normal, low, of which with a run-at time]."""
        table: dict[bytes, list[int]] = {}
        for job in self.adds:
            c = table.setdefault(job.function, [0, 0, 0, 0])
            c[job.priority] += 1
            if job.when > 0:
                c[3] += 1
        return table

    def deletable(self) -> list[QueueRow]:
        """Source rows whose jobs are in the target store once the adds are committed."""
        return self.rows + [s.row for s in self.skipped if s.covered]


def _coalesce_key(function: bytes, unique: bytes, data: bytes, priority: int, when: int) -> tuple[Any, ...]:
    """What makes two jobs one: a submit coalesces on function and unique key; on unique ``-``
    on function and payload (never on an empty one); jobs without either are only the same
    job when everything is the same."""
    if unique == b"-":
        if data:
            return (function, unique, data)
    elif unique:
        return (function, unique)
    return (function, unique, data, priority, when)


def _check(row: QueueRow) -> str | None:
    """Why gearmand could not have replayed *row*, or None."""
    if not row.function:
        return "no function name"
    if b"\0" in row.function:
        return "the function name contains a NUL byte"
    if row.unique and b"\0" in row.unique:
        return "the unique key contains a NUL byte"
    if row.unique and len(row.unique) > MAX_UNIQUE_SIZE:
        return f"the unique key is longer than {MAX_UNIQUE_SIZE} bytes"
    if isinstance(row.priority, bool) or not isinstance(row.priority, int) or row.priority not in (0, 1, 2):
        return f"priority {row.priority!r} is not 0 (high), 1 (normal) or 2 (low)"
    if row.when is not None and (isinstance(row.when, bool) or not isinstance(row.when, int)):
        return f"when_to_run {row.when!r} is not a number"
    return None


def plan_import(rows: Iterable[QueueRow], existing: Sequence[StoredJob], prefix: bytes) -> ImportPlan:
    """Map gearmand rows to new jobs for a store that holds *existing*.

    Handles are ``PREFIX:N`` with N counting on from the highest number in
    *existing* (whatever its prefix: the server continues from there too),
    in row order, so the jobs of one priority keep gearmand's order.
    """
    plan = ImportPlan(existing=len(existing))
    present = {_coalesce_key(j.function, j.unique, j.data, j.priority, j.when) for j in existing}
    seen: set[tuple[Any, ...]] = set()
    number = max((handle_number(j.handle) for j in existing), default=0)
    for row in rows:
        reason = _check(row)
        if reason is not None:
            plan.skipped.append(Skipped(row, reason))
            continue
        assert row.function is not None
        unique = row.unique or b""
        data = row.data or b""
        priority = int(row.priority)
        when = row.when if row.when is not None and row.when > 0 else 0
        key = _coalesce_key(row.function, unique, data, priority, when)
        if key in present:
            plan.skipped.append(Skipped(row, "already queued in the target store (imported before?)", True))
            continue
        if unique and key in seen:
            plan.skipped.append(Skipped(
                row, "same function and unique key as an earlier row (gearmand merges them too)", True))
            continue
        if unique:
            seen.add(key)
        number += 1
        plan.adds.append(StoredJob(b"%s:%d" % (prefix, number), row.function, unique, data, priority, when))
        plan.rows.append(row)
    return plan


# ------------------------------------------------------------------ sources


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def _as_int(value: Any) -> Any:
    """Integers stay, numeric text becomes int (sqlite columns are typeless); anything else is
    kept as it is, for the message that skips the row."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if isinstance(text, str) and re.fullmatch(r"\s*-?\d+\s*", text):
        return int(text)
    return value


class GearmandQueue(abc.ABC):
    """gearmand's queue table in one database."""

    kind: str

    def __init__(self, url: StoreURL, table: str) -> None:
        self.url = url
        self.table = table

    def describe(self) -> str:
        return f"{self.url.redacted()} table {self.table}"

    @abc.abstractmethod
    async def open(self, write: bool) -> None:
        """Connect (*write*: rows will be deleted). Raises QueueImportError."""

    @abc.abstractmethod
    async def rows(self) -> list[QueueRow]:
        """Every row, in the table's order. Raises QueueImportError."""

    @abc.abstractmethod
    async def delete(self, rows: Sequence[QueueRow]) -> int:
        """Delete exactly these rows in one transaction; how many went."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def _columns_or_fail(self, columns: Iterable[str]) -> bool:
        """Check the table's columns; True if it has when_to_run."""
        names = {c.lower() for c in columns}
        if not names:
            raise QueueImportError(
                f"{self.url.redacted()}: there is no table {self.table!r} (gearmand's "
                f"{PLUGINS[self.kind]} queue uses {DEFAULT_TABLES[self.kind]!r} unless told "
                "otherwise: pass its name with --table)")
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise QueueImportError(
                f"{self.describe()}: not a gearmand queue table (no column {', '.join(missing)})")
        return "when_to_run" in names


class SQLiteQueue(GearmandQueue):
    """``gearmand -q libsqlite3 --libsqlite3-db PATH [--libsqlite3-table T]``."""

    kind = "sqlite"

    def __init__(self, url: StoreURL, table: str) -> None:
        super().__init__(url, table)
        self.path = url.database
        self.db: Any = None

    def _quoted(self) -> str:
        return '"' + self.table.replace('"', '""') + '"'

    async def open(self, write: bool) -> None:
        import sqlite3

        if not os.path.exists(self.path):
            raise QueueImportError(f"{self.url.redacted()}: no such file")
        mode = "rw" if write else "ro"
        try:
            self.db = sqlite3.connect(f"file:{quote(os.path.abspath(self.path))}?mode={mode}", uri=True,
                                      isolation_level=None)
            self.db.text_factory = bytes  # gearmand binds names as bytes: keep them as they are
            self.db.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.Error as exc:
            raise QueueImportError(f"{self.url.redacted()}: {exc}") from None

    async def rows(self) -> list[QueueRow]:
        import sqlite3

        try:
            columns = [r[1].decode() if isinstance(r[1], bytes) else r[1]
                       for r in self.db.execute(f"PRAGMA table_info({self._quoted()})")]
            when = "when_to_run" if self._columns_or_fail(columns) else "NULL"
            cursor = self.db.execute(
                f"SELECT rowid, unique_key, function_name, priority, data, {when} "
                f"FROM {self._quoted()} ORDER BY rowid")
            return [QueueRow(_as_bytes(u), _as_bytes(f), _as_int(p), _as_bytes(d), _as_int(w), rowid)
                    for rowid, u, f, p, d, w in cursor]
        except sqlite3.Error as exc:
            raise QueueImportError(f"{self.url.redacted()}: {exc}") from None

    async def delete(self, rows: Sequence[QueueRow]) -> int:
        import sqlite3

        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self.db.executemany(f"DELETE FROM {self._quoted()} WHERE rowid = ?",
                                             [(r.key,) for r in rows])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return int(cursor.rowcount)
        except sqlite3.Error as exc:
            raise QueueImportError(f"{self.describe()}: deleting rows: {exc}") from None

    async def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def _split_name(table: str) -> list[str]:
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise SourceURLError(f"--table {table!r}: use NAME or SCHEMA.NAME")
    return parts


class MySQLQueue(GearmandQueue):
    """``gearmand -q MySQL --mysql-host H --mysql-db D [--mysql-table T]`` (MySQL, MariaDB).

    Read with PyMySQL in UTF-8 (gearmand's tables are utf8mb4 on current
    servers). URL parameters as for the mysql store: ``socket`` (e.g.
    ``/run/mysqld/mysqld.sock``, what gearmand used for ``--mysql-host
    localhost``), ``connect_timeout`` (seconds, default 10) and
    ``read_default_file`` (default ``~/.my.cnf``, which fills only what the
    URL leaves out).
    """

    kind = "mysql"

    def __init__(self, url: StoreURL, table: str) -> None:
        super().__init__(url, table)
        self.parts = _split_name(table)
        self.conn: Any = None
        if not url.database and len(self.parts) == 1:
            raise SourceURLError("a MySQL source needs a database: mysql://USER@HOST:PORT/DB")
        unknown = set(url.params) - {"socket", "unix_socket", "connect_timeout", "read_default_file"}
        if unknown:
            raise SourceURLError(f"mysql source: unknown parameter {sorted(unknown)[0]!r} (use socket, "
                                 "connect_timeout or read_default_file)")
        try:
            self.connect_timeout = float(url.params.get("connect_timeout", "10"))
        except ValueError:
            raise SourceURLError("mysql source: connect_timeout must be a number of seconds") from None

    def _quoted(self) -> str:
        return ".".join("`" + p.replace("`", "``") + "`" for p in self.parts)

    async def open(self, write: bool) -> None:
        pymysql = importlib.import_module("pymysql")
        kwargs: dict[str, Any] = {
            "host": self.url.host or "localhost",
            "port": self.url.port or 3306,
            "user": self.url.user or None,
            "password": self.url.password or "",
            "database": self.url.database or None,
            "charset": "utf8mb4",
            "connect_timeout": self.connect_timeout,
            "autocommit": False,
        }
        sock = self.url.params.get("socket") or self.url.params.get("unix_socket")
        if sock:
            kwargs["unix_socket"] = sock
        my_cnf = os.path.expanduser(self.url.params.get("read_default_file", "~/.my.cnf"))
        if os.path.exists(my_cnf):
            kwargs["read_default_file"] = my_cnf  # PyMySQL: fills only what the URL left out
        try:
            self.conn = await asyncio.to_thread(pymysql.connect, **kwargs)
        except Exception as exc:
            raise QueueImportError(f"cannot connect to {self.url.redacted()}: {exc}") from None

    def _rows(self) -> list[QueueRow]:
        with self.conn.cursor() as cur:
            if len(self.parts) == 2:
                cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", tuple(self.parts))
            else:
                cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (self.parts[0],))
            columns = [str(r[0]) for r in cur.fetchall()]
            when = "when_to_run" if self._columns_or_fail(columns) else "NULL"
            cur.execute(f"SELECT unique_key, function_name, priority, data, {when} FROM {self._quoted()}")
            rows = [QueueRow(_as_bytes(u), _as_bytes(f), _as_int(p), _as_bytes(d), _as_int(w), (u, f))
                    for u, f, p, d, w in cur.fetchall()]
        self.conn.rollback()
        return rows

    async def rows(self) -> list[QueueRow]:
        try:
            return await asyncio.to_thread(self._rows)
        except QueueImportError:
            raise
        except Exception as exc:
            raise QueueImportError(f"{self.describe()}: {exc}") from None

    def _delete(self, rows: Sequence[QueueRow]) -> int:
        deleted = 0
        try:
            with self.conn.cursor() as cur:
                for row in rows:
                    deleted += cur.execute(
                        f"DELETE FROM {self._quoted()} WHERE unique_key <=> %s AND function_name <=> %s",
                        row.key)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return deleted

    async def delete(self, rows: Sequence[QueueRow]) -> int:
        try:
            return await asyncio.to_thread(self._delete, rows)
        except Exception as exc:
            raise QueueImportError(f"{self.describe()}: deleting rows: {exc}") from None

    async def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


class PostgresQueue(GearmandQueue):
    """``gearmand -q Postgres --libpq-conninfo '...' [--libpq-table T]``, read with asyncpg.

    gearmand puts the table name into its SQL unquoted, so PostgreSQL folds it
    to lower case; so does this reader (``--table '"MixedCase"'`` keeps case).
    Without a host, user or database in the URL, the ``PG*`` variables and
    ``~/.pgpass`` apply, as for gearmand's empty ``--libpq-conninfo``.
    """

    kind = "postgresql"

    def __init__(self, url: StoreURL, table: str) -> None:
        super().__init__(url, table)
        self.parts = [p[1:-1] if len(p) > 1 and p.startswith('"') and p.endswith('"') else p.lower()
                      for p in _split_name(table)]
        self.conn: Any = None
        unknown = set(url.params) - {"sslmode"}
        if unknown:
            raise SourceURLError(f"postgresql source: unknown parameter {sorted(unknown)[0]!r} "
                                 "(only sslmode)")

    def _quoted(self) -> str:
        return ".".join('"' + p.replace('"', '""') + '"' for p in self.parts)

    async def open(self, write: bool) -> None:
        asyncpg = importlib.import_module("asyncpg")
        try:
            self.conn = await asyncpg.connect(
                host=self.url.host or None, port=self.url.port or None, user=self.url.user or None,
                password=self.url.password, database=self.url.database or None,
                ssl=self.url.params.get("sslmode"), timeout=10)
        except Exception as exc:
            raise QueueImportError(f"cannot connect to {self.url.redacted()}: {exc}") from None

    async def rows(self) -> list[QueueRow]:
        try:
            columns = [r[0] for r in await self.conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) "
                "AND attnum > 0 AND NOT attisdropped", self._quoted())]
            when = "when_to_run" if self._columns_or_fail(columns) else "NULL::integer"
            records = await self.conn.fetch(
                f"SELECT ctid, unique_key, function_name, priority, data, {when} FROM {self._quoted()}")
        except QueueImportError:
            raise
        except Exception as exc:
            raise QueueImportError(f"{self.describe()}: {exc}") from None
        return [QueueRow(_as_bytes(u), _as_bytes(f), _as_int(p), _as_bytes(d), _as_int(w), ctid)
                for ctid, u, f, p, d, w in records]

    async def delete(self, rows: Sequence[QueueRow]) -> int:
        try:
            status = await self.conn.execute(
                f"DELETE FROM {self._quoted()} WHERE ctid = ANY($1::tid[])", [r.key for r in rows])
        except Exception as exc:
            raise QueueImportError(f"{self.describe()}: deleting rows: {exc}") from None
        return int(str(status).rpartition(" ")[2] or 0)

    async def close(self) -> None:
        if self.conn is not None:
            try:
                await self.conn.close()
            except Exception:
                pass
            self.conn = None


_QUEUES: dict[str, type[GearmandQueue]] = {
    "sqlite": SQLiteQueue, "mysql": MySQLQueue, "postgresql": PostgresQueue,
}


def open_source(text: str, table: str | None = None, password_file: str | None = None,
                environ: dict[str, str] | None = None) -> GearmandQueue:
    """The (not yet opened) gearmand queue at URL *text*.

    The password comes from the URL, else ``$GEARMAND_QUEUE_PASSWORD``, else
    *password_file*, else the driver's own files. Raises SourceURLError.
    """
    environ = dict(os.environ) if environ is None else environ
    try:
        url = parse_store_url(text)
    except StoreURLError as exc:
        message = str(exc).replace("--store ", "", 1)
        raise SourceURLError(f"source {message}".replace(
            "use memory, sqlite:///path", "use sqlite:///path")) from None
    if url.scheme not in _QUEUES:
        raise SourceURLError(
            f"source {url.redacted()!r}: gearmand's {url.scheme} queue cannot be imported; "
            "use sqlite:///PATH (-q libsqlite3), mysql://USER@HOST:PORT/DB (-q MySQL) or "
            "postgresql://USER@HOST:PORT/DB (-q Postgres)")
    if url.password is None:
        if environ.get(PASSWORD_ENV):
            url.password = environ[PASSWORD_ENV]
        elif password_file:
            try:
                url.password = read_password_file(password_file)
            except StoreURLError as exc:
                raise SourceURLError(str(exc)) from None
    name = table or DEFAULT_TABLES[url.scheme]
    if not name.strip() or "\0" in name:
        raise SourceURLError(f"--table {name!r}: not a table name")
    return _QUEUES[url.scheme](url, name)


# ------------------------------------------------------------------ the import


@dataclasses.dataclass
class ImportResult:
    source: str
    target: str
    plan: ImportPlan
    table: str = ""
    rows_read: int = 0
    written: int = 0  #: jobs committed to the target store
    deleted: int | None = None  #: rows deleted from the source (None: not asked)


async def _open_target(url: StoreURL) -> tuple[Store, list[StoredJob]]:
    store = create_store(url)
    try:
        await store.open()
        return store, await store.replay()
    except BaseException as exc:
        await _close_quietly(store)
        if isinstance(exc, StoreError | asyncio.CancelledError | KeyboardInterrupt):
            raise
        raise StoreError(f"{url.redacted()}: {exc}") from None  # a driver's own exception


async def _close_quietly(store: Store) -> None:
    try:
        await store.close()
    except Exception:
        pass


async def import_gearmand_queue(
    source: GearmandQueue,
    target: StoreURL,
    prefix: str,
    *,
    dry_run: bool = False,
    delete_source: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Read *source*, add its jobs to the store at *target* (one
    ``Store.apply`` per *batch_size* jobs), and with *delete_source* delete the
    adopted rows once the store committed all of them.

    With *dry_run* nothing is written or deleted, and a SQLite target file
    that does not exist is not created. Raises QueueImportError (its
    ``result`` says how far it got) or StoreError (opening the target).
    """
    if target.scheme == "memory":
        raise QueueImportError("the target store is 'memory', which keeps nothing: use --store "
                               "or --data-dir/--port to name the server's store")
    result = ImportResult(source.describe(), target.redacted(), ImportPlan(), source.table)
    await source.open(write=delete_source and not dry_run)
    store: Store | None = None
    try:
        rows = await source.rows()
        result.rows_read = len(rows)
        existing: list[StoredJob] = []
        if not (target.scheme == "sqlite" and not os.path.exists(target.database)):
            store, existing = await _open_target(target)
        plan = result.plan = plan_import(rows, existing, prefix.encode())
        if dry_run:
            return result
        if plan.adds and store is None:
            store, existing = await _open_target(target)
            if existing:  # someone created the file meanwhile: plan again
                plan = result.plan = plan_import(rows, existing, prefix.encode())
        for start in range(0, len(plan.adds), batch_size):
            assert store is not None
            batch = plan.adds[start:start + batch_size]
            try:
                await store.apply(batch, [], [])
            except Exception as exc:
                raise QueueImportError(
                    f"writing to the target store failed after {result.written} of {len(plan.adds)} "
                    f"jobs: {exc}", result) from None
            result.written += len(batch)
            if progress is not None and len(plan.adds) > batch_size:
                progress(f"{result.written}/{len(plan.adds)} jobs written")
        if delete_source:
            doomed = plan.deletable()
            result.deleted = 0
            if doomed:
                try:
                    result.deleted = await source.delete(doomed)
                except QueueImportError as exc:
                    exc.result = result
                    raise
        return result
    finally:
        if store is not None:
            await _close_quietly(store)
        await source.close()
