"""SQLite store (the default): one file, one dedicated thread, WAL journal.

``sqlite:///var/lib/geartrain/queue.db``. Every ``apply()`` is one
transaction; with ``synchronous=FULL`` (the default) the commit reaches the
disk before the server answers JOB_CREATED, so an acknowledged job survives a
crash of the process and of the machine. ``?synchronous=normal`` trades the
latter for fewer fsyncs (WAL mode still survives a process crash).

sqlite3 calls block, so they all run on one thread owned by the store; the
event loop only awaits them. Group commit comes from the caller: whatever
arrived while the previous transaction ran is applied in the next.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from geartrain.server.stores.base import Store, StoredJob, StoreError
from geartrain.server.stores.url import StoreURL

T = TypeVar("T")

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

_ROWS_PER_INSERT = 200  # x 8 columns, well under SQLite's 32766 bound parameters
_ROWS_PER_DELETE = 500


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_statement(rows: int) -> str:
    return ("INSERT OR IGNORE INTO geartrain_jobs (handle, function, unique_key, priority, data, "
            "when_to_run, reducer, retries) VALUES " + ",".join(["(?,?,?,?,?,?,?,?)"] * rows))


class SQLiteStore(Store):
    scheme = "sqlite"

    def __init__(self, url: StoreURL) -> None:
        super().__init__(url)
        self.path = url.database
        sync = url.params.get("synchronous", "full").lower()
        if sync not in _SYNC:
            raise StoreError(f"sqlite synchronous={sync!r}: use full, normal or extra")
        self.synchronous = _SYNC[sync]
        self.busy_timeout_ms = int(url.params.get("busy_timeout", "5000"))
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("sqlite store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"sqlite {self.path}: {exc.strerror or exc}") from None

    async def open(self) -> None:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="geartrain-sqlite")
        await self._run(self._open)

    def _open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise StoreError(f"sqlite {self.path}: {directory} is not a directory")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"sqlite {self.path}: cannot use WAL journal mode (got {mode})")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"sqlite {self.path}: schema version {version} is newer than this "
                             f"geartrain knows ({SCHEMA_VERSION}); upgrade geartrain")
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
        self._db = db

    async def replay(self) -> list[StoredJob]:
        return await self._run(self._replay)

    def _replay(self) -> list[StoredJob]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT handle, function, unique_key, data, priority, when_to_run, reducer, retries "
            "FROM geartrain_jobs ORDER BY seq").fetchall()
        return [StoredJob(bytes(h), bytes(f), bytes(u), bytes(d), p, w, bytes(r), n)
                for h, f, u, d, p, w, r, n in rows]

    async def apply(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes]) -> None:
        await self._run(self._apply, adds, updates, dones)

    def _apply(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
               dones: Sequence[bytes]) -> None:
        db = self._db
        if db is None:
            self._open()
            db = self._db
            assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            # multi-row statements: sqlite3 releases and retakes the GIL around
            # every step, so one step per row would make this thread queue for
            # the GIL behind the event loop once per job
            for i in range(0, len(adds), _ROWS_PER_INSERT):
                chunk = adds[i:i + _ROWS_PER_INSERT]
                params: list[object] = []
                for j in chunk:
                    params += (j.handle, j.function, j.unique, j.priority, j.data, j.when, j.reducer,
                               j.retries)
                db.execute(_insert_statement(len(chunk)), params)
            if updates:
                db.executemany("UPDATE geartrain_jobs SET retries = ? WHERE handle = ?",
                               [(n, h) for h, n in updates])
            for i in range(0, len(dones), _ROWS_PER_DELETE):
                handles = dones[i:i + _ROWS_PER_DELETE]
                marks = ",".join("?" * len(handles))
                db.execute(f"DELETE FROM geartrain_jobs WHERE handle IN ({marks})", list(handles))
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    async def count(self) -> int:
        return await self._run(self._count)

    def _count(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT COUNT(*) FROM geartrain_jobs").fetchone()[0])

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
