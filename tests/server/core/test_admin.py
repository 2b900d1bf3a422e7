"""The text admin protocol through receive(): exact bytes of every reply."""

from __future__ import annotations

import pytest

from geartrain.server.core import CoreSettings
from tests.server.core.driver import Driver, T, handle


def test_status_lists_total_running_workers() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"reverse", b"other")
    d.worker(b"other")
    c.submit(b"reverse", b"1")
    c.submit(b"reverse", b"2")
    c.submit(b"co", b"3", ptype=T.SUBMIT_JOB_BG)
    w.take()
    assert d.admin("status") == b"reverse\t2\t1\t1\nother\t0\t0\t2\nco\t1\t0\t0\n.\n"


def test_status_of_an_empty_server() -> None:
    assert Driver().admin("status") == b".\n"


def test_functions_are_never_removed_automatically() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f")
    w.take()
    w.complete(h)
    w.close()
    assert d.admin("status") == b"f\t0\t0\t0\n.\n"


def test_empty_function_name_is_allowed() -> None:
    d = Driver()
    d.client().submit(b"")
    assert d.admin("status") == b"\t1\t0\t0\n.\n"


def test_prioritystatus_counts_queued_jobs_per_priority() -> None:
    d = Driver()
    c = d.client()
    d.worker(b"pq")
    for ptype in (T.SUBMIT_JOB_HIGH, T.SUBMIT_JOB_HIGH_BG, T.SUBMIT_JOB, T.SUBMIT_JOB_LOW_BG,
                  T.SUBMIT_JOB_LOW, T.SUBMIT_JOB_LOW):
        c.submit(b"pq", ptype=ptype)
    c.submit(b"co")
    w = d.worker(b"co")
    w.take()  # running jobs are not listed
    assert d.admin("prioritystatus") == b"pq\t2\t1\t3\t1\nco\t0\t0\t0\t1\n.\n"


def test_workers_newest_connection_first_newest_function_first() -> None:
    d = Driver()
    w1 = d.worker(b"reverse", b"other")
    w1.send(T.SET_CLIENT_ID, b"worker-1")
    c = d.client()
    a = d.connect("10.0.0.7")
    assert a.admin("workers") == (
        b"%d 10.0.0.7 - :\n" % a.peer.fd
        + b"%d 127.0.0.1 - :\n" % c.peer.fd
        + b"%d 127.0.0.1 worker-1 : other reverse\n" % w1.peer.fd
        + b".\n"
    )


def test_workers_reregistered_function_moves_to_the_front() -> None:
    d = Driver()
    w = d.worker(b"a", b"b", b"c")
    w.can_do(b"a")
    w.send(T.CANT_DO, b"b")
    assert d.admin("workers").split(b"\n")[1] == b"%d 127.0.0.1 - : a c" % w.peer.fd


def test_workers_forgets_closed_connections() -> None:
    d = Driver()
    w = d.worker(b"f")
    w.close()
    a = d.connect()
    assert a.admin("workers") == b"%d 127.0.0.1 - :\n.\n" % a.peer.fd


def test_show_jobs_and_show_unique_jobs() -> None:
    d = Driver()
    c = d.client()
    h1 = c.submit(b"f", b"x", unique=b"u1")
    h2 = c.submit(b"f", b"y", ptype=T.SUBMIT_JOB_BG)
    h3 = c.submit(b"f", b"z", unique=b"-", ptype=T.SUBMIT_JOB_LOW_BG)
    assert d.admin("show jobs") == b"%s\t0\t0\t0\n%s\t0\t0\t1\n%s\t0\t0\t1\n.\n" % (h1, h2, h3)
    assert d.admin("show unique jobs") == b"u1\n\n-\n.\n"
    assert d.admin("SHOW JOBS") == d.admin("show jobs")


def test_show_with_other_arguments() -> None:
    d = Driver()
    assert d.admin("show foo") == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
    assert d.admin("show unique") == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
    assert d.admin("show") == b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"


