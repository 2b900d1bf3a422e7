"""`geartrain admin` against the real `gearadmin` 1.1.20: same server, same state,
same output line by line (and byte by byte); the exit status differs only where
gearadmin is wrong (it exits 0 after printing an ERR reply)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import process
from tests.support.wire import Wire, grab, submit, wait_until

OPTIONS = ("--status", "--priority-status", "--workers", "--server-version", "--server-verbose",
           "--getpid", "--show-jobs", "--show-unique-jobs")


def _env() -> dict[str, str]:
    env = dict(os.environ, LC_ALL="C")
    env.pop("GEARMAN_SERVER", None)
    return env


def gearadmin(address: tuple[str, Any], *args: str) -> subprocess.CompletedProcess[bytes]:
    assert shutil.which("gearadmin"), "gearadmin is missing (Debian: gearman-tools)"
    return subprocess.run(["gearadmin", "-h", address[0], "-p", str(address[1]), *args],
                          capture_output=True, timeout=20, env=_env(), stdin=subprocess.DEVNULL)


def ours(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*process.geartrain_command(), "admin", *args], capture_output=True, timeout=20,
                          env=env or _env(), stdin=subprocess.DEVNULL)


def geartrain_admin(address: tuple[str, Any], *args: str) -> subprocess.CompletedProcess[bytes]:
    return ours("-h", address[0], "-p", str(address[1]), *args)


class Monitor:
    """An admin connection held for the whole test: before each tool runs, wait until the
    previous tool's connection is gone, so both tools find the same connections (and get
    the same fd) in `workers`."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.wire = Wire(address)

    def connections(self) -> int:
        self.wire.admin("workers")
        return len(self.wire.read_admin().splitlines()) - 1

    def settle(self, expected: int) -> None:
        assert wait_until(lambda: self.connections() == expected), "a tool's connection lingers"


@pytest.fixture
def scene(any_server: process.ServerProcess) -> Iterator[dict[str, Any]]:
    """Workers (one with a client id), queued jobs at each priority, a running job."""
    addr = any_server.address
    client, w1, w2 = Wire(addr), Wire(addr), Wire(addr)
    w1.send("SET_CLIENT_ID", "worker-1")
    w1.send("CAN_DO", "alpha")
    w1.send("CAN_DO", "beta")
    w2.send("CAN_DO", "alpha")
    queued = [submit(client, "gamma", b"%d" % i, b"u-%d" % i, kind).decode()
              for i, kind in enumerate(("SUBMIT_JOB_HIGH_BG", "SUBMIT_JOB_BG", "SUBMIT_JOB_LOW_BG",
                                        "SUBMIT_JOB_BG", "SUBMIT_JOB_BG"))]
    submit(client, "alpha", b"r", b"u-run")
    grab(w1)
    monitor = Monitor(addr)
    monitor.settle(4)  # the client, two workers, the monitor
    yield {"server": any_server, "address": addr, "monitor": monitor, "queued": queued}
    for w in (client, w1, w2, monitor.wire):
        w.close()


def compare(scene: dict[str, Any], *args: str, error: bool = False,
            theirs_args: tuple[str, ...] | None = None) -> bytes:
    """Run gearadmin, then geartrain admin, on the same state; their outputs must match."""
    addr, monitor = scene["address"], scene["monitor"]
    monitor.settle(4)
    theirs = gearadmin(addr, *(theirs_args or args))
    monitor.settle(4)
    mine = geartrain_admin(addr, *args)
    assert mine.stdout.splitlines() == theirs.stdout.splitlines(), args
    assert mine.stdout == theirs.stdout, args
    assert mine.stderr == theirs.stderr, args
    assert theirs.returncode == 0, args  # gearadmin: 0 even after "Error: ..."
    assert bool(theirs.stderr) == error, (args, theirs.stderr)
    assert mine.returncode == (1 if error else 0), (args, mine.returncode)
    return theirs.stdout


def test_every_option_matches_gearadmin(scene: dict[str, Any]) -> None:
    srv = scene["server"]
    outputs = {opt: compare(scene, opt) for opt in OPTIONS}
    assert outputs["--getpid"] == b"%d\n" % srv.pid
    status = outputs["--status"].decode().splitlines()
    assert sorted(status[:-1]) == ["alpha\t1\t1\t2", "beta\t0\t0\t1", "gamma\t5\t0\t0"] and status[-1] == "."
    workers = outputs["--workers"].decode().splitlines()
    assert len(workers) == 6 and workers[-1] == "."  # 4 connections + the tool's own
    assert any(re.fullmatch(r"\d+ 127\.0\.0\.1 worker-1 : beta alpha", w) for w in workers)
    assert len(outputs["--show-jobs"].splitlines()) == 7
    assert outputs["--server-version"].strip()

    # several options: one connection, gearadmin's own order (not the command line's)
    combined = compare(scene, *reversed(OPTIONS))
    order = ("--getpid", "--show-jobs", "--show-unique-jobs", "--server-verbose", "--server-version",
             "--workers", "--priority-status", "--status")
    assert combined == b"".join(outputs[o] for o in order)

    # ERR replies: same "Error: ..." on stderr, but exit status 1
    compare(scene, "--cancel-job", "H:nowhere:1", error=True)
    compare(scene, "--drop-function", "nosuch", error=True)
    compare(scene, "--drop-function", "alpha", error=True)  # workers still registered
    compare(scene, "--cancel-job", "", error=True)  # "cancel job " -> ERR UNKNOWN_COMMAND
    compare(scene, "--status", "--cancel-job", "H:nowhere:2", "--getpid", error=True)

    # mutations: the same change made by each tool (on twin jobs and functions)
    q = scene["queued"]
    assert compare(scene, "--cancel-job", q[3], theirs_args=("--cancel-job", q[4])) == b"OK\n"
    assert compare(scene, "--create-function", "new1", theirs_args=("--create-function", "new2")) == b"OK\n"
    assert compare(scene, "--drop-function", "new1", theirs_args=("--drop-function", "new2")) == b"OK\n"
    compare(scene, "--status", "--show-jobs")
    # everything at once, mutations and errors included
    compare(scene, *OPTIONS, "--create-function", "new3", "--drop-function", "nosuch", "--cancel-job",
            "H:nowhere:3", error=True)


def test_connection_errors_match_gearadmin() -> None:
    port = str(process.free_port())
    for args in (["-h", "127.0.0.1", "-p", port], ["-p", port], ["-h", "::1", "-p", port],
                 ["-p", "no-such-service"], ["-h", "nosuchhost.invalid"]):
        theirs = subprocess.run(["gearadmin", *args, "--getpid"], capture_output=True, timeout=20, env=_env())
        mine = ours(*args, "--getpid", "--status")
        assert theirs.returncode == mine.returncode == 1, args
        assert mine.stdout == theirs.stdout == b"", args
        assert mine.stderr == theirs.stderr, args
        assert mine.stderr.startswith(b"Error: "), args


def test_table_view(scene: dict[str, Any]) -> None:
    addr = scene["address"]
    res = geartrain_admin(addr, "-T", "--status", "--priority-status", "--workers", "--show-jobs",
                          "--getpid")
    assert res.returncode == 0 and res.stderr == b""
    text = res.stdout.decode()
    pid, jobs_and_rest = text.split("\n", 1)
    assert pid == str(scene["server"].pid)  # other options print as in gearadmin
    blocks = re.split(r"\n(?=[A-Z-]+  )", jobs_and_rest.rstrip("\n"))
    jobs, workers, priority, status = (b.splitlines() for b in blocks)  # gearadmin's order
    assert status == [
        "FUNCTION  TOTAL  RUNNING  WORKERS",
        "alpha         1        1        2",
        "beta          0        0        1",
        "gamma         5        0        0",
    ]
    assert priority == [
        "FUNCTION  HIGH  NORMAL  LOW  WORKERS",
        "alpha        0       0    0        2",
        "beta         0       0    0        1",
        "gamma        1       3    1        0",
    ]
    assert re.fullmatch(r"FD +ADDRESS +CLIENT-ID +FUNCTIONS", workers[0])
    rows = [re.split(r" {2,}", w.strip()) for w in workers[1:]]
    assert sorted(r[1:] for r in rows) == sorted([["127.0.0.1", "-"]] * 3 + [["127.0.0.1", "-", "alpha"],
                                                  ["127.0.0.1", "worker-1", "beta alpha"]])
    fds = [int(r[0]) for r in rows]
    assert fds == sorted(fds)
    assert re.fullmatch(r"HANDLE +RETRIES  IGNORED  QUEUED", jobs[0])
    assert sorted(j.split()[1:] for j in jobs[1:]) == [["0", "no", "no"]] + [["0", "no", "yes"]] * 5

    # an empty listing is just the header
    empty = ours("-h", addr[0], "-p", str(addr[1]), "--table", "--show-unique-jobs")
    assert empty.stdout.decode().splitlines()[-1] == "."  # not a table: printed as gearadmin does


def test_help_usage_and_environment(server: process.ServerProcess) -> None:
    res = ours("--help")
    assert res.returncode == 0 and res.stderr == b""
    out = res.stdout.decode()
    for flag in ("--help", "-h HOST, --host HOST", "-p PORT, --port PORT", "--server-version",
                 "--server-verbose", "--create-function F", "--cancel-job H", "--drop-function F",
                 "--show-unique-jobs", "--show-jobs", "--getpid", "--status", "--priority-status",
                 "--workers", "-T, --table", "--timeout SECONDS"):
        assert flag in out, flag

    res = ours("-h", "127.0.0.1", "-p", str(server.port))
    assert res.returncode == 1 and res.stderr.startswith(b"No option execution operation given.\n\n")
    assert ours("--bogus").returncode == 2

    # gearadmin ignores GEARMAN_SERVER; so does geartrain admin
    dead = str(process.free_port())
    env = dict(_env(), GEARMAN_SERVER=f"{server.host}:{server.port}")
    res = ours("-h", "127.0.0.1", "-p", dead, "--getpid", env=env)
    assert (res.returncode, res.stdout, res.stderr) == (1, b"", b"Error: Error connecting to 127.0.0.1.\n\n")
    res = ours("-h", "127.0.0.1", "-p", str(server.port), "--getpid", env=env)
    assert (res.returncode, res.stdout) == (0, b"%d\n" % server.pid)
