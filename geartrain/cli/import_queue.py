"""``geartrain import-gearmand-queue``: adopt the jobs of gearmand's persistent queue.

Reads the table that gearmand's libsqlite3, MySQL or Postgres queue left
behind and writes its jobs into the store a ``geartrain server`` with the same
``--store`` (or ``--data-dir`` and ``--port``, or ``--config``) replays at
start-up. The work is in :mod:`geartrain.server.stores.gearmand_import`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from typing import Any

from geartrain.server import config as server_config
from geartrain.server.stores.base import StoreError
from geartrain.server.stores.gearmand_import import (
    PASSWORD_ENV,
    ImportResult,
    QueueImportError,
    QueueRow,
    SourceURLError,
    import_gearmand_queue,
    open_source,
)

PROG = "geartrain import-gearmand-queue"

DESCRIPTION = """\
Adopt the background jobs that gearmand's persistent queue (-q libsqlite3,
MySQL or Postgres) left in its table, so switching to geartrain loses no
queued work. Stop gearmand AND the geartrain server first: the server reads
its store only at start-up. Each job gets a new handle after the highest one
in the store; priority, unique key, data and run-at time are kept.
"""

EPILOG = f"""\
SOURCE_URL:
  sqlite:///var/lib/gearmand/queue.db    (-q libsqlite3 --libsqlite3-db ...)
  mysql://USER@HOST:3306/DB              (-q MySQL; ?socket=PATH for a Unix socket)
  postgresql://USER@HOST:5432/DB         (-q Postgres; PG* variables and ~/.pgpass apply)
The source password comes from the URL, ${PASSWORD_ENV}, --source-password-file,
or the driver's files (~/.my.cnf, ~/.pgpass). The target's comes from
GEARTRAIN_STORE_PASSWORD, --store-password-file or the --config file, as for
the server.

Jobs already queued in the store (same function and unique key; for an empty
unique the same data, priority and run-at time) are skipped, so running the
command again before geartrain has run them adopts nothing twice. Without
--delete-source the rows stay in gearmand's table: once geartrain has run the
jobs, another import would adopt them again. See docs/migrating.md.

exit status: 0 done (skipped rows are listed), 1 the import failed (nothing
deleted from the source), 2 bad usage.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE_URL",
                        help="gearmand's queue database: sqlite:///PATH, mysql://USER@HOST:PORT/DB "
                             "or postgresql://USER@HOST:PORT/DB")
    parser.add_argument("--table", metavar="NAME",
                        help="gearmand's queue table (default: gearman_queue for libsqlite3 and "
                             "MySQL, queue for Postgres; gearmand's --libsqlite3-table, "
                             "--mysql-table, --libpq-table)")
    parser.add_argument("--source-password-file", metavar="FILE",
                        help=f"read the source database's password from FILE (or set {PASSWORD_ENV})")
    target = parser.add_argument_group(
        "target store (as for `geartrain server`; GEARTRAIN_* variables apply too)")
    target.add_argument("--store", metavar="URL",
                        help="the server's --store (default: the SQLite file of --data-dir and --port)")
    target.add_argument("--data-dir", metavar="DIR",
                        help="the server's --data-dir, for its default store")
    target.add_argument("-p", "--port", metavar="PORT",
                        help="the server's --port (default 4730): names the default store file")
    target.add_argument("--config", metavar="FILE",
                        help="the server's TOML config file: take store, data-dir, port and "
                             "job-handle-prefix from it")
    target.add_argument("--store-password-file", metavar="FILE",
                        help="the store's password (or GEARTRAIN_STORE_PASSWORD)")
    target.add_argument("--job-handle-prefix", metavar="PREFIX",
                        help="prefix of the new handles, PREFIX:N (default H:<hostname>, as the server)")
    parser.add_argument("--dry-run", action="store_true",
                        help="read both sides and print what would be imported; write and delete nothing")
    parser.add_argument("--delete-source", action="store_true",
                        help="after the store committed the jobs, delete their rows from gearmand's "
                             "table (rows that could not be imported stay)")
    parser.add_argument("--force", action="store_true",
                        help="import even though something listens on the server's port")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "import-gearmand-queue",
        help="adopt the jobs of gearmand's persistent queue (sqlite, MySQL, Postgres)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    """The subcommand on its own (``python -m geartrain.cli.import_queue``)."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _listening(hosts: Sequence[str], port: int) -> str | None:
    """The first of *hosts* where something accepts connections on *port*."""
    for host in hosts:
        connect_to = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
        try:
            socket.create_connection((connect_to, port), timeout=0.5).close()
            return f"{connect_to}:{port}" if ":" not in connect_to else f"[{connect_to}]:{port}"
        except OSError:
            continue
    return None


