"""Fixtures for store tests: a fresh, isolated store URL per test, for each kind.

The database servers are the real ones of the machine (PostgreSQL on
127.0.0.1:5432 trust auth, database ``test``; MariaDB on 127.0.0.1:3306 as
root without password, database ``test``; Redis on 127.0.0.1:6379); ``make
test`` starts any that is installed but stopped. Each test gets its own table
or key prefix (``?prefix=``), removed afterwards. A missing server skips the
test on a developer machine and FAILS it when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

KINDS = ("sqlite", "mysql", "postgresql", "redis")
DURABLE_KINDS = KINDS
SERVICES = {"mysql": ("127.0.0.1", 3306), "postgresql": ("127.0.0.1", 5432), "redis": ("127.0.0.1", 6379)}


def require_service(kind: str) -> None:
    """Fail (under CI) or skip when the database server of *kind* is not reachable."""
    address = SERVICES.get(kind)
    if address is None:
        return
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError as exc:
        message = (f"{kind} server at {address[0]}:{address[1]} is not reachable ({exc}); "
                   "`make test` starts it")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def base_url(kind: str, prefix: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'queue.db'}"
    if kind == "mysql":
        return f"mysql://root@127.0.0.1:3306/test?prefix={prefix}"
    if kind == "postgresql":
        return f"postgresql://root@127.0.0.1:5432/test?prefix={prefix}"
    return f"redis://127.0.0.1:6379/0?prefix={prefix}:"


def drop_everything(kind: str, prefix: str) -> None:
    """Remove what a test's store created (tables or keys starting with *prefix*)."""
    if kind == "mysql":
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW TABLES LIKE %s", (prefix.replace("_", "\\_") + "%",))
                for (table,) in cur.fetchall():
                    cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            conn.commit()
        finally:
            conn.close()
    elif kind == "postgresql":
        import asyncpg

        async def drop() -> None:
            conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="root", database="test")
            try:
                rows = await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename LIKE $1", prefix.replace("_", "\\_") + "%")
                for row in rows:
                    await conn.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())
    elif kind == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=0)
        try:
            keys = list(client.scan_iter(match=prefix + ":*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    require_service(kind)
    return kind


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path) -> Iterator[str]:
    """A store URL of every kind, isolated for this test."""
    prefix = f"gt{uuid.uuid4().hex[:10]}_"
    yield base_url(store_kind, prefix, tmp_path)
    drop_everything(store_kind, prefix)
