"""Running a server process: configuration in, listening sockets and signals, exit code out."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING

from geartrain import __version__
from geartrain.server import logs
from geartrain.server.config import ConfigError, ServerConfig
from geartrain.server.core.server import JobServer
from geartrain.server.core.settings import CoreSettings
from geartrain.server.network import KeepAlive, Network
from geartrain.server.stores import Store, StoreError, StoreURLError, create_store, parse_store_url
from geartrain.server.stores.committer import Committer
from geartrain.server.stores.url import read_password_file

if TYPE_CHECKING:
    from geartrain.server.http import HttpFrontend

log = logging.getLogger("geartrain.server")

DEFAULT_HTTP_PORT = 8080
#: gc thresholds while serving (Python's default is 700, 10, 10)
GC_THRESHOLD = (10_000, 20, 20)


def core_settings(config: ServerConfig) -> CoreSettings:
    return CoreSettings(
        handle_prefix=config.job_handle_prefix,
        job_retries=config.job_retries,
        worker_wakeup=config.worker_wakeup,
        exceptions=config.exceptions,
        version=__version__,
        pid=os.getpid(),
        verbose=config.verbose,
        store_foreground=config.store_foreground,
        keep_results=not config.no_results,
        keep_foreground_results=config.keep_foreground_results,
        result_ttl=config.result_ttl,
        result_max_bytes=config.result_max_bytes,
        result_max_count=config.result_max_count,
    )


class ServerProcess:
    """Owns the core, the network adapter and the process-level concerns."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.core = JobServer(core_settings(config))
        self.stopping: asyncio.Event | None = None
        self.log_handler: logging.Handler | None = None
        self.network: Network | None = None
        self.store: Store | None = None
        self.committer: Committer | None = None
        self.http: HttpFrontend | None = None

    async def serve(self, ready: asyncio.Event | None = None) -> int:
        config = self.config
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.network = network = Network(
            self.core,
            max_packet_size=config.max_packet_size,
            keepalive=KeepAlive(config.keepalive, config.keepalive_idle,
                                config.keepalive_interval, config.keepalive_count),
        )
        if not await self._open_store():
            return 1
        # HTTP first: once the Gearman port answers, everything does
        if not await self._start_http():
            await self._close_store()
            return 1
        try:
            addresses = await network.listen(config.listen or None, config.port, config.backlog)
        except OSError as exc:
            log.critical("cannot listen on port %d: %s", config.port, exc.strerror or exc)
            if self.http is not None:
                await self.http.stop()
            await self._close_store()
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, logs.reopen, self.log_handler)
        assert self.store is not None
        log.log(logs.NOTICE, "geartrain %s listening on %s (store: %s, pid %d)",
                __version__, ", ".join(_fmt(a) for a in addresses), self.store.describe(), os.getpid())
        tune_gc()
        if ready is not None:
            ready.set()
        await self.stopping.wait()
        await self._shutdown()
        return 0

    async def _start_http(self) -> bool:
        """HTTP on this loop (unless --no-http). False: cannot start as asked."""
        config = self.config
        if config.no_http:
            return True
        token = None
        if config.http_token_file:
            try:
                token = read_password_file(config.http_token_file).strip()  # (checks its mode)
            except (StoreURLError, OSError) as exc:
                log.critical("--http-token-file: %s", str(exc).replace("a password", "a token"))
                return False
            if not token:
                log.critical("--http-token-file %s is empty", config.http_token_file)
                return False
        from geartrain.server.http import HttpFrontend  # aiohttp costs ~0.2 s to import

        assert self.network is not None and self.store is not None
        committer = self.committer
        http = HttpFrontend(self.core, self.network.request_flush, version=__version__,
                            store=self.store.describe(), token=token,
                            store_latency=lambda: committer.latency if committer is not None else None)
        port = config.http_port if config.http_port is not None else DEFAULT_HTTP_PORT
        try:
            addresses = await http.start(config.http_listen or ["127.0.0.1"], port)
        except OSError as exc:
            if config.http_port is None:
                log.warning("no HTTP: cannot listen on port %d (%s); give --http-port, or --no-http",
                            port, exc.strerror or exc)
                return True
            log.critical("cannot listen on HTTP port %d: %s", port, exc.strerror or exc)
            return False
        self.http = http
        log.log(logs.NOTICE, "HTTP on %s (dashboard /, API /api, /metrics)%s",
                ", ".join(f"http://{_fmt(a)}" for a in addresses),
                "; submitting and cancelling need the token" if token else "")
        return True

    async def _open_store(self) -> bool:
        """Open the store and replay its jobs into the core, before any connection."""
        try:
            url = self.config.store_url()
        except (ConfigError, StoreURLError) as exc:
            log.critical("cannot use the store: %s", exc)
            return False
        try:
            store = create_store(url)
            await store.open()
            records = await store.replay()
            results = await store.load_results() if self.core.settings.keep_results else []
        except StoreError as exc:
            log.critical("cannot use the store: %s", exc)
            return False
        except Exception as exc:  # a driver's own exception on connect
            log.critical("cannot use the store %s: %s", url.redacted(), exc)
            return False
        self.store = store
        if url.password_in_url:
            log.warning("the store password is on the command line (--store); other users "
                        "could read it until now: use GEARTRAIN_STORE_PASSWORD, "
                        "--store-password-file or the driver's own password file instead")
        replayed = self.core.restore(records)
        if replayed:
            log.log(logs.NOTICE, "replayed %d job(s) from %s", replayed, store.describe())
        if store.durable:
            assert self.network is not None
            self.core.durable = True
            kept = self.core.keep_results(results)
            if kept:
                log.log(logs.NOTICE, "kept %d result(s) from %s", kept, store.describe())
            self.committer = Committer(store, self.core, self.network.request_flush,
                                       timeout=self.config.store_timeout)
            self.committer.start()
            self.network.on_store_effects = self.committer.take
            self.network.on_store_adds = self.committer.take_early
            self.committer.take()  # expired results found at start-up
        return True

    async def _close_store(self) -> None:
        if self.committer is not None:
            await self.committer.stop()
        store = self.store
        if store is None:
            return
        empty = False
        try:
            empty = self.config.store is None and store.scheme == "sqlite" and await store.count() == 0
            await store.close()
        except Exception as exc:  # closing a broken connection
            log.warning("closing the store: %s", exc)
            return
        if empty:
            # the default store of a server that ends with nothing queued: leave
            # no empty file behind in the data directory (it is made again at start)
            try:
                os.unlink(self.config.store_url().database)
            except OSError:
                pass

    def request_stop(self) -> None:
        assert self.stopping is not None
        if self.stopping.is_set():
            log.warning("second stop signal: exiting now")
            os._exit(1)
        self.stopping.set()

    async def _shutdown(self) -> None:
        assert self.network is not None
        network, core = self.network, self.core
        network.close_listeners()
        if self.http is not None:
            await self.http.stop()
        core.start_draining()
        running = core.running_jobs
        if running:
            log.log(logs.NOTICE, "stopping: waiting up to %gs for %d running job(s)",
                    self.config.shutdown_timeout, running)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.shutdown_timeout
            while core.running_jobs and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if core.running_jobs:
                log.warning("stopping with %d job(s) still running", core.running_jobs)
        network.flush()
        if self.committer is not None and not await self.committer.drain(self.config.store_timeout):
            log.warning("stopping with %d store write(s) not done", self.committer.pending)
        queued = sum(f.total for f in core.functions.values())
        if queued and self.store is not None and not self.store.durable:
            log.warning("stopping: %d queued job(s) are lost (--store memory)", queued)
        elif queued:
            log.log(logs.NOTICE, "stopping: %d queued job(s) stay in %s", queued, self.store.describe()
                    if self.store else "the store")
        network.close_all()
        await self._close_store()
        log.log(logs.NOTICE, "stopped")


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tune_gc() -> None:
    """Start-up is over: the objects made so far (modules, the replayed queue)
    live as long as the process, so the cyclic garbage collector stops
    scanning them (``gc.freeze``), and it runs less often: a server holds
    many long-lived objects (queued jobs), and each full collection walks
    them all. GEARTRAIN_GC_THRESHOLD=a,b,c overrides the thresholds."""
    text = os.environ.get("GEARTRAIN_GC_THRESHOLD", "")
    try:
        a, b, c = (int(x) for x in text.split(",")) if text else GC_THRESHOLD
    except ValueError:
        log.warning("GEARTRAIN_GC_THRESHOLD=%r: expected three integers", text)
        a, b, c = GC_THRESHOLD
    gc.collect()
    gc.freeze()
    gc.set_threshold(a, b, c)


