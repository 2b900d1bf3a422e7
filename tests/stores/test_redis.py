"""The Redis store: its API against the machine's Redis (127.0.0.1:6379), and
real ``geartrain server --store redis://...`` processes.

Every test works under its own key prefix on the shared Redis and removes it
afterwards (the fixtures of conftest.py). Tests that need a Redis they may
stop, restart, protect with a password or speak TLS start a throwaway
``redis-server`` of their own on a free port (nothing saved to disk); the
shared Redis on 6379 is never stopped or reconfigured.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

from geartrain.server.stores import StoredJob, StoreError, create_store, parse_store_url
from geartrain.server.stores import redis as redis_store
from geartrain.server.stores.redis import RedisStore
from tests.stores.conftest import base_url, drop_everything, require_service
from tests.support import process
from tests.support.wire import Wire, grab, submit, wait_until

T = TypeVar("T")
PASSWORD = "s3cret-Pw.42"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def prefix(tmp_path: Path) -> Iterator[str]:
    """A fresh key prefix on the shared Redis (keys ``{prefix}:...``), removed afterwards."""
    require_service("redis")
    name = f"gt{uuid.uuid4().hex[:10]}_"
    yield name
    drop_everything("redis", name)


@pytest.fixture
def url(prefix: str, tmp_path: Path) -> str:
    return base_url("redis", prefix, tmp_path)


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    yield client
    client.close()


def store_for(url: str, password: str | None = None) -> RedisStore:
    parsed = parse_store_url(url)
    if password is not None:
        parsed.password = password
    store = create_store(parsed)
    assert isinstance(store, RedisStore)
    return store


async def opened(url: str) -> RedisStore:
    store = store_for(url)
    await store.open()
    return store


async def open_and_close(url: str) -> None:
    await (await opened(url)).close()


def job(handle: bytes, function: bytes = b"fn", unique: bytes = b"", data: bytes = b"data",
        priority: int = 1, when: int = 0, reducer: bytes = b"", retries: int = 0) -> StoredJob:
    return StoredJob(handle, function, unique, data, priority, when, reducer, retries)


# ------------------------------------------------------------------ throwaway redis

@contextmanager
def own_redis(workdir: Path, *args: str, port: int | None = None) -> Iterator[int]:
    """A redis-server of this test's own (nothing kept on disk); its port."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = port or process.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / f"redis-{port}.log", "ab") as log:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        process.wait_listening("127.0.0.1", port, proc, timeout=10)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------ the store API

ODD = [
    job(b"H:host-1:1", b"fn-with-dash", b"", b"\0\xffbinary\0", 0),
    job(b"H:host-1:2", b"ns:fn:colon", b"", b"empty unique, same function", 1),
    job(b"H:host-1:3", b"ns:fn:colon", b"", b"empty unique again", 1),
    job(b"H:a:b:c-d:4", b"ns:fn:colon", b"same", b"equal unique 1", 2),
    job(b"H:a:b:c-d:5", b"ns:fn:colon", b"same", b"equal unique 2", 2),
    job(b"H:\x00\xff*?[x]:6", b"fn\0\xff*?[glob]", b"-", b"", 1, when=int(time.time()) + 3600),
    job(b"H:host-1:7", b"fn-with-dash", b"u-1:2", b"reduce", 1, reducer=b"re-du:cer", retries=3),
    job(b"H:host-1:8", b"fn-with-dash", b"big", os.urandom(1 << 20), 1, when=1),
]


def test_round_trip_in_order_binary_safe(url: str, prefix: str, shared: redis.Redis) -> None:
    """Everything a job has comes back exactly and in insertion order: names
    with '-', ':', NUL and glob characters, empty and equal uniques kept apart,
    epoch times, reducers, retries, a 1 MiB payload."""
    async def go() -> None:
        store = await opened(url)
        await store.apply(ODD[:3], [], [])
        await store.apply(ODD[3:], [], [])
        assert await store.replay() == ODD
        assert await store.count() == len(ODD)
        await store.close()
        again = await opened(url)  # a new process would see the same
        assert await again.replay() == ODD
        await again.close()

    run(go())
    keys = set(shared.scan_iter(match=prefix + ":*", count=1000))
    p = (prefix + ":").encode()
    assert keys == {p + b"version", p + b"seq", p + b"order"} | {p + b"job:" + j.handle for j in ODD}
    assert shared.get(p + b"version") == b"1"
    assert shared.hgetall(p + b"job:" + ODD[6].handle) == {
        b"function": b"fn-with-dash", b"unique": b"u-1:2", b"priority": b"1", b"data": b"reduce",
        b"when": b"0", b"reducer": b"re-du:cer", b"retries": b"3"}


