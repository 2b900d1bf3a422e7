"""`geartrain server` settings: one table of options, read from the command
line, ``GEARTRAIN_*`` environment variables and a TOML file.

Precedence, highest first: command line, environment, ``--config`` file,
defaults. Every option is declared once in :data:`OPTIONS`; the argparse
parser, the TOML keys (``[server]`` table, ``port = 4730``,
``job-retries = 3``; ``_`` and ``-`` are interchangeable) and the environment
names (``GEARTRAIN_JOB_RETRIES``) are all derived from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from geartrain.server.core.settings import WAKE_ALL, default_handle_prefix
from geartrain.server.stores.url import (
    StoreURL,
    StoreURLError,
    check_private,
    parse_store_url,
    read_password_file,
)

LEVELS = ("FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")


class ConfigError(Exception):
    """A setting has a value the server cannot use."""


def parse_size(text: str | int) -> int:
    """``65536``, ``64K``, ``64M``, ``64MiB``, ``1G`` -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"not a size: {text!r} (use bytes or a K/M/G suffix)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def parse_wakeup(text: str | int) -> int:
    if isinstance(text, int) or str(text).lstrip("-").isdigit():
        n = int(text)
        if n < 0:
            raise ConfigError("--worker-wakeup must be 'auto', 'all' or a number >= 0")
        return n
    word = str(text).lower()
    if word == "auto":
        return 0
    if word == "all":
        return WAKE_ALL
    raise ConfigError(f"--worker-wakeup: expected 'auto', 'all' or a number, got {text!r}")


def parse_level(text: str) -> str:
    level = str(text).upper()
    if level not in LEVELS:
        raise ConfigError(f"--verbose: expected one of {', '.join(LEVELS)}, got {text!r}")
    return level


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {text!r}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str | float) -> float:
    """``86400``, ``90s``, ``30m``, ``24h``, ``7d`` -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"not a duration: {text!r} (seconds, or a number with s, m, h or d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]


def parse_store(text: str) -> str:
    try:
        parse_store_url(text)
    except StoreURLError as exc:
        raise ConfigError(str(exc)) from None
    return text


def default_data_dir() -> str:
    """/var/lib/geartrain for root, else $XDG_DATA_HOME/geartrain (~/.local/share/geartrain)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/geartrain"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "geartrain")


