"""Kept results of ended jobs in every durable store: ``Store.apply(...,
results, result_drops)`` and ``Store.load_results()``.

Against the machine's real databases (the fixtures of conftest.py: an isolated
URL per test, for sqlite, mysql, postgresql and redis; a missing server fails
under CI). Everything written is read back through a NEW store instance on
the same URL, as a restarted server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from geartrain.results import CANCELLED, COMPLETED, EXCEPTION, FAILED, JobResult
from geartrain.server.stores import Store, StoredJob, StoreError, create_store, parse_store_url
from geartrain.server.stores import mysql as mysql_store
from geartrain.server.stores import sqlite as sqlite_store
from tests.stores.conftest import base_url, drop_everything, require_service

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def new_store(url: str) -> Store:
    return create_store(parse_store_url(url))


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    store = new_store(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def load(url: str) -> list[JobResult]:
    """The kept results as a restarted server sees them (a new store instance)."""
    async with opened(url) as store:
        return await store.load_results()


def job(n: int, data: bytes = b"") -> StoredJob:
    return StoredJob(b"H:res:job:%d" % n, b"fn", b"", data or b"data %d" % n, 1)


def result(n: int, finished: float = 1_700_000_000.0, state: str = COMPLETED, **kw: Any) -> JobResult:
    return JobResult(b"H:res:%d" % n, kw.pop("function", b"fn"), kw.pop("unique", b""), state,
                     finished=finished, **kw)


#: a result of each outcome; the first has every field set to something other than its default
RICH = [
    JobResult(
        handle=b"H:res:1", function="ns:fn-\u00e9".encode(), unique=b"u-1:\xc3\xbc", state=COMPLETED,
        result=b"\x00\xff\xfe not UTF-8 \x00 with NULs \x80",
        data=[b"text chunk", b"\x00\x01\xff binary chunk", b""],
        warnings=[b"warning \xc3\xa9", b"\xff\xfe"],
        numerator=3, denominator=7, submitted=1_712_345_678.123456, finished=1_712_345_680.654321,
        attempts=[1_712_345_678.5, 1_712_345_679.25], truncated_bytes=12345, background=False,
        priority=0),
    JobResult(
        handle=b"H:res:2", function=b"fn", unique=b"", state=EXCEPTION,
        result=b"line 1\nline \"2\" \\ 'quoted' %s \x00 NUL in UTF-8 text \xe2\x82\xac",
        data=[], warnings=[b"w"], numerator=0, denominator=0, submitted=1_712_345_600.0,
        finished=1_712_345_601.5, attempts=[1_712_345_600.25], truncated_bytes=0, background=True,
        priority=2),
    JobResult(handle=b"H:res:3", function=b"other", unique=b"same", state=FAILED, finished=1_712_345_000.0),
    JobResult(handle=b"H:res:4", function=b"other", unique=b"same", state=CANCELLED,
              submitted=1_712_340_000.0, finished=1_712_345_999.0, attempts=[], priority=1),
]


def by_finished(results: list[JobResult]) -> list[JobResult]:
    return sorted(results, key=lambda r: r.finished)


# ------------------------------------------------------------------ every kind


def test_results_come_back_whole_after_reopening(store_url: str) -> None:
    """Every field of every result, binary payloads and chunks included, oldest first."""
    async def go() -> None:
        async with opened(store_url) as store:
            assert await store.load_results() == []
            await store.apply([], [], [], RICH[:2])
            await store.apply([], [], [], RICH[2:])
        got = await load(store_url)
        assert got == by_finished(RICH)
        assert [r.handle for r in got] == [b"H:res:3", b"H:res:2", b"H:res:1", b"H:res:4"]
        rich = got[2]  # every field, spelled out
        assert rich.result == b"\x00\xff\xfe not UTF-8 \x00 with NULs \x80"
        assert rich.data == [b"text chunk", b"\x00\x01\xff binary chunk", b""]
        assert rich.warnings == [b"warning \xc3\xa9", b"\xff\xfe"]
        assert (rich.function, rich.unique, rich.state) == ("ns:fn-\u00e9".encode(), b"u-1:\xc3\xbc",
                                                            COMPLETED)
        assert (rich.numerator, rich.denominator, rich.truncated_bytes) == (3, 7, 12345)
        assert (rich.submitted, rich.finished) == (1_712_345_678.123456, 1_712_345_680.654321)
        assert rich.attempts == [1_712_345_678.5, 1_712_345_679.25]
        assert (rich.background, rich.priority) == (False, 0)

    run(go())


def test_a_result_with_the_same_handle_replaces_the_old_one(store_url: str) -> None:
    first = result(1, 100.0, result=b"first")
    second = result(1, 50.0, state=FAILED, result=b"second", attempts=[49.0])

    async def go() -> None:
        async with opened(store_url) as store:
            await store.apply([], [], [], [first, result(2, 75.0)])
            await store.apply([], [], [], [second])
        assert await load(store_url) == [second, result(2, 75.0)]  # its new time orders it
        async with opened(store_url) as store:
            # the same handle twice in one apply(): the last one given wins
            third, fourth = result(3, 10.0, result=b"third"), result(3, 200.0, result=b"fourth")
            await store.apply([], [], [], [third, fourth])
        assert await load(store_url) == [second, result(2, 75.0), fourth]

    run(go())


def test_result_drops_delete(store_url: str) -> None:
    kept = [result(n, 100.0 + n) for n in range(1, 6)]

    async def go() -> None:
        async with opened(store_url) as store:
            await store.apply([], [], [], kept)
            # an unknown handle is no error
            await store.apply([], [], [], [], [kept[0].handle, kept[3].handle, b"H:res:never"])
        assert await load(store_url) == [kept[1], kept[2], kept[4]]
        async with opened(store_url) as store:
            # kept and forgotten in one apply(): forgotten (results first, then the drops)
            await store.apply([], [], [], [result(9, 1.0)], [b"H:res:9"])
            # more handles than one DELETE chunk
            many = [result(n, 1000.0 + n) for n in range(100, 1300)]
            await store.apply([], [], [], many)
            await store.apply([], [], [], [], [r.handle for r in many[:-1]] + [kept[1].handle])
        assert await load(store_url) == [kept[2], kept[4], many[-1]]
        async with opened(store_url) as store:
            await store.apply([], [], [], [], [kept[2].handle, kept[4].handle, many[-1].handle])
        assert await load(store_url) == []

    run(go())


def test_results_and_jobs_land_in_one_apply(store_url: str) -> None:
    async def go() -> None:
        async with opened(store_url) as store:
            old = result(0, 10.0)
            await store.apply([job(1), job(2), job(3)], [], [], [old])
            # job 1 ends: its row goes and its result is kept, in the same transaction;
            # job 2's retry count changes; the old result is forgotten
            await store.apply([job(4)], [(job(2).handle, 3)], [job(1).handle],
                              [result(1, 20.0, result=b"done")], [old.handle])
        async with opened(store_url) as store:
            replayed = await store.replay()
            assert [(j.handle, j.retries) for j in replayed] == [
                (job(2).handle, 3), (job(3).handle, 0), (job(4).handle, 0)]
            assert await store.load_results() == [result(1, 20.0, result=b"done")]
            assert await store.count() == 3

    run(go())


def test_an_apply_with_only_results_or_only_drops_is_not_skipped(store_url: str) -> None:
    async def go() -> None:
        async with opened(store_url) as store:
            await store.apply([], [], [], [result(1)])
        assert await load(store_url) == [result(1)]
        async with opened(store_url) as store:
            await store.apply([], [], [], [], [result(1).handle])
        assert await load(store_url) == []
        async with opened(store_url) as store:
            await store.apply([], [], [], [], [])  # nothing at all is still fine
            assert await store.replay() == [] and await store.load_results() == []

    run(go())


def test_large_results_round_trip(store_url: str) -> None:
    """2 MiB of binary payload (sent as base64, hex too for MySQL) and 2 MiB
    of text spread over data chunks."""
    binary = JobResult(b"H:res:big", b"fn", b"u", COMPLETED, result=os.urandom(2 << 20),
                       warnings=[os.urandom(1000)], finished=5.0)
    text = JobResult(b"H:res:text", b"fn", b"", EXCEPTION, result=b"x" * 1000,
                     data=[(b"chunk %d " % i) * 20000 for i in range(16)], finished=6.0)
    assert sum(len(c) for c in text.data) > 2 << 20

    async def go() -> None:
        async with opened(store_url) as store:
            await store.apply([job(1)], [], [], [binary, text])
        got = await load(store_url)
        assert [r.handle for r in got] == [binary.handle, text.handle]
        assert got[0].result == binary.result and got[0] == binary
        assert got[1] == text

    run(go())


def test_a_store_of_the_previous_schema_is_migrated(store_kind: str, store_url: str) -> None:
    """A store written before results were kept (schema version 1: the jobs
    table only) is opened: its jobs stay, and results can be kept."""
    async def before() -> None:
        async with opened(store_url) as store:
            await store.apply([job(1), job(2)], [], [])

    run(before())
    raw = Raw(store_kind, store_url)
    raw.make_schema_1()
    assert raw.version() == 1 and not raw.has_results()

    async def after() -> None:
        async with opened(store_url) as store:
            assert [j.handle for j in await store.replay()] == [job(1).handle, job(2).handle]
            assert await store.load_results() == []
            await store.apply([], [], [job(1).handle], [result(1, 30.0)])
        async with opened(store_url) as store:  # opened again: nothing more to migrate
            assert [j.handle for j in await store.replay()] == [job(2).handle]
            assert await store.load_results() == [result(1, 30.0)]

    run(after())
    # the SQL stores are at their latest version (SQLite 3: jobs in batches, the
    # others 2); Redis needs no new version (its keys appear as used)
    assert raw.version() == {"redis": 1, "sqlite": 3}.get(store_kind, 2)
    assert raw.has_results()


class Raw:
    """The database of a store URL, seen without the store (to set up and inspect)."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.parsed = parse_store_url(url)
        self.prefix = self.parsed.params.get("prefix", "")

    def _mysql(self, *statements: str) -> list[tuple[Any, ...]]:
        import pymysql  # type: ignore[import-untyped]

        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
        try:
            with conn.cursor() as cur:
                rows: list[tuple[Any, ...]] = []
                for statement in statements:
                    cur.execute(statement)
                    rows = list(cur.fetchall())
                return rows
        finally:
            conn.close()

    def _postgres(self, *statements: str) -> list[Any]:
        import asyncpg

        async def go() -> list[Any]:
            conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="root", database="test")
            try:
                rows: list[Any] = []
                for statement in statements:
                    rows = list(await conn.fetch(statement))
                return rows
            finally:
                await conn.close()

        return run(go())

    def _sqlite(self, *statements: str) -> list[Any]:
        conn = sqlite3.connect(self.parsed.database, isolation_level=None)
        try:
            rows: list[Any] = []
            for statement in statements:
                rows = conn.execute(statement).fetchall()
            return rows
        finally:
            conn.close()

    def _redis(self) -> Any:
        return redis_client()

    def make_schema_1(self) -> None:
        """Turn the store back into what schema version 1 created (no results)."""
        p = self.prefix
        if self.kind == "sqlite":
            # version 1 kept a row per job, where version 3 keeps batches
            conn = sqlite3.connect(self.parsed.database, isolation_level=None)
            try:
                rows = []
                for b, form, blob in conn.execute("SELECT batch, format, jobs FROM geartrain_batches "
                                                  "ORDER BY batch").fetchall():
                    rows += [(b, fields) for fields in sqlite_store.decode_batch(form, blob)]
                marks = {(b, h): n for b, h, n in conn.execute("SELECT * FROM geartrain_marks")}
                conn.execute(sqlite_store.MIGRATIONS[1][0])
                for b, fields in rows:
                    mark = marks.get((b, fields[0]))
                    if mark != sqlite_store.FINISHED:
                        conn.execute("INSERT INTO geartrain_jobs (handle, function, unique_key, data, "
                                     "priority, when_to_run, reducer, retries) VALUES (?,?,?,?,?,?,?,?)",
                                     fields[:7] + (fields[7] if mark is None else mark,))
                for table in ("geartrain_results", "geartrain_batches", "geartrain_marks"):
                    conn.execute(f"DROP TABLE {table}")
                conn.execute("PRAGMA user_version = 1")
            finally:
                conn.close()
        elif self.kind == "mysql":
            self._mysql(f"DROP TABLE `{p}results`",
                        f"UPDATE `{p}meta` SET `value` = 1 WHERE `name` = 'schema_version'")
        elif self.kind == "postgresql":
            self._postgres(f'DROP TABLE "{p}results"',
                           f"UPDATE \"{p}meta\" SET value = '1' WHERE key = 'schema_version'")
        else:  # version 1 is the current layout; it had no results keys
            client = self._redis()
            try:
                keys = list(client.scan_iter(match=p + "result*"))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()

    def version(self) -> int:
        p = self.prefix
        if self.kind == "sqlite":
            return int(self._sqlite("PRAGMA user_version")[0][0])
        if self.kind == "mysql":
            return int(self._mysql(f"SELECT `value` FROM `{p}meta` WHERE `name` = 'schema_version'")[0][0])
        if self.kind == "postgresql":
            return int(self._postgres(f"SELECT value FROM \"{p}meta\" WHERE key = 'schema_version'")[0][0])
        client = self._redis()
        try:
            return int(client.get(p + "version"))
        finally:
            client.close()

    def has_results(self) -> bool:
        """The results table exists (Redis: the sorted set of kept results)."""
        p = self.prefix
        if self.kind == "sqlite":
            return bool(self._sqlite("SELECT name FROM sqlite_master WHERE name = 'geartrain_results'"))
        if self.kind == "mysql":
            return bool(self._mysql(
                "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'test' "
                f"AND TABLE_NAME = '{p}results' AND ENGINE = 'InnoDB'"))
        if self.kind == "postgresql":
            return bool(self._postgres(f"SELECT to_regclass('\"{p}results\"') IS NOT NULL AS there")[0][0])
        client = self._redis()
        try:
            return bool(client.exists(p + "results"))
        finally:
            client.close()


