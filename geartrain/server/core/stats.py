"""Counters and time histograms per function, kept by the core for /metrics.

Cheap enough for the hot path: a list index per event, and a bisect over a
dozen bucket bounds per timed event. The HTTP layer turns them into
Prometheus counters and histograms at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left

#: upper bounds (seconds) of the time-in-queue and run-time histograms
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: outcome indexes of FunctionStats.ended
COMPLETED, FAILED, EXCEPTION, CANCELLED = range(4)
OUTCOME_NAMES = ("completed", "failed", "exception", "cancelled")


class Histogram:
    """Counts per bucket (the last one is +Inf) and the sum of observations."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


class FunctionStats:
    """What happened to one function's jobs since the server started."""

    __slots__ = ("submitted", "ended", "waited", "ran")

    def __init__(self) -> None:
        #: jobs created, per priority (high, normal, low); coalesced submits are not new jobs
        self.submitted = [0, 0, 0]
        #: jobs that ended, per priority and outcome: ended[priority][outcome]
        self.ended = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
        #: seconds from submit (or run-at time) to each attempt's start
        self.waited = Histogram()
        #: seconds from an attempt's start to the job's end
        self.ran = Histogram()
