"""Issue 4, point 3: what a durable store keeps, and what comes back after a crash.

Every test runs against a real geartrain process on every durable store kind
(``store_url``: sqlite, mysql, postgresql, redis), kills it with SIGKILL (no
shutdown code runs) and starts a new process on the same store URL -- on a
different port, since the URL is explicit -- then looks at what came back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stores import _durable as d
from tests.support import process
from tests.support.wire import Wire

pytestmark = pytest.mark.timeout(60)


class Restarts:
    """A server on *store_url* that a test can SIGKILL and start again."""

    def __init__(self, store_url: str, tmp_path: Path, *args: str) -> None:
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.args = args
        self.runs: list[process.ServerProcess] = []

    def start(self, *args: str, wait: bool = True) -> process.ServerProcess:
        srv = d.start(self.store_url, *(args or self.args), workdir=self.tmp_path / f"run{len(self.runs)}",
                      wait=wait)
        self.runs.append(srv)
        return srv

    def crash_and_restart(self, *args: str) -> process.ServerProcess:
        d.kill(self.runs[-1])
        return self.start(*args)

    def stop(self) -> None:
        for srv in self.runs:
            srv.stop()
        for srv in self.runs:
            d.assert_clean(srv)


@pytest.fixture
def servers(store_url: str, tmp_path: Path) -> Iterator[Restarts]:
    r = Restarts(store_url, tmp_path)
    yield r
    r.stop()


def test_every_kind_of_background_job_comes_back_whole(servers: Restarts) -> None:
    """All priorities, epoch (future) and reduce-background come back with
    handle, priority, unique, data, run-at time and reducer."""
    srv = servers.start()
    when = int(time.time()) + 3
    far = int(time.time()) + 3600
    with Wire(srv.address) as w:
        high = d.submit_bg(w, "dur.all", b"high \0 data", b"u-high", "SUBMIT_JOB_HIGH_BG")
        normal = d.submit_bg(w, "dur.all", b"\x00\xffnormal", b"", "SUBMIT_JOB_BG")
        low = d.submit_bg(w, "dur.all", b"low", b"u-low", "SUBMIT_JOB_LOW_BG")
        w.send("SUBMIT_JOB_EPOCH", "dur.all", b"u-epoch", str(when), b"epoch data")
        epoch = w.expect("JOB_CREATED")[0]
        w.send("SUBMIT_JOB_EPOCH", "dur.all", b"u-far", str(far), b"far data")
        epoch_far = w.expect("JOB_CREATED")[0]
        w.send("SUBMIT_REDUCE_JOB_BACKGROUND", "dur.all", b"u-reduce", b"the.reducer", b"", b"reduce data")
        reduce = w.expect("JOB_CREATED")[0]
    handles = [high, normal, low, epoch, epoch_far, reduce]
    assert len(set(handles)) == 6

    srv = servers.crash_and_restart()
    assert srv.port != servers.runs[0].port
    jobs = d.show_jobs(srv.address)
    assert jobs == {h: (0, 0, 1) for h in handles}
    # both epoch jobs are still scheduled (counted in the normal column)
    assert d.priority_status(srv.address)[b"dur.all"] == (1, 4, 1)
    assert d.status(srv.address)[b"dur.all"] == (6, 0, 0)

    worker = d.Worker(srv.address, "dur.all")
    got = []
    while (job := worker.grab()) is not None:
        got.append(job)
        worker.complete(job)
    assert time.time() < when, "restart took too long to check that the epoch job waits"
    assert [(j.handle, j.unique, j.reducer, j.data) for j in got] == [
        (high, b"u-high", b"", b"high \0 data"),
        (normal, b"", b"", b"\x00\xffnormal"),
        (reduce, b"u-reduce", b"the.reducer", b"reduce data"),
        (low, b"u-low", b"", b"low"),
    ]
    job = worker.grab_wait(timeout=6)
    ran_at = time.time()
    assert (job.handle, job.unique, job.data) == (epoch, b"u-epoch", b"epoch data")
    assert when - 1 <= ran_at <= when + 2, (when, ran_at)
    worker.complete(job)
    assert worker.grab() is None  # the far one still waits: its run-at time came back too
    worker.close()
    assert d.show_jobs(srv.address) == {epoch_far: (0, 0, 1)}


def test_retry_count_comes_back_and_still_counts(servers: Restarts) -> None:
    """A worker disconnects twice while running the job; after SIGKILL and
    restart `show jobs` shows 2 retries, and with -j 3 one more loss drops it."""
    srv = servers.start()
    with Wire(srv.address) as w:
        handle = d.submit_bg(w, "dur.retry", b"payload", b"u-retry")
        keep = d.submit_bg(w, "dur.keep", b"payload")
    for attempt in (1, 2):
        worker = d.Worker(srv.address, "dur.retry")
        assert worker.grab_wait().handle == handle
        worker.close()
        assert d.wait_until_value(lambda: d.show_jobs(srv.address).get(handle), (attempt, 0, 1))
    d.barrier(srv.address)

    srv = servers.crash_and_restart("-j", "3")
    jobs = d.show_jobs(srv.address)
    assert jobs[handle] == (2, 0, 1)
    assert jobs[keep] == (0, 0, 1)
    worker = d.Worker(srv.address, "dur.retry")
    job = worker.grab_wait()
    assert (job.handle, job.unique, job.data) == (handle, b"u-retry", b"payload")
    worker.close()  # the third loss: dropped
    assert d.wait_until_value(lambda: handle in d.show_jobs(srv.address), False)
    d.barrier(srv.address)

    srv = servers.crash_and_restart()
    assert handle not in d.show_jobs(srv.address)
    assert keep in d.show_jobs(srv.address)


def test_original_order_within_each_priority(servers: Restarts) -> None:
    """Jobs come back in submission order per priority, whether they were
    committed one per transaction or many in one."""
    srv = servers.start()
    kinds = ("SUBMIT_JOB_HIGH_BG", "SUBMIT_JOB_BG", "SUBMIT_JOB_LOW_BG")
    order: dict[str, list[bytes]] = {k: [] for k in kinds}
    with Wire(srv.address) as w:
        for i in range(15):  # one at a time: one commit each
            kind = kinds[(i * 7) % 3]
            order[kind].append(d.submit_bg(w, "dur.order", b"one-%d" % i, b"", kind))
        batch = [kinds[(i * 5 + 1) % 3] for i in range(45)]
        d.pipeline(w, [(k, ("dur.order", b"", b"batch-%d" % i)) for i, k in enumerate(batch)])
        for kind in batch:
            order[kind].append(w.expect("JOB_CREATED")[0])
        for i in range(15):
            kind = kinds[i % 3]
            order[kind].append(d.submit_bg(w, "dur.order", b"two-%d" % i, b"", kind))
    expected = order[kinds[0]] + order[kinds[1]] + order[kinds[2]]
    assert len(set(expected)) == 75

    srv = servers.crash_and_restart()
    worker = d.Worker(srv.address, "dur.order")
    got = [j.handle for j in worker.drain()]
    worker.close()
    assert got == expected


def test_replayed_before_the_port_accepts(servers: Restarts) -> None:
    """The very first connection after a restart sees every stored job."""
    srv = servers.start()
    with Wire(srv.address) as w:
        packets = [("SUBMIT_JOB_BG", (f"dur.early{i % 3}", b"", b"%d" % i)) for i in range(600)]
        d.pipeline(w, packets)
        for _ in packets:
            w.expect("JOB_CREATED")
    d.kill(srv)

    srv = servers.start(wait=False)
    sock = d.first_connection(srv.host, srv.port)
    try:
        sock.sendall(b"status\r\n")
        reply = d.read_admin_reply(sock)
    finally:
        sock.close()
    rows = sorted(line.split(b"\t")[:2] for line in reply.splitlines() if b"\t" in line)
    assert rows == [[b"dur.early0", b"200"], [b"dur.early1", b"200"], [b"dur.early2", b"200"]]
    log = srv.log()
    assert "replayed 600 job(s)" in log
    assert log.index("replayed 600 job(s)") < log.index("listening on")


def test_new_handles_continue_after_the_highest_replayed(servers: Restarts) -> None:
    srv = servers.start()
    with Wire(srv.address) as w:
        handles = [d.submit_bg(w, "dur.seq", b"%d" % i) for i in range(5)]
    worker = d.Worker(srv.address, "dur.seq")
    for h in handles[:4]:
        job = worker.grab_wait()
        assert job.handle == h
        worker.complete(job)
    worker.w.send("ECHO_REQ", b"sync")
    worker.w.expect("ECHO_RES")
    worker.close()
    d.barrier(srv.address, "dur.other")

    srv = servers.crash_and_restart()
    replayed = d.show_jobs(srv.address)
    assert handles[4] in replayed and not set(handles[:4]) & set(replayed)
    highest = max(d.number(h) for h in replayed)
    with Wire(srv.address) as w:
        new_bg = d.submit_bg(w, "dur.seq", b"new")
        w.send("SUBMIT_JOB", "dur.fg", b"", b"fg")
        new_fg = w.expect("JOB_CREATED")[0]
    assert new_bg not in replayed and new_fg not in replayed
    assert d.number(new_bg) == highest + 1
    assert d.number(new_fg) == highest + 2


@pytest.mark.parametrize("way", ["complete", "fail", "exception", "cancel-queued", "cancel-scheduled",
                                 "cancel-running", "cancel-running-crash", "retries-exhausted"])
def test_finished_jobs_are_removed(servers: Restarts, way: str) -> None:
    """Completion, WORK_FAIL, WORK_EXCEPTION, `cancel job` and exhausted
    retries (-j 2) each remove the job: after SIGKILL and restart it is gone
    (and a job that was not finished is still there)."""
    srv = servers.start("-j", "2")
    function = f"dur.rm.{way}"
    with Wire(srv.address) as w:
        if way == "cancel-scheduled":
            w.send("SUBMIT_JOB_EPOCH", function, b"", str(int(time.time()) + 3600), b"doomed")
            handle = w.expect("JOB_CREATED")[0]
        else:
            handle = d.submit_bg(w, function, b"doomed", b"u-doomed")
        control = d.submit_bg(w, "dur.rm.control", b"stays")
    if way in ("cancel-queued", "cancel-scheduled"):
        assert d.admin_line(srv.address, f"cancel job {handle.decode()}") == b"OK\r\n"
    elif way == "retries-exhausted":
        for _ in range(2):
            worker = d.Worker(srv.address, function)
            assert worker.grab_wait().handle == handle
            worker.close()
        assert d.wait_until_value(lambda: handle in d.show_jobs(srv.address), False)
    else:
        worker = d.Worker(srv.address, function)
        assert worker.grab_wait().handle == handle
        if way == "complete":
            worker.w.send("WORK_COMPLETE", handle, b"result")
        elif way == "fail":
            worker.w.send("WORK_FAIL", handle)
        elif way == "exception":
            worker.w.send("WORK_EXCEPTION", handle, b"boom")
        elif way == "cancel-running":
            assert d.admin_line(srv.address, f"cancel job {handle.decode()}") == b"OK\r\n"
            worker.w.send("WORK_COMPLETE", handle, b"result")
        elif way == "cancel-running-crash":  # cancelled while running; the crash comes first
            assert d.admin_line(srv.address, f"cancel job {handle.decode()}") == b"OK\r\n"
        worker.w.send("ECHO_REQ", b"sync")
        worker.w.expect("ECHO_RES")
        if way != "cancel-running-crash":
            worker.close()
    if way in ("cancel-queued", "cancel-running-crash"):
        # still listed (ignored) until a worker reaches it or its worker ends, as in gearmand
        assert d.show_jobs(srv.address)[handle] == (0, 1, 0)
    else:
        assert handle not in d.show_jobs(srv.address)
    d.barrier(srv.address)

    srv = servers.crash_and_restart()
    if way == "cancel-running-crash":
        worker.close()
    jobs = d.show_jobs(srv.address)
    assert control in jobs
    assert handle not in jobs, f"a job finished by {way} came back after a restart: {jobs}"
    worker = d.Worker(srv.address, function)
    assert worker.grab() is None, f"a job finished by {way} ran again after a restart"
    worker.close()


def test_empty_and_equal_uniques_are_stored_separately(servers: Restarts) -> None:
    srv = servers.start()
    with Wire(srv.address) as w:
        empty1 = d.submit_bg(w, "dur.u.a", b"same data", b"")
        empty2 = d.submit_bg(w, "dur.u.a", b"same data", b"")
        same_a = d.submit_bg(w, "dur.u.a", b"data a", b"shared")
        same_b = d.submit_bg(w, "dur.u.b", b"data b", b"shared")
        dash1 = d.submit_bg(w, "dur.u.a", b"", b"-")  # "-" with an empty payload never coalesces
        dash2 = d.submit_bg(w, "dur.u.a", b"", b"-")
    handles = [empty1, empty2, same_a, same_b, dash1, dash2]
    assert len(set(handles)) == 6

    srv = servers.crash_and_restart()
    assert set(d.show_jobs(srv.address)) == set(handles)
    worker = d.Worker(srv.address, "dur.u.a")
    got_a = [(j.handle, j.unique, j.data) for j in worker.drain()]
    worker.close()
    worker = d.Worker(srv.address, "dur.u.b")
    got_b = [(j.handle, j.unique, j.data) for j in worker.drain()]
    worker.close()
    assert got_a == [(empty1, b"", b"same data"), (empty2, b"", b"same data"),
                     (same_a, b"shared", b"data a"), (dash1, b"-", b""), (dash2, b"-", b"")]
    assert got_b == [(same_b, b"shared", b"data b")]


def test_equal_uniques_after_restart_still_coalesce(servers: Restarts) -> None:
    """A replayed job keeps its unique: a new submit with it joins the replayed job."""
    srv = servers.start()
    with Wire(srv.address) as w:
        first = d.submit_bg(w, "dur.uc", b"first", b"key")
        dash = d.submit_bg(w, "dur.uc", b"payload", b"-")
    srv = servers.crash_and_restart()
    with Wire(srv.address) as w:
        assert d.submit_bg(w, "dur.uc", b"second", b"key") == first
        assert d.submit_bg(w, "dur.uc", b"payload", b"-") == dash
        other = d.submit_bg(w, "dur.uc", b"payload2", b"-")
    assert other not in (first, dash)
    assert d.status(srv.address)[b"dur.uc"][0] == 3


def test_coalesced_background_submits_are_one_stored_job(servers: Restarts) -> None:
    srv = servers.start()
    with Wire(srv.address) as w:
        first = d.submit_bg(w, "dur.co", b"first data", b"key")
        assert d.submit_bg(w, "dur.co", b"second data", b"key") == first
        assert d.submit_bg(w, "dur.co", b"third data", b"key", "SUBMIT_JOB_HIGH_BG") == first
        # coalescing while the first is still being stored (one write, one batch)
        d.pipeline(w, [("SUBMIT_JOB_BG", ("dur.co", b"piped", b"p1")),
                       ("SUBMIT_JOB_LOW_BG", ("dur.co", b"piped", b"p2"))])
        piped = w.expect("JOB_CREATED")[0]
        assert w.expect("JOB_CREATED")[0] == piped
        dash = d.submit_bg(w, "dur.co", b"same payload", b"-")
        assert d.submit_bg(w, "dur.co", b"same payload", b"-") == dash
    assert len({first, piped, dash}) == 3
    assert d.status(srv.address)[b"dur.co"][0] == 3

    srv = servers.crash_and_restart()
    assert set(d.show_jobs(srv.address)) == {first, piped, dash}
    worker = d.Worker(srv.address, "dur.co")
    got = [(j.handle, j.unique, j.data) for j in worker.drain()]
    worker.close()
    assert got == [(first, b"key", b"first data"), (piped, b"piped", b"p1"), (dash, b"-", b"same payload")]


def test_foreground_jobs_are_not_stored(servers: Restarts) -> None:
    srv = servers.start()
    fg = Wire(srv.address)
    fg.send("SUBMIT_JOB", "dur.fg", b"", b"foreground")
    fg_handle = fg.expect("JOB_CREATED")[0]
    fg.send("SUBMIT_JOB_HIGH", "dur.fg", b"u-fg", b"foreground high")
    fg.expect("JOB_CREATED")
    with Wire(srv.address) as w:
        bg = d.submit_bg(w, "dur.bg", b"background")
    d.barrier(srv.address)
    assert d.status(srv.address)[b"dur.fg"][0] == 2

    srv = servers.crash_and_restart()
    fg.close()
    jobs = d.show_jobs(srv.address)
    assert bg in jobs and fg_handle not in jobs
    assert d.status(srv.address).get(b"dur.fg", (0, 0, 0))[0] == 0
    assert d.committed(servers.runs[0])[0] == 2  # the bg job and the barrier, nothing else


def test_foreground_job_joined_by_a_background_submit_is_stored(servers: Restarts) -> None:
    srv = servers.start()
    fg = Wire(srv.address)
    fg.send("SUBMIT_JOB", "dur.join", b"key", b"fg data")
    handle = fg.expect("JOB_CREATED")[0]
    with Wire(srv.address) as w:
        assert d.submit_bg(w, "dur.join", b"bg data", b"key") == handle
    srv = servers.crash_and_restart()
    fg.close()
    assert d.show_jobs(srv.address) == {handle: (0, 0, 1)}
    worker = d.Worker(srv.address, "dur.join")
    job = worker.grab_wait()
    worker.close()
    assert (job.handle, job.unique, job.data) == (handle, b"key", b"fg data")


def test_store_foreground_keeps_foreground_jobs_as_background(servers: Restarts) -> None:
    srv = servers.start("--store-foreground")
    fg = Wire(srv.address)
    fg.send("SUBMIT_JOB", "dur.sfg", b"", b"foreground")
    normal = fg.expect("JOB_CREATED")[0]
    fg.send("SUBMIT_JOB_LOW", "dur.sfg", b"u-low", b"foreground low")
    low = fg.expect("JOB_CREATED")[0]
    fg.send("SUBMIT_REDUCE_JOB", "dur.sfg", b"u-red", b"reducer", b"", b"foreground reduce")
    reduce = fg.expect("JOB_CREATED")[0]
    assert d.committed(srv)[0] == 3

    srv = servers.crash_and_restart()
    fg.close()
    assert d.show_jobs(srv.address) == {normal: (0, 0, 1), low: (0, 0, 1), reduce: (0, 0, 1)}
    worker = d.Worker(srv.address, "dur.sfg")
    got = [(j.handle, j.unique, j.reducer, j.data) for j in worker.drain()]
    worker.close()
    assert got == [(normal, b"", b"", b"foreground"), (reduce, b"u-red", b"reducer", b"foreground reduce"),
                   (low, b"u-low", b"", b"foreground low")]


def test_abandoned_stored_foreground_job_does_not_come_back(servers: Restarts) -> None:
    """With --store-foreground, a foreground job whose client left will never
    run (it is listed, ignored, until a worker reaches it); a crash must not
    turn it into a live background job."""
    srv = servers.start("--store-foreground")
    fg = Wire(srv.address)
    fg.send("SUBMIT_JOB", "dur.gone", b"", b"nobody waits")
    handle = fg.expect("JOB_CREATED")[0]
    fg.close()
    assert d.wait_until_value(lambda: d.show_jobs(srv.address).get(handle), (0, 1, 0))
    d.barrier(srv.address)

    srv = servers.crash_and_restart("--store-foreground")
    assert handle not in d.show_jobs(srv.address), "an abandoned foreground job came back as a live job"


def test_pipelined_replies_keep_their_order(servers: Restarts) -> None:
    """SUBMIT_JOB_BG + ECHO_REQ + SUBMIT_JOB_BG in one write: JOB_CREATED,
    ECHO_RES, JOB_CREATED -- the echo is not answered before the held reply."""
    srv = servers.start()
    with Wire(srv.address) as w:
        d.pipeline(w, [("SUBMIT_JOB_BG", ("dur.pipe", b"", b"one")),
                       ("ECHO_REQ", (b"between",)),
                       ("SUBMIT_JOB_BG", ("dur.pipe", b"", b"two")),
                       ("ECHO_REQ", (b"after",))])
        replies = [w.recv() for _ in range(4)]
    assert [r[0] for r in replies] == ["JOB_CREATED", "ECHO_RES", "JOB_CREATED", "ECHO_RES"]
    assert replies[1][1] == [b"between"] and replies[3][1] == [b"after"]
    one, two = replies[0][1][0], replies[2][1][0]
    assert d.number(two) == d.number(one) + 1

    srv = servers.crash_and_restart()
    assert set(d.show_jobs(srv.address)) == {one, two}


def test_group_commit_shares_transactions(servers: Restarts) -> None:
    """2000 submits in one write are stored in far fewer than 2000 commits."""
    srv = servers.start()
    n = 2000
    with Wire(srv.address, timeout=30) as w:
        d.pipeline(w, [("SUBMIT_JOB_BG", ("dur.group", b"", b"job %d" % i)) for i in range(n)])
        handles = [w.expect("JOB_CREATED")[0] for _ in range(n)]
    assert len(set(handles)) == n
    assert [d.number(h) for h in handles] == sorted(d.number(h) for h in handles)
    rows = [r for r in d.commits(srv) if r[0]]
    print(f"\n{n} jobs stored in {len(rows)} commits: {[r[0] for r in rows]}")
    assert sum(r[0] for r in rows) == n
    assert len(rows) <= n // 20, f"{len(rows)} commits for {n} jobs: no group commit"
    assert d.status(srv.address)[b"dur.group"][0] == n
