"""``geartrain`` entry point: dispatches to subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from geartrain import __version__
from geartrain.cli import admin, call, import_queue, result, server, worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geartrain",
        description="Gearman job server, client, worker and admin tools.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"geartrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    server.register(sub)
    call.register(sub)
    worker.register(sub)
    admin.register(sub)
    result.register(sub)
    import_queue.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    result: int = args.run(args)
    return result