def test_updates_and_dones(url: str, prefix: str, shared: redis.Redis) -> None:
    async def go() -> None:
        store = await opened(url)
        a, b, c, d = (job(b"H:t:%d" % i, data=b"%d" % i) for i in range(1, 5))
        await store.apply([a, b, c, d], [], [])
        # an update of a finished or unknown job creates nothing; a done of an unknown one is fine
        await store.apply([], [(a.handle, 2), (b"H:t:gone", 7)], [b.handle, b"H:t:never"])
        a = a._replace(retries=2)
        assert await store.replay() == [a, c, d]
        assert not shared.exists((prefix + ":job:H:t:gone").encode())
        assert not shared.exists((prefix + ":job:H:t:2").encode())
        # added and finished in one transaction: nothing; added and updated: the update counts
        e, f = job(b"H:t:5"), job(b"H:t:6")
        await store.apply([e, f], [(f.handle, 1)], [e.handle])
        f = f._replace(retries=1)
        # the same handle added again replaces its fields and keeps its place
        c2 = job(c.handle, b"other", b"u", b"new data", 0)
        await store.apply([c2], [], [])
        assert await store.replay() == [a, c2, d, f]
        await store.apply([], [], [a.handle, c.handle, d.handle, f.handle])
        assert await store.replay() == []
        await store.close()

    run(go())
    p = prefix + ":"  # no job hash is left behind (an empty sorted set is no key)
    assert sorted(shared.scan_iter(match=p + "*")) == [f"{p}{k}".encode() for k in ("seq", "version")]


def test_replay_reads_in_chunks(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_store, "REPLAY_CHUNK", 7)
    jobs = [job(b"H:c:%d" % i, b"f%d" % (i % 3), data=b"%d" % i) for i in range(40)]

    async def go() -> list[StoredJob]:
        store = await opened(url)
        for i in range(0, 40, 9):
            await store.apply(jobs[i:i + 9], [], [])
        await store.apply([], [], [jobs[13].handle])
        replayed = await store.replay()
        await store.close()
        return replayed

    assert run(go()) == jobs[:13] + jobs[14:]


