"""A minimal protobuf wire-format decoder.

TensorFlow's checkpoint messages (BundleEntryProto, TrackableObjectGraph, SavedModel) are not shipped
with the `protobuf` package, and generating their classes would need TensorFlow's .proto files. The
few fields medfound needs are read straight from the wire format instead: a message decodes to
{field number: [values]}, where a value is an int (varint and fixed types) or bytes (length-delimited:
strings, bytes, nested messages, packed repeated fields).
"""

import struct

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class ProtoError(ValueError):
    """Bytes that are not a valid protobuf message."""


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, next position)."""
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def decode(data: bytes | memoryview) -> dict[int, list]:
    """Decode one message into {field number: [raw values]} (see the module docstring)."""
    fields: dict[int, list] = {}
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(data, pos)
        elif wire == FIXED64:
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == FIXED32:
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        elif wire == LENGTH:
            size, pos = read_varint(data, pos)
            if pos + size > end:
                raise ProtoError(f"field {number}: length {size} runs past the message end")
            value, pos = bytes(data[pos : pos + size]), pos + size
        else:
            raise ProtoError(f"field {number}: unsupported wire type {wire}")
        if pos > end:
            raise ProtoError("truncated message")
        fields.setdefault(number, []).append(value)
    return fields


def first(fields: dict[int, list], number: int, default=None):
    """The first value of a field (proto3 scalars appear once), or `default`."""
    values = fields.get(number)
    return values[0] if values else default


def as_signed(value: int) -> int:
    """Two's-complement int64 from a varint (negative int32/int64 fields)."""
    return value - (1 << 64) if value >= 1 << 63 else value
