"""The packet table in geartrain.protocol.packets, checked against the reference.

The expectations here are written out by hand from /work/shared/reference/gearmand.md
section 1.2 (which follows libgearman's ``command.cc``), not derived from the module
under test, so a wrong entry in ``LAYOUT`` or a missing type fails a test.
"""

from __future__ import annotations

import pytest

import geartrain.protocol as proto_pkg
from geartrain.protocol import codec, packets
from geartrain.protocol.packets import (
    HEADER_SIZE,
    LAYOUT,
    MAX_STANDARD_TYPE,
    REQ,
    REQUEST_TYPES,
    RES,
    RESPONSE_TYPES,
    PacketType,
    type_name,
)

# number -> (name, direction, body as in the reference table). Direction: "S" = to the
# server only, "C" = from the server only, "B" = both ways (the WORK_* packets).
# Bodies: "-" = empty; "x\0y\0data" = NUL-terminated args then opaque data;
# "x\0y(rem)" = last argument is the remainder of the body.
REFERENCE: dict[int, tuple[str, str, str]] = {
    1: ("CAN_DO", "S", "func(rem)"),
    2: ("CANT_DO", "S", "func(rem)"),
    3: ("RESET_ABILITIES", "S", "-"),
    4: ("PRE_SLEEP", "S", "-"),
    6: ("NOOP", "C", "-"),
    7: ("SUBMIT_JOB", "S", "func\0uniq\0data"),
    8: ("JOB_CREATED", "C", "handle(rem)"),
    9: ("GRAB_JOB", "S", "-"),
    10: ("NO_JOB", "C", "-"),
    11: ("JOB_ASSIGN", "C", "handle\0func\0data"),
    12: ("WORK_STATUS", "B", "handle\0num\0den(rem)"),
    13: ("WORK_COMPLETE", "B", "handle\0data"),
    14: ("WORK_FAIL", "B", "handle(rem)"),
    15: ("GET_STATUS", "S", "handle(rem)"),
    16: ("ECHO_REQ", "S", "data"),
    17: ("ECHO_RES", "C", "data"),
    18: ("SUBMIT_JOB_BG", "S", "func\0uniq\0data"),
    19: ("ERROR", "C", "code\0text(rem)"),
    20: ("STATUS_RES", "C", "handle\0known\0running\0num\0den(rem)"),
    21: ("SUBMIT_JOB_HIGH", "S", "func\0uniq\0data"),
    22: ("SET_CLIENT_ID", "S", "id(rem)"),
    23: ("CAN_DO_TIMEOUT", "S", "func\0ms(rem)"),
    24: ("ALL_YOURS", "S", "-"),
    25: ("WORK_EXCEPTION", "B", "handle\0data"),
    26: ("OPTION_REQ", "S", "name(rem)"),
    27: ("OPTION_RES", "C", "name(rem)"),
    28: ("WORK_DATA", "B", "handle\0data"),
    29: ("WORK_WARNING", "B", "handle\0data"),
    30: ("GRAB_JOB_UNIQ", "S", "-"),
    31: ("JOB_ASSIGN_UNIQ", "C", "handle\0func\0unique\0data"),
    32: ("SUBMIT_JOB_HIGH_BG", "S", "func\0uniq\0data"),
    33: ("SUBMIT_JOB_LOW", "S", "func\0uniq\0data"),
    34: ("SUBMIT_JOB_LOW_BG", "S", "func\0uniq\0data"),
    35: ("SUBMIT_JOB_SCHED", "S", "func\0uniq\0min\0hour\0mday\0mon\0wday\0data"),
    36: ("SUBMIT_JOB_EPOCH", "S", "func\0uniq\0epoch\0data"),
    37: ("SUBMIT_REDUCE_JOB", "S", "func\0uniq\0reducer\0aggregator\0data"),
    38: ("SUBMIT_REDUCE_JOB_BACKGROUND", "S", "func\0uniq\0reducer\0aggregator\0data"),
    39: ("GRAB_JOB_ALL", "S", "-"),
    40: ("JOB_ASSIGN_ALL", "C", "handle\0func\0unique\0reducer\0data"),
    41: ("GET_STATUS_UNIQUE", "S", "unique(rem)"),
    42: ("STATUS_RES_UNIQUE", "C", "unique\0known\0running\0num\0den\0client_count(rem)"),
}


def layout_from_reference(body: str) -> tuple[int, bool]:
    """(argument count, has data) for a reference body description."""
    if body == "-":
        return (0, False)
    fields = body.split("\0")
    if fields[-1] == "data":
        return (len(fields) - 1, True)
    assert fields[-1].endswith("(rem)"), body
    return (len(fields), False)


def test_magic_and_header_constants() -> None:
    assert REQ == b"\x00REQ"
    assert RES == b"\x00RES"
    assert len(REQ) == len(RES) == 4
    assert HEADER_SIZE == 12


EXTENSION = {100: "GET_RESULT", 101: "WAIT_RESULT", 102: "GET_RESULT_UNIQUE", 103: "RESULT_RES",
             104: "ATTACH_JOB", 105: "ATTACH_RES"}


def test_packet_type_numbers_and_names_match_reference() -> None:
    got = {int(t): t.name for t in PacketType if t <= MAX_STANDARD_TYPE}
    assert got == {n: name for n, (name, _, _) in REFERENCE.items()}


