"""Running a server process: configuration in, listening sockets and signals, exit code out."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys

from geartrain import __version__
from geartrain.server import logs
from geartrain.server.config import ServerConfig
from geartrain.server.core.server import JobServer
from geartrain.server.core.settings import CoreSettings
from geartrain.server.network import KeepAlive, Network

log = logging.getLogger("geartrain.server")


def core_settings(config: ServerConfig) -> CoreSettings:
    return CoreSettings(
        handle_prefix=config.job_handle_prefix,
        job_retries=config.job_retries,
        worker_wakeup=config.worker_wakeup,
        exceptions=config.exceptions,
        version=__version__,
        pid=os.getpid(),
        verbose=config.verbose,
    )


class ServerProcess:
    """Owns the core, the network adapter and the process-level concerns."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.core = JobServer(core_settings(config))
        self.stopping: asyncio.Event | None = None
        self.log_handler: logging.Handler | None = None
        self.network: Network | None = None

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
        try:
            addresses = await network.listen(config.listen or None, config.port, config.backlog)
        except OSError as exc:
            log.critical("cannot listen on port %d: %s", config.port, exc.strerror or exc)
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, logs.reopen, self.log_handler)
        log.log(logs.NOTICE, "geartrain %s listening on %s (store: %s, pid %d)",
                __version__, ", ".join(_fmt(a) for a in addresses), config.store, os.getpid())
        if ready is not None:
            ready.set()
        await self.stopping.wait()
        await self._shutdown()
        return 0

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
        queued = sum(f.total for f in core.functions.values())
        if queued:
            log.warning("stopping: %d queued job(s) are lost (--store memory)", queued)
        network.flush()
        network.close_all()
        log.log(logs.NOTICE, "stopped")


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