def test_cancel_job_fails_clients_and_keeps_queued_job_listed_until_reached() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f", b"x", unique=b"u")
    assert d.admin(b"cancel job " + h) == b"OK\r\n"
    assert c.packets() == [(T.WORK_FAIL, h)]
    assert d.admin("show jobs") == h + b"\t0\t1\t0\n.\n"
    assert d.status_line(b"f") == (1, 0, 0)
    # the unique is free at once: a new submit makes a new job
    assert c.submit(b"f", b"x", unique=b"u") == handle(2)
    w = d.worker(b"f")
    assert w.take()[0] == handle(2)
    assert d.admin("show jobs") == handle(2) + b"\t0\t0\t0\n.\n"
    assert d.status_line(b"f") == (1, 1, 1)


def test_cancel_background_job_shows_ignore_not_queued() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f", ptype=T.SUBMIT_JOB_BG)
    assert d.admin(b"cancel job " + h) == b"OK\r\n"
    assert d.admin("show jobs") == h + b"\t0\t1\t0\n.\n"
    c.none()
    d.worker(b"f").no_job()
    assert d.admin("show jobs") == b".\n"


def test_cancel_running_job_lets_it_run_and_drops_its_results() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f")
    w.take()
    assert d.admin(b"cancel job " + h) == b"OK\r\n"
    assert c.packets() == [(T.WORK_FAIL, h)]
    w.send(T.WORK_DATA, h, b"d")
    w.complete(h, b"r")
    c.none()
    assert d.server.jobs == {}
    assert d.status_line(b"f") == (0, 0, 1)


def test_cancel_errors() -> None:
    d = Driver()
    assert d.admin("cancel job H:x:1") == b"ERR UNKNOWN_JOB\r\n"
    assert d.admin("cancel job") == b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"
    assert d.admin("cancel") == b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"
    assert d.admin("cancel x y") == b"ERR UNKNOWN_ERROR\r\n"
    c = d.client()
    h = c.submit(b"f")
    assert d.admin(b"cancel job " + h) == b"OK\r\n"
    assert c.packets() == [(T.WORK_FAIL, h)]
    # still listed until a worker reaches it, so cancelling it again is OK, as in gearmand
    assert d.admin(b"cancel job " + h) == b"OK\r\n"
    c.none()  # but its client is not failed twice
    assert d.function(b"f").dead == [0, 1, 0]  # and it is not buried twice
    d.worker(b"f").no_job()
    assert d.admin(b"cancel job " + h) == b"ERR UNKNOWN_JOB\r\n"


def test_cancel_job_of_an_abandoned_job_is_ok() -> None:
    d = Driver()
    c = d.client()
    h = c.submit(b"f")
    c.close()
    assert d.admin(b"cancel job " + h) == b"OK\r\n"
    assert d.admin("show jobs") == h + b"\t0\t1\t0\n.\n"
    assert d.function(b"f").dead == [0, 1, 0]
    d.worker(b"f").no_job()
    assert d.server.jobs == {}


def test_create_and_drop_function() -> None:
    d = Driver()
    assert d.admin("create function foo") == b"OK\r\n"
    assert d.admin("status") == b"foo\t0\t0\t0\n.\n"
    assert d.admin("drop function foo") == b"OK\r\n"
    assert d.admin("status") == b".\n"
    assert d.admin("drop function foo") == b"ERR function not found\r\n"


def test_create_function_on_a_bare_lf_line_keeps_the_last_character() -> None:
    # gearmand bug fixed: it creates "fo" here
    d = Driver()
    c = d.connect()
    assert c.admin("create function foo", ending=b"\n") == b"OK\r\n"
    assert c.admin("create function bar", ending=b"\r\n") == b"OK\r\n"
    assert list(d.server.functions) == [b"foo", b"bar"]


