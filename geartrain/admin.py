"""Admin client: the job server's text protocol (``status``, ``workers``, ...) as typed rows.

:class:`AsyncAdminClient` is the asyncio implementation; :class:`AdminClient`
is the blocking facade (it runs the async client on a background
:class:`~geartrain.syncloop.LoopThread`, so one instance may be shared between
threads). Both hold one connection, opened on first use (or on ``async
with``/``with``) and reopened by the next call after it broke; requests on it
are serialized.

Replies are parsed into frozen dataclasses. Function names, client ids, job
handles and unique ids are ``str`` decoded from UTF-8 with
``errors="surrogateescape"``: any byte string round-trips through
``name.encode("utf-8", "surrogateescape")``. An ``ERR CODE text`` reply raises
:class:`~geartrain.errors.ServerError`; transport trouble raises
:class:`~geartrain.errors.NoServerAvailable` (cannot connect) or
:class:`~geartrain.errors.ConnectionLost` (the connection broke, or no reply
came within *timeout*: :class:`AdminTimeout`).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from geartrain.errors import ConnectionLost, GearmanError, NoServerAvailable, ServerError
from geartrain.servers import DEFAULT_HOST, DEFAULT_PORT, ServerAddress, parse_server
from geartrain.syncloop import LoopThread

__all__ = [
    "AdminClient",
    "AdminTimeout",
    "AsyncAdminClient",
    "FunctionStatus",
    "JobInfo",
    "PriorityStatus",
    "UnexpectedReply",
    "WorkerInfo",
    "parse_error",
    "parse_jobs",
    "parse_priority_status",
    "parse_status",
    "parse_unique_jobs",
    "parse_workers",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
#: Longest reply line accepted (a ``workers`` line lists every function of a connection).
MAX_LINE = 16 << 20

# Commands whose reply is a listing ended by a "." line (first word, or first two for "show").
_LIST_COMMANDS = frozenset({b"status", b"prioritystatus", b"workers", b"jobs", b"clients"})
# Commands whose reply is always a single OK/ERR line.
_LINE_COMMANDS = frozenset({
    b"version", b"getpid", b"verbose", b"cancel", b"create", b"drop", b"maxqueue", b"shutdown",
})
_CODE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_BAD_TOKEN = re.compile(rb"[\x00-\x20\x7f]")


class AdminTimeout(ConnectionLost, TimeoutError):
    """No (complete) reply within the client's timeout; the connection was closed."""


class UnexpectedReply(GearmanError):
    """The server answered with something this client cannot parse; the connection was closed."""


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    """A ``status`` row. *total* counts queued and running jobs; *workers* counts CAN_DO registrations."""

    name: str
    total: int
    running: int
    workers: int

    @property
    def queued(self) -> int:
        """``total - running``: jobs not running, as the server counts them (gearmand and
        geartrain count a cancelled job until it is reaped)."""
        return max(0, self.total - self.running)


