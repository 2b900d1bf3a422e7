"""The SQLite helper process: it outlives a signal to the whole process group
(so the server can still write its last changes while it shuts down), applies
the requests queued in its pipe in order, and is replaced when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

from geartrain.server.stores.base import StoredJob, StoreError
from geartrain.server.stores.sqlite import SQLiteStore
from geartrain.server.stores.url import parse_store_url
from tests.support import process
from tests.support.wire import Wire, grab, submit


def test_group_sigterm_lets_the_server_finish_its_writes(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    srv = process.geartrain("--store", f"sqlite://{db}", workdir=tmp_path).start()
    with Wire(srv.address) as client, Wire(srv.address) as worker:
        keep = submit(client, "g", b"keep", ptype="SUBMIT_JOB_BG")
        done = submit(client, "g", b"done", ptype="SUBMIT_JOB_BG")
        worker.send("CAN_DO", "g")
        _, first = grab(worker)
        assert first[0] == keep
        # as systemd or a terminal does: every process of the group gets SIGTERM
        os.killpg(srv.pid, signal.SIGTERM)
        worker.send("WORK_COMPLETE", keep, b"ok")  # finishing during the shutdown
        assert srv.wait(15) == 0
    log = srv.log()
    assert "helper process ended" not in log, log
    assert "Traceback" not in log, log
    (tmp_path / "again").mkdir()
    again = process.geartrain("--store", f"sqlite://{db}", workdir=tmp_path / "again").start()
    try:
        with Wire(again.address) as w:
            w.send("CAN_DO", "g")
            _, job = grab(w)
            assert job[0] == done  # the finished one is gone, the other one is back
            w.send("GRAB_JOB")
            assert w.recv()[0] == "NO_JOB"
    finally:
        again.stop()


# -- requests in flight: the server sends the next transaction before the
# previous one is answered (Store.overlap); they must apply in order


def _job(handle: bytes, retries: int = 0) -> StoredJob:
    return StoredJob(handle, b"f", b"", b"data " + handle, 1, retries=retries)


def test_transactions_in_flight_together_apply_in_the_order_sent(tmp_path: Path) -> None:
    async def scenario() -> list[StoredJob]:
        store = SQLiteStore(parse_store_url(f"sqlite://{tmp_path / 'q.db'}"))
        await store.open()
        try:
            assert store.overlap >= 2
            # each pair is in flight at once; reversed, the delete would find
            # nothing and the update would change nothing
            await asyncio.gather(store.apply([_job(b"H:x:1")], [], []),
                                 store.apply([], [], [b"H:x:1"]))
            await asyncio.gather(store.apply([_job(b"H:x:2"), _job(b"H:x:3")], [], []),
                                 store.apply([], [(b"H:x:2", 4)], []),
                                 store.apply([_job(b"H:x:4")], [], [b"H:x:3"]))
            return await store.replay()
        finally:
            await store.close()

    jobs = asyncio.run(scenario())
    assert [(j.handle, j.retries) for j in jobs] == [(b"H:x:2", 4), (b"H:x:4", 0)]


def test_a_helper_that_dies_fails_every_request_in_flight_and_is_replaced(tmp_path: Path) -> None:
    db = tmp_path / "q.db"

    async def scenario() -> tuple[list[BaseException | None], list[StoredJob]]:
        store = SQLiteStore(parse_store_url(f"sqlite://{db}?busy_timeout=10000"))
        await store.open()
        try:
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")  # the helper waits on the first request
            first = asyncio.ensure_future(store.apply([_job(b"H:x:1")], [], []))
            second = asyncio.ensure_future(store.apply([_job(b"H:x:2")], [], []))
            await asyncio.sleep(0.3)
            assert not first.done() and not second.done()
            pid = store.helper_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            outcomes = await asyncio.wait_for(
                asyncio.gather(first, second, return_exceptions=True), 5)
            blocker.execute("ROLLBACK")
            blocker.close()
            await store.apply([_job(b"H:x:3")], [], [])  # a new helper
            return [o if isinstance(o, BaseException) else None for o in outcomes], await store.replay()
        finally:
            await store.close()

    errors, jobs = asyncio.run(scenario())
    for error in errors:
        assert isinstance(error, StoreError) and "helper process ended" in str(error), error
    assert [j.handle for j in jobs] == [b"H:x:3"]
