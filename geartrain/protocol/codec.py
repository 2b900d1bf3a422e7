"""Encoding and incremental decoding of Gearman traffic, without any I/O.

:class:`Decoder` turns a byte stream into frames. A connection may mix binary
packets and text admin lines; which one comes next is decided per frame by its
first byte (NUL starts a binary packet, anything else a text line), exactly as
gearmand does. Frames are plain tuples, because the server handles hundreds of
thousands of them per second:

* ``(ptype, body, magic)`` for a binary packet; *magic* is :data:`REQ` or
  :data:`RES` (the module constants themselves, so ``is`` works);
* ``(TEXT, line, None)`` for an admin line, without its ``\\n`` and any ``\\r``
  before it.

A stream that cannot be framed any further (bad magic, a body over the size
limit, a text line over the line limit) ends with one
:class:`FramingError` instance in the list; after that the decoder is spent
and returns nothing more.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from geartrain.protocol.packets import HEADER_SIZE, LAYOUT, REQ, RES, type_name

#: ptype of a text admin line frame.
TEXT: Final = 0

_HEADER = struct.Struct(">4sII")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from

Frame = tuple[int, bytes, bytes | None]


class ProtocolError(Exception):
    """Bytes that do not follow the Gearman protocol."""


class FramingError(ProtocolError):
    """The stream cannot be split into frames any more; the connection must close.

    ``code`` is the Gearman error code to report before closing (for example
    ``INVALID_MAGIC``), ``text`` the human-readable reason.
    """

    def __init__(self, code: bytes, text: str, in_text_line: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        #: the stream broke inside an admin text line (answer in text, not a packet)
        self.in_text_line = in_text_line


class ArgumentError(ProtocolError):
    """A packet body lacks the NUL separators its type requires."""


def encode(ptype: int, *args: bytes, magic: bytes = RES) -> bytes:
    """Encode one packet. *args* follow :data:`LAYOUT` for *ptype*.

    >>> encode(8, b"H:host:1")
    b'\\x00RES\\x00\\x00\\x00\\x08\\x00\\x00\\x00\\x08H:host:1'
    """
    layout = LAYOUT.get(ptype)
    if layout is not None and len(args) != layout[0] + (1 if layout[1] else 0):
        want = layout[0] + (1 if layout[1] else 0)
        raise ValueError(f"{type_name(ptype)} takes {want} arguments, got {len(args)}")
    body = b"\0".join(args)
    return _pack_header(magic, ptype, len(body)) + body


def encode_body(ptype: int, body: bytes, magic: bytes = RES) -> bytes:
    """Encode one packet whose body is already joined."""
    return _pack_header(magic, ptype, len(body)) + body


def parse_args(ptype: int, body: bytes) -> list[bytes]:
    """Split a packet body into its arguments according to :data:`LAYOUT`.

    Raises :class:`ArgumentError` when a separator is missing. Types without a
    known layout are returned as a single argument.
    """
    layout = LAYOUT.get(ptype)
    if layout is None:
        return [body]
    nargs, has_data = layout
    if has_data:
        parts = body.split(b"\0", nargs)
        if len(parts) != nargs + 1:
            raise ArgumentError(
                f"{type_name(ptype)} needs {nargs} NUL-terminated arguments before its data"
            )
        return parts
    if nargs == 0:
        return []
    parts = body.split(b"\0", nargs - 1)
    if len(parts) != nargs:
        raise ArgumentError(f"{type_name(ptype)} needs {nargs} NUL-separated arguments")
    return parts


class Decoder:
    """Incremental frame decoder: ``feed(bytes) -> list of frames``.

    Partial frames are kept across calls; many frames in one call are all
    returned. Memory held is bounded by *max_packet_size* (binary bodies) and
    *max_line* (text lines): a header announcing a larger body ends the stream
    with a :class:`FramingError` before any of the body is buffered.
    """

    __slots__ = ("max_packet_size", "max_line", "_buf", "_need", "_failed")

    def __init__(self, max_packet_size: int = 64 << 20, max_line: int = 8192) -> None:
        self.max_packet_size = max_packet_size
        self.max_line = max_line
        self._buf = bytearray()
        self._need = 0  # bytes _buf must hold before parsing is worth trying
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True once a :class:`FramingError` was returned."""
        return self._failed

    def feed(self, data: bytes) -> list[Frame | FramingError]:
        if self._failed:
            return []
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        out: list[Frame | FramingError] = []
        append = out.append
        n = len(data)
        pos = 0
        max_size = self.max_packet_size
        while pos < n:
            if data[pos] == 0:
                if n - pos < HEADER_SIZE:
                    self._need = HEADER_SIZE
                    break
                magic, ptype, size = _unpack_header(data, pos)
                if magic == REQ:
                    magic = REQ
                elif magic == RES:
                    magic = RES
                else:
                    return self._fail(out, b"INVALID_MAGIC", f"bad packet magic {magic!r}")
                if size > max_size:
                    return self._fail(
                        out,
                        b"ARGUMENT_TOO_LARGE",
                        f"{type_name(ptype)} body of {size} bytes exceeds the "
                        f"{max_size}-byte packet limit",
                    )
                end = pos + HEADER_SIZE + size
                if end > n:
                    self._need = end - pos
                    break
                append((ptype, data[pos + HEADER_SIZE : end], magic))
                pos = end
            else:
                # The limit is on the line itself, without its "\r\n" or "\n":
                # look one byte further so a CR before the LF is not counted.
                nl = data.find(b"\n", pos, pos + self.max_line + 2)
                if nl < 0:
                    if n - pos > self.max_line + 1 or (
                        n - pos > self.max_line and data[n - 1] != 13
                    ):
                        return self._fail(
                            out, b"ARGUMENT_TOO_LARGE",
                            f"admin line longer than {self.max_line} bytes", True,
                        )
                    self._need = n - pos + 1
                    break
                end = nl - 1 if nl > pos and data[nl - 1] == 13 else nl
                if end - pos > self.max_line:
                    return self._fail(
                        out, b"ARGUMENT_TOO_LARGE",
                        f"admin line longer than {self.max_line} bytes", True,
                    )
                append((TEXT, data[pos:end], None))
                pos = nl + 1
        else:
            self._need = 0
            return out
        buf += memoryview(data)[pos:]
        return out

    def _fail(
        self, out: list[Frame | FramingError], code: bytes, text: str, in_text_line: bool = False
    ) -> list[Frame | FramingError]:
        self._failed = True
        self._buf = bytearray()
        out.append(FramingError(code, text, in_text_line))
        return out


def decode_all(chunks: Iterable[bytes], **kwargs: int) -> list[Frame | FramingError]:
    """Decode a whole sequence of chunks (convenience for tests and tools)."""
    decoder = Decoder(**kwargs)
    frames: list[Frame | FramingError] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames
