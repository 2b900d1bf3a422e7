"""The text admin protocol, byte for byte against C gearmand 1.1.20.

Both servers are started, driven into the same state by the same script of raw
protocol steps, then asked the same admin commands over raw sockets (and through
`gearadmin`). Replies must be identical bytes after masking what legitimately
differs: the host name in job handles, connection fds, the pid (checked against
the process first), the version string and the verbose level (checked to be
well-formed). Function, job and connection listings are compared as sorted
lines: gearmand lists them in hash-bucket order.

Deliberate differences documented in docs/compatibility.md are kept out of the
scripts (duplicate CAN_DO on one connection, lines of more than five words,
the effect of maxqueue before a function exists, cancelling a running job,
dropping a function that has queued jobs).
"""

from __future__ import annotations

import re
import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.interop.util import gearadmin, poll
from tests.support.process import ServerProcess
from tests.support.wire import Wire, submit

LEVELS = (b"FATAL", b"ALERT", b"CRITICAL", b"ERROR", b"WARNING", b"NOTICE", b"INFO", b"DEBUG")
LISTINGS = (b"status", b"prioritystatus", b"workers", b"show")
HANDLE = re.compile(rb"H:[^:\s]+:(\d+)")


# ---------------------------------------------------------------- masking


def mask_handles(data: bytes) -> bytes:
    return HANDLE.sub(rb"H:<host>:\1", data)


def masked(value: object) -> object:
    """Handles masked in bytes, and in lists/tuples of them (packets as (name, args))."""
    if isinstance(value, bytes):
        return mask_handles(value)
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def sorted_listing(body: bytes, fds: bool) -> bytes:
    """Lines of a '.'-terminated listing, sorted (hash order), fds masked if asked."""
    assert body.endswith(b".\n"), body
    lines = body[:-2].split(b"\n")[:-1]
    if fds:
        lines = [re.sub(rb"^\d+ ", b"<fd> ", line) for line in lines]
    return b"".join(line + b"\n" for line in sorted(lines)) + b".\n"


def normalize(command: bytes, reply: bytes, pid: int) -> bytes:
    """One admin reply with the per-server details masked (and checked)."""
    words = command.split()
    word = words[0].lower() if words and not command.startswith(b" ") else b""
    reply = mask_handles(reply)
    if reply.startswith(b"OK ") and word == b"version":
        assert re.fullmatch(rb"OK [!-~]+\n", reply), reply
        return b"OK <version>\n"
    if reply.startswith(b"OK ") and word == b"getpid":
        assert reply == b"OK %d\n" % pid, (reply, pid)
        return b"OK <pid>\n"
    if reply.startswith(b"OK ") and word == b"verbose":
        assert reply[3:-1] in LEVELS and reply.endswith(b"\n"), reply
        return b"OK <level>\n"
    if word in LISTINGS and not reply.startswith(b"ERR") and reply.endswith(b".\n"):
        return sorted_listing(reply, fds=word == b"workers")
    return reply


# ---------------------------------------------------------------- one admin connection