def run(args: argparse.Namespace) -> int:
    try:
        source = open_source(args.source, args.table, args.source_password_file)
    except SourceURLError as exc:
        _error(str(exc))
        return 2
    if source.url.password_in_url:
        _error(f"warning: the source password is on the command line, where other users may see "
               f"it (ps, shell history); set {PASSWORD_ENV} or use --source-password-file")
    target_args = argparse.Namespace(
        config=args.config, store=args.store, data_dir=args.data_dir, port=args.port,
        store_password_file=args.store_password_file, job_handle_prefix=args.job_handle_prefix)
    try:
        config = server_config.from_sources(target_args)
        target = config.store_url()
    except server_config.ConfigError as exc:
        _error(str(exc))
        return 2
    if not args.dry_run and not args.force and (config.store is None or args.port is not None):
        where = _listening(config.listen or ["127.0.0.1"], config.port)
        if where is not None:
            _error(f"something is listening on {where}: stop the geartrain server (it reads its "
                   "store only at start-up, and its new handles would collide with the imported "
                   "ones) and gearmand first; --force imports anyway")
            return 1
    try:
        result = asyncio.run(import_gearmand_queue(
            source, target, config.job_handle_prefix, dry_run=args.dry_run,
            delete_source=args.delete_source, progress=lambda line: print(line, flush=True)))
    except QueueImportError as exc:
        if exc.result is not None and exc.result.written:
            _report(exc.result, args, failed=True)
        _error(str(exc))
        if exc.result is not None and exc.result.written:
            _error(f"{exc.result.written} jobs are in the store; nothing was deleted from gearmand's "
                   "table. Running the command again skips the jobs already there.")
        return 1
    except StoreError as exc:
        _error(f"cannot use the target store: {exc}")
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 1
    _report(result, args)
    return 0


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "backslashreplace")


def _describe_row(row: QueueRow) -> str:
    return f"{_text(row.function) or '(none)'} unique {_text(row.unique)!r}"


def _report(result: ImportResult, args: argparse.Namespace, failed: bool = False) -> None:
    plan = result.plan
    out = sys.stdout
    table = result.table
    print(f"source: {result.source}: {result.rows_read} rows", file=out)
    print(f"target: {result.target}: {plan.existing} jobs stored before", file=out)
    jobs = result.written if failed else len(plan.adds)
    verb = "would import" if args.dry_run else "imported"
    span = ""
    if jobs:
        first, last = plan.adds[0].handle.decode(), plan.adds[jobs - 1].handle.decode()
        span = f", handles {first}" + (f" to {last}" if jobs > 1 else "")
    print(f"{verb} {jobs} job{'s' if jobs != 1 else ''}{span}", file=out)
    counts = plan.counts()
    if counts and not failed:
        names = {name: _text(name) for name in counts}
        width = max(8, *(len(n) for n in names.values()))
        print(f"  {'function':<{width}}  {'high':>6}  {'normal':>6}  {'low':>6}  {'run-at':>6}", file=out)
        totals = [0, 0, 0, 0]
        for name in sorted(counts):
            c = counts[name]
            totals = [a + b for a, b in zip(totals, c, strict=True)]
            print(f"  {names[name]:<{width}}  {c[0]:>6}  {c[1]:>6}  {c[2]:>6}  {c[3]:>6}", file=out)
        if len(counts) > 1:
            t = totals
            print(f"  {'(all)':<{width}}  {t[0]:>6}  {t[1]:>6}  {t[2]:>6}  {t[3]:>6}", file=out)
    if plan.skipped:
        n = len(plan.skipped)
        print(f"skipped {n} row{'s' if n != 1 else ''}:", file=out)
        for s in plan.skipped:
            print(f"  {_describe_row(s.row)}: {s.reason}", file=out)
    if failed:
        return
    if args.dry_run:
        print("dry run: nothing was written or deleted", file=out)
        return
    if result.deleted is not None:
        print(f"deleted {result.deleted} row{'s' if result.deleted != 1 else ''} from gearmand's "
              f"table {table}", file=out)
    bad = sum(1 for s in plan.skipped if not s.covered)
    if bad:
        _error(f"warning: {bad} row{'s' if bad != 1 else ''} could not be imported (listed above) "
               "and stay in gearmand's table")
    if result.deleted is None and plan.deletable():
        _error(f"warning: the rows are still in gearmand's table {table}. Do not start gearmand "
               "on it again (the jobs would run twice), and delete them once geartrain serves: "
               "running this command again with --delete-source adopts nothing twice and deletes "
               "them, as long as geartrain has not run the jobs yet (after that, any import "
               "adopts them again)")


if __name__ == "__main__":
    raise SystemExit(main())
