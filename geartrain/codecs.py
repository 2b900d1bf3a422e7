"""Payload codecs: jobs carry bytes; text and JSON are opt-in.

A codec turns what the caller passes into the bytes on the wire and back.
``codec=None`` (the default) means bytes in, bytes out (``str`` is accepted
on the way in and sent as UTF-8).
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class Codec(Protocol):
    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class BytesCodec:
    """Bytes unchanged; ``str`` is encoded as UTF-8 on the way out."""

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode()
        raise TypeError(f"payload must be bytes or str, not {type(value).__name__} (or pass a codec)")

    def decode(self, data: bytes) -> bytes:
        return data


class TextCodec:
    """``str`` both ways, in *encoding* (UTF-8 by default)."""

    def __init__(self, encoding: str = "utf-8", errors: str = "strict") -> None:
        self.encoding = encoding
        self.errors = errors

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        return str(value).encode(self.encoding, self.errors)

    def decode(self, data: bytes) -> str:
        return data.decode(self.encoding, self.errors)


class JSONCodec:
    """Any JSON value both ways (compact UTF-8 on the wire)."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data) if data else None


BYTES = BytesCodec()
TEXT = TextCodec()
JSON = JSONCodec()

_NAMED: dict[str, Codec] = {"bytes": BYTES, "str": TEXT, "text": TEXT, "json": JSON}


def get_codec(codec: Codec | str | None) -> Codec:
    """A codec from a name (``"bytes"``, ``"str"``, ``"json"``), an object, or None (bytes)."""
    if codec is None:
        return BYTES
    if isinstance(codec, str):
        try:
            return _NAMED[codec]
        except KeyError:
            raise ValueError(f"unknown codec {codec!r}: use one of {', '.join(_NAMED)}") from None
    return codec