def test_replay_skips_half_written_jobs(url: str, prefix: str, shared: redis.Redis,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """A handle in the order without its hash is dropped from the order; a hash
    that cannot be read is logged and left for a human."""
    p = (prefix + ":").encode()

    async def go() -> list[StoredJob]:
        store = await opened(url)
        await store.apply([job(b"H:h:1"), job(b"H:h:2"), job(b"H:h:3")], [], [])
        shared.delete(p + b"job:H:h:2")
        shared.hset(p + b"job:H:h:3", b"priority", b"high")
        with caplog.at_level(logging.WARNING, "geartrain.server"):
            replayed = await store.replay()
        await store.close()
        return replayed

    assert run(go()) == [job(b"H:h:1")]
    assert shared.zrange(p + b"order", 0, -1) == [b"H:h:1", b"H:h:3"]
    assert "no job hash" in caplog.text and "damaged" in caplog.text


def test_schema_version_and_foreign_keys(url: str, prefix: str, shared: redis.Redis) -> None:
    p = (prefix + ":").encode()
    run(open_and_close(url))
    assert shared.get(p + b"version") == b"1"
    shared.set(p + b"version", b"2")
    with pytest.raises(StoreError, match="schema version 2 .* newer"):
        run(open_and_close(url))
    shared.set(p + b"version", b"not a number")
    with pytest.raises(StoreError, match="not a geartrain schema version"):
        run(open_and_close(url))
    shared.delete(p + b"version")
    shared.set(p + b"order", b"someone else's string")
    with pytest.raises(StoreError, match="is a string, not a zset"):
        run(open_and_close(url))


def test_url_parameters(prefix: str) -> None:
    base = "redis://127.0.0.1:6379"
    store = store_for(f"{base}/3?prefix=no-colon")
    assert (store.db, store.key_order, store.job_key(b"H:x")) == (3, b"no-colon:order", b"no-colon:job:H:x")
    assert store_for(f"{base}/").key_order == b"geartrain:order"
    assert store_for("redis://").port == 6379
    for bad, message in [("/0?prefx=typo", "unknown parameter"),
                         ("/zero", "must be a number"), ("/0?timeout=0", "timeout='0'"),
                         ("/0?connect_timeout=x", "connect_timeout")]:
        with pytest.raises(StoreError, match=message):
            store_for(base + bad)


def test_apply_is_all_or_nothing(url: str, prefix: str, shared: redis.Redis) -> None:
    """A transaction that cannot complete changes nothing: here the counter or
    the order were replaced behind the store's back, after open()."""
    p = (prefix + ":").encode()
    a, b = job(b"H:x:1"), job(b"H:x:2")

    async def go() -> None:
        store = await opened(url)
        await store.apply([a], [], [])
        shared.set(p + b"seq", b"garbage")
        with pytest.raises(StoreError, match="WRONGTYPE geartrain key .*seq"):
            await store.apply([b], [(a.handle, 5)], [a.handle])
        shared.set(p + b"seq", b"1")
        assert await store.replay() == [a]  # not updated, not deleted; b not added
        assert not shared.exists(p + b"job:" + b.handle)

        shared.rename(p + b"order", p + b"order-saved")
        shared.set(p + b"order", b"x")
        with pytest.raises(StoreError, match="WRONGTYPE geartrain key .*order"):
            await store.apply([], [(a.handle, 5)], [a.handle])
        assert shared.hgetall(p + b"job:" + a.handle)[b"retries"] == b"0"
        shared.rename(p + b"order-saved", p + b"order")
        await store.apply([b], [(a.handle, 5)], [])
        assert await store.replay() == [a._replace(retries=5), b]
        await store.close()

    run(go())


def test_connection_killed_by_redis_is_replaced(url: str, shared: redis.Redis) -> None:
    async def go() -> None:
        store = await opened(url)
        await store.apply([job(b"H:k:1")], [], [])
        assert store._client is not None
        for _ in range(2):
            shared.client_kill_filter(_id=str(await store._client.client_id()))
            await store.apply([job(b"H:k:2")], [], [])
        assert [j.handle for j in await store.replay()] == [b"H:k:1", b"H:k:2"]
        await store.close()

    run(go())


def test_dead_redis_fails_fast_then_comes_back(tmp_path: Path) -> None:
    """Redis stops: apply fails at once (no hang); Redis restarts: the next
    apply reconnects by itself."""
    port = process.free_port()

    async def go() -> None:
        with own_redis(tmp_path, port=port):
            store = await opened(f"redis://127.0.0.1:{port}/0")
            await store.apply([job(b"H:d:1")], [], [])
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"redis 127.0.0.1:{port}/0: .*"):
            await store.apply([job(b"H:d:2")], [], [])
        assert time.monotonic() - started < 2
        with own_redis(tmp_path, port=port):
            await store.apply([job(b"H:d:3")], [], [])
            # nothing persisted across that restart (--save '' --appendonly no)
            assert [j.handle for j in await store.replay()] == [b"H:d:3"]
            await store.close()

    run(go())


def test_call_given_up_leaves_no_stale_reply(tmp_path: Path) -> None:
    """The committer gives up on a slow apply (asyncio timeout): the next calls
    get their own answers, not the late one. The given-up script may still run
    (Redis had it), as with any store."""
    with own_redis(tmp_path, "--enable-debug-command", "local") as port:
        async def go() -> None:
            store = await opened(f"redis://127.0.0.1:{port}/0")
            await store.apply([job(b"H:s:1")], [], [])
            sleeper = redis.asyncio.Redis(port=port)
            sleeping = asyncio.ensure_future(sleeper.execute_command(  # type: ignore[no-untyped-call]
                "DEBUG", "SLEEP", "0.5"))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.apply([job(b"H:s:2")], [], []), 0.1)
            assert await store.count() == 2
            await store.apply([job(b"H:s:3")], [], [])
            assert [j.handle for j in await store.replay()] == [b"H:s:1", b"H:s:2", b"H:s:3"]
            await sleeping
            await sleeper.aclose()
            await store.close()

        run(go())


