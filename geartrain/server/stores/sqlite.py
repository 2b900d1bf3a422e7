"""SQLite store (the default): one file, WAL journal, written by a helper process.

``sqlite:///var/lib/geartrain/queue.db``. Every ``apply()`` is all or
nothing (queued ones may share a transaction); with ``synchronous=FULL`` (the default) the commit reaches the
disk before the server answers JOB_CREATED, so an acknowledged job survives a
crash of the process and of the machine. ``?synchronous=normal`` trades the
latter for fewer fsyncs (WAL mode still survives a process crash).

Why a process and not a thread: sqlite3 holds the GIL while it binds the
values of each row, so a writer thread and the event loop take turns on one
core; measured on 2 cores, a separate process let commits overlap the loop's
work and about doubled durable submits. The helper is this very module run
as ``python -m geartrain.server.stores.sqlite``: it owns the one sqlite3
connection and answers length-prefixed ``marshal`` requests on its stdin and
stdout, in order. The server sends the next transactions before the previous
one is answered (``overlap``), so the helper never waits for the server
between two commits, and the apply requests waiting when it turns around go
into one transaction with one flush (see ``helper_main``). The helper exits
when the server does (end of its stdin); if it dies, the requests waiting on
it fail (QUEUE_ERROR for their submits) and the next one starts a new helper.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import marshal
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Sequence
from typing import Any

from geartrain.results import JobResult
from geartrain.server.core.results import record_of
from geartrain.server.stores.base import Store, StoredJob, StoreError, result_row
from geartrain.server.stores.url import StoreURL

SCHEMA_VERSION = 2

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
    2: [
        # results of ended jobs (geartrain.results; record is its JSON)
        """CREATE TABLE IF NOT EXISTS geartrain_results (
            handle      BLOB PRIMARY KEY,
            function    BLOB NOT NULL,
            unique_key  BLOB NOT NULL,
            state       TEXT NOT NULL,
            finished    REAL NOT NULL,
            record      TEXT NOT NULL
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
    # (the columns in the order of StoredJob's fields: a job's values are the tuple itself)
    return ("INSERT OR IGNORE INTO geartrain_jobs (handle, function, unique_key, data, priority, "
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

    def apply(self, requests: Sequence[tuple[list[Any], list[tuple[bytes, int]], list[bytes],
                                             list[tuple[Any, ...]], list[bytes]]]) -> None:
        """Several apply requests, in order, in ONE transaction (one flush).
        Each is ``(flat_adds, updates, dones, results, result_drops)``;
        *flat_adds* holds the 8 column values of each new job, one after the
        other; *results* are JobResult fields as tuples (``record_of``): the
        JSON of each is made here, not in the server, whose event loop would
        spend ~5 us per drained job on it."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for flat_adds, updates, dones, results, result_drops in requests:
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
                if results:
                    result_rows = [result_row(JobResult(*fields)) for fields in results]
                    db.executemany("INSERT OR REPLACE INTO geartrain_results (handle, function, "
                                   "unique_key, state, finished, record) VALUES (?,?,?,?,?,?)",
                                   result_rows)
                for i in range(0, len(result_drops), _ROWS_PER_DELETE):
                    handles = result_drops[i:i + _ROWS_PER_DELETE]
                    marks = ",".join("?" * len(handles))
                    db.execute(f"DELETE FROM geartrain_results WHERE handle IN ({marks})", handles)
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def load_results(self) -> list[tuple[Any, ...]]:
        return self.db.execute("SELECT handle, function, unique_key, record FROM geartrain_results "
                               "ORDER BY finished, handle").fetchall()

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM geartrain_jobs").fetchone()[0])

    def close(self) -> None:
        self.db.close()


class _Requests:
    """The requests waiting in the helper's stdin, as many as have arrived."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def take(self) -> list[Any] | None:
        """Every complete request received so far (waiting for at least one);
        None at the end of the input."""
        while True:
            requests = []
            buffer, offset = self.buffer, 0
            while len(buffer) - offset >= _FRAME.size:
                (size,) = _FRAME.unpack_from(buffer, offset)
                end = offset + _FRAME.size + size
                if end > len(buffer):
                    break
                requests.append(marshal.loads(buffer[offset + _FRAME.size:end]))
                offset = end
            del buffer[:offset]
            if requests:
                return requests
            data = os.read(self.fd, 1 << 20)
            if not data:
                return None
            buffer += data


def _frame(value: Any) -> bytes:
    body = marshal.dumps(value)
    return _FRAME.pack(len(body)) + body


def _error_text(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def helper_main() -> int:
    """The helper process: answer requests until stdin ends.

    The server sends the next transaction before the previous one is
    answered; all the apply requests that are waiting when the helper turns
    to its input are written in one transaction, with one flush to disk,
    then each gets its answer (group commit across requests).
    """
    # Ctrl-C in a terminal, or systemd stopping the service, signals every
    # process of the group; the server then drains and writes its last
    # changes through us, so we only stop when it closes our stdin (or dies)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    incoming, wout = _Requests(sys.stdin.fileno()), sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write on the answer channel
    file: SQLiteFile | None = None
    while (requests := incoming.take()) is not None:
        answers: list[bytes] = []
        i = 0
        while i < len(requests):
            op, args = requests[i]
            if op == "apply" and file is not None:
                j = i + 1
                while j < len(requests) and requests[j][0] == "apply":
                    j += 1
                try:
                    file.apply([r[1] for r in requests[i:j]])
                    answer = _frame((True, None))
                except (sqlite3.Error, StoreError, OSError) as exc:
                    answer = _frame((False, _error_text(exc)))
                answers.extend([answer] * (j - i))
                i = j
                continue
            try:
                if op == "open":
                    file = SQLiteFile(*args)
                    result: Any = None
                elif file is None:
                    raise StoreError("the file is not open")
                elif op == "replay":
                    result = file.replay()
                elif op == "load_results":
                    result = file.load_results()
                elif op == "count":
                    result = file.count()
                else:
                    raise StoreError(f"unknown request {op!r}")
                answers.append(_frame((True, result)))
            except (sqlite3.Error, StoreError, OSError) as exc:
                answers.append(_frame((False, _error_text(exc))))
            i += 1
        try:
            wout.write(b"".join(answers))
            wout.flush()
        except BrokenPipeError:
            # the server is gone (killed): nobody to answer, nothing to report;
            # what is left in the buffer goes nowhere at exit (Python's advice)
            os.dup2(os.open(os.devnull, os.O_WRONLY), wout.fileno())
            break
    if file is not None:
        file.close()
    return 0


# ---------------------------------------------------------------------------
# the store (in the server, talking to the helper)

class SQLiteStore(Store):
    scheme = "sqlite"
    #: requests queue in the helper's pipe while it writes; it takes them all
    #: into its next transaction
    overlap = int(os.environ.get("GT_OVERLAP", "4"))

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
        #: the answers the helper owes, in the order of the requests
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._closed = True

    def _fail(self, text: str) -> StoreError:
        return StoreError(f"sqlite {self.path}: {text}")

    async def _start(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geartrain.server.stores.sqlite",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 30)
        self._proc, self._waiting = proc, collections.deque()
        self._reader = asyncio.get_running_loop().create_task(
            self._read_answers(proc, self._waiting), name="geartrain-sqlite-answers")
        await self._exchange(proc, "open", (self.path, self.synchronous, self.busy_timeout_ms))

    def _stop_helper(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    async def _read_answers(self, proc: asyncio.subprocess.Process,
                            waiting: collections.deque[asyncio.Future[Any]]) -> None:
        """Hand each answer to its request (they come in the order of the requests)."""
        assert proc.stdout is not None
        why = "EOF"
        try:
            while True:
                head = await proc.stdout.readexactly(_FRAME.size)
                (size,) = _FRAME.unpack(head)
                answer = marshal.loads(await proc.stdout.readexactly(size))
                future = waiting.popleft()
                if not future.done():
                    future.set_result(answer)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            why = type(exc).__name__
        finally:
            if self._proc is proc:
                self._stop_helper()
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_exception(self._fail(f"the sqlite helper process ended ({why})"))

    async def _exchange(self, proc: asyncio.subprocess.Process, op: str,
                        args: tuple[Any, ...]) -> Any:
        assert proc.stdin is not None
        body = marshal.dumps((op, args))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        try:
            proc.stdin.write(_FRAME.pack(len(body)) + body)
            await proc.stdin.drain()
            ok, result = await future
        except (ConnectionError, BrokenPipeError):
            self._stop_helper()
            raise self._fail("the sqlite helper process ended (BrokenPipeError)") from None
        except asyncio.CancelledError:
            # given up on (the committer's timeout): a helper that does not
            # answer is replaced; the requests queued behind this one fail with it
            future.cancel()
            if self._proc is proc:
                self._stop_helper()
            raise
        if not ok:
            raise self._fail(result)
        return result

    async def _call(self, op: str, *args: Any) -> Any:
        if self._closed:
            raise self._fail("the store is closed")
        async with self._starting:  # only ever waits while a helper is started
            if self._proc is None or self._proc.returncode is not None:
                self._proc = None
                await self._start()
            proc = self._proc
        assert proc is not None
        return await self._exchange(proc, op, args)

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
                    dones: Sequence[bytes], results: Sequence[JobResult] = (),
                    result_drops: Sequence[bytes] = ()) -> None:
        flat = list(itertools.chain.from_iterable(adds))  # (StoredJob is a tuple)
        await self._call("apply", flat, list(updates), list(dones),
                         [record_of(r) for r in results], list(result_drops))

    async def load_results(self) -> list[JobResult]:
        return self._results_from_rows(await self._call("load_results"))

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
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader  # ends at the end of the helper's stdout


if __name__ == "__main__":
    raise SystemExit(helper_main())
