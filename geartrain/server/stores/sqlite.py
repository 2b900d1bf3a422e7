"""SQLite store (the default): one file, WAL journal, written by a helper process.

``sqlite:///var/lib/geartrain/queue.db``. Every ``apply()`` is one
transaction; with ``synchronous=FULL`` (the default) the commit reaches the
disk before the server answers JOB_CREATED, so an acknowledged job survives a
crash of the process and of the machine. ``?synchronous=normal`` trades the
latter for fewer fsyncs (WAL mode still survives a process crash).

Why a process and not a thread: sqlite3 holds the GIL while it binds the
values of each row, so a writer thread and the event loop take turns on one
core; measured on 2 cores, a separate process let commits overlap the loop's
work and about doubled durable submits. The helper is this very module run
as ``python -m geartrain.server.stores.sqlite``: it owns the one sqlite3
connection and answers length-prefixed ``marshal`` requests on its stdin and
stdout, one at a time. It exits when the server does (end of its stdin); if
it dies, the request fails (QUEUE_ERROR for the submits waiting on it) and
the next one starts a new helper. Group commit comes from the caller:
whatever arrived while the previous transaction ran is applied in the next.
"""

from __future__ import annotations

import asyncio
import functools
import marshal
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from geartrain.server.stores.base import Store, StoredJob, StoreError
from geartrain.server.stores.url import StoreURL

SCHEMA_VERSION = 1