def test_silent_redis_times_out() -> None:
    """A peer that accepts but never answers fails within ?timeout=."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"redis 127.0.0.1:{port}/0"):
            run(opened(f"redis://127.0.0.1:{port}/0?timeout=0.3"))
        assert time.monotonic() - started < 2


MINIMAL_ACL = ["+ping", "+client|setname", "+type", "+get", "+set", "+eval", "+zrange", "+zcard", "+zrem",
               "+hgetall", "+incrby", "+del", "+hset", "+zadd"]


def test_acl_minimal_user_and_refused_command(tmp_path: Path) -> None:
    """A user with only the commands and keys the module docstring lists can
    use the store; one without a command the script needs is stopped at open()."""
    with own_redis(tmp_path) as port:
        admin = redis.Redis(port=port)
        admin.acl_setuser("gtmin", enabled=True, passwords=["+pw"], keys=["mine:*"],
                          commands=["-@all", *MINIMAL_ACL])

        async def go() -> list[StoredJob]:
            store = await opened(f"redis://gtmin:pw@127.0.0.1:{port}/0?prefix=mine")
            await store.apply([job(b"H:m:1"), job(b"H:m:2")], [(b"H:m:1", 1)], [b"H:m:2"])
            replayed = await store.replay()
            assert await store.count() == 1
            await store.close()
            return replayed

        assert run(go()) == [job(b"H:m:1", retries=1)]
        with pytest.raises(StoreError, match="no permissions to access one of the keys"):
            run(open_and_close(f"redis://gtmin:pw@127.0.0.1:{port}/0?prefix=other"))
        admin.acl_setuser("gt", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-zrem"])
        with pytest.raises(StoreError, match="can't run this command.*test transaction at start-up"):
            run(opened(f"redis://gt:pw@127.0.0.1:{port}/0"))
        admin.close()


def test_password_reaches_auth(tmp_path: Path) -> None:
    with own_redis(tmp_path, "--requirepass", PASSWORD) as port:
        url = f"redis://127.0.0.1:{port}/0?prefix=pw"
        with pytest.raises(StoreError, match="Authentication required"):
            run(open_and_close(url))
        with pytest.raises(StoreError) as wrong:
            run(store_for(url, password="wrong-guess").open())
        assert "wrong-guess" not in str(wrong.value)

        async def go(store: RedisStore) -> list[StoredJob]:
            await store.open()
            await store.apply([job(b"H:p:1")], [], [])
            replayed = await store.replay()
            await store.close()
            return replayed

        assert run(go(store_for(url, password=PASSWORD))) == [job(b"H:p:1")]
        assert run(go(store_for(f"redis://default:{PASSWORD}@127.0.0.1:{port}/0?prefix=pw2"))) == [
            job(b"H:p:1")]
    # the shared Redis has no password: it answers the AUTH it was sent
    with pytest.raises(StoreError, match="AUTH.*without any password configured"):
        run(store_for("redis://127.0.0.1:6379/0?prefix=gt_noauth", password=PASSWORD).open())


def test_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    tls_port = process.free_port()
    with own_redis(tmp_path, "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                   "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"):
        process.wait_listening("127.0.0.1", tls_port, None)

        async def go(url: str) -> list[StoredJob]:
            store = await opened(url)
            await store.apply([job(b"H:tls:1")], [], [])
            replayed = await store.replay()
            await store.close()
            return replayed

        assert run(go(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}")) == [job(b"H:tls:1")]
        assert run(go(f"rediss://localhost:{tls_port}/0?ssl_cert_reqs=none&prefix=b")) == [job(b"H:tls:1")]
        with pytest.raises(StoreError, match="certificate verify failed"):
            run(opened(f"rediss://127.0.0.1:{tls_port}/0"))  # the system CAs do not know it


# ------------------------------------------------------------------ real server processes

def server(url: str, workdir: Path, *args: str, port: int | None = None) -> process.ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return process.geartrain("--store", url, "--job-handle-prefix", "H:red-is:x", *args,
                             workdir=workdir, port=port)


def stored(url: str, password: str | None = None) -> list[StoredJob]:
    async def go() -> list[StoredJob]:
        store = store_for(url, password)
        await store.open()
        try:
            return await store.replay()
        finally:
            await store.close()

    return run(go())


def redis_client_id(client: redis.Redis, pid: int) -> int:
    """The id of the Redis connection of geartrain process *pid*."""
    for entry in client.client_list():
        if entry.get("name") == f"geartrain-{pid}":
            return int(entry["id"])
    raise AssertionError(f"no Redis connection named geartrain-{pid}")


def test_background_jobs_survive_sigkill(url: str, tmp_path: Path) -> None:
    """Every kind of background job, with '-' and ':' in handles and names,
    comes back after SIGKILL with the same handle, priority, unique, run-at
    time, reducer and retry count, in order."""
    srv = server(url, tmp_path / "one").start()
    future = int(time.time()) + 3600
    with Wire(srv.address) as w:
        handles = [
            submit(w, "fn-a:b", b"\0\xffhigh", b"", "SUBMIT_JOB_HIGH_BG"),
            submit(w, "fn-a:b", b"normal 1", b"", "SUBMIT_JOB_BG"),
            submit(w, "fn-a:b", b"normal 2", b"", "SUBMIT_JOB_BG"),
            submit(w, "fn-a:b", b"low", b"same", "SUBMIT_JOB_LOW_BG"),
            submit(w, "other-fn", b"other", b"same", "SUBMIT_JOB_BG"),
        ]
        w.send("SUBMIT_JOB_EPOCH", "fn-a:b", b"u-epoch", str(future), b"later")
        handles.append(w.expect("JOB_CREATED")[0])
        w.send("SUBMIT_REDUCE_JOB_BACKGROUND", "fn-a:b", b"u-red", b"my-reducer", b"", b"reduce me")
        handles.append(w.expect("JOB_CREATED")[0])
        handles.append(submit(w, "retry:fn", b"retried", b"u-retry", "SUBMIT_JOB_BG"))
    assert len(set(handles)) == 8 and all(h.startswith(b"H:red-is:x:") for h in handles)
    with Wire(srv.address) as worker:  # runs the retry job and leaves: retries 1
        worker.send("CAN_DO", "retry:fn")
        assert grab(worker)[1][0] == handles[7]
    assert wait_until(lambda: stored(url)[-1].retries == 1)
    srv.signal(signal.SIGKILL)
    srv.wait(10)

    expected = [
        job(handles[0], b"fn-a:b", b"", b"\0\xffhigh", 0),
        job(handles[1], b"fn-a:b", b"", b"normal 1", 1),
        job(handles[2], b"fn-a:b", b"", b"normal 2", 1),
        job(handles[3], b"fn-a:b", b"same", b"low", 2),
        job(handles[4], b"other-fn", b"same", b"other", 1),
        job(handles[5], b"fn-a:b", b"u-epoch", b"later", 1, when=future),
        job(handles[6], b"fn-a:b", b"u-red", b"reduce me", 1, reducer=b"my-reducer"),
        job(handles[7], b"retry:fn", b"u-retry", b"retried", 1, retries=1),
    ]
    assert stored(url) == expected

    srv = server(url, tmp_path / "two").start()
    try:
        assert "replayed 8 job(s)" in srv.log()
        got = []
        with Wire(srv.address) as worker:
            worker.send("CAN_DO", "fn-a:b")
            for _ in range(5):
                name, args = grab(worker, "GRAB_JOB_ALL")
                got.append((name, args))
                worker.send("WORK_COMPLETE", args[0], b"")
            worker.send("GRAB_JOB")
            assert worker.expect("NO_JOB") == []  # the epoch job still waits for its time
        uniq = "JOB_ASSIGN_UNIQ"  # GRAB_JOB_ALL answers JOB_ASSIGN_ALL only for a job with a reducer
        assert got == [
            (uniq, [handles[0], b"fn-a:b", b"", b"\0\xffhigh"]),
            (uniq, [handles[1], b"fn-a:b", b"", b"normal 1"]),
            (uniq, [handles[2], b"fn-a:b", b"", b"normal 2"]),
            ("JOB_ASSIGN_ALL", [handles[6], b"fn-a:b", b"u-red", b"my-reducer", b"reduce me"]),
            (uniq, [handles[3], b"fn-a:b", b"same", b"low"]),
        ]
        with Wire(srv.address) as w:  # new handles continue after the replayed ones
            new = submit(w, "fn-a:b", b"new", b"", "SUBMIT_JOB_LOW_BG")
        assert int(new.rpartition(b":")[2]) > max(int(h.rpartition(b":")[2]) for h in handles)
        assert wait_until(lambda: len(stored(url)) == 4)
        assert stored(url) == [*expected[4:6], expected[7], job(new, b"fn-a:b", b"", b"new", 2)]
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_server_survives_killed_redis_connection(url: str, tmp_path: Path, shared: redis.Redis) -> None:
    """CLIENT KILL of the server's connection: the next submit is stored all the same."""
    srv = server(url, tmp_path).start()
    try:
        with Wire(srv.address) as w:
            handles = [submit(w, "kill-fn", b"1", b"", "SUBMIT_JOB_BG")]
            for n in range(2, 4):
                assert shared.client_kill_filter(_id=str(redis_client_id(shared, srv.pid))) == 1
                w.send("SUBMIT_JOB_BG", "kill-fn", b"", str(n))
                name, args = w.recv()
                assert name == "JOB_CREATED", (name, args)
                handles.append(args[0])
        assert [j.handle for j in stored(url)] == handles
    finally:
        srv.stop()
    assert "failed" not in srv.log() and "Traceback" not in srv.log()


