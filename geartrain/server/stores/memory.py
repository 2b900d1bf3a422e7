"""The memory store: nothing survives the process (gearmand's builtin queue)."""

from __future__ import annotations

from collections.abc import Sequence

from geartrain.results import JobResult
from geartrain.server.stores.base import Store, StoredJob


class MemoryStore(Store):
    scheme = "memory"
    durable = False

    async def open(self) -> None:
        pass

    async def replay(self) -> list[StoredJob]:
        return []

    async def apply(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes], results: Sequence[JobResult] = (),
                    result_drops: Sequence[bytes] = ()) -> None:
        pass  # the server never calls it: the core keeps jobs in memory anyway

    async def close(self) -> None:
        pass
