"""AsyncClient with several real servers (two geartrain, or two C gearmand):
unique keys hashed to a server, round robin without one, a dead server
skipped and retried with back-off, a server killed under a running job."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geartrain.client import AsyncClient, Request, unique_hash
from geartrain.errors import ConnectionLost, NoServerAvailable
from tests.client.test_async_client import addr, arun, assert_clean, grab_async, until
from tests.support import process
from tests.support.wire import Wire, status_of


def counts(srv: process.ServerProcess, function: str) -> int:
    """Jobs of *function* the server holds (queued or running)."""
    return (status_of(srv.address, function) or (0, 0, 0))[0]


def unique_for(index: int, servers: int = 2, prefix: str = "key") -> str:
    """A unique key that hashes to server *index*."""
    for i in range(1000):
        key = f"{prefix}-{i}"
        if unique_hash(key.encode()) % servers == index:
            return key
    raise AssertionError("no such key")


@pytest.fixture(params=["geartrain", "gearmand"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(kind: str, workdir: Path, port: int | None = None) -> process.ServerProcess:
    workdir.mkdir(exist_ok=True)
    factory = process.geartrain if kind == "geartrain" else process.gearmand
    return factory(port=port, workdir=workdir).start()


@pytest.fixture
def pair(kind: str, tmp_path: Path) -> Iterator[list[process.ServerProcess]]:
    servers = [start(kind, tmp_path / "a"), start(kind, tmp_path / "b")]
    yield servers
    for srv in servers:
        srv.stop()
        if kind == "geartrain":
            assert "Traceback" not in srv.log(), srv.log()


def test_unique_keys_go_to_the_server_they_hash_to_and_coalesce(pair: list[process.ServerProcess]) -> None:
    a, b = pair

    async def main() -> None:
        keys = [f"k{i}" for i in range(40)]
        expected = [sum(1 for k in keys if unique_hash(k.encode()) % 2 == i) for i in (0, 1)]
        assert min(expected) > 0
        async with AsyncClient([addr(a), addr(b)]) as one, AsyncClient(f"{addr(a)},{addr(b)}") as two:
            await one.submit_background_many([Request("hashed", b"", unique=k) for k in keys[:20]])
            for k in keys[20:]:
                await two.submit_background("hashed", unique=k)
            assert [counts(a, "hashed"), counts(b, "hashed")] == expected
            # identical uniques from two clients meet on one server: one job, both results
            for index, srv, other in ((0, a, b), (1, b, a)):
                key = unique_for(index, prefix="meet")
                with Wire(srv.address) as w:
                    w.send("CAN_DO", f"meet{index}")
                    j1 = await one.submit_job(f"meet{index}", b"p", unique=key)
                    j2 = await two.submit_job(f"meet{index}", b"p", unique=key)
                    assert j1.handle == j2.handle and j1.server == j2.server == (srv.host, srv.port)
                    assert (counts(srv, f"meet{index}"), counts(other, f"meet{index}")) == (1, 0)
                    assert (await one.status_unique(key)).clients == 2
                    handle = (await grab_async(w))[0]
                    w.send("WORK_COMPLETE", handle, b"shared")
                    assert await j1.wait(5) == b"shared" and await j2.wait(5) == b"shared"
            assert_clean(one)
            assert_clean(two)
    arun(main())


def test_jobs_without_unique_are_spread_round_robin(pair: list[process.ServerProcess]) -> None:
    a, b = pair

    async def main() -> None:
        async with AsyncClient([addr(a), addr(b)]) as client:
            for i in range(10):
                await client.submit_background("spread", b"%d" % i)
            assert (counts(a, "spread"), counts(b, "spread")) == (5, 5)
            await client.submit_background_many([Request("many", b"%d" % i) for i in range(30)])
            assert (counts(a, "many"), counts(b, "many")) == (15, 15)
            jobs = await client.submit_jobs([Request("fg", b"%d" % i) for i in range(6)])
            assert sorted(j.server.port for j in jobs if j.server) == sorted([a.port, b.port] * 3)
            # one status call asks both servers: a handle only b knows (both number
            # their handles from 1, so b gets ahead by 40 jobs submitted to it alone)
            with Wire(b.address) as w:
                for _ in range(40):
                    w.send("SUBMIT_JOB_BG", "extra", b"", b"")
                    last = w.expect("JOB_CREATED")[0].decode()
            assert counts(a, "extra") == 0
            got = await client.statuses([last, "H:none:1"])
            assert [(s.handle, s.known) for s in got] == [(last, True), ("H:none:1", False)]
    arun(main())


def test_a_dead_server_is_skipped_then_used_again_after_back_off(kind: str, tmp_path: Path) -> None:
    live = start(kind, tmp_path / "live")
    dead_port = process.free_port()
    revived: process.ServerProcess | None = None
    try:
        async def main() -> None:
            nonlocal revived
            async with AsyncClient([f"127.0.0.1:{dead_port}", addr(live)]) as client:
                assert await client.connect() == [(live.host, live.port)]
                for i in range(10):
                    assert (await client.submit_background("probe", b"%d" % i)).startswith("H:")
                assert counts(live, "probe") == 10
                handles = await client.submit_background_many([Request("bulk", b"") for _ in range(1000)])
                assert len(set(handles)) == 1000 and counts(live, "bulk") == 1000
                assert len(client._tasks) <= 1  # one background retry at a time, not one per job
                assert client._servers[0].backoff.failures >= 1  # it was retried, and failed again
                revived = await asyncio.to_thread(start, kind, tmp_path / "revived", dead_port)
                started = time.monotonic()
                while counts(revived, "probe") == 0 and time.monotonic() - started < 10:
                    await client.submit_background("probe", b"again")
                    await asyncio.sleep(0.02)
                assert counts(revived, "probe") > 0, "the revived server was never used again"
                assert client._servers[0].backoff.failures == 0
                before = counts(revived, "probe"), counts(live, "probe")
                for _ in range(10):  # round robin over both again
                    await client.submit_background("probe", b"rr")
                assert (counts(revived, "probe") - before[0], counts(live, "probe") - before[1]) == (5, 5)
        arun(main())
    finally:
        live.stop()
        if revived is not None:
            revived.stop()


def test_a_server_killed_under_a_running_job(pair: list[process.ServerProcess]) -> None:
    a, b = pair
    key = unique_for(0)

    async def main() -> None:
        async with AsyncClient([addr(a), addr(b)]) as client:
            with Wire(a.address) as w:
                w.send("CAN_DO", "victim")
                job = await client.submit_job("victim", b"x", unique=key)
                assert job.server == (a.host, a.port)
                await grab_async(w)
                a.signal(signal.SIGKILL)
                started = time.monotonic()
                with pytest.raises(ConnectionLost):
                    await job.wait(10)
                assert time.monotonic() - started < 2
                await asyncio.to_thread(a.wait, 5)
            # meanwhile everything goes to the survivor, the key's job too
            for _ in range(4):
                await client.submit_background("after", b"")
            assert counts(b, "after") == 4
            with Wire(b.address) as w:
                w.send("CAN_DO", "victim")
                job = await client.submit_job("victim", b"y", unique=key)
                assert job.server == (b.host, b.port)
                handle = (await grab_async(w))[0]
                w.send("WORK_COMPLETE", handle, b"survived")
                assert await job.wait(5) == b"survived"
            # the killed server comes back on its port: the same client uses it again
            await asyncio.to_thread(a.start)
            assert await until(lambda: client._servers[0].backoff.ready(time.monotonic()), 35)
            with Wire(a.address) as w:
                w.send("CAN_DO", "victim")
                w.send("ECHO_REQ", b"sync")
                w.expect("ECHO_RES")
                result = None
                end = time.monotonic() + 10
                while result is None and time.monotonic() < end:
                    job = await client.submit_job("victim", b"z", unique=key)
                    if job.server == (a.host, a.port):
                        handle = (await grab_async(w))[0]
                        w.send("WORK_COMPLETE", handle, b"back")
                        result = await job.wait(5)
                    else:  # not reconnected yet: the survivor took it; let its worker-less job go
                        await asyncio.sleep(0.05)
                assert result == b"back"
    arun(main())


def test_all_servers_down_then_up(kind: str, tmp_path: Path) -> None:
    ports = [process.free_port(), process.free_port()]

    async def main() -> None:
        async with AsyncClient([f"127.0.0.1:{p}" for p in ports]) as client:
            with pytest.raises(NoServerAvailable) as info:
                await client.submit_background("x")
            assert all(str(p) in str(info.value) for p in ports)
            srv = await asyncio.to_thread(start, kind, tmp_path / "late", ports[1])
            try:
                handle = None
                end = time.monotonic() + 10
                while handle is None and time.monotonic() < end:
                    try:
                        handle = await client.submit_background("x", b"")
                    except NoServerAvailable:
                        await asyncio.sleep(0.05)
                assert handle is not None and counts(srv, "x") == 1
            finally:
                srv.stop()
    arun(main())