def test_server_refuses_while_redis_is_down_and_recovers(tmp_path: Path) -> None:
    """Redis stops: background submits get ERROR QUEUE_ERROR promptly (never
    a handle); Redis restarts: submits are stored again, without a restart of
    geartrain."""
    port = process.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with own_redis(tmp_path / "redis", port=port):
        srv = server(url, tmp_path / "gt").start()
        with Wire(srv.address) as w:
            submit(w, "down-fn", b"before", b"", "SUBMIT_JOB_BG")
    try:
        with Wire(srv.address) as w:
            started = time.monotonic()
            w.send("SUBMIT_JOB_BG", "down-fn", b"", b"while down")
            name, args = w.recv()
            assert (name, args[0]) == ("ERROR", b"QUEUE_ERROR"), (name, args)
            assert time.monotonic() - started < 3
        with own_redis(tmp_path / "redis", port=port):
            def stored_again() -> bool:
                with Wire(srv.address) as w:
                    w.send("SUBMIT_JOB_BG", "down-fn", b"", b"after")
                    return w.recv()[0] == "JOB_CREATED"

            assert wait_until(stored_again, timeout=5, step=0.2)
            assert [j.data for j in stored(url)][-1:] == [b"after"]
    finally:
        srv.stop()
    assert "is back after" in srv.log()


