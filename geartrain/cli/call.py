"""``geartrain call``: submit jobs and print what they send back, like ``gearman``.

Options and output are those of the ``gearman`` tool's client mode (Debian
gearman-tools 1.1.20): ``-f FUNC`` (repeatable: each workload goes to every
function), ``-h``/``-p``, data from the arguments (one job each) or all of
stdin (one job), ``-n``/``-N`` one job per input line, ``-b``, ``-I``/``-L``,
``-u``, ``-s``, ``-P``, ``-v``, ``-t``. WORK_DATA and the result go to stdout
raw, WORK_STATUS as ``N% Complete`` lines, warnings and exception payloads to
stderr, WORK_FAIL as ``Job failed`` on stderr.

Deliberate differences (gearman's behaviour is a bug in each case): the exit
status says what happened (1 a job failed or raised, 3 no server / connection
lost, 4 timeout; gearman exits 0 except after a WORK_FAIL), WORK_EXCEPTION
ends the job instead of hanging, a zero denominator prints no percentage
instead of crashing, and on a terminal a progress bar replaces the
percentage lines. See docs/tools.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, BinaryIO

from geartrain.client import AsyncClient, Job, Priority, Request
from geartrain.errors import (
    ConnectionLost,
    GearmanError,
    JobException,
    JobFailed,
    NoServerAvailable,
    ServerError,
)
from geartrain.servers import DEFAULT_PORT, ServerAddress, parse_server, parse_servers

EXIT_OK = 0
EXIT_FAILED = 1  #: a job failed (WORK_FAIL), raised (WORK_EXCEPTION) or was refused by the server
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  #: no job server accepted a connection, or one was lost mid-job
EXIT_TIMEOUT = 4  #: -t expired before a job ended

PROG = "geartrain call"

DESCRIPTION = """\
Submit jobs to a Gearman job server and print what they send back, like the
`gearman` tool in client mode. Each DATA argument is one job; without any,
all of stdin is one job (-n/-N: one job per line; -s: one empty job). Every
job goes to each -f function.

Output is gearman's: WORK_DATA and the result on stdout as they are, status
updates as "N% Complete" lines (on a terminal: a progress bar), warnings and
exception payloads on stderr, a failure as "Job failed" on stderr.
"""

EPILOG = """\
servers: -h/-p if given, else $GEARMAN_SERVER (gearman's variable:
host[:port], several separated by commas), else $GEARMAN_SERVERS, else
127.0.0.1:4730. Unlike gearman, -h/-p win over $GEARMAN_SERVER.

