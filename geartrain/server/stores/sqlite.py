"""SQLite store (the default): one file, WAL journal, written by a helper process.

``sqlite:///var/lib/geartrain/queue.db``. Every ``apply()`` is all or
nothing (queued ones may share a transaction); with ``synchronous=FULL``
(the default) the commit reaches the disk before the server answers
JOB_CREATED, so an acknowledged job survives a crash of the process and of
the machine. ``?synchronous=normal`` trades the latter for fewer fsyncs (WAL
mode still survives a process crash).

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

Why batches and not a row per job (schema version 3): the new jobs of one
transaction are one row of ``geartrain_batches``, packed by the server
(``encode_batch``: one C call) and written by the helper as one value, at
about 0.5 us a job against 3.5 us for a row of eight bound columns; a job
that ends or is retried gets a small row in ``geartrain_marks``, and a batch
goes, with its marks, when its last job has. The helper keeps the batch of
each live job in memory (about 100 bytes a job) to know where to mark.

The server's side (``_Helper``) is a subprocess protocol: an answer is
handed to whoever waits for it straight from ``pipe_data_received``, and the
committer's transactions (``start_apply``) wait on a callback, not a task.
"""
from __future__ import annotations

import asyncio
import collections
import marshal
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from geartrain.results import JobResult
from geartrain.server.core.results import record_of
from geartrain.server.stores.base import Store, StoredJob, StoredRows, StoreError, result_row
from geartrain.server.stores.url import StoreURL

SCHEMA_VERSION = 3