@dataclasses.dataclass(frozen=True)
class Option:
    name: str  #: field name in ServerConfig
    flags: tuple[str, ...]
    help: str
    convert: Callable[[Any], Any] = str
    kind: str = "value"  #: value | flag | list
    metavar: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option("port", ("-p", "--port"), "TCP port of the Gearman protocol (default 4730)", int, metavar="PORT"),
    Option("listen", ("-L", "--listen"),
           "address to listen on; repeat for several; IPv4 or IPv6 (default: all interfaces)",
           str, "list", "ADDRESS"),
    Option("backlog", ("-b", "--backlog"), "listen(2) backlog (default 1024)", int, metavar="N"),
    Option("job_retries", ("-j", "--job-retries"),
           "drop a job after a worker lost it this many times in total, failing its clients "
           "(default 0: requeue forever)", int, metavar="N"),
    Option("worker_wakeup", ("-w", "--worker-wakeup"),
           "sleeping workers to wake per queued job: 'auto' (default: as many as there are "
           "runnable jobs, rotating fairly), 'all' (gearmand's default), or a number",
           parse_wakeup, metavar="N"),
    Option("job_handle_prefix", ("--job-handle-prefix",),
           "prefix of job handles (default H:<hostname>); handles are PREFIX:N",
           str, metavar="PREFIX"),
    Option("exceptions", ("--exceptions",),
           "enable the 'exceptions' option for every connection", parse_bool, "flag"),
    Option("log_file", ("-l", "--log-file"),
           "log to this file ('stderr', the default, or 'none'); SIGHUP reopens it",
           str, metavar="FILE"),
    Option("verbose", ("--verbose",),
           f"log level: {', '.join(LEVELS)} (default NOTICE)", parse_level, metavar="LEVEL"),
    Option("pid_file", ("-P", "--pid-file"), "write the process id to this file", str, metavar="FILE"),
    Option("file_descriptors", ("-f", "--file-descriptors"),
           "open-file limit to ask for (default: the hard limit, so thousands of idle "
           "workers fit)", int, metavar="N"),
    Option("keepalive", ("--keepalive",), "enable TCP keepalive on every connection", parse_bool, "flag"),
    Option("keepalive_idle", ("--keepalive-idle",),
           "seconds idle before keepalive probes (TCP_KEEPIDLE)", int, metavar="SECONDS"),
    Option("keepalive_interval", ("--keepalive-interval",),
           "seconds between keepalive probes (TCP_KEEPINTVL)", int, metavar="SECONDS"),
    Option("keepalive_count", ("--keepalive-count",),
           "unanswered probes before the connection is dropped (TCP_KEEPCNT)", int, metavar="N"),
    Option("max_packet_size", ("--max-packet-size",),
           "largest packet body accepted (default 64M); a larger one gets ERROR and the "
           "connection is closed before its body is read", parse_size, metavar="SIZE"),
    Option("store", ("--store",),
           "where background jobs are kept: sqlite:///PATH, mysql://USER@HOST:PORT/DB, "
           "postgresql://USER@HOST:PORT/DB, redis://HOST:PORT/N or memory (default: a SQLite "
           "file in --data-dir, named after the port)", parse_store, metavar="URL"),
    Option("data_dir", ("--data-dir",),
           "directory for the default store (default /var/lib/geartrain for root, else "
           "~/.local/share/geartrain)", str, metavar="DIR"),
    Option("store_foreground", ("--store-foreground",),
           "store foreground jobs too (they survive a restart as background jobs)", parse_bool, "flag"),
    Option("store_timeout", ("--store-timeout",),
           "seconds a store transaction may take before submits waiting on it are refused "
           "with QUEUE_ERROR (default 5)", float, metavar="SECONDS"),
    Option("store_password_file", ("--store-password-file",),
           "read the store's password from this file (it must not be readable by other users); "
           "or set GEARTRAIN_STORE_PASSWORD, or store-password in the --config file",
           str, metavar="FILE"),
    Option("no_results", ("--no-results",),
           "do not keep what background jobs produce after they end (gearmand's behaviour)",
           parse_bool, "flag"),
    Option("result_ttl", ("--result-ttl",),
           "how long a job's result, data and warnings are kept after it ended "
           "(default 24h; seconds, or 90s, 30m, 24h, 7d)", parse_duration, metavar="DURATION"),
    Option("result_max_bytes", ("--result-max-bytes",),
           "per job, bytes of result payload kept, and of data plus warnings kept; the rest "
           "is cut off and the result marked truncated (default 1M)", parse_size, metavar="SIZE"),
    Option("result_max_count", ("--result-max-count",),
           "results kept at most; beyond it the oldest are forgotten first, N/16 at a time "
           "(default 100000)",
           int, metavar="N"),
    Option("keep_foreground_results", ("--keep-foreground-results",),
           "keep the results of foreground jobs too", parse_bool, "flag"),
    Option("http_port", ("--http-port",),
           "port of the HTTP API, dashboard, /metrics and gearmand's HTTP protocol (default 8080; "
           "if the default port is taken the server warns and runs without HTTP)", int, metavar="PORT"),
    Option("http_listen", ("--http-listen",),
           "address the HTTP port listens on; repeat for several (default 127.0.0.1)",
           str, "list", "ADDRESS"),
    Option("no_http", ("--no-http",), "serve no HTTP at all", parse_bool, "flag"),
    Option("http_token_file", ("--http-token-file",),
           "require Authorization: Bearer TOKEN (the file's content) to submit or cancel over HTTP, "
           "and to read from other addresses than loopback; the file must not be readable by others",
           str, metavar="FILE"),
    Option("shutdown_timeout", ("--shutdown-timeout",),
           "on SIGTERM, seconds to let running jobs finish before exiting (default 30)",
           float, metavar="SECONDS"),
)
_BY_NAME = {o.name: o for o in OPTIONS}


