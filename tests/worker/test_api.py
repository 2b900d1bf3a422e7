"""Smaller parts of the worker API: choosing servers before a run, and drain()."""

from __future__ import annotations

import asyncio

import pytest

from geartrain import AsyncClient, AsyncWorker, WorkerJob
from tests.support import process
from tests.worker.util import addr, running, workers_for


def test_use_servers_before_run(any_server: process.ServerProcess) -> None:
    asyncio.run(_use_servers(any_server))


async def _use_servers(any_server: process.ServerProcess) -> None:
    worker = AsyncWorker("127.0.0.1:1")  # nothing listens there
    worker.use_servers([addr(any_server)])
    assert [str(a) for a in worker.addresses] == [addr(any_server)]

    @worker.function("echo")
    async def echo(job: WorkerJob) -> bytes:
        return job.payload

    async with running(worker):
        await workers_for(any_server.address, "echo")
        with pytest.raises(RuntimeError):
            worker.use_servers("127.0.0.1:2")
        async with AsyncClient([addr(any_server)]) as client:
            assert await client.submit("echo", b"hi", timeout=10) == b"hi"


def test_drain_between_large_data_chunks(any_server: process.ServerProcess) -> None:
    asyncio.run(_drain(any_server))


async def _drain(any_server: process.ServerProcess) -> None:
    worker = AsyncWorker([addr(any_server)])
    chunk = b"x" * (1 << 20)

    @worker.function("stream")
    async def stream(job: WorkerJob) -> bytes:
        for _ in range(16):
            job.send_data(chunk)
            await job.drain()
        return b"end"

    async with running(worker):
        await workers_for(any_server.address, "stream")
        async with AsyncClient([addr(any_server)]) as client:
            job = await client.submit_job("stream", b"")
            assert await job.wait(30) == b"end"
            assert job.data == [chunk] * 16