# ------------------------------------------------------------------ mysql, postgresql, redis


@pytest.fixture(params=("mysql", "postgresql", "redis"))
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, URL) of the stores on a database server, isolated for this test."""
    kind: str = request.param
    require_service(kind)
    prefix = f"gt{uuid.uuid4().hex[:10]}_"
    yield kind, base_url(kind, prefix, tmp_path)
    drop_everything(kind, prefix)


def test_a_damaged_record_is_skipped_and_logged(server_url: tuple[str, str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    kind, url = server_url
    raw = Raw(kind, url)
    p = raw.prefix

    async def keep() -> None:
        async with opened(url) as store:
            await store.apply([], [], [], [result(1, 1.0), result(2, 2.0), result(3, 3.0)])

    run(keep())
    if kind == "mysql":
        raw._mysql(f"UPDATE `{p}results` SET `record` = '{{not json' WHERE `handle` = 'H:res:2'")
    elif kind == "postgresql":
        raw._postgres(f"UPDATE \"{p}results\" SET record = '{{\"handle\": 1}}' WHERE handle = 'H:res:2'")
    else:
        client = raw._redis()
        try:
            client.hset(p + "result:H:res:2", "record", "[]")
            client.delete(p + "result:H:res:3")  # in the sorted set, without its hash
        finally:
            client.close()
    with caplog.at_level(logging.WARNING, "geartrain.server"):
        got = run(load(url))
    assert "H:res:2" in caplog.text and "damaged" in caplog.text
    if kind == "redis":
        assert got == [result(1, 1.0)]
        assert "no result hash" in caplog.text
        assert run(load(url)) == [result(1, 1.0)]  # the damaged one is left in place, still skipped
    else:
        assert got == [result(1, 1.0), result(3, 3.0)]


# ------------------------------------------------------------------ redis


def test_redis_keys_of_kept_results(tmp_path: Path) -> None:
    require_service("redis")
    prefix = f"gt{uuid.uuid4().hex[:10]}_"
    url = base_url("redis", prefix, tmp_path)
    raw = Raw("redis", url)
    p = raw.prefix.encode()
    client = raw._redis()
    try:
        async def keep() -> None:
            async with opened(url) as store:
                await store.apply([], [], [], [result(1, 1_712_345_678.25, unique=b"u"),
                                               result(2, 5.0)])

        run(keep())
        assert set(client.scan_iter(match=p + b"*")) == {
            p + b"version", p + b"seq", p + b"results", p + b"result:H:res:1", p + b"result:H:res:2"}
        assert client.zrange(p + b"results", 0, -1, withscores=True) == [
            (b"H:res:2", 5.0), (b"H:res:1", 1_712_345_678.25)]
        fields = client.hgetall(p + b"result:H:res:1")
        assert {k: v for k, v in fields.items() if k != b"record"} == {
            b"function": b"fn", b"unique": b"u", b"state": b"completed",
            b"finished": b"1712345678.25"}

        # all or nothing: a results key of another type fails the whole apply()
        client.rename(p + b"results", p + b"results-saved")
        client.set(p + b"results", b"someone else's")

        with pytest.raises(StoreError, match="is a string, not a zset"):
            run(new_store(url).open())  # refused at open, by its key check
        client.delete(p + b"results")
        client.rename(p + b"results-saved", p + b"results")

        async def swap_then_apply() -> None:
            async with opened(url) as store:
                client.rename(p + b"results", p + b"results-saved")
                client.set(p + b"results", b"x")
                with pytest.raises(StoreError, match="WRONGTYPE geartrain key .*results"):
                    await store.apply([job(1)], [], [], [result(3, 7.0)], [b"H:res:1"])
                client.delete(p + b"results")
                client.rename(p + b"results-saved", p + b"results")
                assert await store.replay() == []
                assert await store.load_results() == [result(2, 5.0), result(1, 1_712_345_678.25,
                                                                               unique=b"u")]

        run(swap_then_apply())
        assert not client.exists(p + b"result:H:res:3")

        async def forget() -> None:
            async with opened(url) as store:
                await store.apply([], [], [], [], [b"H:res:1", b"H:res:2"])

        run(forget())  # nothing is left behind (an empty sorted set is no key)
        assert set(client.scan_iter(match=p + b"*")) == {p + b"version", p + b"seq"}
    finally:
        client.close()
        drop_everything("redis", prefix)


def test_redis_minimal_acl_user_keeps_and_loads_results(tmp_path: Path) -> None:
    """The commands the module docstring lists (tests/stores/test_redis.py's
    MINIMAL_ACL) are enough for results too, load_results() included."""
    from tests.stores.test_redis import MINIMAL_ACL, own_redis

    with own_redis(tmp_path) as port:
        admin = redis_client(port)
        try:
            admin.acl_setuser("gtmin", enabled=True, passwords=["+pw"], keys=["mine:*"],
                              commands=["-@all", *MINIMAL_ACL])
        finally:
            admin.close()
        url = f"redis://gtmin:pw@127.0.0.1:{port}/0?prefix=mine"

        async def go() -> None:
            async with opened(url) as store:
                await store.apply([job(1)], [], [], [result(1, 2.0), result(2, 1.0)], [b"H:res:1"])
            assert await load(url) == [result(2, 1.0)]

        run(go())


def redis_client(port: int = 6379) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, db=0)


# ------------------------------------------------------------------ mysql: max_allowed_packet


@pytest.fixture
def mysql_url(tmp_path: Path) -> Iterator[str]:
    require_service("mysql")
    prefix = f"gt{uuid.uuid4().hex[:10]}_"
    yield base_url("mysql", prefix, tmp_path)
    drop_everything("mysql", prefix)


def test_mysql_a_result_too_big_for_max_allowed_packet_is_dropped_alone(
        mysql_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A result whose row can never fit in the server's max_allowed_packet is
    left out with a warning; the jobs and results of the same apply() land,
    and the apply() does not fail (the committer would retry it forever).

    max_allowed_packet is the server's real one (read-only per session, and
    the server is shared, so it is not lowered); the result is sized from it
    (a binary payload of half of it: base64, then hex, make the row 4/3 of it).
    Above 64 MiB the store is told a lower limit instead, not to need GBs here.
    """
    async def go() -> None:
        async with opened(mysql_url) as store:
            assert isinstance(store, mysql_store.MySQLStore)
            await store.apply([job(1)], [], [], [result(1, 1.0)])
            if store.max_allowed_packet > 64 << 20:
                store.max_allowed_packet = 16 << 20
            connection = store.connection_id
            huge = result(2, 2.0, result=os.urandom(store.max_allowed_packet // 2))
            with caplog.at_level(logging.WARNING, "geartrain.server"):
                await store.apply([job(2)], [(job(1).handle, 4)], [], [result(3, 3.0), huge, result(4, 4.0)],
                                  [b"H:res:1"])
                assert store.connection_id == connection  # the huge row was never sent
                # an apply() of nothing but that result is no error either, and sends nothing
                await store.apply([], [], [], [huge])
            assert store.connection_id == connection
        assert caplog.text.count("the result of job H:res:2 is not kept") == 2, caplog.text
        assert "max_allowed_packet" in caplog.text
        async with opened(mysql_url) as store:
            assert [(j.handle, j.retries) for j in await store.replay()] == [
                (job(1).handle, 4), (job(2).handle, 0)]
            assert await store.load_results() == [result(3, 3.0), result(4, 4.0)]

    run(go())


def test_mysql_results_up_to_the_packet_limit(mysql_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """With a lower limit (as with a server whose max_allowed_packet is small):
    a row just under it is stored alone in its statement, one just over it is
    not; several small rows share statements; a handle too long for its column
    is left out too instead of failing the transaction."""
    async def go() -> None:
        async with opened(mysql_url) as store:
            assert isinstance(store, mysql_store.MySQLStore)
            store.max_allowed_packet = limit = 256 << 10
            probe = result(10, 10.0, result=b"")
            overhead = len(store._statements([], [], [], [mysql_store.result_row(probe)])[0])
            room = limit - mysql_store.PACKET_SLACK - overhead  # hex characters left for the payload
            fits = result(10, 10.0, result=b"x" * (room // 2))
            over = result(11, 11.0, result=b"x" * (room // 2 + 1))
            statement, = store._statements([], [], [], [mysql_store.result_row(fits)])
            assert limit - mysql_store.PACKET_SLACK - 1 <= len(statement) <= limit - mysql_store.PACKET_SLACK
            small = [result(n, float(n)) for n in range(20, 120)]
            long_handle = JobResult(b"H:" + b"h" * 300, b"fn", b"", COMPLETED, finished=12.0)
            with caplog.at_level(logging.WARNING, "geartrain.server"):
                await store.apply([], [], [], [fits, over, long_handle, *small])
            assert "H:res:11 is not kept" in caplog.text and "H:res:10 is not kept" not in caplog.text
            assert "handle is longer than 255 bytes" in caplog.text
            assert await store.load_results() == [fits, *small]

    run(go())
