"""Gearman binary packet types and their argument layouts.

Every packet is a 12-byte header -- a 4-byte magic (``\\0REQ`` towards the
server, ``\\0RES`` from it), a big-endian uint32 type and a big-endian uint32
body length -- followed by the body. The body is a list of NUL-separated
arguments. :data:`LAYOUT` says, per type, how many arguments there are and
whether the last one is opaque *data* (which may itself contain NUL bytes):

* ``(n, True)``: ``n`` NUL-terminated arguments, then data to the end;
* ``(n, False)``: ``n`` arguments, the last one running to the end of the
  body without a terminating NUL (a trailing NUL is part of its value).

The layouts are those of libgearman's ``command.cc``, which is what real
clients send, not always what the ``PROTOCOL`` document says (for example
SUBMIT_REDUCE_JOB has four NUL-terminated fields before its data).
"""

from __future__ import annotations

import enum
from typing import Final

REQ: Final = b"\0REQ"
RES: Final = b"\0RES"
HEADER_SIZE: Final = 12


class PacketType(enum.IntEnum):
    """Packet type numbers, in Gearman's own names."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    # 5 was never assigned
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42
    # geartrain's extension (docs/protocol-extensions.md): only after the
    # client sent OPTION_REQ "results"; to anyone else these are unknown types
    GET_RESULT = 100
    WAIT_RESULT = 101
    GET_RESULT_UNIQUE = 102
    RESULT_RES = 103
    ATTACH_JOB = 104
    ATTACH_RES = 105


#: Highest packet type of the standard protocol.
MAX_STANDARD_TYPE: Final = 42
#: The option a client sends (OPTION_REQ) before it may use the extension types.
RESULTS_OPTION: Final = b"results"

_T = PacketType
#: type -> (number of arguments, last argument is opaque data)
LAYOUT: Final[dict[int, tuple[int, bool]]] = {
    _T.CAN_DO: (1, False),
    _T.CANT_DO: (1, False),
    _T.RESET_ABILITIES: (0, False),
    _T.PRE_SLEEP: (0, False),
    _T.NOOP: (0, False),
    _T.SUBMIT_JOB: (2, True),
    _T.JOB_CREATED: (1, False),
    _T.GRAB_JOB: (0, False),
    _T.NO_JOB: (0, False),
    _T.JOB_ASSIGN: (2, True),
    _T.WORK_STATUS: (3, False),
    _T.WORK_COMPLETE: (1, True),
    _T.WORK_FAIL: (1, False),
    _T.GET_STATUS: (1, False),
    _T.ECHO_REQ: (0, True),
    _T.ECHO_RES: (0, True),
    _T.SUBMIT_JOB_BG: (2, True),
    _T.ERROR: (2, False),
    _T.STATUS_RES: (5, False),
    _T.SUBMIT_JOB_HIGH: (2, True),
    _T.SET_CLIENT_ID: (1, False),
    _T.CAN_DO_TIMEOUT: (2, False),
    _T.ALL_YOURS: (0, False),
    _T.WORK_EXCEPTION: (1, True),
    _T.OPTION_REQ: (1, False),
    _T.OPTION_RES: (1, False),
    _T.WORK_DATA: (1, True),
    _T.WORK_WARNING: (1, True),
    _T.GRAB_JOB_UNIQ: (0, False),
    _T.JOB_ASSIGN_UNIQ: (3, True),
    _T.SUBMIT_JOB_HIGH_BG: (2, True),
    _T.SUBMIT_JOB_LOW: (2, True),
    _T.SUBMIT_JOB_LOW_BG: (2, True),
    _T.SUBMIT_JOB_SCHED: (7, True),
    _T.SUBMIT_JOB_EPOCH: (3, True),
    _T.SUBMIT_REDUCE_JOB: (4, True),
    _T.SUBMIT_REDUCE_JOB_BACKGROUND: (4, True),
    _T.GRAB_JOB_ALL: (0, False),
    _T.JOB_ASSIGN_ALL: (4, True),
    _T.GET_STATUS_UNIQUE: (1, False),
    _T.STATUS_RES_UNIQUE: (6, False),
    _T.GET_RESULT: (1, False),
    _T.WAIT_RESULT: (1, False),
    _T.GET_RESULT_UNIQUE: (2, False),
    _T.RESULT_RES: (2, True),
    _T.ATTACH_JOB: (1, False),
    _T.ATTACH_RES: (2, False),
}

#: Types a client or worker may send to a server.
REQUEST_TYPES: Final = frozenset(
    {
        _T.CAN_DO, _T.CANT_DO, _T.RESET_ABILITIES, _T.PRE_SLEEP, _T.SUBMIT_JOB,
        _T.GRAB_JOB, _T.WORK_STATUS, _T.WORK_COMPLETE, _T.WORK_FAIL, _T.GET_STATUS,
        _T.ECHO_REQ, _T.SUBMIT_JOB_BG, _T.SUBMIT_JOB_HIGH, _T.SET_CLIENT_ID,
        _T.CAN_DO_TIMEOUT, _T.ALL_YOURS, _T.WORK_EXCEPTION, _T.OPTION_REQ,
        _T.WORK_DATA, _T.WORK_WARNING, _T.GRAB_JOB_UNIQ, _T.SUBMIT_JOB_HIGH_BG,
        _T.SUBMIT_JOB_LOW, _T.SUBMIT_JOB_LOW_BG, _T.SUBMIT_JOB_SCHED,
        _T.SUBMIT_JOB_EPOCH, _T.SUBMIT_REDUCE_JOB, _T.SUBMIT_REDUCE_JOB_BACKGROUND,
        _T.GRAB_JOB_ALL, _T.GET_STATUS_UNIQUE,
        _T.GET_RESULT, _T.WAIT_RESULT, _T.GET_RESULT_UNIQUE, _T.ATTACH_JOB,
    }
)

#: Types a server sends (WORK_* packets travel both ways).
RESPONSE_TYPES: Final = frozenset(
    {
        _T.NOOP, _T.JOB_CREATED, _T.NO_JOB, _T.JOB_ASSIGN, _T.WORK_STATUS,
        _T.WORK_COMPLETE, _T.WORK_FAIL, _T.ECHO_RES, _T.ERROR, _T.STATUS_RES,
        _T.WORK_EXCEPTION, _T.OPTION_RES, _T.WORK_DATA, _T.WORK_WARNING,
        _T.JOB_ASSIGN_UNIQ, _T.JOB_ASSIGN_ALL, _T.STATUS_RES_UNIQUE,
        _T.RESULT_RES, _T.ATTACH_RES,
    }
)


def type_name(ptype: int) -> str:
    """``PacketType`` name of *ptype*, or ``UNKNOWN_<n>``."""
    try:
        return PacketType(ptype).name
    except ValueError:
        return f"UNKNOWN_{ptype}"