@pytest.mark.parametrize("source", ["environment", "file-600", "url"])
def test_server_password_sources(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The password from GEARTRAIN_STORE_PASSWORD, --store-password-file or the
    URL reaches AUTH; one in the URL is warned about and is in neither the
    log nor /proc/PID/cmdline once the server runs."""
    with own_redis(tmp_path / "redis", "--requirepass", PASSWORD) as port:
        url = f"redis://127.0.0.1:{port}/0?prefix=pw-{source}"
        args: list[str] = []
        if source == "environment":
            monkeypatch.setenv("GEARTRAIN_STORE_PASSWORD", PASSWORD)
        elif source == "file-600":
            secret = tmp_path / "password"
            secret.write_text(PASSWORD + "\n")
            secret.chmod(0o600)
            args = ["--store-password-file", str(secret)]
        else:
            url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0?prefix=pw-{source}"
        srv = server(url, tmp_path / "gt", *args).start()
        try:
            with Wire(srv.address) as w:
                handle = submit(w, "pw-fn", b"x", b"", "SUBMIT_JOB_BG")
            assert [j.handle for j in stored(url, PASSWORD)] == [handle]
            cmdline = Path(f"/proc/{srv.pid}/cmdline").read_bytes()
            assert PASSWORD.encode() not in cmdline
        finally:
            srv.stop()
        log = srv.log()
        assert PASSWORD not in log
        assert ("password is on the command line" in log) == (source == "url"), log


def refused_with_readable_password_file(tmp_path: Path) -> str:
    """Start with a --store-password-file of mode 644: the server must exit; its log."""
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    secret.chmod(0o644)
    srv = server("redis://127.0.0.1:6379/0?prefix=gt_never", tmp_path / "gt",
                 "--store-password-file", str(secret)).start(wait=False)
    try:
        assert srv.wait(15) != 0
    finally:
        srv.stop()
    return srv.log()


def test_server_refuses_password_file_others_can_read(tmp_path: Path) -> None:
    log = refused_with_readable_password_file(tmp_path)
    assert "chmod 600" in log and PASSWORD not in log


def test_server_refuses_password_file_cleanly(tmp_path: Path) -> None:
    assert "Traceback" not in refused_with_readable_password_file(tmp_path)