#: schema version -> statements taking the previous version to it (a callable
#: is run with the connection, inside the same transaction)
MIGRATIONS: dict[int, list[Any]] = {
    1: [
        # (the job table of versions 1 and 2: one row per job; version 3 packs
        # its rows into batches and drops it)
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
    3: [
        # the jobs stored by one transaction, packed in one value (see
        # encode_batch); batches replay in the order of `batch`
        """CREATE TABLE IF NOT EXISTS geartrain_batches (
            batch       INTEGER PRIMARY KEY,
            format      INTEGER NOT NULL,
            jobs        BLOB NOT NULL
        )""",
        # what happened since to a job of a batch: retries >= 0 is its retry
        # count now, FINISHED that it is gone. A batch whose jobs are all
        # finished is deleted with its marks.
        """CREATE TABLE IF NOT EXISTS geartrain_marks (
            batch       INTEGER NOT NULL,
            handle      BLOB NOT NULL,
            retries     INTEGER NOT NULL,
            PRIMARY KEY (batch, handle)
        ) WITHOUT ROWID""",
        lambda db: _pack_job_rows(db),
        "DROP TABLE geartrain_jobs",
    ],
}

_SYNC = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_COLUMNS = 8  # per job: the fields of StoredJob, in order
_ROWS_PER_DELETE = 500
_FRAME = struct.Struct(">I")
#: geartrain_marks.retries of a job that is gone
FINISHED = -1
#: geartrain_batches.format: a marshal (version 4) list of one tuple per job,
#: its 8 fields in StoredJob's order (lists, tuples, bytes and ints only:
#: read_batch reads it without marshal, so the file does not depend on marshal
#: staying the same)
BATCH_FORMAT = 1
MARSHAL_VERSION = 4
#: a batch bigger than this is stored as several (SQLite's values stop at 1 GB)
MAX_BATCH_BYTES = 256 << 20


def encode_batch(rows: list[tuple[Any, ...]]) -> bytes:
    """The packed value of a batch (*rows*: plain tuples of a job's 8 fields,
    in StoredJob's order)."""
    return marshal.dumps(rows, MARSHAL_VERSION)


def decode_batch(form: int, blob: bytes) -> list[tuple[Any, ...]]:
    if form != BATCH_FORMAT:
        raise StoreError(f"batch format {form} is unknown to this geartrain; upgrade geartrain")
    try:
        rows = marshal.loads(blob)
    except (ValueError, EOFError, TypeError):
        rows = read_batch(blob)  # a marshal that changed: the reference reader
    if not isinstance(rows, list) or not all(type(r) is tuple and len(r) == _COLUMNS for r in rows):
        raise StoreError("a damaged batch of jobs")
    return rows


def read_batch(blob: bytes) -> list[tuple[Any, ...]]:
    """The reference reader of format 1, without marshal: the subset of
    marshal version 4 that ``encode_batch`` writes (a list of tuples of bytes
    and ints, where an object seen before may be a back-reference)."""
    refs: list[Any] = []
    pos = 0

    def read() -> Any:
        nonlocal pos
        code = blob[pos]
        pos += 1
        flag, kind = code & 0x80, chr(code & 0x7F)
        if kind == "r":  # back-reference
            (index,) = struct.unpack_from("<I", blob, pos)
            pos += 4
            return refs[index]
        slot = len(refs)
        if flag:
            refs.append(None)
        if kind == "[":
            (n,) = struct.unpack_from("<I", blob, pos)
            pos += 4
            value: Any = []
            if flag:
                refs[slot] = value
            for _ in range(n):
                value.append(read())
            return value
        if kind in "()":  # a tuple (")": its length in one byte)
            if kind == ")":
                n = blob[pos]
                pos += 1
            else:
                (n,) = struct.unpack_from("<I", blob, pos)
                pos += 4
            value = tuple([read() for _ in range(n)])
        elif kind == "s":
            (n,) = struct.unpack_from("<I", blob, pos)
            value = bytes(blob[pos + 4:pos + 4 + n])
            pos += 4 + n
        elif kind == "i":
            (value,) = struct.unpack_from("<i", blob, pos)
            pos += 4
        elif kind == "l":  # 15-bit digits, the sign on the count
            (n,) = struct.unpack_from("<i", blob, pos)
            digits = struct.unpack_from(f"<{abs(n)}H", blob, pos + 4)
            pos += 4 + 2 * abs(n)
            value = sum(d << (15 * i) for i, d in enumerate(digits)) * (-1 if n < 0 else 1)
        else:
            raise StoreError(f"a damaged batch of jobs (type {kind!r})")
        if flag:
            refs[slot] = value
        return value

    try:
        return read()  # type: ignore[no-any-return]
    except (IndexError, struct.error):
        raise StoreError("a damaged batch of jobs") from None


def _split(rows: list[tuple[Any, ...]], limit: int) -> Iterator[list[tuple[Any, ...]]]:
    """*rows* in parts, each packing to about *limit* bytes at most (a job
    bigger than that alone)."""
    part: list[tuple[Any, ...]] = []
    size = 0
    for job in rows:
        job_size = sum(len(v) + 5 if isinstance(v, bytes) else 5 for v in job)
        if part and size + job_size > limit:
            yield part
            part, size = [], 0
        part.append(job)
        size += job_size
    if part:
        yield part


def _pack_job_rows(db: sqlite3.Connection) -> None:
    """Schema 3: the rows of the per-job table become batches, in their order."""
    rows = db.execute("SELECT handle, function, unique_key, data, priority, when_to_run, reducer, "
                      "retries FROM geartrain_jobs ORDER BY seq").fetchall()
    jobs = [tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row) for row in rows]
    for part in _split(jobs, MAX_BATCH_BYTES):
        db.execute("INSERT INTO geartrain_batches (format, jobs) VALUES (?, ?)",
                   (BATCH_FORMAT, encode_batch(part)))


# ---------------------------------------------------------------------------
# the database itself (runs in the helper process)

