"""The SQLite file's layout (schema version 3): the new jobs of a transaction
packed into one batch row, marks for the jobs that ended or were retried,
a batch deleted with its marks once its last job is gone, the reference
reader of the packed format, and the move from the row-per-job layout of
versions 1 and 2. Real sqlite3 files, driven through ``SQLiteFile`` (what
the helper process runs)."""

from __future__ import annotations

import marshal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geartrain.server.stores import sqlite as store
from geartrain.server.stores.base import StoreError
from geartrain.server.stores.sqlite import SQLiteFile, decode_batch, encode_batch, read_batch


def job(n: int, retries: int = 0, function: bytes = b"f") -> tuple[Any, ...]:
    """A job's 8 fields, in StoredJob's order."""
    return (b"H:t:%d" % n, function, b"u%d" % n, b"data %d" % n, n % 3, 0, b"", retries)


def batch(*jobs: tuple[Any, ...]) -> bytes:
    return encode_batch(list(jobs))


def apply(file: SQLiteFile, adds: bytes = b"", updates: list[tuple[bytes, int]] | None = None,
          dones: list[bytes] | None = None) -> None:
    file.apply([(adds, updates or [], dones or [], [], [])])


def opened(path: Path) -> SQLiteFile:
    return SQLiteFile(str(path), "FULL", 5000)


def tables(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("geartrain_batches", "geartrain_marks")}
    finally:
        conn.close()


def handles(file: SQLiteFile) -> list[bytes]:
    return [fields[0] for fields in file.replay()]


# -- the packed format -------------------------------------------------------

field_values = st.tuples(
    st.binary(min_size=1, max_size=40), st.sampled_from([b"f", b"resize", b"\x00\xff"]),
    st.binary(max_size=70), st.binary(max_size=300), st.integers(0, 2),
    st.one_of(st.just(0), st.integers(1, 2**62)), st.binary(max_size=10), st.integers(0, 2**31))


@settings(max_examples=200, deadline=None)
@given(st.lists(field_values, max_size=30))
def test_the_reference_reader_reads_what_marshal_writes(jobs: list[tuple[Any, ...]]) -> None:
    # (the same function object in many jobs is written once and referenced)
    blob = encode_batch(jobs)
    assert read_batch(blob) == jobs == marshal.loads(blob)
    assert decode_batch(store.BATCH_FORMAT, blob) == jobs


@pytest.mark.parametrize("damage", [b"", b"[", b"\xdb\x05\x00\x00\x00s", b"?123", b"[\x01\x00\x00\x00x",
                                    b"[\x01\x00\x00\x00)\x02"])
def test_a_damaged_batch_is_a_clear_error(damage: bytes) -> None:
    with pytest.raises(StoreError, match="damaged batch"):
        read_batch(damage)
    with pytest.raises(StoreError):
        decode_batch(store.BATCH_FORMAT, damage)


def test_a_batch_that_is_not_jobs_is_refused() -> None:
    with pytest.raises(StoreError, match="damaged batch"):
        decode_batch(store.BATCH_FORMAT, encode_batch([(b"H:t:1", b"f")]))  # two fields, not eight


def test_an_unknown_batch_format_asks_for_an_upgrade() -> None:
    with pytest.raises(StoreError, match="format 2 is unknown.*upgrade"):
        decode_batch(2, batch(job(1)))