def test_drop_function_with_workers_or_jobs_is_refused() -> None:
    d = Driver()
    w = d.worker(b"busy")
    assert d.admin("drop function busy") == b"ERR there are still connected workers or executing clients\r\n"
    w.close()
    h = d.client().submit(b"busy", ptype=T.SUBMIT_JOB_BG)
    assert d.admin("drop function busy") == b"ERR there are still connected workers or executing clients\r\n"
    d.admin(b"cancel job " + h)
    reaper = d.worker(b"busy")
    reaper.no_job()  # reaps the cancelled job
    assert d.admin("drop function busy") == b"ERR there are still connected workers or executing clients\r\n"
    reaper.close()
    assert d.admin("drop function busy") == b"OK\r\n"


def test_drop_function_matches_case_insensitively_exact_match_first() -> None:
    d = Driver()
    d.admin("create function dash")
    assert d.admin("drop function DASH") == b"OK\r\n"
    assert b"dash" not in d.server.functions
    d.admin("create function Ab")
    d.admin("create function ab")
    assert d.admin("drop function ab") == b"OK\r\n"
    assert list(d.server.functions) == [b"Ab"]


def test_create_and_drop_need_three_words() -> None:
    d = Driver()
    incomplete = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+%s\r\n"
    assert d.admin("create function") == incomplete % b"create"
    assert d.admin("create fun foo") == incomplete % b"create"
    assert d.admin("drop function") == incomplete % b"drop"
    assert d.admin("maxqueue") == incomplete % b"maxqueue"
    assert d.server.functions == {}


def test_maxqueue_reply_is_ok_even_for_unknown_functions() -> None:
    d = Driver()
    assert d.admin("maxqueue foo 5") == b"OK\r\n"
    assert d.admin("maxqueue foo 1 2 3") == b"OK\r\n"
    assert d.admin("maxqueue foo abc") == b"OK\r\n"


def test_info_commands_end_with_lf_only() -> None:
    d = Driver(CoreSettings(handle_prefix="H:x", version="1.2.3", pid=4242, verbose="INFO"))
    assert d.admin("version") == b"OK 1.2.3\n"
    assert d.admin("getpid") == b"OK 4242\n"
    assert d.admin("verbose") == b"OK INFO\n"
    assert d.admin("verbose DEBUG") == b"OK INFO\n"  # read-only


@pytest.mark.parametrize("line,word", [
    ("bogus", b"bogus"), ("", b""), ("shutdown", b"shutdown"), ("shutdown graceful", b"shutdown"),
    ("Bogus Arg", b"Bogus"), (" status", b""),
])
def test_unknown_command(line: str, word: bytes) -> None:
    assert Driver().admin(line) == b"ERR UNKNOWN_COMMAND Unknown+server+command" + word + b"\r\n"


def test_command_word_is_case_insensitive_and_spaces_collapse() -> None:
    d = Driver()
    assert d.admin("STATUS") == b".\n"
    assert d.admin("Create   Function   foo  ") == b"OK\r\n"
    assert list(d.server.functions) == [b"foo"]


def test_too_many_words_gets_an_error_not_a_closed_connection() -> None:
    d = Driver()
    c = d.connect()
    assert c.admin("maxqueue a b c d e f") == (
        b"ERR INVALID_ARGUMENTS Too+many+arguments+were+sent+to+this+command+maxqueue\r\n"
    )
    assert not c.peer.closing
    assert c.admin("status") == b".\n"


def test_several_admin_lines_in_one_feed_are_answered_in_order() -> None:
    d = Driver(CoreSettings(handle_prefix="H:x", version="9"))
    c = d.connect()
    d.admin("create function fo")
    c.feed(b"version\r\nstatus\nbogus\r\ncreate function g\nstatus\n")
    assert c.raw() == (
        b"OK 9\n" + b"fo\t0\t0\t0\n.\n" + b"ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"
        + b"OK\r\n" + b"fo\t0\t0\t0\ng\t0\t0\t0\n.\n"
    )


def test_admin_line_split_across_feeds() -> None:
    d = Driver()
    c = d.connect()
    c.feed(b"sta")
    assert c.raw() == b""
    c.feed(b"tus\r")
    assert c.raw() == b""
    c.feed(b"\n")
    assert c.raw() == b".\n"
