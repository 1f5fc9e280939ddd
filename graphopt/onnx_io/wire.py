"""Just enough of the protobuf wire format to keep large weights out of Python memory.

Reading: `strip_initializer_data` walks a serialized ModelProto (usually a memory map of the
file) and returns a copy with the raw_data of large top-level initializers left out, plus where
each left-out payload lies in the buffer. Parsing that copy is cheap; the weights are then
zero-copy views of the mapped file.

Writing: `initializer_chunk_parts` frames one initializer as `ModelProto{graph{initializer}}`.
Protobuf merges repeated occurrences of a message field, so appending such chunks after the
serialized model adds initializers in order, and the payload can be written straight from its
source buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

LEN = 2
MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER = 5  # GraphProto.initializer
TENSOR_RAW_DATA = 9  # TensorProto.raw_data


class WireError(ValueError):
    """The buffer is not a well-formed protobuf message."""


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return encode_varint(field << 3 | wire_type)


def iter_fields(buf, start: int, end: int):
    """Yield (field number, wire type, tag start, payload start, payload end). A group (wire types
    3 and 4, which ONNX never uses but protobuf skips when it does not know the field) is one
    field spanning up to its end tag, as protobuf's parser skips it."""
    pos = start
    while pos < end:
        tag_start = pos
        key, pos = read_varint(buf, pos, end)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise WireError("field number 0")
        if wt == 0:
            _, pos2 = read_varint(buf, pos, end)
        elif wt == 1:
            pos2 = pos + 8
        elif wt == LEN:
            n, pos = read_varint(buf, pos, end)
            pos2 = pos + n
        elif wt == 5:
            pos2 = pos + 4
        elif wt == START_GROUP:
            pos2 = _skip_group(buf, pos, end, field)
        else:
            raise WireError(f"unexpected wire type {wt}")
        if pos2 > end:
            raise WireError("field runs past the end of its message")
        yield field, wt, tag_start, pos, pos2
        pos = pos2


START_GROUP, END_GROUP = 3, 4
MAX_GROUP_DEPTH = 100


def _skip_group(buf, pos: int, end: int, field: int, depth: int = 0) -> int:
    """The position after the end-group tag that closes group `field` opened before `pos`."""
    if depth > MAX_GROUP_DEPTH:
        raise WireError("groups nested too deep")
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        f, wt = key >> 3, key & 7
        if wt == END_GROUP:
            if f != field:
                raise WireError("end-group tag does not match its group")
            return pos
        if wt == 0:
            _, pos = read_varint(buf, pos, end)
        elif wt == 1:
            pos += 8
        elif wt == LEN:
            n, pos = read_varint(buf, pos, end)
            pos += n
        elif wt == 5:
            pos += 4
        elif wt == START_GROUP:
            pos = _skip_group(buf, pos, end, f, depth + 1)
        else:
            raise WireError(f"unexpected wire type {wt}")
    raise WireError("group without an end tag")


@dataclass
class Payload:
    """Where the raw_data of the `index`-th top-level initializer lies in the buffer."""

    index: int
    offset: int
    length: int


def strip_initializer_data(buf, min_bytes: int) -> tuple[bytes, list[Payload]]:
    out = bytearray()
    payloads: list[Payload] = []
    count = 0
    for field, wt, tag_start, start, end in iter_fields(buf, 0, len(buf)):
        if field == MODEL_GRAPH and wt == LEN:
            graph, count = _strip_graph(buf, start, end, min_bytes, payloads, count)
            out += tag(MODEL_GRAPH, LEN) + encode_varint(len(graph)) + graph
        else:
            out += buf[tag_start:end]
    return bytes(out), payloads


def _strip_graph(buf, start, end, min_bytes, payloads, count) -> tuple[bytes, int]:
    out = bytearray()
    for field, wt, tag_start, s, e in iter_fields(buf, start, end):
        if field == GRAPH_INITIALIZER and wt == LEN:
            tensor = bytearray()
            fields = list(iter_fields(buf, s, e))
            # protobuf: of a scalar field given twice, the last one counts
            raw = [i for i, (f2, wt2, *_) in enumerate(fields) if f2 == TENSOR_RAW_DATA and wt2 == LEN]
            for i, (f2, wt2, t2, s2, e2) in enumerate(fields):
                if i in raw[:-1]:
                    continue
                if raw and i == raw[-1] and e2 - s2 >= min_bytes:
                    payloads.append(Payload(count, s2, e2 - s2))
                else:
                    tensor += buf[t2:e2]
            out += tag(GRAPH_INITIALIZER, LEN) + encode_varint(len(tensor)) + tensor
            count += 1
        else:
            out += buf[tag_start:e]
    return bytes(out), count


def initializer_chunk_parts(head: bytes, raw_len: int, tail: bytes) -> bytes:
    """The bytes that go before a raw payload of `raw_len` bytes: `head` is the serialized
    TensorProto fields numbered below raw_data, `tail` those above (written after the payload)."""
    raw_field = tag(TENSOR_RAW_DATA, LEN) + encode_varint(raw_len)
    tensor_len = len(head) + len(raw_field) + raw_len + len(tail)
    init = tag(GRAPH_INITIALIZER, LEN) + encode_varint(tensor_len)
    graph_len = len(init) + tensor_len
    return tag(MODEL_GRAPH, LEN) + encode_varint(graph_len) + init + head + raw_field
