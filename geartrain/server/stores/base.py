"""The one interface every store implements, and what it stores.

A store keeps the jobs that must survive the server (background jobs; with
``--store-foreground`` foreground ones too). The server asks four things of
it, like gearmand's queue plugins (add, flush, done, replay), but batched:

* ``open()`` connects and creates or migrates the schema;
* ``replay()`` returns every stored job, oldest first, at start-up;
* ``apply(adds, updates, dones)`` writes new jobs, changed retry counts and
  finished jobs in ONE transaction (group commit: everything the server
  collected while the previous transaction ran);
* ``close()``.

Jobs are keyed by their handle, never by their unique key, so jobs with empty
or equal uniques never overwrite each other (gearmand's sqlite and MySQL
queues do).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Sequence
from typing import ClassVar

from geartrain.server.stores.url import StoreURL


@dataclasses.dataclass(slots=True)
class StoredJob:
    """A job as it is kept in a store (satisfies the core's ``JobRecord``)."""

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes
    priority: int  #: 0 high, 1 normal, 2 low
    when: int = 0  #: epoch seconds it may run from (0: now)
    reducer: bytes = b""
    retries: int = 0


class StoreError(Exception):
    """The store could not do what was asked; the message says why (no secrets)."""


class RejectedJobs(StoreError):
    """Some jobs of an apply() can never be stored (too big for the database):
    nothing was applied; the server refuses those and applies the rest again."""

    def __init__(self, message: str, handles: Iterable[bytes]) -> None:
        super().__init__(message)
        self.handles = frozenset(handles)


class Store(abc.ABC):
    """A place to keep jobs. Subclasses set ``scheme`` and implement the verbs."""

    scheme: ClassVar[str]
    #: False only for the memory store: nothing survives the process
    durable: ClassVar[bool] = True
    #: how many apply() calls may be in flight at once; they must take effect
    #: in the order they were called
    overlap: ClassVar[int] = 1

    def __init__(self, url: StoreURL) -> None:
        self.url = url

    def describe(self) -> str:
        """The store's URL for logs and messages, without any password."""
        return self.url.redacted()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; create or migrate the schema. Raises StoreError."""

    @abc.abstractmethod
    async def replay(self) -> list[StoredJob]:
        """Every stored job, in the order they were added."""

    @abc.abstractmethod
    async def apply(
        self,
        adds: Sequence[StoredJob],
        updates: Sequence[tuple[bytes, int]],
        dones: Sequence[bytes],
    ) -> None:
        """In one transaction: insert *adds*, set the retry count of the
        ``(handle, retries)`` in *updates*, delete the handles in *dones*.
        Raises StoreError (then nothing of it was applied)."""

    async def count(self) -> int:
        """How many jobs are stored (for tests and start-up logs)."""
        return len(await self.replay())

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store may be opened again."""
