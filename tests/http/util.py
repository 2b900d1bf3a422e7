"""HTTP test helpers: a geartrain server with its HTTP port, and plain
urllib requests (no client library between the test and the bytes)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import process

#: a server and its HTTP port (the tests' fixture)
Served = tuple[process.ServerProcess, int]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def start(tmp_path: Path, *args: str) -> tuple[process.ServerProcess, int]:
    """A geartrain server with HTTP on a free port of 127.0.0.1."""
    port = process.free_port()
    workdir = tmp_path / f"http-{port}"
    workdir.mkdir()
    srv = process.geartrain("--http-port", str(port), *args, workdir=workdir).start()
    return srv, port


def request(port: int, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, timeout: float = 20) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data: bytes | None
        if isinstance(body, dict):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()
