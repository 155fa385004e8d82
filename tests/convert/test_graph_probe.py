"""The input-transform probe on hand-built GraphDefs (no TensorFlow needed)."""

import struct

import numpy as np

from medfound.convert.graph_probe import probe_input_transform


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _node(name: str, op: str, inputs=(), value: float | None = None) -> bytes:
    body = _field(1, name.encode()) + _field(2, op.encode())
    body += b"".join(_field(3, ref.encode()) for ref in inputs)
    if (
        value is not None
    ):  # attr "value": AttrValue.tensor = TensorProto(dtype=float, float_val=[value])
        tensor = _field(1, 1) + _field(5, struct.pack("<f", value))
        body += _field(5, _field(1, b"value") + _field(2, _field(8, tensor)))
    return body


def _saved_model(tmp_path, nodes: list[bytes], graph_version: int | None = None):
    graph = b"".join(_field(1, node) for node in nodes)
    if graph_version is not None:  # GraphDef field 3 is the deprecated `version`, not nodes
        graph += _field(3, graph_version)
    (tmp_path / "saved_model.pb").write_bytes(_field(2, _field(2, graph)))
    return tmp_path


def test_scale_before_the_first_conv_in_a_graph_with_a_version_field(tmp_path):
    nodes = [
        _node("images", "Placeholder"),
        _node("two", "Const", value=2.0),
        _node("one", "Const", value=1.0),
        _node("mul", "Mul", ["images", "two"]),
        _node("sub", "Sub", ["mul:0", "one"]),
        _node("pad", "Pad", ["sub", "paddings"]),
        _node("kernel", "VariableV2"),
        _node("conv", "Conv2D", ["pad", "kernel"]),
    ]
    transform = probe_input_transform(_saved_model(tmp_path, nodes, graph_version=5))
    assert transform is not None and transform.network_input() == "symmetric"
    np.testing.assert_allclose([transform.scale[0], transform.shift[0]], [2.0, -1.0])


def test_no_chain_from_the_input_means_unknown(tmp_path):
    nodes = [
        _node("images", "Placeholder"),
        _node("weights", "VariableV2"),
        _node(
            "mul", "Mul", ["images", "weights"]
        ),  # a non-constant operand: not an input transform
        _node("conv", "Conv2D", ["mul", "weights"]),
    ]
    assert probe_input_transform(_saved_model(tmp_path, nodes)) is None