exit status: 0 every job completed (or was queued, with -b); 1 a job failed,
raised an exception or was refused by the server; 2 usage error; 3 no job
server reachable, or the connection was lost; 4 timeout (-t).
gearman exits 0 in all of these cases except a failed job.
"""


# ------------------------------------------------------------------ options

def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return port


def _milliseconds(text: str) -> int:
    try:
        ms = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"the timeout must be positive, not {text!r}")
    return ms


def add_server_options(p: argparse.ArgumentParser) -> None:
    """``-h HOST``, ``-p PORT`` and ``--help`` (``-h`` is the host, as in gearman)."""
    p.add_argument("-H", "--help", action="help", help="show this help message and exit")
    p.add_argument("-h", "--host", metavar="HOST",
                   help="job server host (HOST:PORT and [IPv6]:PORT are accepted too)")
    p.add_argument("-p", "--port", type=_port, metavar="PORT",
                   help=f"job server port (default {DEFAULT_PORT})")


def servers_from(host: str | None, port: int | None,
                 environ: dict[str, str] | os._Environ[str] | None = None) -> list[ServerAddress] | None:
    """The servers chosen by -h/-p, else $GEARMAN_SERVER; None when neither is given
    (the caller then uses its default: $GEARMAN_SERVERS or 127.0.0.1:4730).
    Raises ValueError for an address that cannot be parsed."""
    env = os.environ if environ is None else environ
    if host is not None or port is not None:
        address = parse_server(host) if host else ServerAddress("127.0.0.1", DEFAULT_PORT)
        return [ServerAddress(address.host, port)] if port is not None else [address]
    value = env.get("GEARMAN_SERVER", "").strip()
    if value:
        return parse_servers(value)
    return None


def register(sub: Any) -> None:
    """Add the ``call`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "call", add_help=False, help="submit jobs and print their results (like gearman)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-f", "--function", dest="functions", action="append", default=[], metavar="FUNC",
                   help="function to send each job to (repeat for several: each job goes to every one)")
    add_server_options(p)
    p.add_argument("-t", "--timeout", type=_milliseconds, metavar="MS",
                   help="give up on a job (connecting, submitting and waiting for its result) "
                        "after MS milliseconds: exit status 4")
    p.add_argument("-b", "--background", action="store_true",
                   help="submit background jobs: print nothing but the handles (-v), wait for no result")
    p.add_argument("-I", "--high", dest="priority", action="store_const", const=Priority.HIGH,
                   default=Priority.NORMAL, help="high priority")
    p.add_argument("-L", "--low", dest="priority", action="store_const", const=Priority.LOW,
                   help="low priority")
    p.add_argument("-n", "--lines", action="store_true",
                   help="one job per line of stdin, newline included")
    p.add_argument("-N", "--strip-lines", action="store_true",
                   help="one job per line of stdin, newline removed")
    p.add_argument("-P", "--prefix", action="store_true",
                   help='prefix each output with the function name and ": "')
    p.add_argument("-s", "--no-input", action="store_true",
                   help="send one job with an empty workload; do not read stdin")
    p.add_argument("-u", "--unique", metavar="UNIQUE",
                   help="unique key of the jobs (jobs with the same key run once); default: a random UUID")
    p.add_argument("-v", "--verbose", action="store_true",
                   help='print "Task created: HANDLE" for each job the server accepts')
    p.add_argument("-i", "--pid-file", metavar="FILE", help="write the process id to FILE while running")
    p.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto",
                   help='status updates as a progress bar or as gearman\'s "N%% Complete" lines; '
                        "auto (default): a bar when stdout is a terminal")
    p.add_argument("data", nargs="*", metavar="DATA", help="workloads, one job each (default: stdin)")
    p.set_defaults(run=run, call_parser=p)


# ------------------------------------------------------------------- output

BAR_WIDTH = 20
_ERASE = b"\r\x1b[K"


def percent(numerator: int, denominator: int) -> int | None:
    """gearman's ``numerator * 100 / denominator`` (integer division), None for a zero denominator."""
    if denominator == 0:
        return None
    return numerator * 100 // denominator


def render_bar(numerator: int, denominator: int, width: int = BAR_WIDTH) -> bytes:
    """``[#####---------------]  25% (1/4)``; ``[--------------------]    ? (1/0)``."""
    pct = percent(numerator, denominator)
    filled = 0 if pct is None else max(0, min(width, pct * width // 100))
    shown = "   ?" if pct is None else f"{pct:3d}%"
    return f"[{'#' * filled}{'-' * (width - filled)}] {shown} ({numerator}/{denominator})".encode()


class Output:
    """Everything ``geartrain call`` prints, in gearman's format.

    Every write is flushed at once, so stdout and stderr interleave in the
    order events arrived (gearman's order on a terminal). With *bar*, status
    updates redraw one progress line on stdout (a terminal) instead of
    printing percentage lines; the bar is erased before anything else is
    printed and when the job ends.
    """

    def __init__(self, out: BinaryIO, err: BinaryIO, *, prefix: bool = False, bar: bool = False,
                 label_bar: bool = False) -> None:
        self.out = out
        self.err = err
        self.prefix = prefix
        self.bar = bar
        self.label_bar = label_bar or prefix
        self._bar_shown = False
        self._midline = False  #: stdout's cursor is not at the start of a line
        self.broken = False  #: a reader closed stdout or stderr (EPIPE): stop

    def _tag(self, function: str) -> bytes:
        return os.fsencode(function) + b": " if self.prefix else b""

    def _write(self, stream: BinaryIO, data: bytes) -> None:
        if not data or self.broken:
            return
        self.erase_bar()
        try:
            stream.write(data)
            stream.flush()
        except BrokenPipeError:  # raised in a client callback, it would only be logged
            self.broken = True
            return
        if stream is self.out:
            self._midline = not data.endswith(b"\n")

    def _draw(self, data: bytes) -> None:
        try:
            self.out.write(data)
            self.out.flush()
        except BrokenPipeError:
            self.broken = True

    def erase_bar(self) -> None:
        if self._bar_shown:
            self._bar_shown = False
            self._draw(_ERASE)

    # -- job events
    def created(self, handle: str) -> None:
        self._write(self.out, b"Task created: " + os.fsencode(handle) + b"\n")

    def data(self, function: str, chunk: bytes) -> None:
        """WORK_DATA and the result (WORK_COMPLETE): raw, on stdout."""
        self._write(self.out, self._tag(function) + chunk)

    def warning(self, function: str, chunk: bytes) -> None:
        self._write(self.err, self._tag(function) + chunk)

    def status(self, function: str, numerator: int, denominator: int) -> None:
        if not self.bar:
            pct = percent(numerator, denominator)
            if pct is not None:  # gearman divides by zero here (SIGFPE)
                self._write(self.out, self._tag(function) + b"%d%% Complete\n" % pct)
            return
        label = os.fsencode(function) + b": " if self.label_bar else b""
        newline = b"\n" if self._midline and not self._bar_shown else b""  # keep unfinished output
        self._midline = False
        self._draw(newline + _ERASE + label + render_bar(numerator, denominator))
        self._bar_shown = not self.broken

    def failed(self, function: str) -> None:
        self._write(self.err, self._tag(function) + b"Job failed\n")

    def exception(self, function: str, payload: bytes) -> None:
        """WORK_EXCEPTION: the payload on stderr, as gearman's exception callback
        prints it, with a newline added when it has none."""
        text = payload if payload.endswith(b"\n") else payload + b"\n"
        self._write(self.err, self._tag(function) + text)

    def message(self, text: str) -> None:
        """A diagnostic of geartrain's own (not something a job sent)."""
        self._write(self.err, f"{PROG}: {text}\n".encode(errors="replace"))


# ------------------------------------------------------------------- rounds

class Round:
    """The jobs of one workload (one per function), submitted together.

    Output follows the order packets arrive in: WORK_DATA/STATUS/WARNING are
    printed from the client's callbacks as they come, and a job's end is
    printed before the next event that follows it (or as soon as the waiting
    task notices it). Events that arrive before every job of the round is
    created wait until the "Task created" lines are out, as in gearman.
    """

    def __init__(self, out: Output, verbose: bool) -> None:
        self.out = out
        self.verbose = verbose
        self.jobs: list[Job] = []
        self.ready = False
        self.closed = False
        self.code = EXIT_OK
        self._queue: list[Callable[[], None]] = []
        self._reported: set[int] = set()

    # -- callbacks (run on the client's loop as packets arrive)
    def _event(self, action: Callable[[], None]) -> None:
        if self.closed:
            return  # a job this round gave up on (timeout)
        if not self.ready:
            self._queue.append(action)
            return
        self.report_finished()
        action()

    def on_status(self, job: Job, numerator: int, denominator: int) -> None:
        self._event(lambda: self.out.status(job.function, numerator, denominator))

    def on_data(self, job: Job, chunk: bytes) -> None:
        self._event(lambda: self.out.data(job.function, chunk))

    def on_warning(self, job: Job, chunk: bytes) -> None:
        self._event(lambda: self.out.warning(job.function, chunk))

    # -- the round
    def start(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        if self.verbose:
            for job in self.jobs:
                self.out.created(job.handle or "")
        self.ready = True
        queued, self._queue = self._queue, []
        for action in queued:
            action()
        self.report_finished()

    def report_finished(self) -> None:
        for job in self.jobs:
            if job.done() and id(job) not in self._reported:
                self._reported.add(id(job))
                self._report(job)

    def _report(self, job: Job) -> None:
        fn = job.function
        try:
            result = job.result()
        except JobFailed:
            self.out.failed(fn)
            self.fail(EXIT_FAILED)
        except JobException as exc:
            self.out.exception(fn, exc.payload)
            self.fail(EXIT_FAILED)
        except (ConnectionLost, NoServerAvailable) as exc:
            self.out.message(f"{fn}: {exc}")
            self.fail(EXIT_UNREACHABLE)
        except GearmanError as exc:
            self.out.message(f"{fn}: {exc}")
            self.fail(EXIT_FAILED)
        else:
            if self.out.bar:
                self.out.erase_bar()
            self.out.data(fn, result if isinstance(result, bytes) else bytes(result))

    def fail(self, code: int) -> None:
        self.code = max(self.code, code)

    @property
    def unfinished(self) -> list[Job]:
        return [j for j in self.jobs if id(j) not in self._reported]


async def _settle(job: Job) -> None:
    with contextlib.suppress(Exception):
        await job.wait()


class Caller:
    """Runs the rounds of one ``geartrain call``."""

    def __init__(self, client: AsyncClient, args: argparse.Namespace, out: Output) -> None:
        self.client = client
        self.args = args
        self.out = out
        self.code = EXIT_OK

    def _unique(self) -> str:
        # libgearman gives every job without -u a fresh UUID (seen in `show unique jobs`)
        return self.args.unique if self.args.unique is not None else str(uuid.uuid4())

    async def run(self, workloads: AsyncIterator[bytes]) -> int:
        timeout = self.args.timeout / 1000 if self.args.timeout else None
        async for workload in workloads:
            if self.args.background:
                code = await self._background(workload, timeout)
            else:
                code = await self._foreground(workload, timeout)
            self.code = max(self.code, code)
            if code == EXIT_UNREACHABLE:
                break
            if self.out.broken:
                return max(self.code, EXIT_FAILED)
        return self.code

    async def _background(self, workload: bytes, timeout: float | None) -> int:
        requests = [Request(fn, workload, self._unique(), self.args.priority) for fn in self.args.functions]
        try:
            async with asyncio.timeout(timeout):
                results = await self.client.submit_background_many(requests, return_exceptions=True)
        except TimeoutError:
            self.out.message(f"timed out after {self.args.timeout} ms submitting background jobs")
            return EXIT_TIMEOUT
        except (ConnectionLost, NoServerAvailable) as exc:  # not covered by return_exceptions
            self.out.message(str(exc))
            return EXIT_UNREACHABLE
        code = EXIT_OK
        for req, result in zip(requests, results, strict=True):
            if isinstance(result, (ConnectionLost, NoServerAvailable)):
                self.out.message(str(result))
                return EXIT_UNREACHABLE
            if isinstance(result, BaseException):
                self.out.message(f"{req.function}: {result}")
                code = EXIT_FAILED
            elif self.args.verbose:
                self.out.created(result)
        return code

    async def _foreground(self, workload: bytes, timeout: float | None) -> int:
        rnd = Round(self.out, self.args.verbose)
        waiters: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(timeout):
                submits = [self.client.submit_job(
                    fn, workload, unique=self._unique(), priority=self.args.priority,
                    on_status=rnd.on_status, on_data=rnd.on_data, on_warning=rnd.on_warning)
                    for fn in self.args.functions]
                results = await asyncio.gather(*submits, return_exceptions=True)
                jobs = []
                for fn, result in zip(self.args.functions, results, strict=True):
                    if isinstance(result, Job):
                        jobs.append(result)
                    elif isinstance(result, (ConnectionLost, NoServerAvailable)):
                        if rnd.code != EXIT_UNREACHABLE:  # once, not once per function
                            self.out.message(str(result))
                        rnd.fail(EXIT_UNREACHABLE)
                    elif isinstance(result, ServerError):
                        self.out.message(f"{fn}: the server refused the job: {result}")
                        rnd.fail(EXIT_FAILED)
                    elif isinstance(result, Exception):
                        self.out.message(f"{fn}: {result}")
                        rnd.fail(EXIT_FAILED)
                    else:
                        raise result
                rnd.start(jobs)
                waiters = [asyncio.ensure_future(_settle(j)) for j in rnd.unfinished]
                pending: set[asyncio.Task[None]] = set(waiters)
                while pending:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    rnd.report_finished()
        except TimeoutError:
            rnd.report_finished()
            rnd.closed = True
            names = ", ".join(j.function for j in rnd.unfinished) or ", ".join(self.args.functions)
            self.out.message(f"timed out after {self.args.timeout} ms waiting for {names}")
            rnd.fail(EXIT_TIMEOUT)
        finally:
            rnd.closed = True
            for task in waiters:
                task.cancel()
            if self.out.bar:
                self.out.erase_bar()
        return rnd.code


async def read_workloads(args: argparse.Namespace, stdin: BinaryIO) -> AsyncIterator[bytes]:
    """The workloads, as gearman takes them: each argument; else one empty job
    (-s); else each stdin line as it is read (-n/-N); else all of stdin."""
    if args.data:
        for item in args.data:
            yield os.fsencode(item)
        return
    if args.no_input:
        yield b""
        return
    loop = asyncio.get_running_loop()
    if args.lines or args.strip_lines:
        while True:
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                return
            yield line[:-1] if args.strip_lines and line.endswith(b"\n") else line
    yield await loop.run_in_executor(None, stdin.read)


async def call(args: argparse.Namespace, servers: list[ServerAddress] | None, out: Output,
               stdin: BinaryIO) -> int:
    client = AsyncClient(servers)
    try:
        return await Caller(client, args, out).run(read_workloads(args, stdin))
    finally:
        await client.close()


# ---------------------------------------------------------------------- run

@contextlib.contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """gearman's -i: the process id in *path* while running, removed afterwards."""
    if not path:
        yield
        return
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _quiet_stdout() -> None:
    """After EPIPE: no second error when Python flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.call_parser
    if not args.functions:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: no function given (-f FUNC)", file=sys.stderr)
        return EXIT_USAGE
    try:
        servers = servers_from(args.host, args.port)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if servers is None:
        try:
            servers = parse_servers(None)
        except ValueError as exc:
            print(f"{PROG}: error: $GEARMAN_SERVERS: {exc}", file=sys.stderr)
            return EXIT_USAGE
    stdout = sys.stdout.buffer
    bar = args.progress == "bar" or (args.progress == "auto" and stdout.isatty())
    out = Output(stdout, sys.stderr.buffer, prefix=args.prefix, bar=bar,
                 label_bar=len(args.functions) > 1)
    sys.stdout.flush()
    try:
        with pid_file(args.pid_file):
            code = asyncio.run(call(args, servers, out, sys.stdin.buffer))
    except KeyboardInterrupt:
        out.erase_bar()
        return 130
    if out.broken:  # `geartrain call -f f x | head -c 10`
        _quiet_stdout()
        return max(code, EXIT_FAILED)
    return code
