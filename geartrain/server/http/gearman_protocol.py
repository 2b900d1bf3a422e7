"""gearmand's HTTP protocol: ``POST /FUNCTION`` submits a job.

As gearmand's ``-r http`` plugin (reference §5): the path after the leading
slashes, query included, is the function; the body is the workload (POST and
PUT; GET and HEAD send an empty one); ``X-Gearman-Unique`` (default ``-``:
identical payloads coalesce, as in gearmand), ``X-Gearman-Background:
true``, ``X-Gearman-Priority: high|low``. The answer is ``200`` with
``X-Gearman-Job-Handle`` and ``X-Gearman-Command`` (``JOB_CREATED`` for a
background job; ``WORK_COMPLETE``, ``WORK_FAIL`` or ``WORK_EXCEPTION`` when a
foreground job ends) and the job's output as the body.

gearmand's bugs are not kept: WORK_DATA goes into the body (in order, before
the result) instead of over the status line; WORK_STATUS and WORK_WARNING do
not end the reply early; the handle is never truncated; methods it does not
support get ``405`` with ``Allow`` instead of a closed connection; a refused
submit gets ``503`` with the reason instead of nothing.
"""

from __future__ import annotations

from aiohttp import web

from geartrain.protocol import PacketType
from geartrain.server.http.bridge import LocalClient, SubmitRefused

_T = PacketType
METHODS = ("GET", "HEAD", "POST", "PUT")
_COMMAND = {int(_T.WORK_COMPLETE): "WORK_COMPLETE", int(_T.WORK_FAIL): "WORK_FAIL",
            int(_T.WORK_EXCEPTION): "WORK_EXCEPTION"}


async def handle(request: web.Request, client: LocalClient) -> web.StreamResponse:
    """One gearmand-style request (the caller closes *client*)."""
    if request.method not in METHODS:
        return web.Response(status=405, headers={"Allow": ", ".join(METHODS)},
                            text=f"{request.method} is not supported: use POST /FUNCTION\n")
    function = request.raw_path.lstrip("/")
    if not function:
        return web.Response(status=404, text="no function: use POST /FUNCTION\n")
    payload = await request.read() if request.method in ("POST", "PUT") else b""
    headers = request.headers
    unique = headers.get("X-Gearman-Unique", "-")
    background = headers.get("X-Gearman-Background", "").strip().lower() == "true"
    priority = headers.get("X-Gearman-Priority", "").strip().lower()
    try:
        stream = await client.submit(function.encode("utf-8", "surrogateescape"),
                                     unique.encode("utf-8", "surrogateescape"), payload,
                                     background=background,
                                     priority=priority if priority in ("high", "low") else "normal")
    except SubmitRefused as exc:
        return web.Response(status=503, headers={"X-Gearman-Command": "ERROR",
                                                 "X-Gearman-Error": exc.code},
                            text=f"{exc.code}: {exc.text}\n")
    out = {"X-Gearman-Job-Handle": stream.handle.decode("utf-8", "replace")}
    if background:
        return web.Response(status=200, headers={**out, "X-Gearman-Command": "JOB_CREATED"})
    final, result = await stream.final  # the client may go away meanwhile: then the job is abandoned
    body = b"".join(stream.data) + (result if final != _T.WORK_FAIL else b"")
    out["X-Gearman-Command"] = _COMMAND[final]
    return web.Response(status=200, headers=out, body=body)
