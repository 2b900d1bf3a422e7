"""The text admin protocol, byte for byte as gearmand 1.1.20 answers it.

Every admin line goes through :meth:`AdminCommands.execute`, the one place
where commands are dispatched, so access control is a single check there.

gearmand's quirks that monitoring tools parse are kept: list replies end with
``.\\n``; ``OK``/``ERR`` replies to mutating commands end with ``\\r\\n`` but
``version``, ``getpid`` and ``verbose`` end with ``\\n``; the unknown-command
text is glued to the command word. Its bugs are not: ``create function foo``
on a bare-LF line creates ``foo`` (gearmand creates ``fo``), and a line with
more than five words gets an ``ERR`` instead of a closed connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geartrain.results import JobResult
    from geartrain.server.core.peer import Peer
    from geartrain.server.core.server import JobServer

_SPACES = re.compile(b" +")
MAX_WORDS = 5

OK = b"OK\r\n"


_INCOMPLETE = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"


def _incomplete(command: bytes) -> bytes:
    return _INCOMPLETE + command + b"\r\n"


def _unknown(word: bytes) -> bytes:
    return b"ERR UNKNOWN_COMMAND Unknown+server+command" + word + b"\r\n"


def _number(token: bytes) -> int:
    """atoi() of a maxqueue argument; negative and garbage become 0."""
    m = re.match(rb"\s*[-+]?\d+", token)
    return max(0, int(m.group())) if m else 0


Handler = Callable[["Peer", list[bytes]], bytes]


def _result_line(result: JobResult | None) -> bytes:
    if result is None:
        return b"ERR UNKNOWN_JOB\r\n"
    return b"OK " + json.dumps(result.to_json(), separators=(",", ":")).encode() + b"\n"


class AdminCommands:
    """Executes admin lines against a :class:`JobServer`."""

    def __init__(self, server: JobServer) -> None:
        self.server = server
        self.commands: dict[bytes, Handler] = {
            b"status": self.status,
            b"prioritystatus": self.priority_status,
            b"workers": self.workers,
            b"show": self.show,
            b"cancel": self.cancel,
            b"create": self.create,
            b"drop": self.drop,
            b"maxqueue": self.maxqueue,
            b"version": self.version,
            b"getpid": self.getpid,
            b"verbose": self.verbose,
            # geartrain's own (gearmand answers these with ERR UNKNOWN_COMMAND)
            b"result": self.result,
            b"result-unique": self.result_unique,
        }

    def execute(self, peer: Peer, line: bytes) -> bytes:
        """The reply to one admin line (without its line ending)."""
        words = _SPACES.split(line)
        if len(words) > 1 and not words[-1]:
            words.pop()  # trailing spaces; leading ones make an empty first word, as in gearmand
        handler = self.commands.get(words[0].lower())
        if handler is None:
            return _unknown(words[0])
        if len(words) > MAX_WORDS:
            return b"ERR INVALID_ARGUMENTS Too+many+arguments+were+sent+to+this+command+" + words[0] + b"\r\n"
        return handler(peer, words)

    # ---------------------------------------------------------------- listings

    def status(self, peer: Peer, words: list[bytes]) -> bytes:
        lines = [
            b"%s\t%d\t%d\t%d\n" % (f.name, f.total, f.running, len(f.workers))
            for f in self.server.functions.values()
        ]
        lines.append(b".\n")
        return b"".join(lines)

    def priority_status(self, peer: Peer, words: list[bytes]) -> bytes:
        lines = [
            b"%s\t%d\t%d\t%d\t%d\n"
            % (f.name, f.queued[0], f.queued[1] + f.scheduled, f.queued[2], len(f.workers))
            for f in self.server.functions.values()
        ]
        lines.append(b".\n")
        return b"".join(lines)

    def workers(self, peer: Peer, words: list[bytes]) -> bytes:
        lines = []
        for p in reversed(self.server.peers.values()):  # newest connection first
            names = b"".join(b" " + f.name for f in reversed(p.abilities))  # newest first
            lines.append(b"%d %s %s :%s\n" % (p.fd, p.host.encode(), p.client_id, names))
        lines.append(b".\n")
        return b"".join(lines)

    def show(self, peer: Peer, words: list[bytes]) -> bytes:
        args = [w.lower() for w in words[1:]]
        if not args:
            return _unknown(words[0])
        if args == [b"jobs"]:
            lines = [
                b"%s\t%d\t%d\t%d\n" % (j.handle, j.retries, j.ignored, j.background and not j.ignored)
                for j in self.server.jobs.values()
            ]
        elif args == [b"unique", b"jobs"]:
            lines = [j.unique + b"\n" for j in self.server.jobs.values()]
        else:
            return b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
        lines.append(b".\n")
        return b"".join(lines)

    # ---------------------------------------------------------------- results

    def result(self, peer: Peer, words: list[bytes]) -> bytes:
        """``result HANDLE``: ``OK {json}`` (geartrain.results.JobResult.to_json)
        for a live job or a kept result, else ``ERR UNKNOWN_JOB``."""
        if len(words) != 2:
            return _incomplete(words[0])
        return _result_line(self.server.describe(words[1]))

    def result_unique(self, peer: Peer, words: list[bytes]) -> bytes:
        """``result-unique UNIQUE [FUNCTION]``: as ``result``, by unique key."""
        if len(words) not in (2, 3):
            return _incomplete(words[0])
        function = words[2] if len(words) == 3 else None
        return _result_line(self.server.describe_unique(words[1], function))

    # ---------------------------------------------------------------- mutations

    def cancel(self, peer: Peer, words: list[bytes]) -> bytes:
        if len(words) < 3:
            return _unknown(words[0])
        if words[1].lower() != b"job":
            return b"ERR UNKNOWN_ERROR\r\n"
        return OK if self.server.cancel(words[2]) else b"ERR UNKNOWN_JOB\r\n"

    def create(self, peer: Peer, words: list[bytes]) -> bytes:
        if len(words) != 3 or words[1].lower() != b"function":
            return _incomplete(words[0])
        self.server.function(words[2]).pinned = True
        return OK

    def drop(self, peer: Peer, words: list[bytes]) -> bytes:
        if len(words) != 3 or words[1].lower() != b"function":
            return _incomplete(words[0])
        dropped = self.server.drop_function(words[2])
        if dropped is None:
            return b"ERR function not found\r\n"
        if not dropped:
            return b"ERR there are still connected workers or executing clients\r\n"
        return OK

    def maxqueue(self, peer: Peer, words: list[bytes]) -> bytes:
        if len(words) < 2:
            return _incomplete(words[0])
        numbers = [_number(w) for w in words[2:]]
        if not numbers:
            limits = (0, 0, 0)
        elif len(numbers) == 1:
            limits = (numbers[0],) * 3
        elif len(numbers) == 2:
            limits = (numbers[0], numbers[1], 0)
        else:
            limits = (numbers[0], numbers[1], numbers[2])
        self.server.set_max_queue(words[1], limits)
        return OK

    # ---------------------------------------------------------------- info

    def version(self, peer: Peer, words: list[bytes]) -> bytes:
        return b"OK %s\n" % self.server.settings.version.encode()

    def getpid(self, peer: Peer, words: list[bytes]) -> bytes:
        return b"OK %d\n" % self.server.settings.pid

    def verbose(self, peer: Peer, words: list[bytes]) -> bytes:
        return b"OK %s\n" % self.server.settings.verbose.encode()

