"""``geartrain worker``: serve functions with a command per job (like ``gearman -w``),
or serve the Python functions of a worker object (``MODULE:OBJECT``).

Command mode (``-f NAME [-f NAME2] -- COMMAND ARGS``) behaves like
``gearman -w``: each job runs COMMAND with the workload on its stdin, and its
stdout becomes the result; a non-zero exit fails the job (WORK_FAIL) after
sending the output as WORK_DATA; ``-n``/``-N`` send each output line as
WORK_DATA instead; with no COMMAND the workload is printed on the worker's
stdout and the result is empty; ``-c N`` exits after N jobs.

Deliberate differences from gearman: ``-n`` sends each line once (gearman
1.1.20 re-sends everything read so far with every line), ``-N`` removes a
newline only (gearman drops the last byte of each line, newline or not), a
command killed by a signal fails its job (gearman reports success), the
workload is written while the output is read (gearman deadlocks on large
payloads), ``-j N`` runs N jobs at once, and SIGTERM/SIGINT stop gracefully:
nothing new is taken and running jobs finish (a second signal aborts them:
the servers requeue their jobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from geartrain.cli.call import add_server_options, pid_file, servers_from
from geartrain.errors import JobFailed
from geartrain.servers import ServerAddress
from geartrain.worker import AsyncWorker, Worker, WorkerJob, run_until_signalled

PROG = "geartrain worker"
EXIT_USAGE = 2

log = logging.getLogger("geartrain.cli.worker")

DESCRIPTION = """\
Serve Gearman functions.

  geartrain worker -f NAME [-f NAME2 ...] [-- COMMAND [ARGS ...]]
      like `gearman -w`: run COMMAND for each job, with the workload on its
      stdin; its stdout is the result. A non-zero exit fails the job (its
      output is sent first, as WORK_DATA). With -n/-N each output line is sent
      as WORK_DATA and the result is empty. Without COMMAND the workload is
      printed on this worker's stdout and the result is empty.

  geartrain worker MODULE:OBJECT
      serve the Python functions registered on OBJECT: an AsyncWorker or
      Worker instance, or a callable returning one (MODULE is imported from
      the current directory or sys.path; OBJECT may be dotted).
"""

EPILOG = """\
servers: -h/-p if given, else $GEARMAN_SERVER (host[:port], comma separated),
else $GEARMAN_SERVERS, else 127.0.0.1:4730. For MODULE:OBJECT, -h/-p and
$GEARMAN_SERVER replace the servers the object was created with; otherwise
the object's own servers are used.

