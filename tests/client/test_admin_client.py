"""geartrain.admin against real servers (geartrain and C gearmand 1.1.20).

Server state is made with raw Wire connections (workers with CAN_DO and
SET_CLIENT_ID, background jobs with uniques, a running job, a cancelled job);
the admin client's typed rows are checked against it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from geartrain.admin import (
    AdminClient,
    AdminTimeout,
    AsyncAdminClient,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    WorkerInfo,
)
from geartrain.errors import ConnectionLost, GearmanError, NoServerAvailable, ServerError
from tests.support import process
from tests.support.wire import Wire, admin, grab, submit, wait_until

LEVELS = ("FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def connections(address: tuple[str, int]) -> int:
    """Connections the server lists (including the asking one)."""
    return len(admin(address, "workers")[0].splitlines()) - 1


@pytest.fixture
def state(any_server: process.ServerProcess) -> Iterator[dict[str, Any]]:
    """Two workers, three queued background jobs (one per priority), a running job."""
    addr = any_server.address
    client, w1, w2 = Wire(addr), Wire(addr), Wire(addr)
    w1.send("SET_CLIENT_ID", "worker one")  # a client id with a space
    w1.send("CAN_DO", "alpha")
    w1.send("CAN_DO", "beta")
    w2.send("CAN_DO", "alpha")
    w2.send("CAN_DO", b"bin\xff")  # not UTF-8
    queued = [
        submit(client, "gamma", b"h", b"u-high", "SUBMIT_JOB_HIGH_BG"),
        submit(client, "gamma", b"n", b"u-normal", "SUBMIT_JOB_BG"),
        submit(client, "gamma", b"l", b"", "SUBMIT_JOB_LOW_BG"),  # no unique
    ]
    running = submit(client, "alpha", b"r", b"u-run")
    _, args = grab(w1)
    assert args[0] == running
    assert wait_until(lambda: connections(addr) == 4)
    yield {"server": any_server, "queued": [h.decode() for h in queued], "running": running.decode(),
           "client": client, "w1": w1, "w2": w2}
    for w in (client, w1, w2):
        w.close()


def test_listings(state: dict[str, Any]) -> None:
    srv = state["server"]

    async def main() -> None:
        async with AsyncAdminClient(srv.address) as ad:
            status = await ad.status()
            assert sorted(status, key=lambda r: r.name) == [
                FunctionStatus("alpha", 1, 1, 2),
                FunctionStatus("beta", 0, 0, 1),
                FunctionStatus("bin\udcff", 0, 0, 1),
                FunctionStatus("gamma", 3, 0, 0),
            ]
            assert {r.name: r.queued for r in status} == {"alpha": 0, "beta": 0, "bin\udcff": 0, "gamma": 3}
            assert sorted(await ad.priority_status(), key=lambda r: r.name) == [
                PriorityStatus("alpha", 0, 0, 0, 2),
                PriorityStatus("beta", 0, 0, 0, 1),
                PriorityStatus("bin\udcff", 0, 0, 0, 1),
                PriorityStatus("gamma", 1, 1, 1, 0),
            ]

            workers = await ad.workers()
            assert all(isinstance(w, WorkerInfo) for w in workers)
            assert len(workers) == 4 and len({w.fd for w in workers}) == 4
            assert {w.address for w in workers} == {"127.0.0.1"}
            by_functions = sorted(((w.client_id, w.functions) for w in workers), key=repr)
            # functions newest first; the submitting client and this admin connection have none
            assert by_functions == sorted([("-", ()), ("-", ()), ("worker one", ("beta", "alpha")),
                                           ("-", ("bin\udcff", "alpha"))], key=repr)

            jobs = await ad.show_jobs()
            assert sorted(jobs, key=lambda j: j.handle) == sorted(
                [JobInfo(h, 0, False, True) for h in state["queued"]]
                + [JobInfo(state["running"], 0, False, False)], key=lambda j: j.handle)
            assert sorted(await ad.show_unique_jobs()) == ["", "u-high", "u-normal", "u-run"]

    arun(main())


def test_info(any_server: process.ServerProcess) -> None:
    async def main() -> None:
        async with AsyncAdminClient(f"{any_server.host}:{any_server.port}") as ad:
            version = await ad.version()
            assert version and (await ad.raw("version")) == b"OK %s\n" % version.encode()
            assert await ad.getpid() == any_server.pid
            assert await ad.verbose() in LEVELS
            assert ad.connected

    arun(main())


def test_cancel_create_drop_maxqueue(state: dict[str, Any]) -> None:
    srv, client = state["server"], state["client"]
    high, normal, low = state["queued"]

    async def main() -> None:
        async with AsyncAdminClient(srv.address) as ad:
            assert await ad.cancel_job(normal) is True
            assert await ad.cancel_job(b"H:nowhere:999") is False
            jobs = {j.handle: j for j in await ad.show_jobs()}
            assert jobs[normal] == JobInfo(normal, 0, True, False)  # cancelled: ignored, not queued
            assert jobs[high].queued and not jobs[high].ignored
            assert await ad.cancel_job(state["running"]) is True  # a running job can be cancelled too
            assert client.expect("WORK_FAIL") == [state["running"].encode()]
            assert {j.handle: j for j in await ad.show_jobs()}[state["running"]].ignored

            await ad.create_function("delta")
            await ad.create_function("made\udcfe")  # any bytes round-trip
            names = {r.name: r for r in await ad.status()}
            assert names["delta"] == FunctionStatus("delta", 0, 0, 0)
            assert "made\udcfe" in names
            await ad.drop_function("delta")
            await ad.drop_function(b"made\xfe")
            assert not {"delta", "made\udcfe"} & {r.name for r in await ad.status()}

            with pytest.raises(ServerError) as err:
                await ad.drop_function("nosuch")
            assert (err.value.code, err.value.text) == ("function not found", "")
            with pytest.raises(ServerError) as err:
                await ad.drop_function("alpha")  # workers still registered
            assert err.value.code == "there are still connected workers or executing clients"
            assert err.value.server == f"{srv.host}:{srv.port}"

            # maxqueue: one limit for every priority, then per priority (high, normal, low)
            await ad.create_function("limited")
            await ad.maxqueue("limited", 1)
            submit(client, "limited", b"1", b"", "SUBMIT_JOB_BG")
            client.send("SUBMIT_JOB_BG", "limited", "", "2")
            assert client.expect("ERROR")[0] == b"QUEUE_ERROR"
            await ad.maxqueue("limited", (0, 3, 0))
            submit(client, "limited", b"3", b"", "SUBMIT_JOB_BG")
            await ad.maxqueue("limited", 0)  # unlimited again
            for i in range(3):
                submit(client, "limited", b"%d" % i, b"", "SUBMIT_JOB_LOW_BG")
            assert {r.name: r.low for r in await ad.priority_status()}["limited"] == 3

            for bad in ("", "two words", "new\nline", "tab\tbed"):
                with pytest.raises(ValueError):
                    await ad.create_function(bad)
            with pytest.raises(ValueError):
                await ad.maxqueue("limited", (1, 2))  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await ad.maxqueue("limited", -1)

    arun(main())


def test_err_replies_and_raw(any_server: process.ServerProcess) -> None:
    async def main() -> None:
        async with AsyncAdminClient(any_server.address) as ad:
            assert await ad.raw("bogus") == b"ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"
            with pytest.raises(ServerError) as err:
                await ad.raw("bogus", check=True)
            assert (err.value.code, err.value.text) == ("UNKNOWN_COMMAND", "Unknown server commandbogus")
            with pytest.raises(ServerError) as err:
                await ad.raw(b"maxqueue", check=True)
            assert err.value.code == "INVALID_ARGUMENTS"
            assert err.value.text == "An incomplete set of arguments was sent to this command maxqueue"
            assert await ad.raw("show foo") == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
            # listings and single lines keep their framing; the connection stays in step
            assert (await ad.raw("STATUS")).endswith(b".\n")
            assert (await ad.raw("create function zeta")) == b"OK\r\n"
            assert (await ad.raw("status")) == b"zeta\t0\t0\t0\n.\n"
            with pytest.raises(ValueError):
                await ad.raw("status\nversion")

    arun(main())


def test_unique_looking_like_an_error(any_server: process.ServerProcess) -> None:
    """A unique id "ERR x" in `show unique jobs` is a row, not an error reply."""
    with Wire(any_server.address) as c:
        submit(c, "f", b"x", b"ERR UNKNOWN_JOB", "SUBMIT_JOB_BG")
        submit(c, "f", b"y", b"second", "SUBMIT_JOB_BG")
    with AdminClient(any_server.address) as ad:
        assert sorted(ad.show_unique_jobs()) == ["ERR UNKNOWN_JOB", "second"]
        assert ad.raw("show unique jobs").endswith(b"\n.\n")
        assert [r.total for r in ad.status()] == [2]


def test_blocking_client_shared_by_threads(any_server: process.ServerProcess) -> None:
    pid = any_server.pid
    errors: list[BaseException] = []
    with AdminClient(any_server.address, timeout=5) as ad:
        ad.create_function("shared")

        def work(n: int) -> None:
            try:
                for i in range(15):
                    calls: list[Callable[[], object]] = [
                        lambda: ad.getpid() == pid,
                        lambda: [r.name for r in ad.status()] == ["shared"],
                        lambda: len(ad.workers()) == 1,  # one shared connection
                        lambda: ad.show_jobs() == [],
                        lambda: bool(ad.version()),
                    ]
                    assert calls[(n + i) % len(calls)](), (n, i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert ad.address == ("127.0.0.1", any_server.port)
    with pytest.raises(RuntimeError):
        ad.status()
    ad.close()  # closing twice is fine


def test_connection_refused_is_quick() -> None:
    port = process.free_port()
    start = time.monotonic()
    with pytest.raises(NoServerAvailable):
        arun(AsyncAdminClient(("127.0.0.1", port)).status())
    with pytest.raises(NoServerAvailable) as err:
        AdminClient(f"127.0.0.1:{port}").__enter__()
    assert isinstance(err.value, GearmanError) and isinstance(err.value, ConnectionError)
    assert time.monotonic() - start < 2


class _SilentPeer:
    """A listening socket that accepts and then either says nothing or hangs up:
    conditions a real server shows when it is wedged or restarting."""

    def __init__(self, hang_up: bool) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.hang_up = hang_up
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(100)
            if self.hang_up:
                conn.close()
            else:
                self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_timeout_and_hang_up() -> None:
    silent, closing = _SilentPeer(hang_up=False), _SilentPeer(hang_up=True)
    try:
        async def main() -> None:
            ad = AsyncAdminClient(silent.address, timeout=0.3)
            start = time.monotonic()
            with pytest.raises(AdminTimeout) as err:
                await ad.status()
            assert isinstance(err.value, ConnectionLost) and isinstance(err.value, TimeoutError)
            assert 0.25 < time.monotonic() - start < 2
            assert not ad.connected  # never reused after a lost reply
            await ad.close()

            ad = AsyncAdminClient(closing.address, timeout=2)
            for _ in range(2):  # and the next call reconnects
                with pytest.raises(ConnectionLost):
                    await ad.version()
            await ad.close()

        arun(main())
    finally:
        silent.close()
        closing.close()


def test_concurrent_tasks_share_one_connection(server: process.ServerProcess) -> None:
    async def main() -> None:
        async with AsyncAdminClient(server.address) as ad:
            await ad.create_function("one")
            statuses, workers = await asyncio.gather(
                asyncio.gather(*(ad.status() for _ in range(20))),
                asyncio.gather(*(ad.workers() for _ in range(20))),
            )
            assert statuses == [[FunctionStatus("one", 0, 0, 0)]] * 20
            assert all(len(w) == 1 and w == workers[0] for w in workers)  # only this connection

    arun(main())