@dataclass(frozen=True, slots=True)
class PriorityStatus:
    """A ``prioritystatus`` row: queued (not running) jobs per priority, and available workers."""

    name: str
    high: int
    normal: int
    low: int
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A ``workers`` row: one per connection (clients and admin connections too).

    *client_id* is what the connection set with SET_CLIENT_ID (``"-"`` if it set none);
    *functions* lists its CAN_DO registrations as the server lists them (newest first
    on gearmand and geartrain).
    """

    fd: int
    address: str
    client_id: str
    functions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A ``show jobs`` row. *ignored*: an abandoned foreground job or a cancelled one;
    *queued*: a background job."""

    handle: str
    retries: int
    ignored: bool
    queued: bool


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _encode(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _token(value: str | bytes, what: str) -> bytes:
    """One word of an admin command: non-empty, no spaces or control characters."""
    raw = _encode(value)
    if not raw or _BAD_TOKEN.search(raw):
        raise ValueError(f"{what} {value!r} cannot be sent in an admin command "
                         "(empty, or has spaces or control characters)")
    return raw


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


def _kind(command: bytes) -> str:
    """How the reply to *command* ends: ``"list"`` / ``"uniques"`` (a ``.`` line, unless
    an ERR line comes first), ``"line"`` (one line) or ``"any"`` (one line if it is
    OK/ERR, else a listing)."""
    words = command.split()
    if not words:
        return "line"
    first = words[0].lower()
    if first in _LIST_COMMANDS:
        return "list"
    if first in _LINE_COMMANDS:
        return "line"
    if first == b"show":
        rest = [w.lower() for w in words[1:]]
        if rest == [b"jobs"]:
            return "list"
        if rest == [b"unique", b"jobs"]:
            return "uniques"
    return "any"


def _is_error(line: bytes) -> bool:
    """Whether a reply's first line is an ``ERR`` line (a status row "ERR x\\t..." is not)."""
    return (line.startswith(b"ERR ") or _strip_eol(line) == b"ERR") and b"\t" not in line


def parse_error(line: bytes, server: str | None = None) -> ServerError:
    """The :class:`ServerError` of an ``ERR ...`` line.

    ``ERR CODE url+encoded+text`` gives ``code="CODE"`` and the decoded text. gearmand
    also sends bare messages (``ERR function not found``): when the first word is not
    an upper-case code, the whole decoded message is the code and the text is empty.
    """
    rest = _text(_strip_eol(line)[4:]).strip(" ")
    word, _, text = rest.partition(" ")
    if _CODE.match(word):
        return ServerError(word, unquote_plus(text.strip(" ")), server)
    return ServerError(unquote_plus(rest), "", server)


def _ints(fields: list[str], line: bytes) -> list[int]:
    try:
        return [int(f) for f in fields]
    except ValueError:
        raise UnexpectedReply(f"not a number in admin reply line {line!r}") from None


def parse_status(reply: bytes) -> list[FunctionStatus]:
    rows = []
    for line in _lines(reply):
        cols = _text(line).rsplit("\t", 3)
        if len(cols) != 4:
            raise UnexpectedReply(f"bad status line {line!r}")
        rows.append(FunctionStatus(cols[0], *_ints(cols[1:], line)))
    return rows


def parse_priority_status(reply: bytes) -> list[PriorityStatus]:
    rows = []
    for line in _lines(reply):
        cols = _text(line).rsplit("\t", 4)
        if len(cols) != 5:
            raise UnexpectedReply(f"bad prioritystatus line {line!r}")
        rows.append(PriorityStatus(cols[0], *_ints(cols[1:], line)))
    return rows


def parse_workers(reply: bytes) -> list[WorkerInfo]:
    """``FD IP CLIENT-ID : FUNC FUNC...`` lines (``FD IP CLIENT-ID :`` without functions).

    The client id may be empty or hold spaces (even `` : ``), so the line is split at
    the *last* `` :`` that ends the line or is followed by a space; function names,
    space-separated by the server, cannot hold spaces anyway.
    """
    rows = []
    for line in _lines(reply):
        text = _text(line)
        parts = text.split(" ", 2)
        if len(parts) != 3:
            raise UnexpectedReply(f"bad workers line {line!r}")
        fd, address, rest = parts
        if rest.endswith(" :") or rest == ":":
            cut = len(rest) - 2
        else:
            cut = rest.rfind(" : ")
            if cut < 0 and rest.startswith(": "):
                cut = -1  # empty client id: "FD IP  : FUNC" leaves ": FUNC"
            elif cut < 0:
                raise UnexpectedReply(f"bad workers line {line!r}")
        client_id = rest[:cut] if cut >= 0 else ""
        functions = tuple(f for f in rest[cut + 2:].split(" ") if f)
        rows.append(WorkerInfo(_ints([fd], line)[0], address, client_id, functions))
    return rows


def parse_jobs(reply: bytes) -> list[JobInfo]:
    rows = []
    for line in _lines(reply):
        cols = _text(line).rsplit("\t", 3)
        if len(cols) != 4:
            raise UnexpectedReply(f"bad show jobs line {line!r}")
        retries, ignored, queued = _ints(cols[1:], line)
        rows.append(JobInfo(cols[0], retries, bool(ignored), bool(queued)))
    return rows


def parse_unique_jobs(reply: bytes) -> list[str]:
    return [_text(line) for line in _lines(reply)]


def _lines(reply: bytes) -> list[bytes]:
    """The rows of a listing reply, without line endings and the final ``.``."""
    lines = [_strip_eol(line) for line in reply.split(b"\n")]
    if lines and not lines[-1]:
        lines.pop()  # after the last "\n"
    if not lines or lines[-1] != b".":
        raise UnexpectedReply(f"listing not ended by '.': {reply[-80:]!r}")
    return lines[:-1]


class AsyncAdminClient:
    """Admin connection to one job server (asyncio).

    ``server`` is ``"host:port"``, ``"host"``, ``"[::1]:4730"`` or a ``(host, port)``
    tuple. ``timeout`` (seconds, ``None`` for none) bounds connecting and each reply.
    """

    def __init__(self, server: str | tuple[str, int] | ServerAddress = f"{DEFAULT_HOST}:{DEFAULT_PORT}",
                 *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.address = parse_server(server)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} {'connected' if self.connected else 'idle'}>"

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    # ------------------------------------------------------------ connection

    async def __aenter__(self) -> AsyncAdminClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection now (calls open it on demand otherwise)."""
        async with self._lock:
            await self._ensure_connected()

    async def close(self) -> None:
        """Close the connection (after a request in progress has its reply)."""
        async with self._lock:
            writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError):  # pragma: no cover - peer already gone
                pass

    def _abort(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    async def _ensure_connected(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            if not self._reader.at_eof() and not self._writer.is_closing():
                return self._reader, self._writer
            self._abort()  # the server closed it since the last call
        host, port = self.address
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_LINE), self.timeout)
        except TimeoutError:
            raise NoServerAvailable(f"cannot connect to {self.address}: timed out") from None
        except OSError as exc:
            raise NoServerAvailable(f"cannot connect to {self.address}: {exc.strerror or exc}") from None
        self._reader, self._writer = reader, writer
        return reader, writer

    # ------------------------------------------------------------ requests

    async def raw(self, command: str | bytes, *, check: bool = False) -> bytes:
        """Send one admin line and return the server's reply verbatim (line endings included).

        ``ERR`` replies are returned, unless *check*: then they raise :class:`ServerError`.
        The reply ends after one line for ``version``, ``getpid``, ``cancel``, ``create``,
        ``drop``, ``maxqueue`` ...; after the ``.`` line for ``status``, ``prioritystatus``,
        ``workers``, ``show jobs``, ``show unique jobs`` (unless the first line is an
        ``ERR``); for other commands after one line if it starts with ``OK``/``ERR``,
        else after a ``.`` line.
        """
        data, error = await self._request(command)
        if check and error:
            raise parse_error(data, str(self.address))
        return data

    async def _request(self, command: str | bytes) -> tuple[bytes, bool]:
        """The reply to *command*, and whether it is an ERR line."""
        line = _encode(command)
        if b"\n" in line or b"\r" in line:
            raise ValueError("an admin command is a single line")
        async with self._lock:
            try:
                reader, writer = await self._ensure_connected()
                data, error, reusable = await self._exchange(reader, writer, line)
            except BaseException:
                self._abort()  # the reply's end is unknown: never reuse the connection
                raise
            if not reusable:
                self._abort()
            return data, error

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        line: bytes) -> tuple[bytes, bool, bool]:
        try:
            writer.write(line + b"\r\n")
            return await asyncio.wait_for(self._read_reply(reader, writer, _kind(line)), self.timeout)
        except TimeoutError:
            raise AdminTimeout(f"no reply to {line[:40]!r} from {self.address} "
                               f"within {self.timeout}s") from None
        except asyncio.IncompleteReadError:
            raise ConnectionLost(f"{self.address} closed the connection") from None
        except asyncio.LimitOverrunError:
            raise UnexpectedReply(f"a reply line from {self.address} is over {MAX_LINE} bytes") from None
        except OSError as exc:
            raise ConnectionLost(f"connection to {self.address} lost: {exc.strerror or exc}") from None

    @staticmethod
    async def _read_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          kind: str) -> tuple[bytes, bool, bool]:
        """The reply; whether it is an ERR line; whether the connection may carry another request."""
        await writer.drain()
        first = await reader.readuntil(b"\n")
        if _is_error(first):
            if kind != "uniques":
                # In other listings an ERR line is unmistakable: status, prioritystatus and
                # show jobs rows have tabs (error texts are url-encoded), workers rows start
                # with a digit.
                return first, True, True
            if first.endswith(b"\r\n"):
                # A unique id can be anything, but servers end ERR lines with CRLF and rows
                # with LF. Should a unique id "ERR x\r" still pass for an error, the rest of
                # that listing must never be taken for the next reply: drop the connection.
                return first, True, False
        elif kind == "line" or (kind == "any" and first.startswith(b"OK")):
            return first, False, True
        lines = [first]
        line = first
        while _strip_eol(line) != b".":
            line = await reader.readuntil(b"\n")
            lines.append(line)
        return b"".join(lines), False, True

    async def _call(self, line: bytes) -> bytes:
        return await self.raw(line, check=True)

    async def _ok(self, line: bytes) -> str:
        """The text after ``OK`` of a one-line reply."""
        reply = await self._call(line)
        if not reply.startswith(b"OK"):
            raise UnexpectedReply(f"expected OK to {line!r}, got {reply[:80]!r}")
        return _text(_strip_eol(reply)[2:]).strip(" ")

    # ------------------------------------------------------------ listings

    async def status(self) -> list[FunctionStatus]:
        """``status``: every function the server knows, in the server's order."""
        return parse_status(await self._call(b"status"))

    async def priority_status(self) -> list[PriorityStatus]:
        """``prioritystatus``: queued jobs per priority of every function."""
        return parse_priority_status(await self._call(b"prioritystatus"))

    async def workers(self) -> list[WorkerInfo]:
        """``workers``: every connection, including this one."""
        return parse_workers(await self._call(b"workers"))

    async def show_jobs(self) -> list[JobInfo]:
        """``show jobs``: every job the server holds."""
        return parse_jobs(await self._call(b"show jobs"))

    async def show_unique_jobs(self) -> list[str]:
        """``show unique jobs``: the unique id of every job (``""`` for a job without one)."""
        return parse_unique_jobs(await self._call(b"show unique jobs"))

    # ------------------------------------------------------------ info

    async def version(self) -> str:
        return await self._ok(b"version")

    async def getpid(self) -> int:
        text = await self._ok(b"getpid")
        try:
            return int(text)
        except ValueError:
            raise UnexpectedReply(f"getpid answered {text!r}") from None

    async def verbose(self) -> str:
        """The server's log level (``INFO``, ``DEBUG``, ...)."""
        return await self._ok(b"verbose")

    # ------------------------------------------------------------ mutations

    async def cancel_job(self, handle: str | bytes) -> bool:
        """Remove a queued job; ``False`` if the server has no such job (``ERR UNKNOWN_JOB``)."""
        try:
            await self._ok(b"cancel job " + _token(handle, "job handle"))
        except ServerError as err:
            if err.code == "UNKNOWN_JOB":
                return False
            raise
        return True

    async def create_function(self, name: str | bytes) -> None:
        """Make the server list *name* in ``status`` even without workers or jobs."""
        await self._ok(b"create function " + _token(name, "function name"))

    async def drop_function(self, name: str | bytes) -> None:
        """Forget an idle function; :class:`ServerError` if unknown or still in use."""
        await self._ok(b"drop function " + _token(name, "function name"))

    async def maxqueue(self, function: str | bytes, limit: int | tuple[int, int, int]) -> None:
        """Limit queued jobs of *function*: one limit for all priorities, or (high, normal, low).

        0 means unlimited.
        """
        limits = (limit,) if isinstance(limit, int) else tuple(limit)
        if len(limits) not in (1, 3) or not all(isinstance(n, int) and n >= 0 for n in limits):
            raise ValueError(f"maxqueue limit must be an int >= 0 or three of them, not {limit!r}")
        numbers = b" ".join(b"%d" % n for n in limits)
        await self._ok(b"maxqueue " + _token(function, "function name") + b" " + numbers)


class AdminClient:
    """Blocking admin client: the methods of :class:`AsyncAdminClient`, run on a background
    event loop thread. Safe to share between threads (requests are serialized).
    Use it as a context manager, or call :meth:`close`."""

    def __init__(self, server: str | tuple[str, int] | ServerAddress = f"{DEFAULT_HOST}:{DEFAULT_PORT}",
                 *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self._async = AsyncAdminClient(server, timeout=timeout)
        self._thread = LoopThread(name="geartrain-admin")
        self._closed = False
        self._finalizer = weakref.finalize(self, self._thread.stop)

    @property
    def address(self) -> ServerAddress:
        return self._async.address

    @property
    def timeout(self) -> float | None:
        return self._async.timeout

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}{' closed' if self._closed else ''}>"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("AdminClient is closed")
        return self._thread.run(coro)

    def __enter__(self) -> AdminClient:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        self._run(self._async.connect())

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._thread.run(self._async.close())
        finally:
            self._closed = True
            self._finalizer()

    def raw(self, command: str | bytes, *, check: bool = False) -> bytes:
        return self._run(self._async.raw(command, check=check))

    def status(self) -> list[FunctionStatus]:
        return self._run(self._async.status())

    def priority_status(self) -> list[PriorityStatus]:
        return self._run(self._async.priority_status())

    def workers(self) -> list[WorkerInfo]:
        return self._run(self._async.workers())

    def show_jobs(self) -> list[JobInfo]:
        return self._run(self._async.show_jobs())

    def show_unique_jobs(self) -> list[str]:
        return self._run(self._async.show_unique_jobs())

    def version(self) -> str:
        return self._run(self._async.version())

    def getpid(self) -> int:
        return self._run(self._async.getpid())

    def verbose(self) -> str:
        return self._run(self._async.verbose())

    def cancel_job(self, handle: str | bytes) -> bool:
        return self._run(self._async.cancel_job(handle))

    def create_function(self, name: str | bytes) -> None:
        self._run(self._async.create_function(name))

    def drop_function(self, name: str | bytes) -> None:
        self._run(self._async.drop_function(name))

    def maxqueue(self, function: str | bytes, limit: int | tuple[int, int, int]) -> None:
        self._run(self._async.maxqueue(function, limit))
