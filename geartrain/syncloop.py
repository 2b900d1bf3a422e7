"""An event loop in a background thread, for the blocking facades.

``Client``, ``Worker`` and ``AdminClient`` wrap their asyncio counterparts:
each owns a :class:`LoopThread` and runs the async methods on it, so one
implementation serves both flavours and a blocking object can be shared
between threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running its own event loop until :meth:`stop`."""

    def __init__(self, name: str = "geartrain-loop") -> None:
        self._ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run *coro* on the loop and wait for its result in the calling thread.

        Exceptions of the coroutine propagate unchanged (a ``JobTimeout`` stays
        a ``JobTimeout``); only when *timeout* expires first is the coroutine
        cancelled and a plain ``TimeoutError`` raised.
        """
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError("blocking call from inside the library's own event loop thread "
                               "(use the async API in callbacks)")
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            # since 3.11 this is the builtin TimeoutError, which the coroutine may
            # raise itself: only a future that is not done timed out here
            if future.done():
                raise
            future.cancel()
            raise TimeoutError(f"no result within {timeout}s") from None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if not self.in_loop_thread:
            self._thread.join(5)
