"""Variables of a TensorFlow SavedModel directory, by their TensorFlow names, without TensorFlow.

Graph-based SavedModels (TF1 / hub modules) key the bundle by variable name. Object-based ones
(`tf.saved_model.save`) key it by object path (`.../.ATTRIBUTES/VARIABLE_VALUE`); the names are then
recovered from the `_CHECKPOINTABLE_OBJECT_GRAPH` entry (a TrackableObjectGraph whose nodes pair each
`checkpoint_key` with the variable's `full_name`).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfound.convert import protowire
from medfound.convert.tensor_bundle import TensorBundle
from medfound.errors import WeightsError

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# Bookkeeping and optimiser state that is never part of a network.
_NOT_WEIGHTS = (
    ".OPTIMIZER_SLOT",
    "/Momentum",
    "/ExponentialMovingAverage",
    "save_counter",
    "global_step",
    "optimizer/",
    "/Adam",
    "/LARS",
)


@dataclass
class SavedModelVariables:
    """Named arrays of a SavedModel, and what was left out as optimiser or bookkeeping state."""

    arrays: dict[str, np.ndarray]
    skipped: list[str] = field(default_factory=list)
    object_based: bool = False


def variables_prefix(src: Path) -> Path:
    """`SRC/variables/variables`, after checking that SRC looks like a SavedModel directory."""
    src = Path(src)
    if not src.is_dir():
        raise WeightsError(f"{src}: not a SavedModel directory")
    if not (src / "saved_model.pb").exists():
        raise WeightsError(f"{src}: no saved_model.pb, not a SavedModel directory")
    prefix = src / "variables" / "variables"
    if not prefix.with_name("variables.index").exists():
        raise WeightsError(f"{src}: no variables/variables.index (a SavedModel without variables?)")
    return prefix


def bundle_prefix(src: Path) -> Path:
    """The tensor-bundle prefix of a SavedModel directory or of a TF checkpoint (`model.ckpt-N`)."""
    src = Path(src)
    if src.is_dir():
        return variables_prefix(src)
    if src.with_name(src.name + ".index").exists():
        return src
    raise WeightsError(
        f"{src}: neither a SavedModel directory nor a checkpoint prefix (no {src.name}.index)"
    )


def object_graph_names(serialized: bytes) -> dict[str, str]:
    """{checkpoint_key: full_name} from a serialized TrackableObjectGraph."""
    names = {}
    for node in protowire.decode(serialized).get(1, []):
        for attribute in protowire.decode(node).get(2, []):
            fields = protowire.decode(attribute)
            key = protowire.first(fields, 3, b"").decode()
            full_name = protowire.first(fields, 2, b"").decode()
            if key and full_name:
                names[key] = full_name
    return names


def read_savedmodel_variables(src: Path) -> SavedModelVariables:
    """Every weight array of a SavedModel directory or TF checkpoint prefix, by TensorFlow name."""
    bundle = TensorBundle(bundle_prefix(src))
    names: dict[str, str] = {}
    object_based = OBJECT_GRAPH_KEY in bundle.entries
    if object_based:
        try:
            names = object_graph_names(bundle.strings(OBJECT_GRAPH_KEY)[0])
        except protowire.ProtoError as exc:
            raise WeightsError(f"{src}: corrupt object graph in the checkpoint ({exc})") from exc
    arrays: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for key in sorted(bundle.entries):
        if key == OBJECT_GRAPH_KEY:
            continue
        name = names.get(key, key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"))
        if any(marker in key or marker in name for marker in _NOT_WEIGHTS):
            skipped.append(name)
            continue
        if name in arrays:
            raise WeightsError(f"{src}: two variables are both named {name!r}")
        arrays[name] = bundle.tensor(key)
    return SavedModelVariables(arrays=arrays, skipped=skipped, object_based=object_based)
