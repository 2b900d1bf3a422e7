"""A job the database can never store is refused alone; its neighbours in the
same group commit are stored (MariaDB: larger than max_allowed_packet)."""

from __future__ import annotations

from pathlib import Path

import pymysql

from tests.stores.conftest import drop_everything, require_service
from tests.support import process
from tests.support.wire import Wire


def test_an_oversized_job_is_refused_alone(tmp_path: Path) -> None:
    require_service("mysql")
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@max_allowed_packet")
            (limit,) = cur.fetchone()
    finally:
        conn.close()
    prefix = f"gtrej{tmp_path.name[-8:].replace('-', '_')}_"
    url = f"mysql://root@127.0.0.1:3306/test?prefix={prefix}"
    srv = process.geartrain("--store", url, "--max-packet-size", str(2 * limit), workdir=tmp_path).start()
    try:
        with Wire(srv.address, timeout=30) as c:
            # three submits in one write: they travel in one group commit
            c.sendraw(b"".join(
                b"\0REQ" + (18).to_bytes(4, "big") + len(body).to_bytes(4, "big") + body
                for body in (b"f\0a\0small-1", b"f\0b\0" + b"x" * limit, b"f\0c\0small-2")))
            replies = [c.recv(30) for _ in range(3)]
        assert replies[0][0] == "JOB_CREATED"
        assert replies[1][0] == "ERROR" and replies[1][1][0] == b"QUEUE_ERROR"
        assert b"max_allowed_packet" in replies[1][1][1]
        assert replies[2][0] == "JOB_CREATED"
    finally:
        srv.stop()
        drop_everything("mysql", prefix)
