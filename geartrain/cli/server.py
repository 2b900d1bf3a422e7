"""``geartrain server``: the job server, with gearmand's options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from geartrain.server import config as server_config

DESCRIPTION = """\
Run a Gearman job server. Existing Gearman clients, workers and admin tools
(gearman, gearadmin, libgearman, PHP, Perl, Python, Go) work with it
unchanged. Options mirror gearmand's; any of them can also be set as
GEARTRAIN_<OPTION> in the environment (GEARTRAIN_JOB_RETRIES=3) or in the
[server] table of a TOML file given with --config.
"""

EPILOG = """\
signals: SIGTERM/SIGINT stop accepting connections, let running jobs finish
(--shutdown-timeout), then exit; SIGHUP reopens the log file.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "server",
        help="run the job server",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server_config.add_arguments(parser)
    parser.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                        help="accepted for gearmand compatibility and ignored "
                             "(geartrain runs one event loop)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from geartrain.server.app import run as run_server

    try:
        config = server_config.from_sources(args)
    except server_config.ConfigError as exc:
        print(f"geartrain server: {exc}", file=sys.stderr)
        return 2
    return run_server(config)