@dataclasses.dataclass
class ServerConfig:
    port: int = 4730
    listen: list[str] = dataclasses.field(default_factory=list)
    backlog: int = 1024
    job_retries: int = 0
    worker_wakeup: int = 0
    job_handle_prefix: str = dataclasses.field(default_factory=default_handle_prefix)
    exceptions: bool = False
    log_file: str = "stderr"
    verbose: str = "NOTICE"
    pid_file: str | None = None
    file_descriptors: int | None = None
    keepalive: bool = False
    keepalive_idle: int = -1
    keepalive_interval: int = -1
    keepalive_count: int = -1
    max_packet_size: int = 64 << 20
    store: str | None = None
    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    store_foreground: bool = False
    store_timeout: float = 5.0
    store_password_file: str | None = None
    #: from GEARTRAIN_STORE_PASSWORD or the config file only, never the command line
    store_password: str | None = dataclasses.field(default=None, repr=False)
    shutdown_timeout: float = 30.0
    no_results: bool = False
    result_ttl: float = 86_400.0
    result_max_bytes: int = 1 << 20
    result_max_count: int = 100_000
    keep_foreground_results: bool = False
    http_port: int | None = None
    http_listen: list[str] = dataclasses.field(default_factory=list)
    no_http: bool = False
    http_token_file: str | None = None

    def validate(self) -> ServerConfig:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port}: not a TCP port")
        if self.job_retries < 0:
            raise ConfigError("--job-retries must be >= 0")
        if self.max_packet_size < 1024:
            raise ConfigError("--max-packet-size must be at least 1K")
        if self.backlog < 1:
            raise ConfigError("--backlog must be >= 1")
        if self.shutdown_timeout < 0:
            raise ConfigError("--shutdown-timeout must be >= 0")
        if not self.job_handle_prefix or len(self.job_handle_prefix) > 48:
            raise ConfigError("--job-handle-prefix must be 1 to 48 characters")
        if self.store_timeout <= 0:
            raise ConfigError("--store-timeout must be > 0")
        if self.result_ttl <= 0:
            raise ConfigError("--result-ttl must be > 0")
        if self.result_max_count < 1:
            raise ConfigError("--result-max-count must be >= 1")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ConfigError(f"--http-port {self.http_port}: not a TCP port")
        return self

    def store_location(self) -> str:
        """The --store URL, or the default: a SQLite file in the data directory."""
        if self.store:
            return self.store
        path = os.path.join(os.path.abspath(self.data_dir), f"geartrain-{self.port}.db")
        return "sqlite://" + path

    def store_url(self) -> StoreURL:
        """The store URL with its password from the first source that has one."""
        url = parse_store_url(self.store_location())
        if url.password is None:
            if os.environ.get("GEARTRAIN_STORE_PASSWORD"):
                url.password = os.environ["GEARTRAIN_STORE_PASSWORD"]
            elif self.store_password is not None:
                url.password = self.store_password
            elif self.store_password_file:
                try:
                    url.password = read_password_file(self.store_password_file)
                except StoreURLError as exc:
                    raise ConfigError(str(exc)) from None
        return url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every server option to *parser* (defaults are left unset so that
    environment and config file can fill them)."""
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file with a [server] table of these options (long names)")
    for opt in OPTIONS:
        if opt.kind == "flag":
            parser.add_argument(*opt.flags, dest=opt.name, action="store_const", const=True,
                                default=None, help=opt.help)
        elif opt.kind == "list":
            parser.add_argument(*opt.flags, dest=opt.name, action="append", default=None,
                                metavar=opt.metavar, help=opt.help)
        else:
            parser.add_argument(*opt.flags, dest=opt.name, default=None, metavar=opt.metavar,
                                help=opt.help)


def _convert(opt: Option, value: Any, where: str) -> Any:
    try:
        if opt.kind == "list":
            items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value).strip())
            return [opt.convert(v) for v in items if str(v)]
        return opt.convert(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad value {value!r} ({exc})") from None


def load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    table = data.get("server", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [server] must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name == "store_password":
            try:
                check_private(path)  # a password in a file everyone may read is no secret
            except StoreURLError as exc:
                raise ConfigError(str(exc)) from None
            values[name] = str(value)
            continue
        opt = _BY_NAME.get(name)
        if opt is None:
            raise ConfigError(f"config file {path}: unknown option {key!r} in [server]")
        values[name] = _convert(opt, value, f"{path}: {key}")
    return values


def from_sources(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Merge defaults, config file, environment and command line."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get("GEARTRAIN_CONFIG")
    if config_path:
        values.update(load_file(config_path))
    for opt in OPTIONS:
        env_name = "GEARTRAIN_" + opt.name.upper()
        if env_name in environ:
            values[opt.name] = _convert(opt, environ[env_name], env_name)
    for opt in OPTIONS:
        value = getattr(args, opt.name, None)
        if value is not None:
            values[opt.name] = _convert(opt, value, opt.flags[-1])
    return ServerConfig(**values).validate()