class Admin:
    """A raw admin connection held open for the whole test."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.wire = Wire(srv.address)

    def ask(self, command: bytes | str, ending: bytes = b"\r\n") -> bytes:
        cmd = command.encode() if isinstance(command, str) else command
        self.wire.sendraw(cmd + ending)
        return self.wire.read_admin()

    def transcript(self, commands: list[str]) -> list[tuple[str, bytes]]:
        return [(mask_handles(c.encode()).decode(), normalize(c.encode(), self.ask(c), self.srv.pid))
                for c in commands]

    def settle(self, connections: int) -> None:
        """Wait until the server lists exactly *connections* connections (this one included):
        closes of earlier connections must be processed before `workers` is compared."""
        def count() -> int:
            return len(self.ask("workers").splitlines()) - 1
        poll(lambda: count() == connections, f"{connections} connections in `workers`", timeout=5)

    def close(self) -> None:
        self.wire.close()


# ---------------------------------------------------------------- identical state on both servers


@dataclass
class State:
    """Connections held open and what the server answered while setting up."""

    wires: dict[str, Wire] = field(default_factory=dict)
    handles: dict[str, bytes] = field(default_factory=dict)
    replies: list[tuple[str, object]] = field(default_factory=list)

    def wire(self, address: tuple[str, int], name: str) -> Wire:
        self.wires[name] = Wire(address)
        return self.wires[name]

    def sync(self, name: str) -> None:
        """Everything sent on *name* so far has been processed (ECHO round trip)."""
        w = self.wires[name]
        w.send("ECHO_REQ", b"sync")
        assert w.expect("ECHO_RES") == [b"sync"]

    def note(self, label: str, value: object) -> None:
        self.replies.append((label, masked(value)))

    def close(self) -> None:
        for w in self.wires.values():
            w.close()


def build_state(srv: ServerProcess, st: State, adm: Admin) -> None:
    """Workers, queued/running/coalesced/cancelled/abandoned/scheduled jobs, a maxqueue."""
    a = srv.address
    w1 = st.wire(a, "w1")
    w1.send("SET_CLIENT_ID", "worker-one")
    w1.send("CAN_DO", "f1")
    w1.send("CAN_DO", "f2")
    w2 = st.wire(a, "w2")
    w2.send("CAN_DO", "f1")
    w2.send("CAN_DO_TIMEOUT", b"f3", b"60000")
    w3 = st.wire(a, "w3")
    w3.send("SET_CLIENT_ID", "idle conn")
    w4 = st.wire(a, "w4")
    w4.send("CAN_DO", "fgfn")
    for name in ("w1", "w2", "w3", "w4"):
        st.sync(name)

    c1 = st.wire(a, "c1")
    for i in range(3):
        st.handles[f"bg{i}"] = submit(c1, "f1", b"job%d" % i, b"uniq-%d" % i, "SUBMIT_JOB_BG")
    st.handles["high"] = submit(c1, "f1", b"hi", b"u-high", "SUBMIT_JOB_HIGH_BG")
    st.handles["low"] = submit(c1, "f1", b"lo", b"", "SUBMIT_JOB_LOW_BG")
    # same unique while queued: coalesced onto the existing job
    st.handles["bg1-again"] = submit(c1, "f1", b"other data", b"uniq-1", "SUBMIT_JOB_BG")
    # the same unique in another function is another job
    st.handles["nowork-0"] = submit(c1, "nowork", b"n0", b"uniq-0", "SUBMIT_JOB_BG")
    st.handles["nowork-high"] = submit(c1, "nowork", b"n1", b"u-nh", "SUBMIT_JOB_HIGH_BG")
    st.handles["nowork-low-fg"] = submit(c1, "nowork", b"n2", b"u-nl", "SUBMIT_JOB_LOW")
    # scheduled an hour ahead: counted, never runnable during the test
    c1.send("SUBMIT_JOB_EPOCH", "later", b"u-epoch", str(int(time.time()) + 3600), b"e")
    st.handles["epoch"] = c1.expect("JOB_CREATED")[0]
    c1.send("GET_STATUS", st.handles["bg1-again"])
    st.note("GET_STATUS queued", c1.expect("STATUS_RES"))

    # a foreground job that stays attached, and one whose client goes away
    c2 = st.wire(a, "c2")
    st.handles["fg"] = submit(c2, "fgfn", b"fg-data", b"fg-u")
    c3 = st.wire(a, "c3")
    st.handles["abandoned"] = submit(c3, "fgfn", b"bye", b"ab-u")
    c3.close()
    del st.wires["c3"]

    # w1 takes the HIGH job of f1; w4 the foreground job, reporting status
    w1.send("GRAB_JOB")
    st.note("w1 GRAB_JOB", list(w1.recv()))
    w4.send("GRAB_JOB")
    name, args = w4.recv()
    st.note("w4 GRAB_JOB", [name, *args])
    w4.send("WORK_STATUS", st.handles["fg"], b"3", b"7")
    st.sync("w4")
    st.note("c2 WORK_STATUS", list(c2.recv()))
    c2.send("GET_STATUS", st.handles["fg"])
    st.note("GET_STATUS running", c2.expect("STATUS_RES"))

    # cancel a queued background job; a maxqueue'd function refusing its third job
    st.note("cancel bg2", adm.ask(b"cancel job " + st.handles["bg2"]))
    st.note("create mq", adm.ask("create function mq"))
    st.note("maxqueue mq 2", adm.ask("maxqueue mq 2"))
    for i in range(3):
        c1.send("SUBMIT_JOB_BG", "mq", b"", b"m%d" % i)
        st.note(f"mq submit {i}", list(c1.recv()))
    c1.send("SUBMIT_JOB_HIGH", "mq", b"", b"fg-over")
    st.note("mq high over limit", list(c1.recv()))


def make_state(srv: ServerProcess, adm: Admin) -> State:
    st = State()
    build_state(srv, st, adm)
    return st


# ---------------------------------------------------------------- comparison


def both(server: ServerProcess, gearmand: ServerProcess,
         run: Callable[[ServerProcess, Admin], object]) -> tuple[object, object]:
    """run(srv, admin) on geartrain, then on gearmand."""
    out = []
    for srv in (server, gearmand):
        adm = Admin(srv)
        try:
            out.append(run(srv, adm))
        finally:
            adm.close()
    return out[0], out[1]


def assert_same(got: object, want: object) -> None:
    """geartrain's (got) must equal gearmand's (want); a per-item diff on failure."""
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        diffs = [f"  {w[0] if isinstance(w, tuple) else i}:\n    gearmand:  {w!r}\n    geartrain: {g!r}"
                 for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
        assert not diffs, "geartrain differs from gearmand:\n" + "\n".join(diffs)
    assert got == want


FRESH_COMMANDS = [
    "version", "getpid", "verbose", "status", "prioritystatus", "workers",
    "show jobs", "show unique jobs", "show", "show foo", "show unique", "show jobs extra",
    "show unique jobs extra", "foo", "", "   ", " status", "status ", "status extra args",
    "STATUS", "Workers", "VERSION", "getpid extra", "verbose DEBUG", "verbose",
    "shutdown", "shutdown graceful",
    "maxqueue", "maxqueue fn_a", "maxqueue fn_a 5", "maxqueue fn_a 1 2", "maxqueue fn_a 1 2 3",
    "maxqueue fn_a -4", "maxqueue fn_a abc", "maxqueue fn_a 0",
    "cancel", "cancel job", "cancel x y", "cancel job H:nohost:1", "cancel jobs H:nohost:1",
    "create", "create function", "create foo bar", "create function x1", "create function x1",
    "status", "prioritystatus", "drop", "drop function", "drop func x1", "drop function X1",
    "drop function x1", "status",
    "create function x2", "CREATE FUNCTION x3", "show jobs", "status", "prioritystatus",
    "drop function x2", "drop function x3", "status",
]


def test_fresh_server_admin_replies_are_byte_identical(server, gearmand):
    def run(srv: ServerProcess, adm: Admin) -> list[tuple[str, bytes]]:
        adm.settle(1)  # the start-up probe connection is gone
        return adm.transcript(FRESH_COMMANDS)

    got, want = both(server, gearmand, run)
    assert_same(got, want)


def test_admin_replies_in_the_same_state_are_byte_identical(server, gearmand):
    def run(srv: ServerProcess, adm: Admin) -> list[tuple[str, object]]:
        st = make_state(srv, adm)
        try:
            adm.settle(len(st.wires) + 1)
            h = st.handles
            out: list[tuple[str, object]] = list(st.replies)
            out += adm.transcript([
                "status", "prioritystatus", "workers", "show jobs", "show unique jobs",
                "cancel job " + h["bg0"].decode() + "999",
                "drop function f2", "drop function f3", "drop function fgfn", "drop function f1",
                "maxqueue f1 1 1 1",
                "status", "prioritystatus",
            ])
            # more jobs on the limited function: refused by the TOTAL count, whatever the priority
            for ptype in ("SUBMIT_JOB_BG", "SUBMIT_JOB_HIGH_BG", "SUBMIT_JOB_LOW_BG"):
                st.wires["c1"].send(ptype, "f1", b"", b"more")
                out.append((f"f1 {ptype} over maxqueue", [*st.wires["c1"].recv()]))
            out += adm.transcript(["maxqueue f1", "status"])
            # per-priority limits, compared with the function's total (2 jobs on mq)
            for limits in ("maxqueue mq 10 1 5", "maxqueue mq 4 3", "maxqueue mq -1", "maxqueue mq 0"):
                out += adm.transcript([limits])
                for ptype in ("SUBMIT_JOB_BG", "SUBMIT_JOB_LOW_BG", "SUBMIT_JOB_HIGH_BG"):
                    st.wires["c1"].send(ptype, "mq", b"", limits.encode())
                    out.append((f"mq {ptype} after {limits}", [*st.wires["c1"].recv()]))
                out += adm.transcript(["prioritystatus"])

            # the running background job completes; the running foreground job's worker leaves
            st.wires["w1"].send("WORK_COMPLETE", h["high"], b"done")
            st.sync("w1")
            st.wires["w4"].close()
            del st.wires["w4"]
            out.append(("c2 after worker left", st.wires["c2"].silent(0.3)))
            adm.settle(len(st.wires) + 1)
            out += adm.transcript(["status", "prioritystatus", "workers", "show jobs",
                                   "show unique jobs"])
            # w2 now gets jobs of f1: FIFO in NORMAL after the HIGH one is gone
            for _ in range(3):
                st.wires["w2"].send("GRAB_JOB_UNIQ")
                out.append(("w2 GRAB_JOB_UNIQ", [*st.wires["w2"].recv()]))
            adm.settle(len(st.wires) + 1)
            out += adm.transcript(["status", "show jobs", "show unique jobs"])
            return [(label, masked(v)) for label, v in out]
        finally:
            st.close()

    got, want = both(server, gearmand, run)
    assert_same(got, want)


def test_cancel_job_of_a_cancelled_or_abandoned_job(server, gearmand):
    """A cancelled or abandoned queued job stays listed in `show jobs` (IGNORE=1)
    until a worker reaches it; `cancel job` of such a listed handle answers like
    any listed job."""
    def run(srv: ServerProcess, adm: Admin) -> list[tuple[str, object]]:
        st = State()
        try:
            c = st.wire(srv.address, "c")
            bg = submit(c, "cq", b"one", b"u-one", "SUBMIT_JOB_BG")
            gone = st.wire(srv.address, "gone")
            fg = submit(gone, "cq", b"two", b"u-two")
            gone.close()
            del st.wires["gone"]
            adm.settle(2)
            return adm.transcript(["cancel job " + bg.decode(), "show jobs", "cancel job " + bg.decode(),
                                   "cancel job " + fg.decode(), "show jobs", "status"])
        finally:
            st.close()

    got, want = both(server, gearmand, run)
    assert_same(got, want)


PIPELINES: list[tuple[bytes, int]] = [
    # (bytes written at once, number of replies)
    (b"status\nversion\n", 2),  # mod_gearman's check_gearman: one write, replies in order
    (b"version\r\nstatus\r\nworkers\r\nshow jobs\r\nshow unique jobs\r\nprioritystatus\r\n", 6),
    (b"getpid\nfoo\nstatus\r\nshow foo\ncancel job H:x:1\r\nverbose\n", 6),
    (b"create function pipe1\r\nstatus\r\ndrop function pipe1\r\nstatus\r\n", 4),
]


def pipeline_replies(adm: Admin, data: bytes, n: int) -> list[bytes]:
    adm.wire.sendraw(data)
    commands = data.replace(b"\r\n", b"\n").split(b"\n")[:n]
    return [normalize(cmd, adm.wire.read_admin(), adm.srv.pid) for cmd in commands]


def test_pipelined_commands_in_one_write_are_answered_in_order(server, gearmand):
    def run(srv: ServerProcess, adm: Admin) -> list[object]:
        st = State()
        try:
            w = st.wire(srv.address, "w")
            w.send("CAN_DO", "pipefn")
            st.handles["j"] = submit(w, "pipefn", b"x", b"pipe-u", "SUBMIT_JOB_BG")
            adm.settle(2)
            out: list[object] = [pipeline_replies(adm, data, n) for data, n in PIPELINES]
            # a command split over several writes, and two in the second half
            for part in (b"sta", b"tus\nver", b"sion\nwork", b"ers\n"):
                adm.wire.sendraw(part)
                time.sleep(0.05)  # let each part arrive on its own
            out.append([normalize(c, adm.wire.read_admin(), srv.pid)
                        for c in (b"status", b"version", b"workers")])
            return out
        finally:
            st.close()

    got, want = both(server, gearmand, run)
    assert_same(got, want)
    # and the replies are what they should be, not merely the same
    assert got[0] == [b"pipefn\t1\t0\t1\n.\n", b"OK <version>\n"]


def test_pipelined_replies_arrive_for_a_single_read(server, gearmand):
    """check_gearman (mod_gearman) writes `status\\nversion\\n` and reads ONCE when the
    socket becomes readable: both replies must come in one piece."""
    for srv in [server, gearmand] * 10:
        with Wire(srv.address) as w:
            w.sendraw(b"status\nversion\n")
            readable, _, _ = select.select([w.sock], [], [], 5)
            assert readable
            data = w.sock.recv(65536)
            assert re.fullmatch(rb"\.\nOK [!-~]+\n", data), data


# ---------------------------------------------------------------- gearadmin, both servers


def gearadmin_outputs(srv: ServerProcess, adm: Admin, held: int,
                      cancel: bytes) -> Iterator[tuple[str, object]]:
    for args in (["--status"], ["--priority-status"], ["--workers"], ["--show-jobs"], ["--show-unique-jobs"],
                 ["--server-version"], ["--getpid"], ["--server-verbose"],
                 ["--cancel-job", cancel.decode()], ["--cancel-job", "H:nohost:424242"],
                 ["--create-function", "ga_fn"], ["--status"], ["--drop-function", "ga_fn"],
                 ["--drop-function", "ga_fn"], ["--drop-function", "f1"],
                 ["--status", "--workers", "--getpid"], ["--show-jobs"]):
        adm.settle(held + 1)  # earlier gearadmin connections are gone
        r = gearadmin(srv.address, *args)
        out = mask_handles(r.stdout)
        if "--server-version" in args:
            assert re.fullmatch(rb"[!-~]+\n", out), out
            out = b"<version>\n"
        if "--getpid" in args:
            assert out.startswith(b"%d\n" % srv.pid), (out, srv.pid)
            out = b"<pid>\n" + out.split(b"\n", 1)[1]
        if "--server-verbose" in args:
            assert out[:-1] in LEVELS, out
            out = b"<level>\n"
        out = re.sub(rb"(?m)^\d+ (?=\d+\.\d+\.\d+\.\d+ )", b"<fd> ", out)
        if args == ["--show-unique-jobs"]:  # one unique per line, in hash order
            out = sorted_listing(out, fds=False)
        label = mask_handles(" ".join(args).encode()).decode()
        yield label, (r.returncode, sort_listing_runs(out), r.stderr)


def sort_listing_runs(out: bytes) -> bytes:
    """gearadmin prints each reply in turn; runs of listing lines (tab-separated
    columns or workers lines) are sorted, everything else stays in place."""
    lines = out.split(b"\n")
    result: list[bytes] = []
    run: list[bytes] = []
    for line in lines:
        if b"\t" in line or line.startswith(b"<fd> "):
            run.append(line)
            continue
        result += sorted(run) + [line]
        run = []
    return b"\n".join(result + sorted(run))


def test_gearadmin_output_is_identical(server, gearmand):
    def run(srv: ServerProcess, adm: Admin) -> list[tuple[str, object]]:
        st = make_state(srv, adm)
        try:
            return list(gearadmin_outputs(srv, adm, len(st.wires), st.handles["bg0"]))
        finally:
            st.close()

    got, want = both(server, gearmand, run)
    assert_same(got, want)
