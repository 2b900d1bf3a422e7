"""The JSON API under ``/api`` (specified in openapi.py, served at /openapi.json)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from geartrain.protocol import PacketType
from geartrain.results import payload_json
from geartrain.server.core.server import JobServer
from geartrain.server.core.stats import CANCELLED, COMPLETED, EXCEPTION, FAILED
from geartrain.server.http.bridge import LocalClient, SubmitRefused
from geartrain.server.http.openapi import check

_T = PacketType
_OUTCOME = {int(_T.WORK_COMPLETE): "completed", int(_T.WORK_FAIL): "failed",
            int(_T.WORK_EXCEPTION): "exception"}
DEFAULT_TIMEOUT = 60.0
#: largest request body the API reads (a job's payload included)
MAX_BODY = 64 << 20


def error(status: int, message: str, details: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return web.json_response(body, status=status)


def _payload(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    if "text" in value:
        return str(value["text"]).encode("utf-8")
    return base64.b64decode(value["base64"], validate=True)


class Api:
    """Handlers of the JSON API, reading and driving one core."""

    def __init__(self, core: JobServer, client: Callable[[web.Request], LocalClient],
                 info: Callable[[], dict[str, Any]]) -> None:
        self.core = core
        self.client = client
        self.info = info

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/jobs", self.submit),
            web.get("/api/jobs", self.find_unique),
            web.get(r"/api/jobs/{handle:[^/]+}", self.job),
            web.delete(r"/api/jobs/{handle:[^/]+}", self.cancel),
            web.post(r"/api/jobs/{handle:[^/]+}/cancel", self.cancel),
            web.get("/api/functions", self.functions),
            web.get("/api/workers", self.workers),
            web.get("/api/server", self.server),
        ]

    # -- jobs
    async def submit(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return error(413, f"request body over {MAX_BODY} bytes")
        try:
            doc = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the body is not JSON: {exc}")
        problems = check("SubmitRequest", doc)
        if problems:
            return error(400, "invalid SubmitRequest", problems)
        try:
            payload = _payload(doc.get("payload"))
        except (binascii.Error, ValueError) as exc:
            return error(400, f"payload: not base64: {exc}")
        mode = doc.get("mode", "background")
        priority = doc.get("priority", "normal")
        timeout = float(doc.get("timeout", DEFAULT_TIMEOUT))
        client = self.client(request)
        try:
            try:
                stream = await client.submit(doc["function"].encode("utf-8"),
                                             doc.get("unique", "").encode("utf-8"), payload,
                                             background=mode != "foreground", priority=priority)
            except SubmitRefused as exc:
                return error(503, f"the server refused the job: {exc}")
            handle = stream.handle
            location = {"Location": f"/api/jobs/{handle.decode('utf-8', 'replace')}"}
            if mode == "background":
                return web.json_response({"handle": handle.decode("utf-8", "replace"), "state": "queued"},
                                         status=202, headers=location)
            if mode == "wait":
                try:
                    await asyncio.wait_for(client.wait_result(handle), timeout)
                except TimeoutError:
                    pass  # answered with where the job is now: 202, it runs on
                described = self.core.describe(handle)
                if described is None:  # ended, but its result is not kept (--no-results)
                    return web.json_response({"handle": handle.decode("utf-8", "replace"),
                                              "state": "unknown"}, status=200, headers=location)
                return web.json_response(described.to_json(), status=200 if described.done else 202,
                                         headers=location)
            try:
                final, result = await asyncio.wait_for(asyncio.shield(stream.final), timeout)
            except TimeoutError:
                return error(504, f"job {handle.decode('utf-8', 'replace')} did not end within "
                                  f"{timeout:g}s; it was abandoned")
            return web.json_response({
                "handle": handle.decode("utf-8", "replace"), "state": _OUTCOME[final],
                "result": payload_json(result if final != _T.WORK_FAIL else b""),
                "data": [payload_json(c) for c in stream.data],
                "warnings": [payload_json(c) for c in stream.warnings],
                "numerator": stream.numerator, "denominator": stream.denominator,
                "background": False,
            }, headers=location)
        finally:
            client.close()

    async def job(self, request: web.Request) -> web.Response:
        handle = request.match_info["handle"].encode("utf-8", "surrogateescape")
        described = self.core.describe(handle)
        if described is None:
            return error(404, "no such job (never submitted, or its result expired)")
        return web.json_response(described.to_json())

    async def find_unique(self, request: web.Request) -> web.Response:
        unique = request.query.get("unique")
        if not unique:
            return error(400, "give ?unique=KEY (and optionally &function=NAME), or GET /api/jobs/HANDLE")
        function = request.query.get("function")
        described = self.core.describe_unique(unique.encode("utf-8"),
                                              function.encode("utf-8") if function else None)
        if described is None:
            return error(404, f"no job with unique key {unique!r}")
        return web.json_response(described.to_json())

    async def cancel(self, request: web.Request) -> web.Response:
        handle = request.match_info["handle"]
        if not self.core.cancel(handle.encode("utf-8", "surrogateescape")):
            return error(404, "no such live job")
        request.app["request_flush"]()
        return web.json_response({"handle": handle, "state": "cancelled"})

    # -- listings
    async def functions(self, request: web.Request) -> web.Response:
        return web.json_response(functions(self.core))

    async def workers(self, request: web.Request) -> web.Response:
        return web.json_response(workers(self.core))

    async def server(self, request: web.Request) -> web.Response:
        return web.json_response(self.info())


def functions(core: JobServer) -> list[dict[str, Any]]:
    out = []
    for f in core.functions.values():
        ended = f.stats.ended
        out.append({
            "name": f.name.decode("utf-8", "replace"),
            "total": f.total,
            "queued": {"high": f.queued[0] - f.dead[0], "normal": f.queued[1] - f.dead[1],
                       "low": f.queued[2] - f.dead[2]},
            "scheduled": f.scheduled,
            "running": f.running,
            "workers": len(f.workers),
            "submitted": sum(f.stats.submitted),
            "completed": sum(e[COMPLETED] for e in ended),
            "failed": sum(e[FAILED] + e[EXCEPTION] + e[CANCELLED] for e in ended),
        })
    return out


def workers(core: JobServer) -> list[dict[str, Any]]:
    return [{
        "id": p.id, "fd": p.fd, "host": p.host, "client_id": p.client_id.decode("utf-8", "replace"),
        "functions": [f.name.decode("utf-8", "replace") for f in p.abilities],
        "running": [h.decode("utf-8", "replace") for h in p.jobs],
        "sleeping": p.sleeping,
    } for p in core.peers.values() if p.abilities or p.jobs]


def server_info(core: JobServer, version: str, started: float, store: str) -> dict[str, Any]:
    return {
        "version": version,
        "pid": os.getpid(),
        "started_at": started,
        "uptime": time.time() - started,
        "store": store,
        "connections": len(core.peers),
        "functions": len(core.functions),
        "jobs": len(core.jobs),
        "running": core.running_jobs,
        "results_kept": len(core.results),
        "result_ttl": core.results.ttl,
    }