#: schema version -> statements taking the previous version to it
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS geartrain_jobs (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            handle      BLOB NOT NULL UNIQUE,
            function    BLOB NOT NULL,
            unique_key  BLOB NOT NULL,
            priority    INTEGER NOT NULL,
            data        BLOB NOT NULL,
            when_to_run INTEGER NOT NULL DEFAULT 0,
            reducer     BLOB NOT NULL DEFAULT x'',
            retries     INTEGER NOT NULL DEFAULT 0
        )""",
    ],
}

_SYNC = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_COLUMNS = 8  # per job, in the order of _insert_statement
_ROWS_PER_INSERT = 200  # x 8 columns, well under SQLite's 32766 bound parameters
_ROWS_PER_DELETE = 500
_FRAME = struct.Struct(">I")


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_statement(rows: int) -> str:
    return ("INSERT OR IGNORE INTO geartrain_jobs (handle, function, unique_key, priority, data, "
            "when_to_run, reducer, retries) VALUES " + ",".join(["(?,?,?,?,?,?,?,?)"] * rows))


# ---------------------------------------------------------------------------
# the database itself (runs in the helper process)

class SQLiteFile:
    """The one connection to the file, with the schema and the four verbs."""

    def __init__(self, path: str, synchronous: str, busy_timeout_ms: int) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise StoreError(f"{directory} is not a directory")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot use WAL journal mode (got {mode})")
            db.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        self.db = db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"schema version {version} is newer than this geartrain knows "
                             f"({SCHEMA_VERSION}); upgrade geartrain")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def replay(self) -> list[tuple[Any, ...]]:
        return self.db.execute(
            "SELECT handle, function, unique_key, data, priority, when_to_run, reducer, retries "
            "FROM geartrain_jobs ORDER BY seq").fetchall()

    def apply(self, flat_adds: list[Any], updates: list[tuple[bytes, int]], dones: list[bytes]) -> None:
        """*flat_adds*: the 8 column values of each new job, one after the other."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            # multi-row statements: far fewer steps than one per row
            step = _ROWS_PER_INSERT * _COLUMNS
            for i in range(0, len(flat_adds), step):
                chunk = flat_adds[i:i + step]
                db.execute(_insert_statement(len(chunk) // _COLUMNS), chunk)
            if updates:
                db.executemany("UPDATE geartrain_jobs SET retries = ? WHERE handle = ?",
                               [(n, h) for h, n in updates])
            for i in range(0, len(dones), _ROWS_PER_DELETE):
                handles = dones[i:i + _ROWS_PER_DELETE]
                marks = ",".join("?" * len(handles))
                db.execute(f"DELETE FROM geartrain_jobs WHERE handle IN ({marks})", handles)
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM geartrain_jobs").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def _read_frame(stream: BinaryIO) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    return marshal.loads(stream.read(size))


def _write_frame(stream: BinaryIO, value: Any) -> None:
    body = marshal.dumps(value)
    stream.write(_FRAME.pack(len(body)) + body)
    stream.flush()


def helper_main() -> int:
    """The helper process: answer requests until stdin ends."""
    # Ctrl-C in a terminal, or systemd stopping the service, signals every
    # process of the group; the server then drains and writes its last
    # changes through us, so we only stop when it closes our stdin (or dies)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    rin, wout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write on the answer channel
    file: SQLiteFile | None = None
    while True:
        request = _read_frame(rin)
        if request is None:
            break
        op, args = request
        try:
            if op == "apply":
                assert file is not None
                file.apply(*args)
                result: Any = None
            elif op == "open":
                file = SQLiteFile(*args)
                result = None
            elif op == "replay":
                assert file is not None
                result = file.replay()
            elif op == "count":
                assert file is not None
                result = file.count()
            else:
                raise StoreError(f"unknown request {op!r}")
            _write_frame(wout, (True, result))
        except (sqlite3.Error, StoreError, OSError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            _write_frame(wout, (False, text))
    if file is not None:
        file.close()
    return 0


# ---------------------------------------------------------------------------
# the store (in the server, talking to the helper)

class SQLiteStore(Store):
    scheme = "sqlite"

    def __init__(self, url: StoreURL) -> None:
        super().__init__(url)
        self.path = url.database
        sync = url.params.get("synchronous", "full").lower()
        if sync not in _SYNC:
            raise StoreError(f"sqlite synchronous={sync!r}: use full, normal or extra")
        unknown = sorted(set(url.params) - {"synchronous", "busy_timeout"})
        if unknown:
            raise StoreError(f"sqlite store: unknown URL parameter(s) {', '.join(unknown)}; "
                             "known: synchronous, busy_timeout")
        self.synchronous = _SYNC[sync]
        try:
            self.busy_timeout_ms = int(url.params.get("busy_timeout", "5000"))
        except ValueError:
            raise StoreError("sqlite store: busy_timeout must be milliseconds") from None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = True

    def _fail(self, text: str) -> StoreError:
        return StoreError(f"sqlite {self.path}: {text}")

    async def _start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geartrain.server.stores.sqlite",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 30)
        await self._exchange("open", (self.path, self.synchronous, self.busy_timeout_ms))

    def _stop_helper(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    async def _exchange(self, op: str, args: tuple[Any, ...]) -> Any:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        body = marshal.dumps((op, args))
        try:
            proc.stdin.write(_FRAME.pack(len(body)) + body)
            await proc.stdin.drain()
            head = await proc.stdout.readexactly(_FRAME.size)
            (size,) = _FRAME.unpack(head)
            ok, result = marshal.loads(await proc.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
            self._stop_helper()
            raise self._fail(f"the sqlite helper process ended ({type(exc).__name__})") from None
        except BaseException:
            # cancelled (the committer's timeout) mid-request: its answer would
            # come as the answer to the next one; start afresh instead
            self._stop_helper()
            raise
        if not ok:
            raise self._fail(result)
        return result

    async def _call(self, op: str, *args: Any) -> Any:
        if self._closed:
            raise self._fail("the store is closed")
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                self._proc = None
                await self._start()
            return await self._exchange(op, args)

    async def open(self) -> None:
        self._closed = False
        try:
            await self._call("count")  # starts the helper, which opens and migrates
        except BaseException:
            await self.close()
            raise

    async def replay(self) -> list[StoredJob]:
        rows = await self._call("replay")
        return [StoredJob(bytes(h), bytes(f), bytes(u), bytes(d), p, w, bytes(r), n)
                for h, f, u, d, p, w, r, n in rows]

    async def apply(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes]) -> None:
        flat: list[Any] = []
        extend = flat.extend
        for j in adds:
            extend((j.handle, j.function, j.unique, j.priority, j.data, j.when, j.reducer, j.retries))
        await self._call("apply", flat, list(updates), list(dones))

    async def count(self) -> int:
        return int(await self._call("count"))

    async def close(self) -> None:
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the helper ends at the end of its stdin
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    raise SystemExit(helper_main())
