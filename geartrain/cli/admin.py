"""`geartrain admin`: gearadmin's options and output, plus a table view.

The output of every option is byte for byte what gearadmin 1.1.20 prints
(``OK `` prefix stripped, ``ERR x`` printed as ``Error: x`` on stderr, listings
verbatim with their final ``.``), and several options in one invocation run
on one connection in gearadmin's order, which is not the command line's:
getpid, create-function, drop-function, show-jobs, show-unique-jobs,
cancel-job, server-verbose, server-version, workers, priority-status, status.

Deliberate differences: an ``ERR`` reply makes the exit status 1 (gearadmin
exits 0), and usage errors exit 2 with argparse's message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from geartrain.admin import (
    AsyncAdminClient,
    UnexpectedReply,
    parse_jobs,
    parse_priority_status,
    parse_status,
    parse_workers,
)
from geartrain.errors import GearmanError, NoServerAvailable

DESCRIPTION = "Query or change a Gearman job server with its text admin protocol (like gearadmin)."

EPILOG = """\
Output is identical to gearadmin's (gearman-tools 1.1.20). Several options
share one connection and print in gearadmin's fixed order: getpid,
create-function, drop-function, show-jobs, show-unique-jobs, cancel-job,
server-verbose, server-version, workers, priority-status, status.
Unlike gearadmin, an ERR reply (printed as "Error: ..." on stderr) makes the
exit status 1. GEARMAN_SERVER is ignored, as gearadmin ignores it.
"""

# (option dest, admin command) in the order gearadmin prints them: it pushes the
# commands on a stack in the reverse order and runs them from the top.
_ORDER: tuple[tuple[str, str], ...] = (
    ("getpid", "getpid"),
    ("create_function", "create function {}"),
    ("drop_function", "drop function {}"),
    ("show_jobs", "show jobs"),
    ("show_unique_jobs", "show unique jobs"),
    ("cancel_job", "cancel job {}"),
    ("server_verbose", "verbose"),
    ("server_version", "version"),
    ("workers", "workers"),
    ("priority_status", "prioritystatus"),
    ("status", "status"),
)


def register(sub: Any) -> None:
    """Add the `admin` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "admin", add_help=False, help="query or change a job server (like gearadmin)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-h", "--host", default="localhost", help="connect to the host (default: localhost)")
    p.add_argument("-p", "--port", default="4730",
                   help="port number or service name to connect to (default: 4730)")
    p.add_argument("--server-version", action="store_true", help="fetch the version of the server")
    p.add_argument("--server-verbose", action="store_true", help="fetch the verbose setting of the server")
    p.add_argument("--create-function", metavar="F", help="create the function F on the server")
    p.add_argument("--cancel-job", metavar="H", help="remove the job with handle H from the server's queue")
    p.add_argument("--drop-function", metavar="F", help="drop the function F from the server")
    p.add_argument("--show-unique-jobs", action="store_true", help="show the unique ids of all jobs")
    p.add_argument("--show-jobs", action="store_true", help="show all jobs on the server")
    p.add_argument("--getpid", action="store_true", help="get the process id of the server")
    p.add_argument("--status", action="store_true", help="status of every function")
    p.add_argument("--priority-status", action="store_true", help="queued jobs of every function by priority")
    p.add_argument("--workers", action="store_true", help="every connection and its functions")
    p.add_argument("-T", "--table", action="store_true",
                   help="show --status, --priority-status, --workers and --show-jobs as aligned "
                        "columns with headers (sorted) instead of gearadmin's raw lines")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up when connecting or a reply takes longer (default: 10)")
    p.set_defaults(run=run, admin_parser=p)


def commands(args: argparse.Namespace) -> list[bytes]:
    """The admin lines to send, in gearadmin's order."""
    lines = []
    for dest, template in _ORDER:
        value = getattr(args, dest)
        if value is None or value is False:
            continue
        text = template.format(value) if "{}" in template else template
        lines.append(os.fsencode(text))  # argv bytes back as they were given
    return lines


