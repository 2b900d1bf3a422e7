"""Job semantics end to end: a real geartrain server, raw packets on real sockets."""

from __future__ import annotations

import time

import pytest

from tests.support.wire import Wire, admin, grab, status_of, submit, wait_until

SUBMIT = {
    ("HIGH", False): "SUBMIT_JOB_HIGH", ("NORMAL", False): "SUBMIT_JOB",
    ("LOW", False): "SUBMIT_JOB_LOW", ("HIGH", True): "SUBMIT_JOB_HIGH_BG",
    ("NORMAL", True): "SUBMIT_JOB_BG", ("LOW", True): "SUBMIT_JOB_LOW_BG",
}


def show_jobs(address: tuple[str, int]) -> dict[bytes, list[int]]:
    """`show jobs` as {handle: [retries, ignore, queued]}."""
    out = {}
    for line in admin(address, "show jobs")[0].splitlines():
        if line != b".":
            handle, *cols = line.split(b"\t")
            out[handle] = [int(c) for c in cols]
    return out


def finish(w: Wire, handle: bytes, result: bytes = b"") -> None:
    w.send("WORK_COMPLETE", handle, result)


# --------------------------------------------------------------- priorities


@pytest.mark.parametrize("background", [False, True], ids=["fg", "bg"])
def test_priorities_within_a_function(server, background):
    with Wire(server.address) as c, Wire(server.address) as w:
        order = [("LOW", "low1"), ("NORMAL", "norm1"), ("HIGH", "high1"),
                 ("LOW", "low2"), ("NORMAL", "norm2"), ("HIGH", "high2")]
        for prio, data in order:
            submit(c, "prio", data.encode(), ptype=SUBMIT[prio, background])
        w.send("CAN_DO", "prio")
        got = []
        for _ in order:
            name, args = grab(w)
            assert name == "JOB_ASSIGN"
            got.append(args[2].decode())
            finish(w, args[0])
        assert got == ["high1", "high2", "norm1", "norm2", "low1", "low2"]
        w.send("GRAB_JOB")
        assert w.expect("NO_JOB") == []
        if not background:
            results = [c.expect("WORK_COMPLETE") for _ in order]
            assert len({r[0] for r in results}) == 6