class SQLiteFile:
    """The one connection to the file, with the schema and the four verbs.

    Jobs are stored a batch (one apply request) per row, packed: one value
    per transaction is far cheaper to write than a row per job (sqlite3 binds
    and indexes each row), and the helper's CPU is what a durable submit
    waits for. To finish a job or change its retry count, a mark is added
    for it; ``batch_of`` (handle -> batch of each live job) and ``live``
    (batch -> its live jobs) say where, and when a batch's last job is gone
    the batch and its marks are deleted. Both are rebuilt from the file
    whenever it is opened, and after a transaction that failed.
    """

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
        self.batch_of: dict[bytes, int] = {}
        self.live: dict[int, int] = {}
        self._load()

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
                    if callable(statement):
                        statement(db)
                    else:
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _jobs(self) -> Iterator[tuple[int, list[Any]]]:
        """(batch, the 8 fields) of each live job, in the order stored, with
        its retry count now; fills ``batch_of`` and ``live`` as it goes."""
        marks = {(b, bytes(h)): n for b, h, n in
                 self.db.execute("SELECT batch, handle, retries FROM geartrain_marks")}
        batch_of: dict[bytes, int] = {}
        live: dict[int, int] = {}
        self.batch_of, self.live = batch_of, live
        for batch, form, blob in self.db.execute(
                "SELECT batch, format, jobs FROM geartrain_batches ORDER BY batch").fetchall():
            try:
                rows = decode_batch(form, blob)
            except StoreError as exc:
                raise StoreError(
                    f"{exc} in batch {batch} of geartrain_batches; its jobs can only be given up: "
                    f"DELETE FROM geartrain_batches WHERE batch = {batch}") from None
            count = 0
            for row in rows:
                handle = row[0]
                mark = marks.get((batch, handle))
                if mark == FINISHED or handle in batch_of:  # gone, or a copy of a live job
                    continue
                fields = list(row)
                if mark is not None:
                    fields[7] = mark
                batch_of[handle] = batch
                count += 1
                yield batch, fields
            if count:
                live[batch] = count

    def _load(self) -> None:
        for _ in self._jobs():
            pass
        # batches left with no live job, and marks left without their batch
        # (neither happens but by hand, e.g. a damaged batch deleted): tidy up
        empty = [b for (b,) in self.db.execute("SELECT batch FROM geartrain_batches")
                 if b not in self.live]
        orphans = self.db.execute("SELECT 1 FROM geartrain_marks WHERE batch NOT IN "
                                  "(SELECT batch FROM geartrain_batches) LIMIT 1").fetchone()
        if empty or orphans:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._delete_batches(empty)
                self.db.execute("DELETE FROM geartrain_marks WHERE batch NOT IN "
                                "(SELECT batch FROM geartrain_batches)")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _delete_batches(self, batches: list[int]) -> None:
        for i in range(0, len(batches), _ROWS_PER_DELETE):
            chunk = batches[i:i + _ROWS_PER_DELETE]
            marks = ",".join("?" * len(chunk))
            self.db.execute(f"DELETE FROM geartrain_batches WHERE batch IN ({marks})", chunk)
            self.db.execute(f"DELETE FROM geartrain_marks WHERE batch IN ({marks})", chunk)

    def replay(self) -> list[list[Any]]:
        return [fields for _, fields in self._jobs()]

    def apply(self, requests: Sequence[tuple[bytes, list[tuple[bytes, int]], list[bytes],
                                             list[tuple[Any, ...]], list[bytes]]]) -> None:
        """Several apply requests, in order, in ONE transaction (one flush).
        Each is ``(batch, updates, dones, results, result_drops)``; *batch* is
        the new jobs packed by ``encode_batch`` in the server (b"" for none);
        *results* are JobResult fields as tuples (``record_of``): the JSON of
        each is made here, not in the server, whose event loop would spend
        ~5 us per drained job on it."""
        db, batch_of, live = self.db, self.batch_of, self.live
        db.execute("BEGIN IMMEDIATE")
        try:
            marks: list[tuple[int, bytes, int]] = []
            emptied: list[int] = []
            for blob, updates, dones, results, result_drops in requests:
                if blob:
                    self._add(blob, marks, emptied)
                for handle, retries in updates:
                    batch = batch_of.get(handle)
                    if batch is not None:
                        marks.append((batch, handle, retries))
                for handle in dones:
                    batch = batch_of.pop(handle, None)
                    if batch is None:
                        continue  # not stored (or gone already): nothing to do
                    left = live[batch] - 1
                    if left:
                        live[batch] = left
                        marks.append((batch, handle, FINISHED))
                    else:
                        del live[batch]
                        emptied.append(batch)
                if results:
                    result_rows = [result_row(JobResult(*fields)) for fields in results]
                    db.executemany("INSERT OR REPLACE INTO geartrain_results (handle, function, "
                                   "unique_key, state, finished, record) VALUES (?,?,?,?,?,?)",
                                   result_rows)
                for i in range(0, len(result_drops), _ROWS_PER_DELETE):
                    handles = result_drops[i:i + _ROWS_PER_DELETE]
                    where = ",".join("?" * len(handles))
                    db.execute(f"DELETE FROM geartrain_results WHERE handle IN ({where})", handles)
            if marks:
                if emptied:
                    marks = [m for m in marks if m[0] in live]
                db.executemany("INSERT OR REPLACE INTO geartrain_marks (batch, handle, retries) "
                               "VALUES (?,?,?)", marks)
            if emptied:
                self._delete_batches(emptied)
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._load()  # what the file says, not what the failed transaction did
            raise

    def _add(self, blob: bytes, marks: list[tuple[int, bytes, int]], emptied: list[int]) -> None:
        """Store one batch of new jobs (split if it is too big for one value)."""
        rows = decode_batch(BATCH_FORMAT, blob)
        if len(blob) > MAX_BATCH_BYTES:
            for part in _split(rows, MAX_BATCH_BYTES):
                self._add_part(encode_batch(part), part, marks, emptied)
        else:
            self._add_part(blob, rows, marks, emptied)

    def _add_part(self, blob: bytes, rows: list[tuple[Any, ...]], marks: list[tuple[int, bytes, int]],
                  emptied: list[int]) -> None:
        batch = self.db.execute("INSERT INTO geartrain_batches (format, jobs) VALUES (?, ?)",
                                (BATCH_FORMAT, blob)).lastrowid
        assert batch is not None
        batch_of = self.batch_of
        count = 0
        for row in rows:
            handle = row[0]
            other = batch_of.get(handle)
            if other is None:
                batch_of[handle] = batch
                count += 1
            elif other != batch:  # already stored: the first one stays
                marks.append((batch, handle, FINISHED))
        if count:
            self.live[batch] = count
        else:
            emptied.append(batch)

    def load_results(self) -> list[tuple[Any, ...]]:
        return self.db.execute("SELECT handle, function, unique_key, record FROM geartrain_results "
                               "ORDER BY finished, handle").fetchall()

    def count(self) -> int:
        return len(self.batch_of)

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
            requests = _unframe(self.buffer)
            if requests:
                return requests
            data = os.read(self.fd, 1 << 20)
            if not data:
                return None
            self.buffer += data


