"""Redis store: ``redis://[user:password@]host[:port]/db?prefix=geartrain:``.

Layout, every key under one prefix (``?prefix=``, default ``geartrain:``; a
``:`` is added when the prefix does not end with one):

* ``{prefix}job:{handle}`` -- a hash per job: ``function``, ``unique``,
  ``priority``, ``data``, ``when``, ``reducer``, ``retries``. Keys and values
  are binary-safe, so handles and function names with ``-``, ``:`` or any
  other byte round-trip exactly (gearmand's redis queue split its keys on
  ``-`` and lost such jobs at replay);
* ``{prefix}order`` -- a sorted set of handles scored by insertion sequence,
  so replay returns the jobs in the order they were added;
* ``{prefix}seq`` -- the sequence counter (``INCRBY``);
* ``{prefix}result:{handle}`` -- a hash per kept result of an ended job:
  ``function``, ``unique``, ``state``, ``finished`` and ``record`` (the JSON
  of ``geartrain.results.JobResult``, which the server reads back);
* ``{prefix}results`` -- a sorted set of the handles of the kept results,
  scored by the time the job finished, so they are read back oldest first;
* ``{prefix}version`` -- the layout's schema version, checked (and migrated)
  by ``open()``.

Jobs are keyed by handle, never by unique: empty or equal uniques are kept
apart. Epoch jobs are stored with their run-at time (gearmand refused them).
Replay reads the sorted set in chunks and fetches the hashes with pipelined
``HGETALL``; nothing uses ``KEYS``, which blocks Redis for everyone.

Every ``apply()`` is ONE server-side script (``EVAL``), which Redis runs
atomically, like ``MULTI``/``EXEC``: per job added ``DEL`` + ``HSET`` of a fresh
hash and ``ZADD NX`` with the next number from ``INCRBY {prefix}seq``; per
update ``HSET retries``, only on a hash that still exists (a late update never
resurrects a finished job as a half-empty hash); per job finished ``DEL`` +
``ZREM``; per result kept ``HSET`` of its five fields and ``ZADD`` with its
finishing time (a result kept again replaces the old one; a key of another
type is deleted first); per result forgotten ``DEL`` + ``ZREM``. The results
are written before the finished jobs are deleted, whatever the order of the
lists. Why a script rather than ``MULTI`` with a command per job:

* all or nothing. Redis rolls back neither a ``MULTI`` whose command fails
  while ``EXEC`` runs (a key of the wrong type) nor a script after its first
  write. The script checks, before its first write, everything that could make
  a later command fail (the types of ``order``, ``results`` and ``seq``;
  ``DEL`` cannot fail; the updates check their hash), so it fails whole or
  not at all; an out-of-memory Redis refuses its first write (every write that
  needs memory comes before the deletions, so nothing is written) and still
  lets a batch of only finished jobs and forgotten results free memory. What
  is left is a Redis that refuses one of the commands inside (renamed, or
  denied by an ACL): ``open()`` runs one probe ``apply()`` (a job added,
  updated and finished and a result kept and forgotten at once; no net change)
  so that such a set-up stops the server at start, not at a submit;
* speed: redis-py spends some 20 us of Python per command, so a command per
  job made the store the bottleneck (1000 adds per call: ~43k jobs/s with
  ``MULTI``/``HSET``, ~110k/s with the script).

A call is idempotent (the same fields set again, ``ZADD NX``, ``DEL``), so the
single retry redis-py makes after a connection error is harmless even when the
lost reply was to a script that ran. Replay skips, logs and tidies a job that
is half there (a handle in the order without its hash).

Durability is Redis's own: the server answers JOB_CREATED once the script
returned, i.e. once the job is in Redis's memory. Whether it survives a crash
of Redis or of the machine depends on Redis's persistence: ``appendonly yes``
with ``appendfsync always`` keeps every acknowledged job, ``everysec`` (Redis's
default) may lose the last second, RDB snapshots alone lose everything since
the last snapshot, and no persistence at all loses every job when Redis
restarts (``open()`` logs a warning when the append-only file is off, and when
an eviction policy could drop job keys). A call the server gave up on
(``--store-timeout``) may still have run in Redis: its submits were refused,
yet the jobs come back at the next start (as with the other stores). One
prefix belongs to one geartrain server.

The connection comes back by itself: a connection that Redis closed (``CLIENT
KILL``, ``timeout``, a restart) is replaced on the next transaction, and a
Redis that is down fails the transaction within ``?connect_timeout=`` seconds
(default 2; ``?timeout=`` bounds each reply, default 10), so the server
refuses the submits that wait on it instead of hanging, and tries again later.

The password (``AUTH``; ``AUTH user password`` with a user name in the URL)
comes from the URL or from where the server looks for store passwords
(``GEARTRAIN_STORE_PASSWORD``, the config file, ``--store-password-file``).
A Redis ACL user needs ``~{prefix}*`` and the commands
``ping client|setname type get set eval zrange zcard zrem hgetall`` plus, for
the script, ``incrby del hset zadd`` (``select`` for a database other than 0;
``info`` is optional: it feeds the warnings above).
``rediss://`` uses TLS; ``?ssl_ca_certs=FILE``, ``?ssl_certfile=`` /
``?ssl_keyfile=`` (client certificate), ``?ssl_cert_reqs=none|optional|required``
and ``?ssl_check_hostname=false`` tune it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from geartrain.results import COMPLETED, JobResult
from geartrain.server.stores.base import Store, StoredJob, StoreError, result_row
from geartrain.server.stores.url import StoreURL

log = logging.getLogger("geartrain.server")

SCHEMA_VERSION = 1
DEFAULT_PREFIX = "geartrain:"
#: handles read per ZRANGE (and HGETALL pipeline) at replay
REPLAY_CHUNK = 1000

_PARAMS = ("prefix", "connect_timeout", "timeout", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
           "ssl_cert_reqs", "ssl_check_hostname")
#: the handle of open()'s probe transaction (no real handle starts with NUL)
_PROBE_HANDLE = b"\0geartrain-probe"

#: The whole of apply(). KEYS: seq, order, results, then the hashes of the
#: jobs added, updated and finished, then the hashes of the results kept and
#: forgotten. ARGV: how many jobs added, updated and finished and how many
#: results kept, eight per job added (handle, function, unique, priority, data,
#: when, reducer, retries), the retry count per update, the handle per job
#: finished, six per result kept (handle, function, unique, state, finished,
#: record), the handle per result forgotten. Everything that could make a later
#: command fail is checked before the first write (the scores of the results
#: are numbers: apply() sends nothing else).
_APPLY = """
local na, nu, nd, nr = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local seq, order, results = KEYS[1], KEYS[2], KEYS[3]
for _, key in ipairs({order, results}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= 'zset' then
    return redis.error_reply('WRONGTYPE geartrain key ' .. key .. ' is a ' .. t .. ', not a zset')
  end
end
local last = 0
if na > 0 then
  local t = redis.call('TYPE', seq)['ok']
  if t == 'string' then
    if not string.match(redis.call('GET', seq), '^%d+$') then t = 'non-number string' end
  end
  if t ~= 'none' and t ~= 'string' then
    return redis.error_reply('WRONGTYPE geartrain key ' .. seq .. ' is a ' .. t .. ', not a counter')
  end
  last = redis.call('INCRBY', seq, na)
end
for i = 1, na do
  local key, a = KEYS[3 + i], 4 + (i - 1) * 8
  redis.call('DEL', key)
  redis.call('HSET', key, 'function', ARGV[a + 2], 'unique', ARGV[a + 3], 'priority', ARGV[a + 4],
             'data', ARGV[a + 5], 'when', ARGV[a + 6], 'reducer', ARGV[a + 7], 'retries', ARGV[a + 8])
  redis.call('ZADD', order, 'NX', last - na + i, ARGV[a + 1])
end
local k, a = 3 + na, 4 + 8 * na
for i = 1, nu do
  if redis.call('TYPE', KEYS[k + i])['ok'] == 'hash' then
    redis.call('HSET', KEYS[k + i], 'retries', ARGV[a + i])
  end
end
-- the writes that need memory before the deletions (see the module's docstring)
local kd, ad = k + nu, a + nu
local kr, ar = kd + nd, ad + nd
for i = 1, nr do
  local key, b = KEYS[kr + i], ar + (i - 1) * 6
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'hash' and t ~= 'none' then
    redis.call('DEL', key)
  end
  redis.call('HSET', key, 'function', ARGV[b + 2], 'unique', ARGV[b + 3], 'state', ARGV[b + 4],
             'finished', ARGV[b + 5], 'record', ARGV[b + 6])
  redis.call('ZADD', results, ARGV[b + 5], ARGV[b + 1])
end
for i = 1, nd do
  redis.call('DEL', KEYS[kd + i])
  redis.call('ZREM', order, ARGV[ad + i])
end
k, a = kr + nr, ar + 6 * nr
for i = 1, #KEYS - k do
  redis.call('DEL', KEYS[k + i])
  redis.call('ZREM', results, ARGV[a + i])
end
return na
"""

Client = aioredis.Redis


async def _migrate_to_1(client: Client, prefix: bytes) -> None:
    """Version 1 is the first layout: nothing to convert.

    The results keys (``result:*``, ``results``) came later without a new
    version: they are created as results are kept, and a layout without them
    is simply one without kept results (so an older geartrain still opens the
    prefix, and ignores them)."""


#: schema version -> coroutine taking the previous version's keys to it
MIGRATIONS: dict[int, Callable[[Client, bytes], Awaitable[None]]] = {1: _migrate_to_1}


class RedisStore(Store):
    scheme = "redis"

    def __init__(self, url: StoreURL) -> None:
        super().__init__(url)
        params = url.params
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise StoreError(f"redis store: unknown parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(_PARAMS)}")
        prefix = params.get("prefix", DEFAULT_PREFIX)
        if not prefix:
            raise StoreError("redis store: ?prefix= must not be empty")
        if not prefix.endswith(":"):
            prefix += ":"
        self.prefix = prefix.encode("utf-8")
        self.host = url.host or "127.0.0.1"
        self.port = url.port or 6379
        database = url.database or "0"
        if not database.isdigit():
            raise StoreError(f"redis store: the database must be a number (redis://host/0), "
                             f"not {database!r}")
        self.db = int(database)
        self.connect_timeout = _seconds(params, "connect_timeout", 2.0)
        self.timeout = _seconds(params, "timeout", 10.0)
        self.key_version = self.prefix + b"version"
        self.key_seq = self.prefix + b"seq"
        self.key_order = self.prefix + b"order"
        self.key_results = self.prefix + b"results"
        self._job_prefix = self.prefix + b"job:"
        self._result_prefix = self.prefix + b"result:"
        self._client: Client | None = None

    def job_key(self, handle: bytes) -> bytes:
        return self._job_prefix + handle

    def result_key(self, handle: bytes) -> bytes:
        return self._result_prefix + handle

    def _where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis {host}:{self.port}/{self.db}"

    def _error(self, exc: BaseException) -> StoreError:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreError(f"{self._where()}: {text}")

    def _connect(self) -> Client:
        url = self.url
        kwargs: dict[str, Any] = {}
        if url.tls:
            params = url.params
            kwargs["ssl"] = True
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if params.get(name):
                    kwargs[name] = params[name]
            reqs = params.get("ssl_cert_reqs", "required").lower()
            if reqs not in ("none", "optional", "required"):
                raise StoreError("redis store: ssl_cert_reqs must be none, optional or required")
            kwargs["ssl_cert_reqs"] = reqs
            kwargs["ssl_check_hostname"] = (reqs != "none"
                                            and params.get("ssl_check_hostname", "true").lower()
                                            not in ("0", "false", "no", "off"))
        return aioredis.Redis(
            host=self.host, port=self.port, db=self.db,
            username=(url.user or None) if url.password is not None else None,
            password=url.password,
            socket_connect_timeout=self.connect_timeout, socket_timeout=self.timeout,
            socket_keepalive=True,
            # one immediate retry on a fresh connection: enough for a connection
            # Redis closed; a Redis that is down still fails at once
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            client_name=f"geartrain-{os.getpid()}",
            # RESP2 (redis-py 8 defaults to RESP3): the replies this module
            # reads, on every Redis version, and "Authentication required"
            # rather than a HELLO error when the password is missing
            protocol=2, decode_responses=False, **kwargs)

    def _require(self) -> Client:
        if self._client is None:
            raise StoreError(f"{self._where()}: the store is closed")
        return self._client

    async def open(self) -> None:
        if self._client is None:
            self._client = self._connect()
        client = self._client
        try:
            await client.ping()
            await self._check_schema(client)
            await self._check_persistence(client)
            await self._probe()
        except (RedisError, OSError) as exc:
            await self._drop_client()
            raise self._error(exc) from None
        except StoreError:
            await self._drop_client()
            raise

    async def _check_schema(self, client: Client) -> None:
        for key, kind in ((self.key_order, b"zset"), (self.key_results, b"zset"),
                          (self.key_seq, b"string"), (self.key_version, b"string")):
            found = await client.type(key)
            found = found if isinstance(found, bytes) else str(found).encode()
            if found not in (b"none", kind):
                raise StoreError(f"{self._where()}: key {key.decode(errors='replace')!r} is a "
                                 f"{found.decode()}, not a {kind.decode()}: is ?prefix= shared with "
                                 "something else?")
        raw = await client.get(self.key_version)
        if raw is None:
            version = 0
        else:
            try:
                version = int(raw)
            except ValueError:
                raise StoreError(f"{self._where()}: {self.key_version.decode(errors='replace')} is "
                                 f"{raw[:40]!r}, not a geartrain schema version") from None
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self._where()}: schema version {version} under prefix "
                             f"{self.prefix.decode(errors='replace')!r} is newer than this geartrain "
                             f"knows ({SCHEMA_VERSION}); upgrade geartrain")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            await MIGRATIONS[target](client, self.prefix)
            await client.set(self.key_version, target)

    async def _probe(self) -> None:
        """One transaction with every command apply() uses and no net effect."""
        probe = StoredJob(_PROBE_HANDLE, b"geartrain.probe", b"", b"", 1)
        kept = JobResult(_PROBE_HANDLE, b"geartrain.probe", b"", COMPLETED)
        try:
            await self.apply([probe], [(_PROBE_HANDLE, 0)], [_PROBE_HANDLE], [kept], [_PROBE_HANDLE])
        except StoreError as exc:
            raise StoreError(f"{exc} (in a test transaction at start-up: is a command renamed or "
                             "denied to this user, is Redis out of memory, or read-only?)") from None

    async def _check_persistence(self, client: Client) -> None:
        """Warn about a Redis that may lose acknowledged jobs (best effort)."""
        try:
            info = await client.info("persistence")
            memory = await client.info("memory")
        except RedisError:
            return
        if not int(info.get("aof_enabled", 0) or 0):
            log.warning("%s has no append-only file (appendonly no): stored jobs are lost if Redis "
                        "restarts or crashes (since its last snapshot, if it takes any)", self._where())
        policy = str(memory.get("maxmemory_policy", "noeviction"))
        if policy.startswith("allkeys"):
            log.warning("%s evicts keys under memory pressure (maxmemory-policy %s): stored jobs "
                        "may be dropped; use noeviction", self._where(), policy)

    async def _hashes(self, order: bytes, key: Callable[[bytes], bytes],
                      what: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The hash of each handle in the sorted set *order*, in its order
        (read in chunks, pipelined). Handles without a hash are removed from
        the set, with a warning: there is nothing to load for them."""
        client = self._require()
        found: list[tuple[bytes, dict[bytes, bytes]]] = []
        missing: list[bytes] = []
        start = 0
        while True:
            handles = [h for h in await client.zrange(order, start, start + REPLAY_CHUNK - 1)
                       if isinstance(h, bytes)]
            if not handles:
                break
            start += len(handles)
            async with client.pipeline(transaction=False) as pipe:
                for handle in handles:
                    pipe.hgetall(key(handle))  # HGETALL only: the minimal ACL allows it
                rows = await pipe.execute()
            for handle, row in zip(handles, rows, strict=True):
                if row:
                    found.append((handle, row))
                else:
                    missing.append(handle)
        if missing:
            log.warning("%s: %d handle(s) in %s have no %s hash; removed from it",
                        self._where(), len(missing), order.decode(errors="replace"), what)
            await client.zrem(order, *missing)
        return found

    async def replay(self) -> list[StoredJob]:
        try:
            rows = await self._hashes(self.key_order, self.job_key, "job")
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None
        jobs = [self._decode(handle, row) for handle, row in rows]
        return [job for job in jobs if job is not None]

    def _decode(self, handle: bytes, row: dict[bytes, bytes]) -> StoredJob | None:
        try:
            return StoredJob(
                handle=handle, function=row[b"function"], unique=row.get(b"unique", b""),
                data=row.get(b"data", b""), priority=int(row[b"priority"]),
                when=int(row.get(b"when", b"0")), reducer=row.get(b"reducer", b""),
                retries=int(row.get(b"retries", b"0")))
        except (KeyError, ValueError) as exc:
            log.error("%s: job %r is damaged (%s: %s); left in place, not replayed",
                      self._where(), handle, type(exc).__name__, exc)
            return None

    async def load_results(self) -> list[JobResult]:
        """The kept results, oldest first."""
        try:
            rows = await self._hashes(self.key_results, self.result_key, "result")
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None
        return self._results_from_rows(
            ((handle, row.get(b"function"), row.get(b"unique"), row.get(b"record")) for handle, row in rows),
            self._where())

    async def apply(self, adds: Sequence[StoredJob], updates: Sequence[tuple[bytes, int]],
                    dones: Sequence[bytes], results: Sequence[JobResult] = (),
                    result_drops: Sequence[bytes] = ()) -> None:
        if not (adds or updates or dones or results or result_drops):
            return
        client = self._require()
        job_key = self.job_key
        kept = {r.handle: r for r in results}  # one per handle, the last one given winning
        keys = [self.key_seq, self.key_order, self.key_results]
        args: list[bytes | int | str] = [len(adds), len(updates), len(dones), len(kept)]
        for j in adds:
            keys.append(job_key(j.handle))
            args += (j.handle, j.function, j.unique, j.priority, j.data, j.when, j.reducer, j.retries)
        for handle, retries in updates:
            keys.append(job_key(handle))
            args.append(retries)
        for handle in dones:
            keys.append(job_key(handle))
            args.append(handle)
        for result in kept.values():
            handle, function, unique, state, finished, record = result_row(result)
            keys.append(self.result_key(handle))
            # a score Redis takes (it refuses nan, which would fail the script half-way)
            args += (handle, function, unique, state, repr(finished) if math.isfinite(finished) else "0",
                     record)
        for handle in result_drops:
            keys.append(self.result_key(handle))
            args.append(handle)
        try:
            await client.eval(_APPLY, len(keys), *keys, *args)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None

    async def count(self) -> int:
        try:
            return int(await self._require().zcard(self.key_order))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None

    async def close(self) -> None:
        await self._drop_client()

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass


def _seconds(params: dict[str, str], name: str, default: float) -> float:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise StoreError(f"redis store: {name}={text!r} must be a number of seconds > 0")
    return value