def test_extension_types_sit_apart_from_the_standard_ones() -> None:
    # docs/protocol-extensions.md: geartrain's own types start at 100
    assert {int(t): t.name for t in PacketType if t > MAX_STANDARD_TYPE} == EXTENSION


def test_five_was_never_assigned_and_42_is_the_highest() -> None:
    assert 5 not in {int(t) for t in PacketType}
    with pytest.raises(ValueError):
        PacketType(5)
    assert MAX_STANDARD_TYPE == 42
    assert max(t for t in PacketType if t < 100) == 42
    assert min(PacketType) == 1
    assert len(PacketType) == 41 + len(EXTENSION)


def test_packet_type_is_an_int() -> None:
    assert PacketType.SUBMIT_JOB == 7
    assert PacketType(37) is PacketType.SUBMIT_REDUCE_JOB
    assert PacketType["STATUS_RES_UNIQUE"] == 42
    # Usable as a plain int, e.g. as a key in dicts keyed by the raw wire number.
    assert {7: "x"}[PacketType.SUBMIT_JOB] == "x"


def test_layout_covers_every_type_and_nothing_else() -> None:
    assert set(LAYOUT) == {int(t) for t in PacketType}
    assert 0 not in LAYOUT
    assert 5 not in LAYOUT
    assert 43 not in LAYOUT


@pytest.mark.parametrize("number", sorted(REFERENCE), ids=lambda n: REFERENCE[n][0])
def test_layout_matches_reference(number: int) -> None:
    assert LAYOUT[number] == layout_from_reference(REFERENCE[number][2])


def test_layout_spot_checks() -> None:
    # The ones real clients get wrong or the PROTOCOL document states differently.
    assert LAYOUT[PacketType.SUBMIT_REDUCE_JOB] == (4, True)
    assert LAYOUT[PacketType.SUBMIT_REDUCE_JOB_BACKGROUND] == (4, True)
    assert LAYOUT[PacketType.STATUS_RES_UNIQUE] == (6, False)
    assert LAYOUT[PacketType.SUBMIT_JOB_SCHED] == (7, True)
    assert LAYOUT[PacketType.SUBMIT_JOB_EPOCH] == (3, True)
    assert LAYOUT[PacketType.JOB_ASSIGN_ALL] == (4, True)
    assert LAYOUT[PacketType.ECHO_REQ] == (0, True)
    assert LAYOUT[PacketType.WORK_STATUS] == (3, False)
    assert LAYOUT[PacketType.WORK_FAIL] == (1, False)
    assert LAYOUT[PacketType.ERROR] == (2, False)
    assert LAYOUT[PacketType.CAN_DO_TIMEOUT] == (2, False)


def test_request_types_match_reference_direction() -> None:
    expected = {n for n, (_, d, _) in REFERENCE.items() if d in "SB"}
    assert set(REQUEST_TYPES) == expected | {100, 101, 102, 104}
    assert len(REQUEST_TYPES) == 30 + 4


def test_response_types_match_reference_direction() -> None:
    expected = {n for n, (_, d, _) in REFERENCE.items() if d in "CB"}
    assert set(RESPONSE_TYPES) == expected | {103, 105}
    assert len(RESPONSE_TYPES) == 17 + 2


def test_request_and_response_types_overlap_only_in_work_packets() -> None:
    assert REQUEST_TYPES & RESPONSE_TYPES == {12, 13, 14, 25, 28, 29}
    assert REQUEST_TYPES | RESPONSE_TYPES == set(LAYOUT)


def test_types_clients_may_not_send_are_not_requests() -> None:
    # Reference 1.3: the server answers these with INVALID_COMMAND because they are
    # server-to-client packets.
    for name in [
        "NOOP", "JOB_CREATED", "NO_JOB", "JOB_ASSIGN", "JOB_ASSIGN_UNIQ", "JOB_ASSIGN_ALL",
        "ECHO_RES", "ERROR", "STATUS_RES", "STATUS_RES_UNIQUE", "OPTION_RES",
    ]:
        assert PacketType[name] not in REQUEST_TYPES, name


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (1, "CAN_DO"),
        (7, "SUBMIT_JOB"),
        (37, "SUBMIT_REDUCE_JOB"),
        (42, "STATUS_RES_UNIQUE"),
        (PacketType.ECHO_REQ, "ECHO_REQ"),
        (0, "UNKNOWN_0"),
        (5, "UNKNOWN_5"),
        (43, "UNKNOWN_43"),
        (0xFFFFFFFF, "UNKNOWN_4294967295"),
    ],
)
def test_type_name(number: int, name: str) -> None:
    assert type_name(number) == name


def test_type_name_for_every_type() -> None:
    for number, (name, _, _) in REFERENCE.items():
        assert type_name(number) == name


def test_package_reexports_the_same_objects() -> None:
    assert proto_pkg.REQ is packets.REQ
    assert proto_pkg.RES is packets.RES
    assert proto_pkg.LAYOUT is packets.LAYOUT
    assert proto_pkg.PacketType is packets.PacketType
    assert proto_pkg.Decoder is codec.Decoder
    assert proto_pkg.encode is codec.encode
    assert proto_pkg.parse_args is codec.parse_args
    assert proto_pkg.TEXT == codec.TEXT == 0
    assert sorted(proto_pkg.__all__) == sorted(set(proto_pkg.__all__))
    for name in proto_pkg.__all__:
        assert hasattr(proto_pkg, name), name