def run(args: argparse.Namespace) -> int:
    lines = commands(args)
    if not lines:
        sys.stderr.write("No option execution operation given.\n\n")
        sys.stderr.write(args.admin_parser.format_help())
        return 1
    for line in lines:
        if b"\n" in line or b"\r" in line:
            sys.stderr.write("Error: an option value cannot hold a line break\n")
            return 2
    out, err = sys.stdout.buffer, sys.stderr.buffer
    sys.stdout.flush()
    try:
        return asyncio.run(execute(args.host, args.port, lines, out, err, table=args.table,
                                   timeout=args.timeout))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `geartrain admin --status | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 1


async def connect(host: str, port: str, err: BinaryIO, timeout: float | None) -> AsyncAdminClient | None:
    """Like gearadmin: every address of *host* in turn; its error messages when none works."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        err.write(f"Error: Failed to connect on {host}:{port} with {exc.strerror}\n".encode())
        return None
    for info in infos:
        sockaddr = info[4]
        client = AsyncAdminClient((str(sockaddr[0]), int(sockaddr[1])), timeout=timeout)
        try:
            await client.connect()
        except NoServerAvailable:
            continue
        return client
    err.write(f"Error: Error connecting to {host}.\n\n".encode())
    return None


async def execute(host: str, port: str, lines: Sequence[bytes], out: BinaryIO, err: BinaryIO, *,
                  table: bool = False, timeout: float | None = 10.0) -> int:
    """Send *lines* on one connection and print the replies; the exit status."""
    client = await connect(host, port, err, timeout)
    if client is None:
        return 1
    status = 0
    try:
        for line in lines:
            try:
                reply = await client.raw(line)
            except GearmanError as exc:
                err.write(f"Error: {exc}\n".encode())
                return 1
            if not show(line, reply, out, err, table):
                status = 1
            out.flush()
            err.flush()
    finally:
        await client.close()
    return status


def show(line: bytes, reply: bytes, out: BinaryIO, err: BinaryIO, table: bool) -> bool:
    """Print one reply as gearadmin does (or as a table); False for an error reply."""
    if reply.startswith(b"OK\r"):
        out.write(b"OK\n")
    elif reply.startswith(b"OK "):
        out.write(reply[3:] or b"OK\n")
    elif reply.startswith(b"ERR "):
        err.write(b"Error: " + reply[4:])
        return False
    elif table and line in _TABLES:
        try:
            out.write(_TABLES[line](reply))
        except UnexpectedReply as exc:
            err.write(f"Error: {exc}\n".encode())
            return False
    else:
        out.write(reply)
    return True


# ---------------------------------------------------------------- table view

def _clean(text: str) -> str:
    """Control characters (escape sequences in a function name...) and bytes that are
    not UTF-8 shown escaped: ``\\x1b``, ``\\xff``."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable()
        else f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF  # surrogateescape'd byte
        else ascii(c)[1:-1]
        for c in text
    )


def render(headers: Sequence[str], rows: Sequence[Sequence[str | int]]) -> bytes:
    """Aligned columns: text left-aligned, numbers right-aligned, two spaces apart."""
    cells = [[_clean(c) if isinstance(c, str) else str(c) for c in row] for row in rows]
    numeric = [bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(headers))]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip() + "\n"

    text = fmt(headers) + "".join(fmt(r) for r in cells)
    return text.encode("utf-8", "surrogateescape")


def _status_table(reply: bytes) -> bytes:
    rows = sorted(parse_status(reply), key=lambda r: r.name)
    return render(("FUNCTION", "TOTAL", "RUNNING", "WORKERS"),
                  [(r.name, r.total, r.running, r.workers) for r in rows])


def _priority_table(reply: bytes) -> bytes:
    rows = sorted(parse_priority_status(reply), key=lambda r: r.name)
    return render(("FUNCTION", "HIGH", "NORMAL", "LOW", "WORKERS"),
                  [(r.name, r.high, r.normal, r.low, r.workers) for r in rows])


def _workers_table(reply: bytes) -> bytes:
    rows = sorted(parse_workers(reply), key=lambda r: r.fd)
    return render(("FD", "ADDRESS", "CLIENT-ID", "FUNCTIONS"),
                  [(r.fd, r.address, r.client_id, " ".join(r.functions)) for r in rows])


def _jobs_table(reply: bytes) -> bytes:
    return render(("HANDLE", "RETRIES", "IGNORED", "QUEUED"),
                  [(r.handle, r.retries, "yes" if r.ignored else "no", "yes" if r.queued else "no")
                   for r in parse_jobs(reply)])


_TABLES: dict[bytes, Callable[[bytes], bytes]] = {
    b"status": _status_table,
    b"prioritystatus": _priority_table,
    b"workers": _workers_table,
    b"show jobs": _jobs_table,
}
