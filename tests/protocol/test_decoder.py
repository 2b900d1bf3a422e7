"""The incremental Decoder: framing, chunking, limits and failure.

Wire bytes are written out by hand where it matters; the random tests build streams
with ``encode_body`` (itself checked byte for byte in test_encode.py).
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geartrain.protocol import (
    LAYOUT,
    REQ,
    RES,
    TEXT,
    Decoder,
    FramingError,
    PacketType,
    ProtocolError,
    decode_all,
    encode,
    encode_body,
)

T = PacketType

ECHO_HELLO = b"\x00REQ\x00\x00\x00\x10\x00\x00\x00\x05hello"
SUBMIT = b"\x00REQ\x00\x00\x00\x07\x00\x00\x00\x0dreverse\x00\x00test"
JOB_CREATED = b"\x00RES\x00\x00\x00\x08\x00\x00\x00\x06H:vm:1"
NOOP_REQ = b"\x00REQ\x00\x00\x00\x06\x00\x00\x00\x00"


def feed_all(decoder: Decoder, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def bytewise(stream: bytes, **limits: int) -> list[object]:
    return feed_all(Decoder(**limits), [stream[i : i + 1] for i in range(len(stream))])


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in zip(points, points[1:], strict=False)]


def only_error(frames: list[object]) -> FramingError:
    assert len(frames) >= 1
    err = frames[-1]
    assert isinstance(err, FramingError), frames
    assert not any(isinstance(f, FramingError) for f in frames[:-1])
    return err


# -- basics ---------------------------------------------------------------------------


def test_defaults() -> None:
    d = Decoder()
    assert d.max_packet_size == 64 << 20
    assert d.max_line == 8192
    assert d.buffered == 0
    assert d.failed is False
    assert TEXT == 0


def test_one_request_packet() -> None:
    frames = Decoder().feed(SUBMIT)
    assert frames == [(7, b"reverse\x00\x00test", REQ)]
    assert frames[0][2] is REQ


def test_one_response_packet() -> None:
    frames = Decoder().feed(JOB_CREATED)
    assert frames == [(8, b"H:vm:1", RES)]
    assert frames[0][2] is RES


def test_magic_is_the_module_constant_not_a_fresh_copy() -> None:
    # Build the stream from fresh objects so the decoder cannot be returning them.
    stream = bytes(bytearray(ECHO_HELLO)) + bytes(bytearray(JOB_CREATED))
    frames = Decoder().feed(stream)
    assert [f[0] for f in frames] == [16, 8]
    assert frames[0][2] is REQ
    assert frames[1][2] is RES
    # and also when the packet was assembled from several reads
    frames = bytewise(JOB_CREATED + ECHO_HELLO)
    assert frames[0][2] is RES
    assert frames[1][2] is REQ


def test_frame_parts_have_exact_types() -> None:
    (frame,) = Decoder().feed(SUBMIT)
    ptype, body, magic = frame
    assert type(ptype) is int
    assert type(body) is bytes
    assert type(magic) is bytes
    (line,) = Decoder().feed(b"status\n")
    assert line == (TEXT, b"status", None)
    assert type(line[1]) is bytes


def test_many_packets_in_one_read() -> None:
    stream = SUBMIT + NOOP_REQ + ECHO_HELLO + JOB_CREATED + NOOP_REQ
    d = Decoder()
    assert d.feed(stream) == [
        (7, b"reverse\x00\x00test", REQ),
        (6, b"", REQ),
        (16, b"hello", REQ),
        (8, b"H:vm:1", RES),
        (6, b"", REQ),
    ]
    assert d.buffered == 0


def test_thousand_packets_in_one_read() -> None:
    stream = b"".join(encode(T.WORK_DATA, b"H:1", str(i).encode(), magic=REQ) for i in range(1000))
    frames = Decoder().feed(stream)
    assert len(frames) == 1000
    assert frames[0] == (28, b"H:1\x000", REQ)
    assert frames[999] == (28, b"H:1\x00999", REQ)
    assert [f[1] for f in frames] == [b"H:1\x00" + str(i).encode() for i in range(1000)]


def test_partial_header_across_reads() -> None:
    d = Decoder()
    assert d.feed(SUBMIT[:1]) == []
    assert d.buffered == 1
    assert d.feed(SUBMIT[1:7]) == []
    assert d.buffered == 7
    assert d.feed(SUBMIT[7:11]) == []
    assert d.buffered == 11
    assert d.feed(SUBMIT[11:]) == [(7, b"reverse\x00\x00test", REQ)]
    assert d.buffered == 0


def test_partial_body_across_reads() -> None:
    d = Decoder()
    assert d.feed(SUBMIT[:12]) == []
    assert d.buffered == 12
    assert d.feed(SUBMIT[12:15]) == []
    assert d.buffered == 15
    assert d.feed(SUBMIT[15:24]) == []
    assert d.feed(SUBMIT[24:] + JOB_CREATED[:3]) == [(7, b"reverse\x00\x00test", REQ)]
    assert d.buffered == 3
    assert d.feed(JOB_CREATED[3:]) == [(8, b"H:vm:1", RES)]
    assert d.buffered == 0


def test_frame_comes_out_exactly_when_its_last_byte_arrives() -> None:
    d = Decoder()
    for i in range(len(SUBMIT) - 1):
        assert d.feed(SUBMIT[i : i + 1]) == []
        assert d.buffered == i + 1
    assert d.feed(SUBMIT[-1:]) == [(7, b"reverse\x00\x00test", REQ)]
    assert d.buffered == 0


@pytest.mark.parametrize("cut", range(1, len(SUBMIT + ECHO_HELLO)))
def test_every_single_split_point(cut: int) -> None:
    stream = SUBMIT + ECHO_HELLO
    assert feed_all(Decoder(), [stream[:cut], stream[cut:]]) == [
        (7, b"reverse\x00\x00test", REQ),
        (16, b"hello", REQ),
    ]


def test_empty_feeds_are_harmless() -> None:
    d = Decoder()
    assert d.feed(b"") == []
    assert d.feed(SUBMIT[:5]) == []
    assert d.feed(b"") == []
    assert d.buffered == 5
    assert d.feed(SUBMIT[5:]) == [(7, b"reverse\x00\x00test", REQ)]
    assert d.feed(b"") == []
    assert d.buffered == 0


def test_zero_length_body_packets() -> None:
    stream = (
        NOOP_REQ
        + b"\x00REQ\x00\x00\x00\x09\x00\x00\x00\x00"  # GRAB_JOB
        + b"\x00RES\x00\x00\x00\x0a\x00\x00\x00\x00"  # NO_JOB
        + b"\x00REQ\x00\x00\x00\x10\x00\x00\x00\x00"  # ECHO_REQ with empty data
    )
    expected = [(6, b"", REQ), (9, b"", REQ), (10, b"", RES), (16, b"", REQ)]
    assert Decoder().feed(stream) == expected
    assert bytewise(stream) == expected
    # a header-only packet is complete at its 12th byte
    d = Decoder()
    assert d.feed(NOOP_REQ[:11]) == []
    assert d.feed(NOOP_REQ[11:]) == [(6, b"", REQ)]
    assert d.buffered == 0


def test_unknown_and_out_of_range_types_are_still_framed() -> None:
    # Deciding what to do with them is the server's business, not the framer's.
    stream = (
        b"\x00REQ\x00\x00\x00\x00\x00\x00\x00\x01x"
        + b"\x00REQ\x00\x00\x00\x05\x00\x00\x00\x00"
        + b"\x00REQ\x00\x00\x00\x2b\x00\x00\x00\x02ab"
        + b"\x00REQ\xff\xff\xff\xff\x00\x00\x00\x00"
    )
    assert Decoder().feed(stream) == [(0, b"x", REQ), (5, b"", REQ), (43, b"ab", REQ), (0xFFFFFFFF, b"", REQ)]


def test_body_bytes_are_not_interpreted() -> None:
    # A body may contain NULs, newlines and things that look like headers.
    body = b"\x00REQ\x00\x00\x00\x06\x00\x00\x00\x00\nstatus\r\n\x00"
    stream = encode(T.ECHO_REQ, body, magic=REQ) + NOOP_REQ
    assert Decoder().feed(stream) == [(16, body, REQ), (6, b"", REQ)]
    assert bytewise(stream) == [(16, body, REQ), (6, b"", REQ)]


# -- text lines -----------------------------------------------------------------------


def test_mixed_binary_and_text_on_one_stream() -> None:
    stream = ECHO_HELLO + b"version\n" + SUBMIT + b"status\r\n" + JOB_CREATED + b"workers\n"
    expected = [
        (16, b"hello", REQ),
        (TEXT, b"version", None),
        (7, b"reverse\x00\x00test", REQ),
        (TEXT, b"status", None),
        (8, b"H:vm:1", RES),
        (TEXT, b"workers", None),
    ]
    assert Decoder().feed(stream) == expected
    assert bytewise(stream) == expected
    assert feed_all(Decoder(), split_at(stream, [3, 17, 20, 30, 31, 50])) == expected


def test_lf_and_crlf_lines() -> None:
    assert Decoder().feed(b"version\n") == [(TEXT, b"version", None)]
    assert Decoder().feed(b"version\r\n") == [(TEXT, b"version", None)]
    assert Decoder().feed(b"version\nstatus\r\nworkers\n") == [
        (TEXT, b"version", None),
        (TEXT, b"status", None),
        (TEXT, b"workers", None),
    ]


def test_empty_lines() -> None:
    assert Decoder().feed(b"\n") == [(TEXT, b"", None)]
    assert Decoder().feed(b"\r\n") == [(TEXT, b"", None)]
    assert Decoder().feed(b"\n\r\n\n") == [(TEXT, b"", None)] * 3
    assert bytewise(b"\r\n\n") == [(TEXT, b"", None)] * 2


def test_only_one_cr_right_before_the_lf_is_stripped() -> None:
    assert Decoder().feed(b"a\rb\n") == [(TEXT, b"a\rb", None)]
    assert Decoder().feed(b"a\r\r\n") == [(TEXT, b"a\r", None)]
    assert Decoder().feed(b"\r\r\n") == [(TEXT, b"\r", None)]
    assert Decoder().feed(b"a \n") == [(TEXT, b"a ", None)]
    assert Decoder().feed(b"\rstatus\n") == [(TEXT, b"\rstatus", None)]


def test_cr_and_lf_split_across_reads() -> None:
    d = Decoder()
    assert d.feed(b"status\r") == []
    assert d.buffered == 7
    assert d.feed(b"\n") == [(TEXT, b"status", None)]
    assert d.buffered == 0


def test_unterminated_line_is_kept_until_its_newline() -> None:
    d = Decoder()
    assert d.feed(b"vers") == []
    assert d.buffered == 4
    assert d.feed(b"ion") == []
    assert d.buffered == 7
    assert d.feed(b"\nsta") == [(TEXT, b"version", None)]
    assert d.buffered == 3
    assert d.feed(b"tus\n" + NOOP_REQ) == [(TEXT, b"status", None), (6, b"", REQ)]
    assert d.buffered == 0


def test_text_is_decided_by_first_byte_only() -> None:
    # NUL later in a line does not make it binary; "REQ" without the NUL is text.
    assert Decoder().feed(b"ab\x00cd\n") == [(TEXT, b"ab\x00cd", None)]
    assert Decoder().feed(b"REQ\x00\x00\x00\x06\n") == [(TEXT, b"REQ\x00\x00\x00\x06", None)]
    # Any non-NUL byte, even 0xff or a control character, starts a text line.
    assert Decoder().feed(b"\xff\x01\n\x01\n") == [(TEXT, b"\xff\x01", None), (TEXT, b"\x01", None)]


def test_text_line_right_after_a_packet_in_the_same_read() -> None:
    assert Decoder().feed(NOOP_REQ + b"version\n" + NOOP_REQ) == [
        (6, b"", REQ),
        (TEXT, b"version", None),
        (6, b"", REQ),
    ]


def test_pipelined_admin_commands() -> None:
    # Reference 2: 'version\nstatus\n' in one write is answered twice.
    assert Decoder().feed(b"version\nstatus\n") == [(TEXT, b"version", None), (TEXT, b"status", None)]


# -- limits on text lines -------------------------------------------------------------


def test_line_of_exactly_max_line_bytes_is_accepted() -> None:
    line = b"x" * 100
    assert Decoder(max_line=100).feed(line + b"\n") == [(TEXT, line, None)]
    assert Decoder(max_line=100).feed(line + b"\r\n") == [(TEXT, line, None)]
    assert bytewise(line + b"\n", max_line=100) == [(TEXT, line, None)]
    assert bytewise(line + b"\r\n", max_line=100) == [(TEXT, line, None)]
    d = Decoder(max_line=100)
    assert d.feed(line) == []
    assert d.feed(b"\r") == []
    assert d.feed(b"\n") == [(TEXT, line, None)]
    assert d.failed is False


def test_default_line_limit_is_8192() -> None:
    # Reference 2: the line must fit gearmand's 8192-byte buffer; 9000 bytes closes.
    line = b"s" * 8192
    assert Decoder().feed(line + b"\r\n") == [(TEXT, line, None)]
    err = only_error(Decoder().feed(b"s" * 9000 + b"\n"))
    assert err.code == b"ARGUMENT_TOO_LARGE"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_line_one_byte_too_long_fails(ending: bytes) -> None:
    d = Decoder(max_line=100)
    frames = d.feed(b"x" * 101 + ending)
    err = only_error(frames)
    assert frames == [err]
    assert err.code == b"ARGUMENT_TOO_LARGE"
    assert "100" in err.text
    assert d.failed is True
    assert d.buffered == 0
    err2 = only_error(bytewise(b"x" * 101 + ending, max_line=100))
    assert err2.code == b"ARGUMENT_TOO_LARGE"


def test_line_ending_in_two_crs_counts_the_first_cr() -> None:
    # "x"*99 + "\r" is 100 bytes of line, then CRLF: fits; one more x does not.
    assert Decoder(max_line=100).feed(b"x" * 99 + b"\r\r\n") == [(TEXT, b"x" * 99 + b"\r", None)]
    assert only_error(Decoder(max_line=100).feed(b"x" * 100 + b"\r\r\n")).code == b"ARGUMENT_TOO_LARGE"


def test_overlong_line_fails_before_its_newline_arrives() -> None:
    d = Decoder(max_line=100)
    assert d.feed(b"x" * 100) == []
    err = only_error(d.feed(b"x"))
    assert err.code == b"ARGUMENT_TOO_LARGE"
    assert d.feed(b"\n") == []


def test_overlong_line_never_buffers_more_than_the_limit() -> None:
    d = Decoder(max_line=1000)
    out: list[object] = []
    for _ in range(200):
        out.extend(d.feed(b"y" * 7))
        assert d.buffered <= 1001
    err = only_error(out)
    assert out == [err]
    assert err.code == b"ARGUMENT_TOO_LARGE"
    assert d.buffered == 0


def test_pending_cr_at_the_limit_waits_for_the_lf() -> None:
    d = Decoder(max_line=10)
    assert d.feed(b"0123456789\r") == []
    assert d.failed is False
    err = only_error(d.feed(b"x"))  # the CR was not a line ending after all
    assert err.code == b"ARGUMENT_TOO_LARGE"


def test_limit_applies_per_line_not_per_read() -> None:
    lines = [b"%03d" % i + b"z" * 6 for i in range(50)]  # 9-byte lines
    stream = b"".join(line + b"\r\n" for line in lines)
    assert Decoder(max_line=9).feed(stream) == [(TEXT, line, None) for line in lines]


# -- limits on packets ----------------------------------------------------------------


def test_body_of_exactly_max_packet_size_is_accepted() -> None:
    body = b"b" * 1000
    stream = encode(T.ECHO_REQ, body, magic=REQ)
    assert Decoder(max_packet_size=1000).feed(stream) == [(16, body, REQ)]
    d = Decoder(max_packet_size=1000)
    assert feed_all(d, split_at(stream, [12, 500])) == [(16, body, REQ)]
    assert d.failed is False


def test_oversized_header_fails_before_any_body_byte() -> None:
    d = Decoder(max_packet_size=1000)
    header = b"\x00REQ\x00\x00\x00\x10\x00\x00\x03\xe9"  # ECHO_REQ, 1001 bytes
    frames = d.feed(header)
    err = only_error(frames)
    assert frames == [err]
    assert err.code == b"ARGUMENT_TOO_LARGE"
    assert "ECHO_REQ" in err.text and "1001" in err.text and "1000" in err.text
    assert d.failed is True
    assert d.buffered == 0
    # The body keeps coming; none of it is kept.
    for _ in range(100):
        assert d.feed(b"\x00" * 10_000) == []
        assert d.buffered == 0


def test_oversized_header_fails_when_its_last_header_byte_arrives() -> None:
    d = Decoder(max_packet_size=10)
    header = b"\x00REQ\x00\x00\x00\x07\x00\x00\x00\x0b"
    for i in range(11):
        assert d.feed(header[i : i + 1]) == []
    err = only_error(d.feed(header[11:]))
    assert err.code == b"ARGUMENT_TOO_LARGE"
    assert d.buffered == 0


def test_four_gib_announcement_with_default_limit() -> None:
    # Reference 1.1: gearmand reallocs the announced size up front (memory DoS); we refuse.
    d = Decoder()
    err = only_error(d.feed(b"\x00REQ\x00\x00\x00\x10\xff\xff\xff\xff"))
    assert err.code == b"ARGUMENT_TOO_LARGE"
    assert d.feed(b"a" * 65536) == []
    assert d.buffered == 0


def test_oversized_packet_after_good_frames_in_the_same_read() -> None:
    d = Decoder(max_packet_size=100)
    frames = d.feed(NOOP_REQ + b"status\n" + encode(T.ECHO_REQ, b"e" * 101, magic=REQ) + NOOP_REQ)
    assert frames[:2] == [(6, b"", REQ), (TEXT, b"status", None)]
    assert len(frames) == 3
    assert only_error(frames).code == b"ARGUMENT_TOO_LARGE"


# -- bad magic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "magic",
    [b"\x00XYZ", b"\x00req", b"\x00REX", b"\x00\x00\x00\x00", b"\x00RE\x00", b"\x00SER", b"\x00QER"],
)
def test_bad_magic(magic: bytes) -> None:
    d = Decoder()
    frames = d.feed(magic + b"\x00\x00\x00\x06\x00\x00\x00\x00")
    err = only_error(frames)
    assert frames == [err]
    assert err.code == b"INVALID_MAGIC"
    assert repr(magic) in err.text
    assert d.failed is True
    assert d.buffered == 0


def test_bad_magic_spends_the_decoder() -> None:
    d = Decoder()
    err = only_error(d.feed(b"\x00XYZ\x00\x00\x00\x06\x00\x00\x00\x00" + NOOP_REQ + b"version\n"))
    assert err.code == b"INVALID_MAGIC"
    # Nothing after it, neither in that read nor in any later one.
    assert d.feed(NOOP_REQ) == []
    assert d.feed(b"version\n") == []
    assert d.feed(b"\x00XYZ\x00\x00\x00\x06\x00\x00\x00\x00") == []
    assert d.failed is True
    assert d.buffered == 0


def test_frames_before_bad_magic_are_returned_in_the_same_read() -> None:
    d = Decoder()
    frames = d.feed(SUBMIT + b"status\r\n" + b"\x00RXQ" + b"\x00" * 20)
    assert frames[:2] == [(7, b"reverse\x00\x00test", REQ), (TEXT, b"status", None)]
    assert len(frames) == 3
    assert only_error(frames).code == b"INVALID_MAGIC"


def test_frames_before_bad_magic_in_earlier_reads_stand() -> None:
    d = Decoder()
    assert d.feed(SUBMIT + b"\x00XY") == [(7, b"reverse\x00\x00test", REQ)]
    assert d.buffered == 3
    assert d.feed(b"Z\x00\x00") == []  # header not complete yet
    err = only_error(d.feed(b"\x00\x06\x00\x00\x00\x00"))
    assert err.code == b"INVALID_MAGIC"


def test_framing_error_is_a_protocol_error() -> None:
    err = only_error(Decoder().feed(b"\x00BAD" + b"\x00" * 8))
    assert isinstance(err, ProtocolError)
    assert isinstance(err, Exception)
    assert str(err) == err.text
    assert type(err.code) is bytes


# -- big packets: linear work, bounded buffer -----------------------------------------

TEN_MIB = 10 << 20
CHUNK = 64 << 10


@pytest.fixture(scope="module")
def big_stream() -> tuple[bytes, bytes]:
    body = bytes(range(256)) * (TEN_MIB // 256)
    assert len(body) == TEN_MIB
    return body, encode(T.SUBMIT_JOB, b"big", b"u1", body, magic=REQ)


def test_ten_mib_packet_in_64k_chunks(big_stream: tuple[bytes, bytes]) -> None:
    body, packet = big_stream
    stream = packet + NOOP_REQ
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    assert len(chunks) == 161
    d = Decoder()
    fed = 0
    for chunk in chunks[:-1]:
        assert d.feed(chunk) == []
        fed += len(chunk)
        # Everything fed so far is held once: no copy kept twice, nothing lost,
        # never more than one packet.
        assert d.buffered == fed
        assert d.buffered <= len(packet)
    frames = d.feed(chunks[-1])
    assert len(frames) == 2
    ptype, got, magic = frames[0]
    assert (ptype, magic) == (7, REQ)
    assert len(got) == len(packet) - 12
    assert got[:7] == b"big\x00u1\x00"
    assert got[7:] == body
    assert frames[1] == (6, b"", REQ)
    assert d.buffered == 0


def test_incomplete_feeds_do_not_copy_what_is_already_buffered(big_stream: tuple[bytes, bytes]) -> None:
    """Deterministic stand-in for "no quadratic work": memory allocated during a feed.

    A feed that does not complete the packet may append the new chunk (and let the
    buffer grow geometrically) but must not copy the buffered part; re-joining the
    whole buffer on every read is what makes a 10 MiB body cost O(n^2). tracemalloc
    counts allocations exactly, so this is not a timing assertion.
    """
    _, packet = big_stream
    chunks = [packet[i : i + CHUNK] for i in range(0, len(packet), CHUNK)]
    d = Decoder()
    worst = 0
    tracemalloc.start()
    try:
        for chunk in chunks[:-1]:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            assert d.feed(chunk) == []
            worst = max(worst, tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    assert d.buffered == len(packet) - len(chunks[-1])
    # A bytearray grows by about 1/8 of its size when it reallocates: at 10 MiB
    # that is ~1.3 MiB. A full copy of the buffer would be ~10 MiB.
    assert worst < len(packet) // 4
    frames = d.feed(chunks[-1])
    assert len(frames) == 1
    assert frames[0][1][7:] == big_stream[0]


def test_big_packet_fed_at_once_with_another_behind_it(big_stream: tuple[bytes, bytes]) -> None:
    body, packet = big_stream
    d = Decoder()
    frames = d.feed(packet + SUBMIT[:20])
    assert len(frames) == 1
    assert frames[0][1][7:] == body
    assert d.buffered == 20
    assert d.feed(SUBMIT[20:]) == [(7, b"reverse\x00\x00test", REQ)]


# -- random streams and random chunkings ----------------------------------------------

TYPES = sorted(LAYOUT) + [0, 5, 43, 1000]


@st.composite
def binary_frame(draw: st.DrawFn) -> tuple[bytes, tuple[int, bytes, bytes]]:
    ptype = draw(st.sampled_from(TYPES))
    magic = draw(st.sampled_from([REQ, RES]))
    body = draw(st.binary(max_size=300))
    return encode_body(ptype, body, magic), (ptype, body, magic)


@st.composite
def text_frame(draw: st.DrawFn) -> tuple[bytes, tuple[int, bytes, None]]:
    line = draw(st.binary(max_size=80)).replace(b"\n", b" ")
    if line[:1] == b"\x00":
        line = b"A" + line[1:]
    line = line.rstrip(b"\r")  # a trailing CR would be eaten as part of CRLF
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return line + ending, (TEXT, line, None)


frames_strategy = st.lists(st.one_of(binary_frame(), text_frame()), max_size=25)


def build(items: list[tuple[bytes, object]]) -> tuple[bytes, list[object]]:
    return b"".join(w for w, _ in items), [f for _, f in items]


@settings(max_examples=300, deadline=None)
@given(frames_strategy, st.data())
def test_random_stream_any_chunking(items: list[tuple[bytes, object]], data: st.DataObject) -> None:
    stream, expected = build(items)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    d = Decoder(max_packet_size=300, max_line=80)
    got = feed_all(d, split_at(stream, cuts))
    assert got == expected
    assert d.buffered == 0
    assert d.failed is False
    for frame in got:
        assert frame[2] is None or frame[2] is REQ or frame[2] is RES


@settings(max_examples=100, deadline=None)
@given(frames_strategy)
def test_random_stream_at_once_equals_byte_by_byte(items: list[tuple[bytes, object]]) -> None:
    stream, expected = build(items)
    assert Decoder().feed(stream) == expected
    assert bytewise(stream) == expected
    assert decode_all([stream]) == expected


@settings(max_examples=200, deadline=None)
@given(frames_strategy, st.sampled_from(["magic", "size", "line"]), st.data())
def test_random_stream_ending_in_a_framing_error(
    items: list[tuple[bytes, object]], kind: str, data: st.DataObject
) -> None:
    stream, expected = build(items)
    if kind == "magic":
        bad, code = b"\x00RQE\x00\x00\x00\x07\x00\x00\x00\x00", b"INVALID_MAGIC"
    elif kind == "size":
        bad, code = b"\x00REQ\x00\x00\x00\x10\x00\x00\x01\x2d" + b"q" * 301, b"ARGUMENT_TOO_LARGE"
    else:
        bad, code = b"L" * 81 + b"\n", b"ARGUMENT_TOO_LARGE"
    tail = data.draw(st.binary(max_size=50)) + NOOP_REQ
    whole = stream + bad + tail
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=30))
    d = Decoder(max_packet_size=300, max_line=80)
    got = feed_all(d, split_at(whole, cuts))
    assert got[:-1] == expected
    assert len(got) == len(expected) + 1
    assert only_error(got).code == code
    assert d.failed is True
    assert d.buffered == 0
    assert d.feed(NOOP_REQ + b"version\n") == []


@settings(max_examples=100, deadline=None)
@given(frames_strategy)
def test_buffered_counts_exactly_the_undelivered_bytes(items: list[tuple[bytes, object]]) -> None:
    stream, expected = build(items)
    d = Decoder()
    delivered = 0
    got: list[object] = []
    ends = []
    pos = 0
    for wire, _ in items:
        pos += len(wire)
        ends.append(pos)
    for i in range(len(stream)):
        got.extend(d.feed(stream[i : i + 1]))
        delivered = sum(1 for e in ends if e <= i + 1)
        assert len(got) == delivered
        start_of_pending = ends[delivered - 1] if delivered else 0
        assert d.buffered == i + 1 - start_of_pending
    assert got == expected


def test_decode_all_helper() -> None:
    assert decode_all([SUBMIT[:3], SUBMIT[3:], b"status\n"]) == [
        (7, b"reverse\x00\x00test", REQ),
        (TEXT, b"status", None),
    ]
    assert decode_all([b"x" * 11 + b"\n"], max_line=10)[0].code == b"ARGUMENT_TOO_LARGE"
    assert decode_all([]) == []


def test_framing_error_says_whether_it_broke_inside_a_text_line() -> None:
    (err,) = Decoder(max_line=16).feed(b"y" * 40)
    assert isinstance(err, FramingError) and err.in_text_line
    (err,) = Decoder().feed(b"\0XYZ" + b"\0" * 8)
    assert isinstance(err, FramingError) and not err.in_text_line