def test_a_damaged_batch_in_the_file_names_itself_and_the_way_out(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    file = opened(db)
    apply(file, batch(job(1)))
    apply(file, batch(job(2), job(3)))
    apply(file, dones=[b"H:t:3"])  # a mark in the batch that gets damaged
    file.close()
    conn = sqlite3.connect(db, isolation_level=None)
    (second,) = conn.execute("SELECT MAX(batch) FROM geartrain_batches").fetchone()
    conn.execute("UPDATE geartrain_batches SET jobs = x'5b0100' WHERE batch = ?", (second,))
    conn.close()
    with pytest.raises(StoreError, match=rf"damaged batch.* batch {second} .*DELETE FROM geartrain_batches "
                                         rf"WHERE batch = {second}"):
        opened(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"DELETE FROM geartrain_batches WHERE batch = {second}")
    conn.close()
    file = opened(db)  # the way out works: the other jobs are there
    assert handles(file) == [b"H:t:1"]
    file.close()
    assert tables(db) == {"geartrain_batches": 1, "geartrain_marks": 0}  # its marks went too


# -- batches and marks -------------------------------------------------------

def test_jobs_end_by_marks_and_a_batch_goes_with_its_last_job(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    file = opened(db)
    apply(file, batch(job(1), job(2), job(3)))
    apply(file, batch(job(4)))
    assert tables(db) == {"geartrain_batches": 2, "geartrain_marks": 0}
    apply(file, updates=[(b"H:t:3", 2)], dones=[b"H:t:1"])
    assert tables(db) == {"geartrain_batches": 2, "geartrain_marks": 2}
    assert file.count() == 3
    file.close()

    file = opened(db)  # what the file says, read again
    assert [(f[0], f[7]) for f in file.replay()] == [(b"H:t:2", 0), (b"H:t:3", 2), (b"H:t:4", 0)]
    apply(file, dones=[b"H:t:2", b"H:t:3", b"H:t:unknown"])
    assert tables(db) == {"geartrain_batches": 1, "geartrain_marks": 0}
    assert handles(file) == [b"H:t:4"]
    apply(file, dones=[b"H:t:4"])
    assert tables(db) == {"geartrain_batches": 0, "geartrain_marks": 0}
    assert file.count() == 0
    file.close()


def test_requests_in_one_transaction_apply_in_order(tmp_path: Path) -> None:
    file = opened(tmp_path / "q.db")
    file.apply([(batch(job(1), job(2)), [], [], [], []),
                (b"", [(b"H:t:2", 5)], [b"H:t:1"], [], []),
                (batch(job(3)), [], [b"H:t:3"], [], [])])
    assert [(f[0], f[7]) for f in file.replay()] == [(b"H:t:2", 5)]
    # (H:t:1 finished, H:t:2 retried; the batch of H:t:3 came and went)
    assert tables(tmp_path / "q.db") == {"geartrain_batches": 1, "geartrain_marks": 2}
    file.close()


def test_a_handle_stored_twice_keeps_the_first_and_never_comes_back(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    file = opened(db)
    apply(file, batch(job(1), job(2)))
    apply(file, batch(job(1, retries=9), job(3)))  # H:t:1 again: ignored, as INSERT OR IGNORE was
    assert [(f[0], f[7]) for f in file.replay()] == [(b"H:t:1", 0), (b"H:t:2", 0), (b"H:t:3", 0)]
    apply(file, dones=[b"H:t:1"])
    file.close()
    file = opened(db)
    assert handles(file) == [b"H:t:2", b"H:t:3"]  # the second copy did not come back
    file.close()


def test_a_failed_transaction_changes_nothing_in_the_file_or_in_memory(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    file = SQLiteFile(str(db), "FULL", 100)
    apply(file, batch(job(1)))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        apply(file, batch(job(2)), dones=[b"H:t:1"])
    blocker.execute("ROLLBACK")
    blocker.close()
    assert file.count() == 1 and handles(file) == [b"H:t:1"]
    apply(file, dones=[b"H:t:2"])  # never stored: nothing to do
    apply(file, dones=[b"H:t:1"])
    assert file.count() == 0 and tables(db) == {"geartrain_batches": 0, "geartrain_marks": 0}
    file.close()


def test_a_batch_too_big_for_one_value_is_split_in_order(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MAX_BATCH_BYTES", 100)
    db = tmp_path / "q.db"
    file = opened(db)
    apply(file, batch(*(job(n) for n in range(1, 8))))
    assert tables(db)["geartrain_batches"] > 2
    assert handles(file) == [b"H:t:%d" % n for n in range(1, 8)]
    apply(file, dones=[b"H:t:%d" % n for n in range(1, 7)])
    assert tables(db)["geartrain_batches"] == 1
    file.close()
    file = opened(db)
    assert handles(file) == [b"H:t:7"]
    file.close()


# -- from the row-per-job layout ---------------------------------------------

def test_rows_of_schema_2_become_batches_in_their_order(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for version in (1, 2):
        for statement in store.MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    rows = [(b"H:old:%d" % n, b"f%d" % (n % 2), b"", b"payload %d" % n, n % 3, 1700000000 + n,
             b"red" if n == 4 else b"", n) for n in range(1, 6)]
    for row in rows:
        conn.execute("INSERT INTO geartrain_jobs (handle, function, unique_key, data, priority, "
                     "when_to_run, reducer, retries) VALUES (?,?,?,?,?,?,?,?)", row)
    conn.execute("DELETE FROM geartrain_jobs WHERE handle = ?", (b"H:old:2",))  # seq order, with a gap
    conn.close()

    file = opened(db)
    assert [tuple(f) for f in file.replay()] == [r for r in rows if r[0] != b"H:old:2"]
    file.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'geartrain_jobs'").fetchall() == []
    conn.close()
