"""Find how a SavedModel transforms its image input before the first convolution, without TensorFlow.

The graph (saved_model.pb: SavedModel -> MetaGraphDef -> GraphDef and its function library) is read with
the wire decoder. From every Conv2D the data input is followed back through elementwise ops whose other
operand is a constant (Mul, Sub, AddV2, RealDiv, Pad, Cast, Identity, ...); a chain that reaches the
model's input argument is the input transform. It is evaluated numerically at 0 and 1 to get the affine
map x -> a*x + b the network's input goes through, which is what medfound must reproduce.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfound.convert import protowire as pw

# Field numbers of the TensorFlow protos read here (saved_model, meta_graph, graph, function, node_def,
# attr_value and tensor .proto files).
_SAVED_MODEL_META_GRAPHS = 2
_META_GRAPH_GRAPH_DEF = 2
_GRAPH_NODE, _GRAPH_LIBRARY = 1, 2
_LIBRARY_FUNCTION = 1
_FUNCTION_SIGNATURE, _FUNCTION_NODE = 1, 3
_OPDEF_INPUT_ARG, _ARG_NAME = 2, 1
_NODE_NAME, _NODE_OP, _NODE_INPUT, _NODE_ATTR = 1, 2, 3, 5
_ATTR_TENSOR = 8
_TENSOR_DTYPE, _TENSOR_CONTENT, _TENSOR_FLOAT_VAL = 1, 4, 5

_PASS_THROUGH = {"Identity", "Cast", "Pad", "PadV2", "MirrorPad", "IdentityN", "StopGradient"}
_ARITHMETIC = {"Mul", "Sub", "AddV2", "Add", "RealDiv", "Div", "Neg"}
_INPUT_OPS = {"Placeholder", "_Arg"}


@dataclass(frozen=True)
class InputTransform:
    """x -> scale * x + shift applied to the image before the first convolution (per channel)."""

    scale: np.ndarray
    shift: np.ndarray

    def network_input(self) -> str | None:
        """'unit' (identity), 'symmetric' (2x - 1), or None for any other affine map."""
        if np.allclose(self.scale, 1) and np.allclose(self.shift, 0):
            return "unit"
        if np.allclose(self.scale, 2) and np.allclose(self.shift, -1):
            return "symmetric"
        return None


def _nodes_of(body: dict, field: int) -> dict[str, dict]:
    nodes = {}
    for raw in body.get(field, []):
        node = pw.decode(raw)
        nodes[pw.first(node, _NODE_NAME, b"").decode()] = node
    return nodes


def _const(node: dict) -> np.ndarray | None:
    for entry in node.get(_NODE_ATTR, []):
        fields = pw.decode(entry)
        if pw.first(fields, 1, b"") != b"value":
            continue
        tensor = pw.decode(pw.first(pw.decode(pw.first(fields, 2, b"")), _ATTR_TENSOR, b""))
        if pw.first(tensor, _TENSOR_DTYPE) != 1:  # DT_FLOAT only
            return None
        if _TENSOR_CONTENT in tensor:
            return np.frombuffer(tensor[_TENSOR_CONTENT][0], np.float32)
        values = []
        for item in tensor.get(_TENSOR_FLOAT_VAL, []):
            if isinstance(item, bytes):  # packed
                values.extend(np.frombuffer(item, np.float32))
            else:
                values.append(np.frombuffer(np.uint32(item).tobytes(), np.float32)[0])
        return np.asarray(values, np.float32)
    return None


def _source(ref: str) -> str:
    return ref.split(":", 1)[0]


def _trace(
    nodes: dict, args: set[str], start: str, x: np.ndarray, depth: int = 0
) -> np.ndarray | None:
    """Value of node `start` when the input argument is `x`, if it is a constant-only chain from it."""
    if depth > 32:
        return None
    name = _source(start)
    if name in args:
        return x
    node = nodes.get(name)
    if node is None:
        return None
    op = pw.first(node, _NODE_OP, b"").decode()
    if op in _INPUT_OPS:
        return x
    if op == "Const":
        return None
    inputs = [ref.decode() for ref in node.get(_NODE_INPUT, []) if not ref.startswith(b"^")]
    if op in _PASS_THROUGH and inputs:
        return _trace(nodes, args, inputs[0], x, depth + 1)
    if op not in _ARITHMETIC:
        return None
    values, traced = [], False
    for ref in inputs:
        source = nodes.get(_source(ref))
        constant = (
            _const(source)
            if source is not None and pw.first(source, _NODE_OP) == b"Const"
            else None
        )
        if constant is not None:
            values.append(constant)
            continue
        if traced:
            return None  # two non-constant operands: not an input transform
        value = _trace(nodes, args, ref, x, depth + 1)
        if value is None:
            return None
        values.append(value)
        traced = True
    if not traced:
        return None
    if op == "Neg":
        return -values[0]
    a, b = values[0], values[1]
    return {
        "Mul": a * b,
        "Sub": a - b,
        "AddV2": a + b,
        "Add": a + b,
        "RealDiv": a / b,
        "Div": a / b,
    }[op]


def _bodies(saved_model: dict):
    for raw_meta in saved_model.get(_SAVED_MODEL_META_GRAPHS, []):
        graph = pw.decode(pw.first(pw.decode(raw_meta), _META_GRAPH_GRAPH_DEF, b""))
        yield graph, _GRAPH_NODE, set()
        library = pw.decode(pw.first(graph, _GRAPH_LIBRARY, b""))
        for raw_function in library.get(_LIBRARY_FUNCTION, []):
            function = pw.decode(raw_function)
            signature = pw.decode(pw.first(function, _FUNCTION_SIGNATURE, b""))
            args = {
                pw.first(pw.decode(arg), _ARG_NAME, b"").decode()
                for arg in signature.get(_OPDEF_INPUT_ARG, [])
            }
            yield function, _FUNCTION_NODE, args


def probe_input_transform(src: Path) -> InputTransform | None:
    """The affine map before the first convolution, or None if it cannot be found unambiguously."""
    try:
        saved_model = pw.decode((Path(src) / "saved_model.pb").read_bytes())
        found = []
        for body, node_field, args in _bodies(saved_model):
            nodes = _nodes_of(body, node_field)
            for node in nodes.values():
                if pw.first(node, _NODE_OP) != b"Conv2D":
                    continue
                data = pw.first(node, _NODE_INPUT, b"").decode()
                zero = _trace(nodes, args, data, np.zeros(1, np.float32))
                one = _trace(nodes, args, data, np.ones(1, np.float32))
                if zero is not None and one is not None:
                    found.append(
                        InputTransform(scale=np.atleast_1d(one - zero), shift=np.atleast_1d(zero))
                    )
    except (OSError, pw.ProtoError):
        return None
    distinct = {(t.scale.tobytes(), t.shift.tobytes()) for t in found}
    return found[0] if len(distinct) == 1 else None