def install_event_loop_policy() -> str:
    """Use uvloop when it is installed; returns the loop's name."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def raise_file_limit(wanted: int | None) -> int:
    """Raise the soft RLIMIT_NOFILE towards *wanted* (default: the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", target, exc)
    return soft


def hide_store_password(argv: list[str]) -> bool:
    """Rewrite the process title (``ps``, /proc/PID/cmdline) without the
    password of a ``--store`` URL. True if there was one to hide."""
    cleaned = [_redact_arg(a) for a in argv]
    if cleaned == argv:
        return False
    import setproctitle

    setproctitle.setproctitle(" ".join(cleaned))
    return True


def _redact_arg(arg: str) -> str:
    prefix, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if "://" not in value or "@" not in value:
        return arg
    try:
        url = parse_store_url(value)
    except Exception:
        return arg
    return prefix + sep + url.redacted() if url.password_in_url else arg


def run(config: ServerConfig) -> int:
    process = ServerProcess(config)
    try:
        process.log_handler = logs.setup(config.log_file, config.verbose)
    except OSError as exc:
        print(f"geartrain server: cannot open log file {config.log_file}: {exc.strerror}",
              file=sys.stderr)
        return 1
    if config.pid_file:
        try:
            with open(config.pid_file, "w") as fh:
                fh.write(f"{os.getpid()}\n")
        except OSError as exc:
            log.critical("cannot write pid file %s: %s", config.pid_file, exc.strerror)
            return 1
    if hide_store_password(sys.argv):
        log.debug("store password hidden from the process title")
    loop_name = install_event_loop_policy()
    limit = raise_file_limit(config.file_descriptors)
    log.debug("event loop: %s, open-file limit %d", loop_name, limit)
    try:
        return asyncio.run(process.serve())
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally wins
        return 130
    finally:
        if config.pid_file:
            try:
                os.unlink(config.pid_file)
            except OSError:
                pass