def test_foreground_and_background_share_priority_queues(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        submit(c, "mix", b"bg-low", ptype="SUBMIT_JOB_LOW_BG")
        submit(c, "mix", b"fg-normal", ptype="SUBMIT_JOB")
        submit(c, "mix", b"bg-high", ptype="SUBMIT_JOB_HIGH_BG")
        submit(c, "mix", b"fg-high", ptype="SUBMIT_JOB_HIGH")
        assert admin(server.address, "prioritystatus")[0] == b"mix\t2\t1\t1\t0\n.\n"
        w.send("CAN_DO", "mix")
        got = []
        for _ in range(4):
            _, args = grab(w)
            got.append(args[2])
            finish(w, args[0])
        assert got == [b"bg-high", b"fg-high", b"fg-normal", b"bg-low"]


def test_highest_priority_across_functions_first(server):
    """geartrain picks the highest priority over all of a worker's functions
    (gearmand 2.0 order; 1.1.20 drains the last registered function first)."""
    with Wire(server.address) as c, Wire(server.address) as w:
        submit(c, "fA", b"A-low", ptype="SUBMIT_JOB_LOW_BG")
        submit(c, "fA", b"A-norm", ptype="SUBMIT_JOB_BG")
        submit(c, "fB", b"B-norm", ptype="SUBMIT_JOB_BG")
        submit(c, "fB", b"B-high", ptype="SUBMIT_JOB_HIGH_BG")
        w.send("CAN_DO", "fA")
        w.send("CAN_DO", "fB")
        got = []
        for _ in range(4):
            _, args = grab(w)
            got.append(args[2])
            finish(w, args[0])
        assert got[0] == b"B-high"
        assert sorted(got[1:3]) == [b"A-norm", b"B-norm"]
        assert got[3] == b"A-low"


# --------------------------------------------------------------- uniques


def test_empty_unique_never_coalesces(server):
    with Wire(server.address) as c:
        handles = {submit(c, "u", b"same", b"") for _ in range(3)}
        assert len(handles) == 3
        assert status_of(server.address, "u") == (3, 0, 0)


def test_dash_unique_coalesces_identical_payload(server):
    with Wire(server.address) as c:
        h1 = submit(c, "u", b"payload", b"-")
        h2 = submit(c, "u", b"payload", b"-", ptype="SUBMIT_JOB_BG")
        h3 = submit(c, "u", b"other", b"-")
        h4 = submit(c, "v", b"payload", b"-")
        assert h1 == h2
        assert len({h1, h3, h4}) == 3
        assert status_of(server.address, "u") == (2, 0, 0)


def test_coalescing_onto_queued_job_keeps_first_priority_and_data(server):
    with Wire(server.address) as c1, Wire(server.address) as c2, Wire(server.address) as w:
        plain = submit(c1, "co", b"plain")
        h = submit(c1, "co", b"first", b"key")
        assert submit(c2, "co", b"second", b"key", ptype="SUBMIT_JOB_HIGH") == h
        assert submit(c2, "co", b"third", b"key", ptype="SUBMIT_JOB_LOW_BG") == h
        assert status_of(server.address, "co") == (2, 0, 0)
        w.send("CAN_DO", "co")
        name, args = grab(w, "GRAB_JOB_UNIQ")
        assert (name, args) == ("JOB_ASSIGN_UNIQ", [plain, b"co", b"", b"plain"])  # HIGH was ignored
        finish(w, plain)
        name, args = grab(w, "GRAB_JOB_UNIQ")
        assert (name, args) == ("JOB_ASSIGN_UNIQ", [h, b"co", b"key", b"first"])
        finish(w, h, b"result")
        assert c1.expect("WORK_COMPLETE") == [plain, b""]
        assert c1.expect("WORK_COMPLETE") == [h, b"result"]
        assert c2.expect("WORK_COMPLETE") == [h, b"result"]
        assert c2.silent(0.2) is None


def test_coalescing_onto_running_job_gets_later_packets_only(server):
    with Wire(server.address) as c1, Wire(server.address) as c2, Wire(server.address) as w:
        w.send("CAN_DO", "run")
        h = submit(c1, "run", b"d", b"uq")
        _, args = grab(w)
        assert args[0] == h
        w.send("WORK_DATA", h, b"early")
        assert c1.expect("WORK_DATA") == [h, b"early"]
        assert submit(c2, "run", b"ignored", b"uq") == h
        assert c2.silent(0.2) is None  # no replay of earlier packets
        c3 = Wire(server.address)
        assert submit(c3, "run", b"x", b"uq", ptype="SUBMIT_JOB_BG") == h
        c3.send("GET_STATUS_UNIQUE", "uq")
        assert c3.expect("STATUS_RES_UNIQUE") == [b"uq", b"1", b"1", b"0", b"0", b"2"]
        w.send("WORK_STATUS", h, b"1", b"2")
        w.send("WORK_DATA", h, b"late")
        w.send("WORK_WARNING", h, b"careful")
        w.send("WORK_COMPLETE", h, b"done")
        for c in (c1, c2):
            assert c.expect("WORK_STATUS") == [h, b"1", b"2"]
            assert c.expect("WORK_DATA") == [h, b"late"]
            assert c.expect("WORK_WARNING") == [h, b"careful"]
            assert c.expect("WORK_COMPLETE") == [h, b"done"]
        assert c3.silent(0.2) is None  # a background submitter is never told
        c3.close()
        # finished: the unique is free again, a new job gets a new handle
        assert submit(c1, "run", b"d", b"uq") != h


def test_same_unique_in_other_function_is_another_job(server):
    with Wire(server.address) as c:
        assert submit(c, "f1", b"d", b"u1") != submit(c, "f2", b"d", b"u1")


def test_unique_size_limit(server):
    with Wire(server.address) as c:
        c.send("SUBMIT_JOB", "f", b"x" * 65, b"d")
        assert c.expect("ERROR") == [b"ARGUMENT_TOO_LARGE", b"Unique value too large"]
        assert submit(c, "f", b"d", b"y" * 64).startswith(b"H:")


# --------------------------------------------------------------- grabbing


def test_grab_forms(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "g")
        for grab_type in ("GRAB_JOB", "GRAB_JOB_UNIQ", "GRAB_JOB_ALL"):
            w.send(grab_type)
            assert w.expect("NO_JOB") == []
        h1 = submit(c, "g", b"data\0with\0nuls", b"u1")
        h2 = submit(c, "g", b"two", b"u2")
        h3 = submit(c, "g", b"three", b"u3")
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN") == [h1, b"g", b"data\0with\0nuls"]
        w.send("GRAB_JOB_UNIQ")
        assert w.expect("JOB_ASSIGN_UNIQ") == [h2, b"g", b"u2", b"two"]
        w.send("GRAB_JOB_ALL")  # no reducer: the UNIQ form
        assert w.expect("JOB_ASSIGN_UNIQ") == [h3, b"g", b"u3", b"three"]
        assert status_of(server.address, "g") == (3, 3, 1)


def test_reduce_jobs(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "map")
        c.send("SUBMIT_REDUCE_JOB", "map", "ru", "red", "", b"mapdata")
        h = c.expect("JOB_CREATED")[0]
        c.send("SUBMIT_REDUCE_JOB_BACKGROUND", "map", "rb", "red2", "", b"bgdata")
        hb = c.expect("JOB_CREATED")[0]
        assert hb != h
        w.send("GRAB_JOB_ALL")
        assert w.expect("JOB_ASSIGN_ALL") == [h, b"map", b"ru", b"red", b"mapdata"]
        w.send("GRAB_JOB")  # plain form drops unique and reducer
        assert w.expect("JOB_ASSIGN") == [hb, b"map", b"bgdata"]
        w.send("WORK_COMPLETE", h, b"reduced")
        assert c.expect("WORK_COMPLETE") == [h, b"reduced"]
        w.send("WORK_COMPLETE", hb, b"x")
        assert c.silent(0.2) is None
        c.send("SUBMIT_REDUCE_JOB", "map", "ru2", b"r" * 65, "", b"d")
        assert c.expect("ERROR")[0] == b"ARGUMENT_TOO_LARGE"


def test_pre_sleep_and_noop(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "sl")
        w.send("PRE_SLEEP")
        assert w.silent(0.2) is None
        h = submit(c, "sl", b"1")
        assert w.expect("NOOP") == []
        submit(c, "sl", b"2")
        assert w.silent(0.2) is None  # one NOOP per sleep
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN")[0] == h
        w.send("PRE_SLEEP")  # work is waiting: woken at once
        assert w.expect("NOOP") == []


def test_can_do_while_asleep_wakes_for_waiting_work(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        h = submit(c, "late", b"x")
        w.send("CAN_DO", "other")
        w.send("PRE_SLEEP")
        assert w.silent(0.2) is None
        w.send("CAN_DO", "late")
        assert w.expect("NOOP") == []
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN") == [h, b"late", b"x"]


# --------------------------------------------------------------- results


def test_work_packets_forwarded_and_status(server):
    with Wire(server.address) as c, Wire(server.address) as w, Wire(server.address) as o:
        w.send("CAN_DO", "wk")
        h = submit(c, "wk", b"in")
        o.send("GET_STATUS", h)
        assert o.expect("STATUS_RES") == [h, b"1", b"0", b"0", b"0"]
        grab(w)
        o.send("GET_STATUS", h)
        assert o.expect("STATUS_RES") == [h, b"1", b"1", b"0", b"0"]
        w.send("WORK_STATUS", h, b"3", b"10")
        assert c.expect("WORK_STATUS") == [h, b"3", b"10"]
        o.send("GET_STATUS", h)
        assert o.expect("STATUS_RES") == [h, b"1", b"1", b"3", b"10"]
        w.send("WORK_STATUS", h, b" 7x", b"abc")  # forwarded verbatim, stored as atoi
        assert c.expect("WORK_STATUS") == [h, b" 7x", b"abc"]
        o.send("GET_STATUS", h)
        assert o.expect("STATUS_RES") == [h, b"1", b"1", b"7", b"0"]
        w.send("WORK_DATA", h, b"chunk\0with nul")
        w.send("WORK_WARNING", h, b"warn")
        w.send("WORK_COMPLETE", h, b"out")
        assert c.expect("WORK_DATA") == [h, b"chunk\0with nul"]
        assert c.expect("WORK_WARNING") == [h, b"warn"]
        assert c.expect("WORK_COMPLETE") == [h, b"out"]
        assert o.silent(0.2) is None  # not a listener
        o.send("GET_STATUS", h)
        assert o.expect("STATUS_RES") == [h, b"0", b"0", b"0", b"0"]
        o.send("GET_STATUS", "H:nosuch:99")
        assert o.expect("STATUS_RES") == [b"H:nosuch:99", b"0", b"0", b"0", b"0"]
        # results after the job ended are errors for the worker
        w.send("WORK_COMPLETE", h, b"again")
        assert w.expect("ERROR") == [b"JOB_NOT_FOUND", b"Job given in work result not found"]
        w.send("WORK_DATA", h, b"again")
        assert w.expect("ERROR") == [b"JOB_NOT_FOUND", b"Job does not exist on server"]
        w.send("WORK_EXCEPTION", h, b"again")
        assert w.expect("ERROR") == [
            b"JOB_NOT_FOUND", b"An exception was received for a job that does not exist"]


def test_work_fail(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "wf")
        h = submit(c, "wf", b"x")
        grab(w)
        w.send("WORK_FAIL", h)
        assert c.recv_raw() == (14, h)
        assert status_of(server.address, "wf") == (0, 0, 1)


def test_only_the_worker_holding_a_job_may_report_on_it(server):
    with Wire(server.address) as c, Wire(server.address) as w, Wire(server.address) as other:
        w.send("CAN_DO", "own")
        h = submit(c, "own", b"x")
        grab(w)
        other.send("WORK_COMPLETE", h, b"hijack")
        assert other.expect("ERROR") == [b"JOB_NOT_FOUND", b"Job given in work result not found"]
        assert c.silent(0.2) is None
        w.send("WORK_COMPLETE", h, b"real")
        assert c.expect("WORK_COMPLETE") == [h, b"real"]


def test_exceptions_option(server):
    with Wire(server.address) as plain, Wire(server.address) as exc, Wire(server.address) as w:
        exc.send("OPTION_REQ", "exceptions")
        assert exc.expect("OPTION_RES") == [b"exceptions"]
        plain.send("OPTION_REQ", "EXCEPTIONS")
        assert plain.expect("OPTION_RES") == [b"EXCEPTIONS"]
        plain.send("OPTION_REQ", "bogus")
        assert plain.expect("ERROR") == [b"UNKNOWN_OPTION", b"Server does not recognize given option"]
    with Wire(server.address) as plain, Wire(server.address) as exc, Wire(server.address) as w:
        exc.send("OPTION_REQ", "exceptions")
        exc.expect("OPTION_RES")
        w.send("CAN_DO", "ex")
        h = submit(plain, "ex", b"x", b"shared")
        assert submit(exc, "ex", b"x", b"shared") == h
        grab(w)
        w.send("WORK_EXCEPTION", h, b"boom")
        assert exc.expect("WORK_EXCEPTION") == [h, b"boom"]
        assert plain.recv_raw() == (14, h)  # WORK_FAIL, bare handle
        assert status_of(server.address, "ex") == (0, 0, 1)


def test_echo_and_client_id(server):
    with Wire(server.address) as w:
        for payload in (b"", b"a\0b\0", bytes(range(256)) * 4096):
            w.send("ECHO_REQ", payload)
            assert w.expect("ECHO_RES") == [payload]
        w.send("SET_CLIENT_ID", "my worker 1")
        w.send("CAN_DO", "f1")
        w.send("CAN_DO", "f2")
        w.send("ECHO_REQ", "sync")
        w.expect("ECHO_RES")
        lines = admin(server.address, "workers")[0].decode().splitlines()
        mine = [ln for ln in lines if "my worker 1" in ln]
        assert len(mine) == 1
        fd, ip, rest = mine[0].split(" ", 2)
        assert int(fd) > 0 and ip == "127.0.0.1"
        assert rest == "my worker 1 : f2 f1"


# --------------------------------------------------------------- losing a job


def test_can_do_timeout_requeues(server):
    with Wire(server.address) as c, Wire(server.address) as w1, Wire(server.address) as w2:
        w1.send("CAN_DO_TIMEOUT", b"slow\x00300")
        h = submit(c, "slow", b"payload")
        _, args = grab(w1)
        assert args == [h, b"slow", b"payload"]
        assert status_of(server.address, "slow") == (1, 1, 1)
        assert wait_until(lambda: status_of(server.address, "slow") == (1, 0, 1), timeout=3)
        assert show_jobs(server.address)[h] == [1, 0, 0]  # one retry, foreground
        assert c.silent(0.1) is None  # the client is not told
        w1.send("WORK_COMPLETE", h, b"too late")
        assert w1.expect("ERROR") == [b"JOB_NOT_FOUND", b"Job given in work result not found"]
        w2.send("CAN_DO", "slow")
        _, args = grab(w2)
        assert args == [h, b"slow", b"payload"]
        w2.send("WORK_COMPLETE", h, b"ok")
        assert c.expect("WORK_COMPLETE") == [h, b"ok"]
        assert c.silent(0.1) is None


def test_no_timeout_for_plain_can_do_or_non_positive_timeouts(server):
    with Wire(server.address) as c:
        workers = []
        for fn, register in (("p0", ("CAN_DO", "p0")), ("z0", ("CAN_DO_TIMEOUT", b"z0\x000")),
                             ("n0", ("CAN_DO_TIMEOUT", b"n0\x00-5"))):
            w = Wire(server.address)
            w.send(*register)
            h = submit(c, fn, b"x")
            grab(w)
            workers.append((w, h, fn))
        time.sleep(1.3)  # longer than the shortest real timeout (1 s)
        for w, h, fn in workers:
            assert status_of(server.address, fn) == (1, 1, 1)
            w.send("WORK_COMPLETE", h, b"ok")
            assert c.expect("WORK_COMPLETE") == [h, b"ok"]
            w.close()


@pytest.mark.parametrize("how", ["CANT_DO", "RESET_ABILITIES", "disconnect"])
def test_losing_a_worker_requeues_its_job(server, how):
    with Wire(server.address) as c, Wire(server.address) as w2:
        w1 = Wire(server.address)
        w1.send("CAN_DO", "lost")
        w1.send("CAN_DO", "kept")
        h = submit(c, "lost", b"work")
        w1.send("GRAB_JOB")
        assert w1.expect("JOB_ASSIGN") == [h, b"lost", b"work"]
        w1.send("WORK_STATUS", h, b"5", b"10")
        assert c.expect("WORK_STATUS") == [h, b"5", b"10"]
        if how == "disconnect":
            w1.close()
        else:
            w1.send(how, *(["lost"] if how == "CANT_DO" else []))
        assert wait_until(lambda: status_of(server.address, "lost") == (1, 0, 0))
        assert show_jobs(server.address)[h][0] == 1
        c.send("GET_STATUS", h)  # progress is reset
        assert c.expect("STATUS_RES") == [h, b"1", b"0", b"0", b"0"]
        if how != "disconnect":
            w1.send("WORK_COMPLETE", h, b"late")
            assert w1.expect("ERROR") == [b"JOB_NOT_FOUND", b"Job given in work result not found"]
            if how == "CANT_DO":
                assert status_of(server.address, "kept") == (0, 0, 1)
        w2.send("CAN_DO", "lost")
        _, args = grab(w2)
        assert args == [h, b"lost", b"work"]
        w2.send("WORK_COMPLETE", h, b"second try")
        assert c.expect("WORK_COMPLETE") == [h, b"second try"]
        w1.close()


def test_client_disconnect_abandons_queued_foreground_job(server):
    with Wire(server.address) as keeper, Wire(server.address) as w:
        c = Wire(server.address)
        gone = submit(c, "ab", b"nobody waits")
        kept = submit(keeper, "ab", b"wanted")
        c.close()
        # like gearmand: listed, marked ignored, until a worker reaches it
        assert wait_until(lambda: show_jobs(server.address).get(gone) == [0, 1, 0])
        assert status_of(server.address, "ab") == (2, 0, 0)
        w.send("CAN_DO", "ab")
        _, args = grab(w)
        assert args[0] == kept  # the abandoned job never runs
        w.send("WORK_COMPLETE", kept, b"")
        assert keeper.expect("WORK_COMPLETE") == [kept, b""]
        w.send("GRAB_JOB")
        assert w.expect("NO_JOB") == []
        assert gone not in show_jobs(server.address)
        assert status_of(server.address, "ab") == (0, 0, 1)


def test_background_job_survives_coalesced_foreground_disconnect(server):
    """gearmand 1.1.20 loses the background job here; geartrain runs it."""
    with Wire(server.address) as bg, Wire(server.address) as w:
        h = submit(bg, "keep", b"d", b"shared", ptype="SUBMIT_JOB_BG")
        fg = Wire(server.address)
        assert submit(fg, "keep", b"d", b"shared") == h
        fg.close()
        assert wait_until(lambda: len(admin(server.address, "workers")[0].splitlines()) == 4)
        w.send("CAN_DO", "keep")
        _, args = grab(w)
        assert args == [h, b"keep", b"d"]


# --------------------------------------------------------------- epoch


def test_epoch_job_waits_then_wakes_sleeping_worker(server):
    with Wire(server.address) as c, Wire(server.address) as w:
        w.send("CAN_DO", "ep")
        due = int(time.time()) + 2  # 1 to 2 seconds from now
        c.send("SUBMIT_JOB_EPOCH", "ep", "", str(due), "later")
        h = c.expect("JOB_CREATED")[0]
        c.send("SUBMIT_JOB_EPOCH", "ep", "", "0", "now")
        h_now = c.expect("JOB_CREATED")[0]
        c.send("SUBMIT_JOB_EPOCH", "ep", "", "abc", "garbage")
        h_garbage = c.expect("JOB_CREATED")[0]
        assert status_of(server.address, "ep") == (3, 0, 1)
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN") == [h_now, b"ep", b"now"]
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN") == [h_garbage, b"ep", b"garbage"]
        w.send("WORK_COMPLETE", h_now, b"")
        w.send("WORK_COMPLETE", h_garbage, b"")
        w.send("GRAB_JOB")
        assert w.expect("NO_JOB") == []
        assert status_of(server.address, "ep") == (1, 0, 1)
        w.send("PRE_SLEEP")
        assert w.expect("NOOP", timeout=3) == []
        assert time.time() >= due - 0.05
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN") == [h, b"ep", b"later"]
        assert c.silent(0.1) is None  # epoch jobs are background jobs


# --------------------------------------------------------------- maxqueue


def test_maxqueue(server):
    with Wire(server.address) as c:
        assert admin(server.address, "maxqueue mq 2") == [b"OK\r\n"]
        submit(c, "mq", b"1", b"u1")
        submit(c, "mq", b"2", ptype="SUBMIT_JOB_BG")
        c.send("SUBMIT_JOB", "mq", "", "3")
        assert c.expect("ERROR") == [b"QUEUE_ERROR", b"Job queue is full"]
        submit(c, "mq", b"whatever", b"u1")  # coalescing is not limited
        assert status_of(server.address, "mq") == (2, 0, 0)
        # HIGH NORMAL LOW limits
        assert admin(server.address, "maxqueue mq 3 2 0") == [b"OK\r\n"]
        c.send("SUBMIT_JOB_LOW", "mq", "", "low")  # 0 = unlimited
        assert c.expect("JOB_CREATED")
        c.send("SUBMIT_JOB", "mq", "", "norm")
        assert c.expect("ERROR")[0] == b"QUEUE_ERROR"
        c.send("SUBMIT_JOB_HIGH_BG", "mq", "", "high")
        assert c.expect("ERROR")[0] == b"QUEUE_ERROR"  # total 3 >= 3
        assert admin(server.address, "maxqueue mq") == [b"OK\r\n"]  # no number: unlimited
        submit(c, "mq", b"free")
        assert status_of(server.address, "mq") == (4, 0, 0)


def test_maxqueue_remembered_for_unknown_function(server):
    with Wire(server.address) as c:
        assert admin(server.address, "maxqueue later 1") == [b"OK\r\n"]
        submit(c, "later", b"1", ptype="SUBMIT_JOB_BG")
        c.send("SUBMIT_JOB_BG", "later", "", "2")
        assert c.expect("ERROR") == [b"QUEUE_ERROR", b"Job queue is full"]


def test_text_and_binary_mix_on_one_connection(server):
    with Wire(server.address) as c:
        c.send("ECHO_REQ", "bin")
        c.admin("version")
        c.send("ECHO_REQ", "bin2")
        assert c.expect("ECHO_RES") == [b"bin"]
        ptype, line = c.recv_raw()  # the text reply, decoded as a line
        assert ptype == 0 and line.startswith(b"OK ")
        assert c.expect("ECHO_RES") == [b"bin2"]


def test_closed_worker_connection_is_forgotten(server):
    w = Wire(server.address)
    w.send("CAN_DO", "gone")
    w.send("ECHO_REQ", "x")
    w.expect("ECHO_RES")
    assert status_of(server.address, "gone") == (0, 0, 1)
    w.close()
    assert wait_until(lambda: status_of(server.address, "gone") == (0, 0, 0))
