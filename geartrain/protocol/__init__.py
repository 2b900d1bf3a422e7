"""Sans-IO Gearman protocol: packet types, encoder and incremental decoder.

Nothing here touches sockets, asyncio or the clock; the server and the client
libraries wrap it.
"""

from geartrain.protocol.codec import (
    TEXT,
    ArgumentError,
    Decoder,
    Frame,
    FramingError,
    ProtocolError,
    decode_all,
    encode,
    encode_body,
    parse_args,
)
from geartrain.protocol.packets import (
    HEADER_SIZE,
    LAYOUT,
    MAX_STANDARD_TYPE,
    REQ,
    REQUEST_TYPES,
    RES,
    RESPONSE_TYPES,
    RESULTS_OPTION,
    PacketType,
    type_name,
)

__all__ = [
    "HEADER_SIZE", "LAYOUT", "MAX_STANDARD_TYPE", "REQ", "REQUEST_TYPES", "RES",
    "RESPONSE_TYPES", "RESULTS_OPTION", "TEXT", "ArgumentError", "Decoder", "Frame", "FramingError",
    "PacketType", "ProtocolError", "decode_all", "encode", "encode_body",
    "parse_args", "type_name",
]
