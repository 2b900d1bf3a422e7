"""``geartrain result``: what a job produced, from a geartrain server.

Prints the result payload of an ended job to stdout as it is (exit 0 when it
completed); for a job that failed, raised an exception or was cancelled it
says so on stderr (an exception's payload goes to stdout) and exits 1; a
job the server does not know (never existed, or its result expired) exits 5;
a job still queued or running exits 6 unless ``--wait`` waits for its end.
``--json`` prints everything recorded instead (geartrain.results.JobResult
as JSON: state, result, data, warnings, status, times, attempts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from geartrain.cli.call import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    add_server_options,
    servers_from,
)
from geartrain.client import AsyncClient
from geartrain.errors import ConnectionLost, GearmanError, JobTimeout, NoServerAvailable, ResultsUnsupported
from geartrain.results import COMPLETED, EXCEPTION, JobResult
from geartrain.servers import parse_servers

EXIT_UNKNOWN = 5  #: no server knows the job (never existed, or its result expired)
EXIT_NOT_DONE = 6  #: the job is still queued or running (without --wait)

PROG = "geartrain result"

DESCRIPTION = """\
Print what a job produced, by handle (or by unique key with -u), from a
geartrain server: it keeps the result, data and warnings of background jobs
after they end (--result-ttl, 24 hours by default).
"""

EPILOG = """\
exit status: 0 the job completed (its result is on stdout); 1 it failed,
raised an exception (its payload is on stdout) or was cancelled; 2 usage
error; 3 no job server reachable, or it is not geartrain (gearmand keeps no
results); 4 --timeout expired; 5 no server knows the job (never submitted,
result expired, or the server runs --no-results); 6 the job is still queued
or running (see --wait).

servers: -h/-p if given, else $GEARMAN_SERVER, else $GEARMAN_SERVERS, else
127.0.0.1:4730; with several, each is asked.
"""


def register(sub: Any) -> None:
    """Add the ``result`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "result", add_help=False, help="print the result of a job (geartrain servers keep them)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("handle", metavar="HANDLE", help="the job's handle (or its unique key, with -u)")
    add_server_options(p)
    p.add_argument("-u", "--unique", action="store_true", help="HANDLE is a unique key")
    p.add_argument("-f", "--function", metavar="FUNC",
                   help="with -u: the key's function (default: any function)")
    p.add_argument("-w", "--wait", action="store_true", help="wait until the job ends")
    p.add_argument("-t", "--timeout", type=float, metavar="SECONDS",
                   help="with --wait: give up after SECONDS (exit status 4)")
    p.add_argument("--json", action="store_true",
                   help="print everything recorded, as JSON, instead of the result payload")
    p.set_defaults(run=run)


async def _fetch(servers: list[Any], args: argparse.Namespace) -> JobResult | None:
    async with AsyncClient(servers, connect_timeout=5.0) as client:
        if not args.unique:
            return await client.result(args.handle, wait=args.wait, timeout=args.timeout)
        found = await client.result_unique(args.handle, args.function)
        if found is not None and args.wait and not found.done:
            return await client.result(found.handle.decode("utf-8", "surrogateescape"), wait=True,
                                       timeout=args.timeout)
        return found


def run(args: argparse.Namespace) -> int:
    try:
        servers = servers_from(args.host, args.port) or parse_servers(None)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(_fetch(servers, args))
    except JobTimeout:
        print(f"{PROG}: the job did not end within {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    except (NoServerAvailable, ConnectionLost, ResultsUnsupported) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except GearmanError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    what = f"unique key {args.handle!r}" if args.unique else args.handle
    if result is None:
        print(f"{PROG}: no server knows {what} (never submitted, or its result expired)",
              file=sys.stderr)
        return EXIT_UNKNOWN
    out = sys.stdout.buffer
    if args.json:
        out.write(json.dumps(result.to_json(), indent=2).encode() + b"\n")
    elif result.state in (COMPLETED, EXCEPTION):
        out.write(result.result)
    out.flush()
    if not result.done:
        print(f"{PROG}: job {result.handle.decode(errors='replace')} is {result.state}"
              + ("" if args.json else " (--wait waits for its end)"), file=sys.stderr)
        return EXIT_NOT_DONE
    if result.truncated and not args.json:
        print(f"{PROG}: warning: {result.truncated_bytes} byte(s) of this job's output did not fit "
              "the server's --result-max-bytes and were cut off", file=sys.stderr)
    if result.state == COMPLETED:
        return 0
    reason = {"failed": "failed", "exception": "raised an exception", "cancelled": "was cancelled"}
    print(f"{PROG}: job {result.handle.decode(errors='replace')} {reason.get(result.state, result.state)}",
          file=sys.stderr)
    return EXIT_FAILED
