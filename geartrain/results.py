"""The record of a job and its one JSON form, shared by server and clients.

A :class:`JobResult` describes a job the server knows: one that ended
(``state`` is an outcome: completed, failed, exception or cancelled) with its
result payload, the WORK_DATA and WORK_WARNING chunks it sent, its last
status and its times, or one still queued or running (``state`` "queued",
"scheduled" or "running"; ``finished`` 0). The admin ``result`` command, the
RESULT_RES packet (docs/protocol-extensions.md), the HTTP API and
``geartrain result --json`` all carry :meth:`JobResult.to_json`.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from typing import Any

#: how a job ended
COMPLETED = "completed"
FAILED = "failed"
EXCEPTION = "exception"
CANCELLED = "cancelled"
OUTCOMES = (COMPLETED, FAILED, EXCEPTION, CANCELLED)
#: states of a job that has not ended
QUEUED = "queued"
SCHEDULED = "scheduled"
RUNNING = "running"
#: no such job (never existed, or its result expired)
UNKNOWN = "unknown"

PRIORITY_NAMES = ("high", "normal", "low")


@dataclasses.dataclass(slots=True)
class JobResult:
    """The record of a job that ended."""

    handle: bytes
    function: bytes
    unique: bytes
    state: str  #: one of OUTCOMES, or QUEUED / SCHEDULED / RUNNING
    result: bytes = b""  #: WORK_COMPLETE or WORK_EXCEPTION payload
    data: Sequence[bytes] = dataclasses.field(default_factory=list)
    warnings: Sequence[bytes] = dataclasses.field(default_factory=list)
    numerator: int = 0
    denominator: int = 0
    submitted: float = 0.0  #: wall-clock seconds
    finished: float = 0.0
    attempts: Sequence[float] = dataclasses.field(default_factory=list)
    truncated_bytes: int = 0
    background: bool = True
    priority: int = 1

    @property
    def truncated(self) -> bool:
        """Some of its payload, data or warnings did not fit in the server's
        ``--result-max-bytes`` and were cut off (``truncated_bytes`` of them)."""
        return self.truncated_bytes > 0

    @property
    def done(self) -> bool:
        """The job ended (the record will not change any more)."""
        return self.state in OUTCOMES

    @property
    def ok(self) -> bool:
        return self.state == COMPLETED

    def to_json(self) -> dict[str, Any]:
        """The JSON form shared by the admin ``result`` command, the HTTP API
        and ``geartrain result --json``. Payloads are :func:`payload_json`."""
        return {
            "handle": self.handle.decode("utf-8", "replace"),
            "function": self.function.decode("utf-8", "replace"),
            "unique": self.unique.decode("utf-8", "replace"),
            "state": self.state,
            "result": payload_json(self.result),
            "data": [payload_json(c) for c in self.data],
            "warnings": [payload_json(c) for c in self.warnings],
            "numerator": self.numerator,
            "denominator": self.denominator,
            "submitted_at": self.submitted if self.submitted > 0 else None,  # -1: not known
            "finished_at": self.finished or None,
            "attempts": len(self.attempts),
            "attempt_started_at": list(self.attempts),
            "truncated": self.truncated,
            "truncated_bytes": self.truncated_bytes,
            "background": self.background,
            "priority": PRIORITY_NAMES[self.priority] if 0 <= self.priority < 3 else str(self.priority),
        }


def payload_json(value: bytes) -> dict[str, str]:
    """``{"text": ...}`` when *value* is UTF-8, else ``{"base64": ...}``."""
    try:
        return {"text": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def payload_from_json(value: dict[str, str]) -> bytes:
    if "text" in value:
        return value["text"].encode("utf-8")
    return base64.b64decode(value["base64"])


def result_from_json(doc: dict[str, Any]) -> JobResult:
    """The inverse of :meth:`JobResult.to_json` (for clients)."""
    priority = doc.get("priority", "normal")
    return JobResult(
        handle=doc["handle"].encode(),
        function=doc["function"].encode(),
        unique=doc["unique"].encode(),
        state=doc["state"],
        result=payload_from_json(doc["result"]),
        data=[payload_from_json(c) for c in doc["data"]],
        warnings=[payload_from_json(c) for c in doc["warnings"]],
        numerator=int(doc["numerator"]),
        denominator=int(doc["denominator"]),
        submitted=float(doc["submitted_at"] or 0.0),
        finished=float(doc["finished_at"] or 0.0),
        attempts=[float(t) for t in doc["attempt_started_at"]],
        truncated_bytes=int(doc["truncated_bytes"]),
        background=bool(doc["background"]),
        priority=PRIORITY_NAMES.index(priority) if priority in PRIORITY_NAMES else 1,
    )


