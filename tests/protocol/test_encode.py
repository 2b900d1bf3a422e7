"""encode / encode_body / parse_args against hand-written wire bytes.

Expected bytes are spelled out literally (header included) rather than computed with
struct, so a wrong byte order, length or separator in the encoder fails here.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geartrain.protocol import (
    LAYOUT,
    REQ,
    RES,
    ArgumentError,
    Decoder,
    FramingError,
    PacketType,
    ProtocolError,
    encode,
    encode_body,
    parse_args,
)

T = PacketType

# type -> (arguments as a real client, worker or server sends them, the body they make).
# The body is written out by hand, not joined from the arguments.
SAMPLES: dict[int, tuple[tuple[bytes, ...], bytes]] = {
    T.CAN_DO: ((b"reverse",), b"reverse"),
    T.CANT_DO: ((b"reverse",), b"reverse"),
    T.RESET_ABILITIES: ((), b""),
    T.PRE_SLEEP: ((), b""),
    T.NOOP: ((), b""),
    T.SUBMIT_JOB: ((b"reverse", b"", b"test"), b"reverse\x00\x00test"),
    T.JOB_CREATED: ((b"H:vm:1",), b"H:vm:1"),
    T.GRAB_JOB: ((), b""),
    T.NO_JOB: ((), b""),
    T.JOB_ASSIGN: ((b"H:vm:1", b"reverse", b"test"), b"H:vm:1\x00reverse\x00test"),
    T.WORK_STATUS: ((b"H:vm:1", b"1", b"4"), b"H:vm:1\x001\x004"),
    T.WORK_COMPLETE: ((b"H:vm:1", b"tset"), b"H:vm:1\x00tset"),
    T.WORK_FAIL: ((b"H:vm:1",), b"H:vm:1"),
    T.GET_STATUS: ((b"H:vm:1",), b"H:vm:1"),
    T.ECHO_REQ: ((b"ping",), b"ping"),
    T.ECHO_RES: ((b"ping",), b"ping"),
    T.SUBMIT_JOB_BG: ((b"fn", b"u1", b"payload"), b"fn\x00u1\x00payload"),
    T.ERROR: ((b"INVALID_COMMAND", b"Command not expected"), b"INVALID_COMMAND\x00Command not expected"),
    T.STATUS_RES: ((b"H:vm:1", b"1", b"1", b"1", b"4"), b"H:vm:1\x001\x001\x001\x004"),
    T.SUBMIT_JOB_HIGH: ((b"fn", b"", b"x"), b"fn\x00\x00x"),
    T.SET_CLIENT_ID: ((b"worker-1",), b"worker-1"),
    T.CAN_DO_TIMEOUT: ((b"reverse", b"1500"), b"reverse\x001500"),
    T.ALL_YOURS: ((), b""),
    T.WORK_EXCEPTION: ((b"H:vm:3", b"boom"), b"H:vm:3\x00boom"),
    T.OPTION_REQ: ((b"exceptions",), b"exceptions"),
    T.OPTION_RES: ((b"exceptions",), b"exceptions"),
    T.WORK_DATA: ((b"H:vm:1", b"partial"), b"H:vm:1\x00partial"),
    T.WORK_WARNING: ((b"H:vm:1", b"warn!"), b"H:vm:1\x00warn!"),
    T.GRAB_JOB_UNIQ: ((), b""),
    T.JOB_ASSIGN_UNIQ: ((b"H:vm:2", b"fn", b"uq", b"d"), b"H:vm:2\x00fn\x00uq\x00d"),
    T.SUBMIT_JOB_HIGH_BG: ((b"fn", b"u", b"d"), b"fn\x00u\x00d"),
    T.SUBMIT_JOB_LOW: ((b"fn", b"u", b"d"), b"fn\x00u\x00d"),
    T.SUBMIT_JOB_LOW_BG: ((b"fn", b"u", b"d"), b"fn\x00u\x00d"),
    T.SUBMIT_JOB_SCHED: (
        (b"fn", b"u", b"30", b"2", b"*", b"*", b"1", b"d"),
        b"fn\x00u\x0030\x002\x00*\x00*\x001\x00d",
    ),
    T.SUBMIT_JOB_EPOCH: ((b"fn", b"u", b"1700000000", b"d"), b"fn\x00u\x001700000000\x00d"),
    T.SUBMIT_REDUCE_JOB: (
        (b"count", b"u7", b"sum", b"", b"a b c"),
        b"count\x00u7\x00sum\x00\x00a b c",
    ),
    T.SUBMIT_REDUCE_JOB_BACKGROUND: (
        (b"count", b"u8", b"sum", b"", b"x"),
        b"count\x00u8\x00sum\x00\x00x",
    ),
    T.GRAB_JOB_ALL: ((), b""),
    T.JOB_ASSIGN_ALL: (
        (b"H:vm:4", b"count", b"u7", b"sum", b"a b c"),
        b"H:vm:4\x00count\x00u7\x00sum\x00a b c",
    ),
    T.GET_STATUS_UNIQUE: ((b"uq",), b"uq"),
    T.STATUS_RES_UNIQUE: (
        (b"uq", b"1", b"1", b"0", b"0", b"2"),
        b"uq\x001\x001\x000\x000\x002",
    ),
    # geartrain's extension (docs/protocol-extensions.md)
    T.GET_RESULT: ((b"H:h:1",), b"H:h:1"),
    T.WAIT_RESULT: ((b"H:h:1",), b"H:h:1"),
    T.GET_RESULT_UNIQUE: ((b"reverse", b"u1"), b"reverse\x00u1"),
    T.RESULT_RES: ((b"H:h:1", b"completed", b'{"a":\x00}'), b'H:h:1\x00completed\x00{"a":\x00}'),
    T.ATTACH_JOB: ((b"H:h:1",), b"H:h:1"),
    T.ATTACH_RES: ((b"H:h:1", b"running"), b"H:h:1\x00running"),
}

ALL_TYPES = sorted(SAMPLES)


def name_of(t: int) -> str:
    return PacketType(t).name


def test_samples_cover_every_packet_type() -> None:
    assert set(SAMPLES) == {int(t) for t in PacketType}
    assert len(SAMPLES) == 41 + 6  # the standard types, then the extension's


# -- exact wire bytes, header included -------------------------------------------------


@pytest.mark.parametrize(
    ("ptype", "args", "magic", "wire"),
    [
        # Reference 1.3, verified against gearmand: NOOP sent as a request ...
        (T.NOOP, (), REQ, b"\x00REQ\x00\x00\x00\x06\x00\x00\x00\x00"),
        # ... and the ERROR packet it gets back: 00 52 45 53 | 00 00 00 13 | 00 00 00 24.
        (
            T.ERROR,
            (b"INVALID_COMMAND", b"Command not expected"),
            RES,
            b"\x00RES\x00\x00\x00\x13\x00\x00\x00\x24INVALID_COMMAND\x00Command not expected",
        ),
        (T.JOB_CREATED, (b"H:vm:1",), RES, b"\x00RES\x00\x00\x00\x08\x00\x00\x00\x06H:vm:1"),
        (T.CAN_DO, (b"reverse",), REQ, b"\x00REQ\x00\x00\x00\x01\x00\x00\x00\x07reverse"),
        (T.GRAB_JOB, (), REQ, b"\x00REQ\x00\x00\x00\x09\x00\x00\x00\x00"),
        (T.NO_JOB, (), RES, b"\x00RES\x00\x00\x00\x0a\x00\x00\x00\x00"),
        (
            T.SUBMIT_JOB,
            (b"reverse", b"", b"test"),
            REQ,
            b"\x00REQ\x00\x00\x00\x07\x00\x00\x00\x0dreverse\x00\x00test",
        ),
        (
            T.JOB_ASSIGN,
            (b"H:vm:1", b"reverse", b"test"),
            RES,
            b"\x00RES\x00\x00\x00\x0b\x00\x00\x00\x13H:vm:1\x00reverse\x00test",
        ),
        (
            T.WORK_STATUS,
            (b"H:vm:1", b"1", b"4"),
            REQ,
            b"\x00REQ\x00\x00\x00\x0c\x00\x00\x00\x0aH:vm:1\x001\x004",
        ),
        (T.ECHO_REQ, (b"",), REQ, b"\x00REQ\x00\x00\x00\x10\x00\x00\x00\x00"),
        (T.ECHO_RES, (b"\x00\x00",), RES, b"\x00RES\x00\x00\x00\x11\x00\x00\x00\x02\x00\x00"),
        (
            T.SUBMIT_REDUCE_JOB,
            (b"f", b"u", b"r", b"", b"data"),
            REQ,
            b"\x00REQ\x00\x00\x00\x25\x00\x00\x00\x0bf\x00u\x00r\x00\x00data",
        ),
        (
            T.STATUS_RES_UNIQUE,
            (b"uq", b"1", b"1", b"0", b"0", b"2"),
            RES,
            b"\x00RES\x00\x00\x00\x2a\x00\x00\x00\x0cuq\x001\x001\x000\x000\x002",
        ),
        (
            T.SUBMIT_JOB_EPOCH,
            (b"f", b"", b"1700000000", b"d"),
            REQ,
            b"\x00REQ\x00\x00\x00\x24\x00\x00\x00\x0ff\x00\x001700000000\x00d",
        ),
        (
            T.CAN_DO_TIMEOUT,
            (b"f", b"1000"),
            REQ,
            b"\x00REQ\x00\x00\x00\x17\x00\x00\x00\x06f\x001000",
        ),
    ],
    ids=lambda v: v.name if isinstance(v, PacketType) else None,
)
def test_exact_wire_bytes(ptype: int, args: tuple[bytes, ...], magic: bytes, wire: bytes) -> None:
    assert encode(ptype, *args, magic=magic) == wire


def test_length_is_big_endian_across_all_four_bytes() -> None:
    body = b"d" * 0x010203
    wire = encode(T.ECHO_REQ, body, magic=REQ)
    assert wire[:12] == b"\x00REQ\x00\x00\x00\x10\x00\x01\x02\x03"
    assert wire[12:] == body
    assert len(wire) == 12 + 66051


def test_type_is_big_endian_across_all_four_bytes() -> None:
    assert encode_body(0x01020304, b"") == b"\x00RES\x01\x02\x03\x04\x00\x00\x00\x00"
    assert encode_body(0xFFFFFFFF, b"x", REQ) == b"\x00REQ\xff\xff\xff\xff\x00\x00\x00\x01x"


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
@pytest.mark.parametrize("magic", [REQ, RES], ids=["REQ", "RES"])
def test_every_type_encodes_to_header_plus_body(ptype: int, magic: bytes) -> None:
    args, body = SAMPLES[ptype]
    wire = encode(ptype, *args, magic=magic)
    header = magic + bytes([0, 0, 0, ptype]) + len(body).to_bytes(4, "big")
    assert wire == header + body


def test_default_magic_is_res() -> None:
    assert encode(T.NOOP) == b"\x00RES\x00\x00\x00\x06\x00\x00\x00\x00"
    assert encode(T.NOOP)[:4] == RES
    assert encode_body(T.NOOP, b"") == b"\x00RES\x00\x00\x00\x06\x00\x00\x00\x00"


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
def test_encode_body_matches_encode(ptype: int) -> None:
    args, body = SAMPLES[ptype]
    assert encode_body(ptype, body) == encode(ptype, *args)
    assert encode_body(ptype, body, REQ) == encode(ptype, *args, magic=REQ)


def test_encode_body_does_not_touch_the_body() -> None:
    # No layout checks: any body, any type.
    assert encode_body(T.SUBMIT_JOB, b"nonul", REQ) == b"\x00REQ\x00\x00\x00\x07\x00\x00\x00\x05nonul"


# -- parse_args -----------------------------------------------------------------------


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
def test_parse_sample_body(ptype: int) -> None:
    args, body = SAMPLES[ptype]
    assert parse_args(ptype, body) == list(args)


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
def test_parse_args_returns_as_many_arguments_as_the_layout(ptype: int) -> None:
    nargs, has_data = LAYOUT[ptype]
    _, body = SAMPLES[ptype]
    assert len(parse_args(ptype, body)) == nargs + (1 if has_data else 0)


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
def test_encode_then_decode_then_parse(ptype: int) -> None:
    args, _ = SAMPLES[ptype]
    frames = Decoder().feed(encode(ptype, *args, magic=REQ))
    assert len(frames) == 1
    frame = frames[0]
    assert not isinstance(frame, FramingError)
    got_type, body, magic = frame
    assert (got_type, magic) == (ptype, REQ)
    assert parse_args(got_type, body) == list(args)


def test_data_arguments_keep_their_nul_bytes() -> None:
    data = b"\x00a\x00\x00b\x00"
    assert parse_args(T.SUBMIT_JOB, encode(T.SUBMIT_JOB, b"f", b"u", data)[12:]) == [b"f", b"u", data]
    assert parse_args(T.ECHO_REQ, b"\x00") == [b"\x00"]
    assert parse_args(T.ECHO_RES, b"\x00\x00\x00") == [b"\x00\x00\x00"]
    assert parse_args(T.WORK_COMPLETE, b"H:1\x00\x00\x00") == [b"H:1", b"\x00\x00"]
    assert parse_args(T.JOB_ASSIGN_ALL, b"h\x00f\x00u\x00r\x00a\x00b") == [b"h", b"f", b"u", b"r", b"a\x00b"]
    assert parse_args(T.SUBMIT_JOB_SCHED, b"f\x00u\x001\x002\x003\x004\x005\x00\x00d\x00") == [
        b"f", b"u", b"1", b"2", b"3", b"4", b"5", b"\x00d\x00",
    ]


def test_empty_data_is_an_empty_last_argument() -> None:
    assert parse_args(T.SUBMIT_JOB, b"f\x00u\x00") == [b"f", b"u", b""]
    assert parse_args(T.SUBMIT_JOB, b"\x00\x00") == [b"", b"", b""]
    assert parse_args(T.ECHO_REQ, b"") == [b""]
    assert parse_args(T.WORK_DATA, b"H:1\x00") == [b"H:1", b""]
    wire = encode(T.SUBMIT_JOB, b"", b"", b"", magic=REQ)
    assert wire == b"\x00REQ\x00\x00\x00\x07\x00\x00\x00\x02\x00\x00"


def test_trailing_nul_is_part_of_the_last_non_data_argument() -> None:
    # Reference 1.1: CAN_DO "f\0" registers the function "f\0".
    assert parse_args(T.CAN_DO, b"f\x00") == [b"f\x00"]
    # Reference 1.2 (#108): WORK_FAIL "handle\0" as gearmand sends it for exceptions.
    assert parse_args(T.WORK_FAIL, b"H:vm:1\x00") == [b"H:vm:1\x00"]
    assert parse_args(T.WORK_STATUS, b"H:1\x001\x004\x00") == [b"H:1", b"1", b"4\x00"]
    assert parse_args(T.ERROR, b"CODE\x00text\x00more") == [b"CODE", b"text\x00more"]
    assert parse_args(T.STATUS_RES_UNIQUE, b"u\x001\x000\x000\x000\x000\x00\x00") == [
        b"u", b"1", b"0", b"0", b"0", b"0\x00\x00",
    ]
    assert parse_args(T.CAN_DO, b"") == [b""]
    assert parse_args(T.CAN_DO, b"\x00") == [b"\x00"]
    assert encode(T.CAN_DO, b"f\x00", magic=REQ) == b"\x00REQ\x00\x00\x00\x01\x00\x00\x00\x02f\x00"


def test_zero_argument_types_parse_to_an_empty_list() -> None:
    for ptype in (T.NOOP, T.GRAB_JOB, T.NO_JOB, T.PRE_SLEEP, T.RESET_ABILITIES, T.ALL_YOURS,
                  T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL):
        assert parse_args(ptype, b"") == []


@pytest.mark.parametrize(
    ("ptype", "body"),
    [
        (T.SUBMIT_JOB, b"nonul"),  # reference 1.1: gearmand stalls on this one
        (T.SUBMIT_JOB, b"f\x00u"),  # data separator missing
        (T.SUBMIT_JOB, b""),
        (T.SUBMIT_JOB_BG, b"f"),
        (T.JOB_ASSIGN, b"h\x00f"),
        (T.WORK_COMPLETE, b"H:vm:1"),
        (T.WORK_DATA, b""),
        (T.WORK_EXCEPTION, b"h"),
        (T.JOB_ASSIGN_UNIQ, b"h\x00f\x00u"),
        (T.SUBMIT_JOB_EPOCH, b"f\x00u\x00123"),
        (T.SUBMIT_JOB_SCHED, b"f\x00u\x001\x002\x003\x004\x005"),
        # The three-field form from the PROTOCOL document (reference 1.2, #37).
        (T.SUBMIT_REDUCE_JOB, b"f\x00u\x00r\x00data"),
        (T.SUBMIT_REDUCE_JOB_BACKGROUND, b"f\x00u\x00r\x00"),
        (T.JOB_ASSIGN_ALL, b"h\x00f\x00u\x00r"),
        (T.WORK_STATUS, b"h\x001"),
        (T.WORK_STATUS, b"h"),
        (T.ERROR, b"CODE"),
        (T.STATUS_RES, b"h\x001\x001\x001"),
        (T.CAN_DO_TIMEOUT, b"reverse"),
        (T.STATUS_RES_UNIQUE, b"u\x001\x001\x000\x000"),
        (T.STATUS_RES_UNIQUE, b""),
    ],
    ids=lambda v: v.name if isinstance(v, PacketType) else repr(v),
)
def test_missing_separator_raises_argument_error(ptype: int, body: bytes) -> None:
    with pytest.raises(ArgumentError) as info:
        parse_args(ptype, body)
    assert isinstance(info.value, ProtocolError)
    assert not isinstance(info.value, FramingError)
    assert PacketType(ptype).name in str(info.value)


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
def test_one_separator_short_raises_for_every_type_that_has_separators(ptype: int) -> None:
    nargs, has_data = LAYOUT[ptype]
    separators = nargs if has_data else max(nargs - 1, 0)
    if separators == 0:
        # Nothing can be missing: any body is a valid single argument (or none).
        assert parse_args(ptype, b"a\x00b") == ([b"a\x00b"] if nargs or has_data else [])
        return
    short = b"\x00".join([b"x"] * separators)  # one argument, and so one separator, short
    assert short.count(b"\x00") == separators - 1
    with pytest.raises(ArgumentError):
        parse_args(ptype, short)
    assert len(parse_args(ptype, short + b"\x00")) == nargs + (1 if has_data else 0)


@pytest.mark.parametrize("ptype", [0, 5, 43, 99, 0xFFFFFFFF])
def test_unknown_types_parse_to_the_whole_body(ptype: int) -> None:
    assert parse_args(ptype, b"a\x00b\x00") == [b"a\x00b\x00"]
    assert parse_args(ptype, b"") == [b""]


@pytest.mark.parametrize("ptype", [0, 5, 43, 1000])
def test_unknown_types_encode_any_arguments(ptype: int) -> None:
    assert encode(ptype) == b"\x00RES" + ptype.to_bytes(4, "big") + b"\x00\x00\x00\x00"
    wire = encode(ptype, b"a", b"b", magic=REQ)
    assert wire == b"\x00REQ" + ptype.to_bytes(4, "big") + b"\x00\x00\x00\x03a\x00b"


# -- wrong argument counts ------------------------------------------------------------


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
def test_wrong_argument_count_raises_value_error(ptype: int) -> None:
    nargs, has_data = LAYOUT[ptype]
    want = nargs + (1 if has_data else 0)
    with pytest.raises(ValueError, match=PacketType(ptype).name):
        encode(ptype, *([b"x"] * (want + 1)))
    if want > 0:
        with pytest.raises(ValueError, match=f"takes {want} arguments, got {want - 1}"):
            encode(ptype, *([b"x"] * (want - 1)))
    # and the right count works
    assert len(encode(ptype, *([b"x"] * want))) == 12 + max(2 * want - 1, 0)


def test_wrong_argument_count_examples() -> None:
    with pytest.raises(ValueError):
        encode(T.SUBMIT_JOB, b"f", b"data")  # unique forgotten
    with pytest.raises(ValueError):
        encode(T.SUBMIT_REDUCE_JOB, b"f", b"u", b"r", b"data")  # aggregator forgotten
    with pytest.raises(ValueError):
        encode(T.NOOP, b"")
    with pytest.raises(ValueError):
        encode(T.ECHO_REQ)
    with pytest.raises(ValueError):
        encode(T.STATUS_RES_UNIQUE, b"u", b"1", b"1", b"0", b"0")


# -- round trips over arbitrary arguments ---------------------------------------------

no_nul = st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"."))
anything = st.binary(max_size=200)


@st.composite
def packet_args(draw: st.DrawFn, ptype: int) -> tuple[bytes, ...]:
    """Arguments a well-formed packet of *ptype* can carry."""
    nargs, has_data = LAYOUT[ptype]
    if has_data:
        return tuple(draw(st.lists(no_nul, min_size=nargs, max_size=nargs))) + (draw(anything),)
    if nargs == 0:
        return ()
    # Only the last (remainder) argument may contain NULs.
    return tuple(draw(st.lists(no_nul, min_size=nargs - 1, max_size=nargs - 1))) + (draw(anything),)


@st.composite
def any_packet(draw: st.DrawFn) -> tuple[int, tuple[bytes, ...]]:
    ptype = draw(st.sampled_from(ALL_TYPES))
    return ptype, draw(packet_args(ptype))


@settings(max_examples=600, deadline=None)
@given(any_packet(), st.sampled_from([REQ, RES]))
def test_round_trip_any_arguments(packet: tuple[int, tuple[bytes, ...]], magic: bytes) -> None:
    ptype, args = packet
    wire = encode(ptype, *args, magic=magic)
    body = b"\x00".join(args)
    assert wire[:4] == magic
    assert int.from_bytes(wire[4:8], "big") == ptype
    assert int.from_bytes(wire[8:12], "big") == len(body) == len(wire) - 12
    assert wire[12:] == body
    assert parse_args(ptype, wire[12:]) == list(args)


@pytest.mark.parametrize("ptype", ALL_TYPES, ids=name_of)
def test_round_trip_every_type_with_nul_heavy_last_argument(ptype: int) -> None:
    nargs, has_data = LAYOUT[ptype]
    want = nargs + (1 if has_data else 0)
    if want == 0:
        assert parse_args(ptype, encode(ptype)[12:]) == []
        return
    args = tuple(f"a{i}".encode() for i in range(want - 1)) + (b"\x00\x00x\x00",)
    assert parse_args(ptype, encode(ptype, *args)[12:]) == list(args)
    empty = (b"",) * want
    assert parse_args(ptype, encode(ptype, *empty)[12:]) == list(empty)
