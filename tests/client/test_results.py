"""Results of background jobs through the Python client (AsyncClient and
Client) against a real geartrain server: fetch now, wait for the end, by
unique key, attach to a running job; a durable server keeps them across a
restart; C gearmand keeps none and says so."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from geartrain import Client, JobResult, ResultsUnsupported
from geartrain.client import AsyncClient, DataEvent, StatusEvent
from geartrain.errors import JobTimeout
from tests.client.test_async_client import addr, arun
from tests.support import process
from tests.support.wire import Wire, grab, run_job, submit


def run_one(srv: process.ServerProcess, handle: bytes, script: list[tuple[str, tuple[bytes, ...]]]) -> None:
    """A raw worker that grabs *handle* and sends *script*'s packets."""
    run_job(srv.address, "r", *script, expect=handle)


def test_result_of_a_background_job_after_it_ended(server: process.ServerProcess) -> None:
    with Wire(server.address) as c:
        handle = submit(c, "r", b"in", unique=b"k1", ptype="SUBMIT_JOB_BG")
    run_one(server, handle, [("WORK_STATUS", (b"1", b"2")), ("WORK_DATA", (b"d\0ata",)),
                             ("WORK_WARNING", (b"w",)), ("WORK_COMPLETE", (b"\xffout",))])

    async def scenario() -> tuple[JobResult | None, JobResult | None, JobResult | None]:
        async with AsyncClient([addr(server)]) as client:
            return (await client.result(handle.decode()), await client.result_unique("k1"),
                    await client.result("H:nobody:1"))

    by_handle, by_unique, unknown = arun(scenario())
    assert by_handle is not None and by_unique == by_handle and unknown is None
    assert by_handle.state == "completed" and by_handle.ok and by_handle.done
    assert by_handle.result == b"\xffout"
    assert by_handle.data == [b"d\0ata"] and by_handle.warnings == [b"w"]
    assert (by_handle.numerator, by_handle.denominator) == (1, 2)
    assert len(by_handle.attempts) == 1 and by_handle.finished >= by_handle.attempts[0] >= by_handle.submitted


def test_waiting_for_a_result_and_attaching_to_a_running_job(server: process.ServerProcess) -> None:
    with Wire(server.address) as c:
        handle = submit(c, "r", b"in", ptype="SUBMIT_JOB_BG")
    worker = Wire(server.address)
    worker.send("CAN_DO", "r")
    _, job = grab(worker)
    assert job[0] == handle
    attached = threading.Event()

    async def scenario() -> tuple[JobResult | None, list[Any], Any]:
        async with AsyncClient([addr(server)]) as client:
            live = await client.result(handle.decode())
            assert live is not None and live.state == "running" and not live.done
            follower = await client.attach(handle.decode())
            assert follower is not None
            attached.set()
            waited = asyncio.create_task(client.result(handle.decode(), wait=True, timeout=20))
            value = await follower.wait(20)
            events = [e async for e in follower.events()]
            return await waited, events, value

    def work() -> None:
        assert attached.wait(10)
        worker.send("WORK_STATUS", handle, b"3", b"4")
        worker.send("WORK_DATA", handle, b"chunk")
        worker.send("WORK_COMPLETE", handle, b"all done")

    thread = threading.Thread(target=work)
    thread.start()
    final, events, value = arun(scenario())
    thread.join()
    worker.close()
    assert final is not None and final.state == "completed" and final.result == b"all done"
    assert final.data == [b"chunk"]
    assert value == b"all done"
    assert events == [StatusEvent(3, 4), DataEvent(b"chunk")]


def test_waiting_times_out_while_the_job_runs_on(server: process.ServerProcess) -> None:
    with Wire(server.address) as c:
        handle = submit(c, "r", b"in", ptype="SUBMIT_JOB_BG")

    async def scenario() -> None:
        async with AsyncClient([addr(server)]) as client:
            with pytest.raises(JobTimeout):
                await client.result(handle.decode(), wait=True, timeout=0.3)
            still = await client.result(handle.decode())
            assert still is not None and still.state == "queued"

    arun(scenario())


def test_blocking_client_and_failed_jobs(server: process.ServerProcess) -> None:
    with Wire(server.address) as c:
        handle = submit(c, "r", b"in", ptype="SUBMIT_JOB_BG")
    run_one(server, handle, [("WORK_EXCEPTION", (b"it broke",))])
    with Client([addr(server)]) as client:
        result = client.result(handle.decode())
        assert result is not None and result.state == "exception" and result.result == b"it broke"
        assert not result.ok
        assert client.result(handle.decode(), wait=True, timeout=5) == result  # ended: at once
        assert client.result_unique("no such key") is None


def test_results_survive_a_restart_of_a_durable_server(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    srv = process.geartrain("--store", f"sqlite://{db}", workdir=tmp_path).start()
    with Wire(srv.address) as c:
        done = submit(c, "r", b"in", unique=b"kept", ptype="SUBMIT_JOB_BG")
        waiting = submit(c, "r", b"later", ptype="SUBMIT_JOB_BG")
    run_one(srv, done, [("WORK_DATA", (b"d",)), ("WORK_COMPLETE", (b"result",))])
    assert srv.stop() == 0
    (tmp_path / "again").mkdir()
    again = process.geartrain("--store", f"sqlite://{db}", workdir=tmp_path / "again").start()
    try:
        assert "kept 1 result(s)" in again.log()
        with Client([f"{again.host}:{again.port}"]) as client:
            kept = client.result(done.decode())
            assert kept is not None and kept.result == b"result" and kept.data == [b"d"]
            assert client.result_unique("kept") == kept
            queued = client.result(waiting.decode())
            assert queued is not None and queued.state == "queued"
        with Wire(again.address) as c:
            fresh = submit(c, "r", b"new", ptype="SUBMIT_JOB_BG")
        assert int(fresh.rsplit(b":", 1)[1]) > int(waiting.rsplit(b":", 1)[1])
    finally:
        again.stop()
    assert "Traceback" not in again.log()


def test_gearmand_keeps_no_results_and_the_client_says_so(gearmand: process.ServerProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient([addr(gearmand)]) as client:
            with pytest.raises(ResultsUnsupported, match="geartrain"):
                await client.result("H:x:1")
            assert await client.echo(b"still fine") == b"still fine"

    arun(scenario())
