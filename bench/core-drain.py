#!/usr/bin/env python3
"""CPU cost of keeping results, in the core alone (no sockets, no event loop):
50,000 background jobs are submitted, then one worker grabs and completes each
through JobServer.receive, with results kept and without, alternately.
Prints microseconds per grab+complete. Run: .venv/bin/python bench/core-drain.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geartrain.protocol import REQ, PacketType, encode  # noqa: E402
from tests.server.core.driver import Driver  # noqa: E402

T = PacketType


def run(keep: bool, n: int = 50_000) -> float:
    d = Driver(handle_prefix="H:b", keep_results=keep)
    client, worker = d.client(), d.worker(b"f")
    client.feed(b"".join(encode(T.SUBMIT_JOB_BG, b"f", b"u-%d" % i, b"x" * 100, magic=REQ)
                         for i in range(n)))
    client.raw()
    grab = encode(T.GRAB_JOB, magic=REQ)
    started = time.perf_counter()
    for _ in range(n):
        worker.feed(grab)
        out = worker.raw()
        handle = out[12:out.index(b"\0", 12)]
        worker.feed(encode(T.WORK_COMPLETE, handle, b"result", magic=REQ))
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    off, on = [], []
    for _ in range(5):
        off.append(run(False))
        on.append(run(True))
    a, b = statistics.median(off), statistics.median(on)
    print(f"results off: {a:.2f} us/job   results kept: {b:.2f} us/job   cost: {b - a:+.2f} us/job")


if __name__ == "__main__":
    main()
