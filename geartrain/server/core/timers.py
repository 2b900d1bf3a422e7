"""Timers as data: a heap of deadlines the network layer turns into one loop timer."""

from __future__ import annotations

import heapq
import itertools
from typing import Any

EPOCH_DUE = 0  #: an epoch job's time has come
WORK_TIMEOUT = 1  #: a CAN_DO_TIMEOUT expired
WAKE_CHECK = 2  #: look for woken workers that never grabbed
RESULTS_EXPIRE = 3  #: forget results older than the result TTL


class TimerQueue:
    """Deadlines on the monotonic clock. Entries are never removed early;
    whoever handles an expired entry checks that it still applies (its
    ``token`` still matches), which keeps arming and cancelling O(log n)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Any, int]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, kind: int, subject: Any, token: int = 0) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), kind, subject, token))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[int, Any, int]]:
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            _, _, kind, subject, token = heapq.heappop(heap)
            due.append((kind, subject, token))
        return due