# requests and answers alike: a 4-byte length, then a marshal body

def _frame(value: Any) -> bytes:
    body = marshal.dumps(value)
    return _FRAME.pack(len(body)) + body


def _unframe(buffer: bytearray) -> list[Any]:
    """The values of the complete frames at the start of *buffer*, taken out of it."""
    values = []
    offset = 0
    while len(buffer) - offset >= _FRAME.size:
        (size,) = _FRAME.unpack_from(buffer, offset)
        end = offset + _FRAME.size + size
        if end > len(buffer):
            break
        values.append(marshal.loads(buffer[offset + _FRAME.size:end]))
        offset = end
    del buffer[:offset]
    return values


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

#: what waits for one answer of the helper: called with ``(ok, result)``
_Answer = Callable[[tuple[bool, Any]], None]


class _Helper(asyncio.SubprocessProtocol):
    """The server's end of one helper process: requests go down its stdin,
    answers come back on its stdout in the order of the requests, and each
    is handed to the callback waiting for it as soon as it arrives, from
    ``pipe_data_received`` (no reader task, no future on the commit path)."""

    def __init__(self, fail: Callable[[str], StoreError]) -> None:
        self.fail = fail
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        #: the answers the helper owes, in the order of the requests
        self.waiting: collections.deque[_Answer] = collections.deque()
        self.buffer = bytearray()
        self.ended = False
        self.exited = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not derive from asyncio's classes)
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self.stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self.buffer += data
        waiting = self.waiting
        for answer in _unframe(self.buffer):
            if waiting:
                waiting.popleft()(answer)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:  # its stdout: no more answers
            self.end("EOF" if exc is None else type(exc).__name__)

    def process_exited(self) -> None:
        # (answers it wrote may still be in the pipe: the requests waiting
        # for them fail only at the end of its stdout, in pipe_connection_lost)
        self.ended = True
        if not self.exited.done():
            self.exited.set_result(None)

    def end(self, why: str) -> None:
        """The helper is gone (or given up on): every request waiting on it fails."""
        self.ended = True
        waiting = self.waiting
        text = f"the sqlite helper process ended ({why})"
        while waiting:
            waiting.popleft()((False, text))
        if self.transport is not None:
            self.transport.close()  # (kills it if it still runs)

    def kill(self) -> None:
        self.end("killed")

    @property
    def usable(self) -> bool:
        return not self.ended and self.stdin is not None and not self.stdin.is_closing()

    def send(self, op: str, args: tuple[Any, ...], answer: _Answer) -> None:
        """Send one request; *answer* gets ``(ok, result)``. (No drain: the
        committer has at most Store.overlap requests in flight, so what
        waits in the pipe's buffer is bounded.)"""
        assert self.stdin is not None
        self.waiting.append(answer)
        self.stdin.write(_frame((op, args)))

    async def request(self, op: str, args: tuple[Any, ...]) -> Any:
        """Send one request and wait for its answer (``(ok, result)``)."""
        if not self.usable:
            raise self.fail("the sqlite helper process ended (BrokenPipeError)")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answer(result: tuple[bool, Any]) -> None:
            if not future.done():
                future.set_result(result)

        self.send(op, args, answer)
        try:
            return await future
        except asyncio.CancelledError:
            # given up on (a timeout): a helper that does not answer is
            # replaced; the requests queued behind this one fail with it
            self.kill()
            raise


