"""HTTP on the server's own event loop: gearmand's HTTP protocol, a JSON API
with its OpenAPI document, a live dashboard and Prometheus metrics.

| path | what |
|---|---|
| ``/`` and ``/static/...`` | the dashboard (dashboard/ in this package; no build step, no CDN) |
| ``/api/...`` | the JSON API (api.py), specified by ``/openapi.json`` (openapi.py) |
| ``/api/events`` | server-sent events feeding the dashboard |
| ``/metrics`` | Prometheus (metrics.py) |
| anything else | gearmand's protocol: ``POST /FUNCTION`` submits a job (gearman_protocol.py) |

Submits go through an in-process client of the core (bridge.py), so HTTP
jobs follow every rule Gearman clients do. With ``--http-token-file``,
submitting and cancelling need ``Authorization: Bearer TOKEN``; reading
needs it only from addresses other than loopback.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from geartrain.server.core.server import JobServer
from geartrain.server.core.stats import Histogram
from geartrain.server.http import gearman_protocol
from geartrain.server.http.api import Api, functions, server_info, workers
from geartrain.server.http.bridge import LocalClient
from geartrain.server.http.metrics import CoreCollector, registry_for
from geartrain.server.http.openapi import DOCUMENT

log = logging.getLogger("geartrain.server")

#: paths (first segment) that are not gearmand-protocol function names
RESERVED = frozenset({"", "api", "static", "metrics", "openapi.json", "favicon.ico", "robots.txt"})
#: server-sent event streams open at once, at most
MAX_EVENT_STREAMS = 64
EVENT_INTERVAL = 1.0
#: seconds of throughput the server remembers for the dashboard's chart
HISTORY_SECONDS = 120

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return remote == "unix"


class HttpFrontend:
    """The aiohttp application and its listening sites."""

    def __init__(self, core: JobServer, request_flush: Callable[[], None], *, version: str,
                 store: str = "memory", token: str | None = None,
                 store_latency: Callable[[], Histogram | None] = lambda: None) -> None:
        self.core = core
        self.request_flush = request_flush
        self.version = version
        self.token = token
        self.started = time.time()
        self.store = store
        self.registry = registry_for(CoreCollector(core, version, store_latency))
        self.api = Api(core, self._client, lambda: server_info(core, version, self.started, store))
        self.runner: web.AppRunner | None = None
        self.streams = 0
        #: (time, {function: jobs ended so far}) once a second, so a page
        #: opened now draws the last two minutes at once
        self.history: deque[tuple[float, dict[str, int]]] = deque(maxlen=HISTORY_SECONDS + 1)
        self._sampler: asyncio.Task[None] | None = None
        #: the latest snapshot event, and the event set when the next one is out
        self._latest = b""
        self._tick = asyncio.Event()
        self.app = self._build()

    # -- application
    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 << 20)
        app["request_flush"] = self.request_flush
        app.on_response_prepare.append(self._server_header)
        static = resources.files("geartrain.server.http") / "dashboard"
        app.add_routes([
            web.get("/", self._dashboard),
            web.static("/static", str(static)),
            web.get("/openapi.json", self._openapi),
            web.get("/metrics", self._metrics),
            # what browsers and crawlers ask for by themselves must not submit jobs
            web.get("/favicon.ico", self._nothing),
            web.get("/robots.txt", self._robots),
            web.get("/api/events", self._events),
            *self.api.routes(),
            web.route("*", "/api/{tail:.*}", self._api_unknown),
            web.route("*", "/{function:.*}", self._gearman),
        ])
        return app

    async def _server_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = f"geartrain/{self.version}"

    def _client(self, request: web.Request) -> LocalClient:
        return LocalClient(self.core, self.request_flush, host=request.remote or "http")

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None and self._needs_token(request):
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                     self.token.encode()):
                return web.json_response(
                    {"error": "this needs Authorization: Bearer TOKEN (the server's --http-token-file)"},
                    status=401, headers={"WWW-Authenticate": 'Bearer realm="geartrain"'})
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if request.path.startswith("/api/") and exc.status >= 400:
                return web.json_response({"error": exc.reason}, status=exc.status,
                                         headers={k: v for k, v in exc.headers.items()
                                                  if k.lower() == "allow"})
            raise

    def _needs_token(self, request: web.Request) -> bool:
        first = request.path.lstrip("/").split("/", 1)[0]
        mutating = request.method not in ("GET", "HEAD", "OPTIONS") or first not in RESERVED
        return mutating or not _is_loopback(request.remote)

    # -- pages and documents
    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        page = resources.files("geartrain.server.http") / "dashboard" / "index.html"
        return web.Response(body=page.read_bytes(), content_type="text/html")

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(DOCUMENT)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _nothing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _robots(self, request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow: /\n")

    async def _api_unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"error": f"no such API endpoint: {request.method} {request.path} "
                                           "(see /openapi.json)"}, status=404)

    async def _gearman(self, request: web.Request) -> web.StreamResponse:
        client = self._client(request)
        try:
            return await gearman_protocol.handle(request, client)
        finally:
            client.close()

    # -- live updates
    def snapshot(self) -> dict[str, Any]:
        return {"time": time.time(), "functions": functions(self.core), "workers": workers(self.core),
                "server": server_info(self.core, self.version, self.started, self.store)}

    def _snapshot_event(self) -> bytes:
        data = json.dumps(self.snapshot(), separators=(",", ":"))
        return f"event: snapshot\ndata: {data}\n\n".encode()

    async def _sample_every_second(self) -> None:
        """Once a second: the throughput history, and one snapshot event
        shared by every open event stream (not one made per stream)."""
        while True:
            ended = {f.name.decode("utf-8", "replace"): sum(sum(e) for e in f.stats.ended)
                     for f in self.core.functions.values()}
            self.history.append((time.time(), ended))
            if self.streams:
                self._latest = self._snapshot_event()
                tick, self._tick = self._tick, asyncio.Event()
                tick.set()
            await asyncio.sleep(EVENT_INTERVAL)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self.streams >= MAX_EVENT_STREAMS:
            return web.json_response({"error": "too many event streams open"}, status=503)
        self.streams += 1
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                   "Cache-Control": "no-cache"})
            await response.prepare(request)
            history = json.dumps([{"time": t, "ended": e} for t, e in self.history], separators=(",", ":"))
            await response.write(f"event: history\ndata: {history}\n\n".encode())
            await response.write(self._snapshot_event())  # at once, then the shared ones
            while True:
                await self._tick.wait()
                await response.write(self._latest)
        except ConnectionResetError:  # the browser went away
            return response
        finally:
            self.streams -= 1

    # -- sites
    async def start(self, hosts: list[str], port: int) -> list[tuple[str, int]]:
        """Listen on *hosts*:*port*; returns the bound addresses. Raises OSError."""
        # handler_cancellation: a client that goes away cancels its request,
        # so the foreground job it alone waited for is abandoned, as over Gearman
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0, handler_cancellation=True)
        await self.runner.setup()
        bound: list[tuple[str, int]] = []
        try:
            for host in hosts:
                site = web.TCPSite(self.runner, host, port, reuse_address=True)
                await site.start()
                sockets = getattr(site._server, "sockets", None) or []
                bound.extend(s.getsockname()[:2] for s in sockets)
        except OSError:
            await self.stop()
            raise
        self._sampler = asyncio.get_running_loop().create_task(self._sample_every_second(),
                                                               name="geartrain-http-history")
        return bound

    async def stop(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            try:
                await sampler
            except asyncio.CancelledError:
                pass
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
