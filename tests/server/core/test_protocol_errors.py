"""Unexpected packets, wrong magic, broken framing, mixed text and binary traffic."""

from __future__ import annotations

import pytest

from geartrain.protocol import REQ, RES, FramingError, encode
from tests.server.core.driver import Driver, T

CLIENT_FORBIDDEN = [
    T.NOOP, T.JOB_CREATED, T.NO_JOB, T.JOB_ASSIGN, T.ECHO_RES, T.ERROR, T.STATUS_RES,
    T.ALL_YOURS, T.OPTION_RES, T.JOB_ASSIGN_UNIQ, T.SUBMIT_JOB_SCHED, T.JOB_ASSIGN_ALL,
    T.STATUS_RES_UNIQUE, 5,
]


def header(magic: bytes, ptype: int, size: int) -> bytes:
    return magic + ptype.to_bytes(4, "big") + size.to_bytes(4, "big")


@pytest.mark.parametrize("ptype", CLIENT_FORBIDDEN)
def test_client_forbidden_type_gets_error_and_connection_stays(ptype: int) -> None:
    d = Driver()
    c = d.client()
    c.send_body(ptype, b"H:x:1\0f\0data")
    assert c.raw() == encode(T.ERROR, b"INVALID_COMMAND", b"Command not expected")
    assert not c.peer.closing
    assert c.submit(b"f") == b"H:test:1"


def test_noop_as_request_exact_wire_reply() -> None:
    # the transcript in the reference: NOOP with REQ magic
    d = Driver()
    c = d.client()
    c.feed(bytes.fromhex("00524551 00000006 00000000"))
    assert c.raw() == bytes.fromhex("00524553 00000013 00000024") + b"INVALID_COMMAND\0Command not expected"


@pytest.mark.parametrize("ptype", [0, 43, 99, 0xFFFFFFFF])
def test_unknown_type_gets_error_and_connection_stays(ptype: int) -> None:
    # gearmand closes the connection; geartrain answers and carries on
    d = Driver()
    c = d.client()
    c.feed(header(REQ, ptype, 3) + b"abc")
    code, text = c.error()
    assert code == b"INVALID_COMMAND"
    assert text == b"Unknown packet type %d" % ptype
    assert not c.peer.closing
    c.send(T.ECHO_REQ, b"still here")
    assert c.recv() == [(T.ECHO_RES, [b"still here"])]


def test_response_magic_from_a_client_gets_invalid_magic_and_connection_stays() -> None:
    d = Driver()
    c = d.client()
    c.send(T.SUBMIT_JOB, b"f", b"", b"x", magic=RES)
    assert c.error() == (b"INVALID_MAGIC", b"Request magic expected")
    assert not c.peer.closing
    assert d.server.jobs == {}
    assert c.submit(b"f") == b"H:test:1"


def test_response_magic_with_type_zero_is_not_an_admin_line() -> None:
    d = Driver()
    c = d.client()
    c.feed(header(RES, 0, 6) + b"status")
    assert c.error() == (b"INVALID_MAGIC", b"Request magic expected")


def test_bad_magic_closes_the_connection_after_an_error() -> None:
    d = Driver()
    c = d.client()
    c.feed(header(b"\0XYZ", 16, 0) + encode(T.ECHO_REQ, b"never", magic=REQ))
    code, text = c.error()
    assert code == b"INVALID_MAGIC"
    assert b"magic" in text
    assert c.peer.closing
    assert c.peer in d.server.dirty
    c.send(T.ECHO_REQ, b"after")  # the decoder is spent, the core ignores the peer
    c.none()


def test_oversized_body_closes_the_connection_after_an_error() -> None:
    d = Driver()
    c = d.client()
    c.decoder.max_packet_size = 1024
    c.feed(header(REQ, T.SUBMIT_JOB, 1025))
    code, _ = c.error()
    assert code == b"ARGUMENT_TOO_LARGE"
    assert c.peer.closing
    assert d.server.jobs == {}


def test_frames_after_a_framing_error_in_the_same_batch_are_ignored() -> None:
    d = Driver()
    c = d.client()
    d.server.receive(c.peer, [
        (T.ECHO_REQ, b"one", REQ),
        FramingError(b"INVALID_MAGIC", "bad packet magic"),
        (T.ECHO_REQ, b"two", REQ),
    ])
    assert c.recv() == [(T.ECHO_RES, [b"one"]), (T.ERROR, [b"INVALID_MAGIC", b"bad packet magic"])]


def test_closing_peer_is_not_served_any_more() -> None:
    d = Driver()
    c = d.client()
    d.server.close(c.peer)
    c.send(T.SUBMIT_JOB, b"f", b"", b"x")
    c.none()
    assert d.server.jobs == {}


def test_packets_split_across_feeds_and_many_per_feed() -> None:
    d = Driver()
    c = d.client()
    data = b"".join(encode(T.ECHO_REQ, b"%d" % i, magic=REQ) for i in range(10))
    for i in range(len(data)):
        c.feed(data[i:i + 1])
    c.feed(data)
    got = [args[0] for _, args in c.recv()]
    assert got == [b"%d" % i for i in range(10)] * 2


def test_text_and_binary_mixed_on_one_connection() -> None:
    d = Driver()
    c = d.client()
    c.feed(encode(T.ECHO_REQ, b"ping", magic=REQ) + b"version\n" + encode(T.ECHO_REQ, b"pong", magic=REQ))
    assert c.raw() == encode(T.ECHO_RES, b"ping") + b"OK 0\n" + encode(T.ECHO_RES, b"pong")


def test_set_client_id_is_truncated_and_control_characters_blanked() -> None:
    d = Driver()
    c = d.client()
    c.send(T.SET_CLIENT_ID, b"a" * 200)
    c.none()
    assert c.peer.client_id == b"a" * 127
    c.send(T.SET_CLIENT_ID, b"two\nlines\tand tab")
    assert c.peer.client_id == b"two lines and tab"
    assert c.admin("workers") == b"%d 127.0.0.1 two lines and tab :\n.\n" % c.peer.fd


def test_can_do_timeout_without_separator_gets_error() -> None:
    d = Driver()
    w = d.connect()
    w.send_body(T.CAN_DO_TIMEOUT, b"f")
    code, _ = w.error()
    assert code == b"INVALID_PACKET"
    assert w.peer.abilities == {}


def test_can_do_timeout_value_too_long_gets_error() -> None:
    d = Driver()
    w = d.connect()
    w.send(T.CAN_DO_TIMEOUT, b"f", b"1" * 21)
    code, _ = w.error()
    assert code == b"INVALID_PACKET"
    assert w.peer.abilities == {}


def test_work_status_without_separators_gets_error() -> None:
    d = Driver()
    c = d.client()
    w = d.worker(b"f")
    h = c.submit(b"f")
    w.take()
    w.send_body(T.WORK_STATUS, h + b"\0" + b"1")
    code, _ = w.error()
    assert code == b"INVALID_PACKET"
    c.none()