signals: SIGTERM/SIGINT stop gracefully: no new job is taken, running jobs
finish and send their results, then the worker exits 0. A second signal
aborts: running commands are terminated, their jobs go back to the server's
queue (for another worker), and the worker exits 128+signal.
Commands run in their own process group, so a Ctrl-C on the terminal does
not reach them.
"""

_MODULE_OBJECT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return n


def register(sub: Any) -> None:
    """Add the ``worker`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "worker", add_help=False, help="serve functions: a command per job (like gearman -w) or Python",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="geartrain worker [options] -f NAME [-f NAME ...] [--] [COMMAND [ARGS ...]]\n"
              "       geartrain worker [options] MODULE:OBJECT",
    )
    p.add_argument("-f", "--function", dest="functions", action="append", default=[], metavar="NAME",
                   help="function to serve with COMMAND (repeat for several)")
    add_server_options(p)
    p.add_argument("-c", "--count", type=_positive, metavar="N", help="exit after N jobs")
    p.add_argument("-n", "--lines", action="store_true",
                   help="send each line COMMAND prints as WORK_DATA (newline included); empty result")
    p.add_argument("-N", "--strip-lines", action="store_true",
                   help="same as -n, without the newline")
    p.add_argument("-j", "--jobs", type=_positive, metavar="N",
                   help="run up to N jobs at once (default 1; for MODULE:OBJECT, the object's concurrency)")
    p.add_argument("-t", "--timeout", type=_positive, metavar="MS",
                   help="kill a COMMAND still running after MS milliseconds; its job fails")
    p.add_argument("--client-id", metavar="ID", help="client id shown by the server's `workers` listing")
    p.add_argument("-v", "--verbose", action="store_true", help="log connections and job errors on stderr")
    p.add_argument("-i", "--pid-file", metavar="FILE", help="write the process id to FILE while running")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND | MODULE:OBJECT",
                   help="the command to run per job (after --), or the worker object to serve")
    p.set_defaults(run=run, worker_parser=p)


# --------------------------------------------------------------- command mode

class CommandRunner:
    """Runs COMMAND for one job, as ``gearman -w`` does."""

    def __init__(self, command: Sequence[str], *, lines: bool = False, strip: bool = False,
                 timeout: float | None = None, stdout: BinaryIO | None = None) -> None:
        self.command = list(command)
        self.lines = lines or strip
        self.strip = strip
        self.timeout = timeout
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.running: set[asyncio.subprocess.Process] = set()

    async def run(self, job: WorkerJob) -> bytes:
        if not self.command:  # gearman -w without a command: print the workload
            self.stdout.write(job.raw)
            self.stdout.flush()
            return b""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                process_group=0)
        except OSError as exc:
            _say(f"{job.function}: cannot run {self.command[0]}: {exc.strerror or exc}")
            raise JobFailed(f"cannot run {self.command[0]}", job.handle) from None
        self.running.add(proc)
        output = b""
        try:
            async with asyncio.timeout(self.timeout):
                feeder = asyncio.ensure_future(_feed(proc, job.raw))
                assert proc.stdout is not None
                if self.lines:
                    await self._send_lines(proc.stdout, job)
                else:
                    output = await proc.stdout.read()
                code = await proc.wait()
                await feeder
        except TimeoutError:
            _kill(proc)
            await proc.wait()
            _say(f"{job.function}: {self.command[0]} killed after {(self.timeout or 0) * 1000:.0f} ms")
            raise JobFailed(f"{self.command[0]} timed out", job.handle) from None
        except asyncio.CancelledError:  # the worker is aborting: the server requeues the job
            _kill(proc)
            raise
        finally:
            self.running.discard(proc)
        if code != 0:
            if output:
                job.send_data(output)
            raise JobFailed(f"{self.command[0]} exited with {code}", job.handle)
        return output

    async def _send_lines(self, stream: asyncio.StreamReader, job: WorkerJob) -> None:
        rest = b""
        while True:
            chunk = await stream.read(1 << 16)
            if not chunk:
                break
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for line in lines:
                job.send_data(line if self.strip else line + b"\n")
        if rest:
            job.send_data(rest)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    stdin = proc.stdin
    assert stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            stdin.write(data)
            await stdin.drain()
        stdin.close()
        await stdin.wait_closed()


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the command's process group (it leads one of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)


def _say(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- Python mode

class LoadError(Exception):
    """MODULE:OBJECT cannot be served."""


def load_worker(spec: str) -> AsyncWorker:
    """Import MODULE, find OBJECT; call it if it is a factory; the AsyncWorker to run."""
    module_name, _, path = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoadError(f"cannot import {module_name}: {exc}") from exc
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"{spec}: {module_name} has no attribute {path!r}") from None
    if not isinstance(obj, (AsyncWorker, Worker)) and callable(obj):
        obj = obj()
    if isinstance(obj, Worker):
        obj = obj.aio
    if not isinstance(obj, AsyncWorker):
        raise LoadError(f"{spec} is {type(obj).__name__}, not an AsyncWorker, a Worker "
                        "or a callable returning one")
    if not obj.functions:
        raise LoadError(f"{spec} has no functions registered")
    return obj


# ------------------------------------------------------------------- running

async def _warn_unreachable(servers: Sequence[ServerAddress]) -> None:
    """One probe per server at start-up, so a worker that cannot reach its
    server says so (the worker itself retries quietly, with back-off)."""
    async def probe(addr: ServerAddress) -> None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(addr.host, addr.port), 5)
        except (OSError, TimeoutError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "timed out"
            _say(f"cannot connect to {addr} ({reason}); retrying until it answers")
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    await asyncio.gather(*(probe(a) for a in servers))


async def serve(worker: AsyncWorker, *, max_jobs: int | None) -> int:
    """Run *worker* until -c jobs, or a signal; the exit status."""
    probe = asyncio.get_running_loop().create_task(_warn_unreachable(worker.addresses))
    try:
        forced = await run_until_signalled(worker, max_jobs=max_jobs)
    finally:
        probe.cancel()
    return 128 + forced if forced else 0


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    for name in ("geartrain", "geartrain.cli.worker"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger("geartrain")
    root.addHandler(handler)
    root.propagate = False


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.worker_parser
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    python_mode = not args.functions and len(command) >= 1 and _MODULE_OBJECT.match(command[0]) is not None
    if python_mode and len(command) > 1:  # options after MODULE:OBJECT
        parser.parse_args(command[1:], namespace=args)
        if args.command:
            return _usage(parser, f"unexpected arguments after {command[0]}: {' '.join(args.command)}")
        command = command[:1]
    if not args.functions and not python_mode:
        return _usage(parser, "no function given: -f NAME [-- COMMAND], or MODULE:OBJECT")
    if python_mode and (args.lines or args.strip_lines or args.timeout):
        return _usage(parser, "-n, -N and -t apply to a COMMAND, not to MODULE:OBJECT")
    try:
        servers = servers_from(args.host, args.port)
    except ValueError as exc:
        return _usage(parser, str(exc))
    _setup_logging(args.verbose)

    runner: CommandRunner | None = None
    if python_mode:
        try:
            worker = load_worker(command[0])
        except LoadError as exc:
            _say(str(exc))
            return EXIT_USAGE
        if servers is not None:
            worker.use_servers(servers)
        if args.jobs:
            worker.concurrency = args.jobs
        if args.client_id:
            worker.client_id = args.client_id
    else:
        if command and shutil.which(command[0]) is None:
            _say(f"cannot run {command[0]}: command not found")
            return EXIT_USAGE
        try:
            worker = AsyncWorker(servers, concurrency=args.jobs or 1, client_id=args.client_id)
        except ValueError as exc:
            return _usage(parser, str(exc))
        runner = CommandRunner(command, lines=args.lines, strip=args.strip_lines,
                               timeout=args.timeout / 1000 if args.timeout else None)
        for name in args.functions:
            try:
                worker.register(name, runner.run)
            except ValueError as exc:
                return _usage(parser, str(exc))

    try:
        with pid_file(args.pid_file):
            code = asyncio.run(serve(worker, max_jobs=args.count))
    except KeyboardInterrupt:  # before the signal handlers were in place
        return 130
    if code and runner is None:
        # aborted Python jobs may still run in the worker's threads: do not wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _usage(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return EXIT_USAGE
