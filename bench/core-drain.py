#!/usr/bin/env python3
"""CPU cost of keeping results, in the core alone (no sockets, no event loop):
200,000 background jobs are submitted, then one worker grabs and completes
each through JobServer.receive, results filed after every packet as the
network layer does, with results kept and without, alternately (3 times).
The last 100,000 are timed: by then the book is full (--result-max-count
100,000), so each filed result also pushes an old, cold one out, as on a
server that has run for a while. Prints microseconds per grab+complete.
Run: .venv/bin/python bench/core-drain.py
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


def run(keep: bool, n: int = 200_000, timed: int = 100_000) -> float:
    d = Driver(handle_prefix="H:b", keep_results=keep)
    d.server.clock, d.server.wallclock = time.monotonic, time.time  # real clocks: real floats
    client, worker = d.client(), d.worker(b"f")
    for first in range(0, n, 1000):
        client.feed(b"".join(encode(T.SUBMIT_JOB_BG, b"f", b"u-%d" % i, b"x" * 100, magic=REQ)
                             for i in range(first, first + 1000)))
        client.raw()
    grab = encode(T.GRAB_JOB, magic=REQ)
    started = 0.0
    for i in range(n):
        if i == n - timed:
            started = time.perf_counter()
        worker.feed(grab)
        out = worker.raw()
        handle = out[12:out.index(b"\0", 12)]
        worker.feed(encode(T.WORK_COMPLETE, handle, b"", magic=REQ))
    return (time.perf_counter() - started) / timed * 1e6


def main() -> None:
    off, on = [], []
    for _ in range(3):
        off.append(run(False))
        on.append(run(True))
    a, b = statistics.median(off), statistics.median(on)
    print(f"results off: {a:.2f} us/job   results kept: {b:.2f} us/job   cost: {b - a:+.2f} us/job")


if __name__ == "__main__":
    main()