class SQLiteStore(Store):
    scheme = "sqlite"
    #: requests queue in the helper's pipe while it writes; it takes them all
    #: into its next transaction (8 or 16 measured no different from 4)
    overlap = 4

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
        self._helper: _Helper | None = None
        self._starting = asyncio.Lock()
        self._closed = True

    @property
    def helper_pid(self) -> int | None:
        """The helper process's pid while one runs."""
        helper = self._helper
        if helper is None or helper.ended or helper.transport is None:
            return None
        return helper.transport.get_pid()

    def _fail(self, text: str) -> StoreError:
        return StoreError(f"sqlite {self.path}: {text}")

    async def _start(self) -> _Helper:
        _, helper = await asyncio.get_running_loop().subprocess_exec(
            lambda: _Helper(self._fail), sys.executable, "-m", "geartrain.server.stores.sqlite",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
        ok, result = await helper.request("open", (self.path, self.synchronous, self.busy_timeout_ms))
        if not ok:
            helper.kill()
            raise self._fail(result)
        return helper

    async def _call(self, op: str, *args: Any) -> Any:
        if self._closed:
            raise self._fail("the store is closed")
        helper = self._helper
        if helper is None or helper.ended:
            async with self._starting:  # one start at a time; the others wait for it
                helper = self._helper
                if helper is None or helper.ended:
                    self._helper = None
                    helper = self._helper = await self._start()
        ok, result = await helper.request(op, args)
        if not ok:
            raise self._fail(result)
        return result

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
        await self._call("apply", *self._apply_args(adds, updates, dones, results, result_drops))

    def start_apply(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes], results: Sequence[JobResult], result_drops: Sequence[bytes],
                    done: Callable[[BaseException | None], None]) -> Callable[[], None]:
        """The committer's path: the request goes down the pipe at once and
        *done* is called from the helper's answer. Without a running helper
        (none yet, or it died), apply() in a task starts one."""
        helper = self._helper
        if self._closed or helper is None or not helper.usable:
            return super().start_apply(adds, updates, dones, results, result_drops, done)
        fail = self._fail

        def answered(answer: tuple[bool, Any]) -> None:
            ok, result = answer
            done(None if ok else fail(result))

        helper.send("apply", self._apply_args(adds, updates, dones, results, result_drops), answered)
        return helper.kill  # giving up on an answer: that helper is replaced

    @staticmethod
    def _apply_args(adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes], results: Sequence[JobResult],
                    result_drops: Sequence[bytes]) -> tuple[Any, ...]:
        if not adds:
            batch = b""
        elif isinstance(adds, StoredRows):  # the committer's: plain tuples, no StoredJob made
            batch = encode_batch(adds.tuples())
        else:  # (marshal writes plain tuples only)
            batch = encode_batch([tuple(job) for job in adds])
        return batch, list(updates), list(dones), [record_of(r) for r in results], list(result_drops)

    async def load_results(self) -> list[JobResult]:
        return self._results_from_rows(await self._call("load_results"))

    async def count(self) -> int:
        return int(await self._call("count"))

    async def close(self) -> None:
        self._closed = True
        helper, self._helper = self._helper, None
        if helper is None or helper.transport is None:
            return
        if helper.stdin is not None:
            helper.stdin.close()  # the helper ends at the end of its stdin
        try:
            await asyncio.wait_for(asyncio.shield(helper.exited), 10)
        except TimeoutError:
            helper.kill()
            await helper.exited
        helper.transport.close()


if __name__ == "__main__":
    raise SystemExit(helper_main())
