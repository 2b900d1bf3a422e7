"""The SQLite helper process outlives a signal to the whole process group, so
the server can still write its last changes while it shuts down."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support import process
from tests.support.wire import Wire, grab, submit


def test_group_sigterm_lets_the_server_finish_its_writes(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    srv = process.geartrain("--store", f"sqlite://{db}", workdir=tmp_path).start()
    with Wire(srv.address) as client, Wire(srv.address) as worker:
        keep = submit(client, "g", b"keep", ptype="SUBMIT_JOB_BG")
        done = submit(client, "g", b"done", ptype="SUBMIT_JOB_BG")
        worker.send("CAN_DO", "g")
        _, first = grab(worker)
        assert first[0] == keep
        # as systemd or a terminal does: every process of the group gets SIGTERM
        os.killpg(srv.pid, signal.SIGTERM)
        worker.send("WORK_COMPLETE", keep, b"ok")  # finishing during the shutdown
        assert srv.wait(15) == 0
    log = srv.log()
    assert "helper process ended" not in log, log
    assert "Traceback" not in log, log
    (tmp_path / "again").mkdir()
    again = process.geartrain("--store", f"sqlite://{db}", workdir=tmp_path / "again").start()
    try:
        with Wire(again.address) as w:
            w.send("CAN_DO", "g")
            _, job = grab(w)
            assert job[0] == done  # the finished one is gone, the other one is back
            w.send("GRAB_JOB")
            assert w.recv()[0] == "NO_JOB"
    finally:
        again.stop()
