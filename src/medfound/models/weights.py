"""Reading and writing weight files, with strict matching against the model.

Formats read: safetensors (medfound's own, with the card in its metadata), PyTorch files (loaded with
`weights_only=True`, optionally nested under 'state_dict' / 'model'), and original BiT .npz files.
The original Models Genesis release (`Genesis_Chest_CT.pt`) is recognised by its key names and mapped
onto medfound's UNet3D (models/genesis_names.py); the published transformers' layouts (Hugging Face,
DINOv2, open_clip, SAM, timm 0.5's Swin) are recognised and mapped onto timm's names
(models/layouts.py). Sharded Hugging Face files are read through their `.index.json`. A model with
k > 1 input channels takes a 1-channel checkpoint by expanding its first convolution. Nothing is
ever left at random initialisation silently: any missing, unexpected or mis-shaped key is an
error that names the file and the keys.
"""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medfound.errors import WeightsError, first_items
from medfound.files import atomic_write, file_sha256
from medfound.models import bit_names, genesis_names, layouts
from medfound.models.unet3d import UNet3D

log = logging.getLogger(__name__)

CARD_KEY = "medfound_card"
EXTRA_PREFIX = "extra/"
# Classifier heads a checkpoint may carry that an embedding model does not have: reported, not loaded.
_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "class_layers.")
_SHOWN = 8


def read_state(path: Path, network: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors of a weight file keyed as `network` names them, and the file's metadata."""
    if not path.exists():
        raise WeightsError(f"{path}: weight file not found")
    if path.is_dir():
        raise WeightsError(
            f"{path}: is a directory but not a TensorFlow SavedModel (no saved_model.pb)"
        )
    suffix = path.suffix.lower()
    try:
        if path.name.endswith(".index.json"):
            return _read_shards(path, network)
        if suffix == ".safetensors":
            return _read_safetensors(path)
        if suffix == ".npz":
            return _read_bit_npz(path, network), {}
        if suffix in (".pt", ".pth", ".bin", ".ckpt", ".tar"):
            return _read_torch(path), {}
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{path}: unreadable weight file ({type(exc).__name__}: {exc})") from exc
    raise WeightsError(
        f"{path}: unknown weight format {suffix!r}; use .safetensors, .pt/.pth or a BiT .npz"
    )


def _read_shards(index: Path, network: nn.Module):
    """A Hugging Face sharded checkpoint: the index's weight map names each tensor's shard."""
    state, metadata = {}, {}
    weight_map = shard_map(index)
    for shard in sorted(set(weight_map.values())):
        shard_state, shard_metadata = read_state(index.parent / shard, network)
        state.update(shard_state)
        metadata.update(shard_metadata)
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise WeightsError(
            f"{index}: {len(missing)} tensors of the index are in no shard: "
            f"{first_items(missing, _SHOWN)}"
        )
    return state, metadata


def shard_map(index: Path) -> dict[str, str]:
    """The weight map of a sharded checkpoint's index: tensor name -> shard file beside it.

    Shards must be plain file names in the index's folder (a name with a path could reach any
    file), and not indexes themselves."""
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index}: a shard index without a weight_map")
    for shard in set(weight_map.values()):
        if (
            not isinstance(shard, str)
            or Path(shard).name != shard
            or shard in ("", ".", "..")
            or shard.endswith(".index.json")
        ):
            raise WeightsError(
                f"{index}: shard {shard!r} is not a weight file's name in its folder"
            )
    return weight_map


def weights_digest(path: Path) -> str:
    """SHA-256 identifying a weight file; for a sharded checkpoint, of its index and every shard."""
    if not path.name.endswith(".index.json"):
        return file_sha256(path)
    shards = sorted(set(shard_map(path).values()))
    parts = [file_sha256(path), *(f"{s}:{file_sha256(path.parent / s)}" for s in shards)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _read_safetensors(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
        # extra/ tensors (e.g. projection heads) ride along in the file but are not the network's
        keys = [key for key in fh.keys() if not key.startswith(EXTRA_PREFIX)]  # noqa: SIM118
        state = {key: fh.get_tensor(key) for key in keys}
    return state, metadata


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            rest = sorted(k for k in obj if k != key)
            if rest:  # a training checkpoint: say what is left behind
                epoch = f" (epoch {obj['epoch']})" if "epoch" in obj else ""
                log.info(
                    "%s: %r of a training checkpoint%s; not loaded: %s", path, key, epoch, rest
                )
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    return obj


def _read_bit_npz(path: Path, network: nn.Module) -> dict[str, torch.Tensor]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    try:
        prefix = bit_names.find_bit_prefix(list(arrays))
    except KeyError as exc:
        raise WeightsError(f"{path}: {exc.args[0]}") from exc
    state, used = {}, set()
    for key in network.state_dict():
        name = prefix + bit_names.bit_name(key)
        if name in arrays:
            state[key] = torch.from_numpy(bit_names.hwio_to_oihw(arrays[name]))
            used.add(name)
    leftover = sorted(set(arrays) - used)
    heads = [n for n in leftover if n.startswith(prefix + "head/")]
    if heads:
        log.info("%s: classifier head %s not loaded (embedding model)", path, heads)
    state.update({f"unmapped:{n}": torch.from_numpy(arrays[n]) for n in leftover if n not in heads})
    return state


def _strip_common_prefix(state: dict, expected: set[str]) -> dict:
    """Drop a wrapper prefix (DataParallel's 'module.', 'network.', 'backbone.') if that fits."""
    for prefix in ("module.", "network.", "backbone.", "encoder."):
        if state and all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) & expected:
                return _strip_common_prefix(stripped, expected)
    return state


def load_state(
    network: nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    published_layouts: tuple[str, ...] = (),
) -> None:
    """Copy `state` into `network`, refusing any mismatch with a message naming keys and file.

    An original Models Genesis state dict is renamed to medfound's names first and its mismatches
    are reported by original name; so is a published transformer layout (models/layouts.py), which
    must be one of `published_layouts` when those are given (timm's names are always taken). A
    1-channel first convolution is expanded to the network's input channels (`expand_input_conv`).
    """
    expected = network.state_dict()
    if genesis_names.is_original_layout(state):
        if not isinstance(network, UNet3D):
            raise WeightsError(
                f"{path}: holds the original Models Genesis 3D U-Net, but the model is a "
                f"{type(network).__name__}; load it into a Genesis 3D model "
                "(e.g. unet3d_genesis.chest_ct)"
            )
        state = _expand_first_conv(network, genesis_names.to_medfound(state), path)
        genesis_names.check(state, {k: v.shape for k, v in expected.items()}, str(path))
        log.info(
            "%s: original Models Genesis checkpoint: %d tensors mapped to medfound's UNet3D names",
            path,
            len(state),
        )
        _copy(expected, state)
        return
    state = _strip_common_prefix(state, set(expected))
    if state and all(k.startswith("module.") for k in state):  # DataParallel's, around any layout
        state = {k.removeprefix("module."): v for k, v in state.items()}
    origin: dict[str, str] = {}
    if published_layouts:
        state, origin = _from_published_layout(state, path, published_layouts)
    state = _expand_first_conv(network, state, path)
    ignored = sorted(k for k in state if k not in expected and k.startswith(_HEAD_PREFIXES))
    if ignored:
        log.info("%s: classifier keys not loaded (embedding model): %s", path, ignored[:_SHOWN])

    def named(key: str) -> str:  # a renamed key also by its name in the file
        return f"{key} (file: {origin[key]})" if key in origin else key

    missing = [k for k in expected if k not in state]
    unexpected = sorted(named(k) for k in state if k not in expected and k not in ignored)
    wrong = [
        f"{named(k)}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
        if keys:
            problems.append(f"{len(keys)} {label}: {first_items(keys, _SHOWN)}")
    if problems:
        raise WeightsError(
            f"{path}: weights do not match the model ({len(expected)} tensors expected): "
            + "; ".join(problems)
        )
    _copy(expected, state)


def _from_published_layout(
    state: dict[str, torch.Tensor], path: Path, published: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """`state` renamed from its detected layout to timm's names, and each renamed key's origin."""
    layout = layouts.detect(state)
    if layout == "timm":
        return state, {}
    if layout not in published:
        raise WeightsError(
            f"{path}: holds {layouts.LAYOUT_EXAMPLES[layout]}, a layout this model is not "
            f"published in; it is published as: "
            + "; ".join(layouts.LAYOUT_EXAMPLES[name] for name in published)
        )
    try:
        mapped = layouts.to_timm(state, layout)
    except ValueError as exc:
        raise WeightsError(f"{path}: {layout} layout: {exc}") from exc
    log.info(
        "%s: %s layout, %d tensors mapped to timm's names; %d not used by the image embedding%s",
        path,
        layout,
        len(mapped.state),
        len(mapped.ignored),
        f" (e.g. {first_items(mapped.ignored, 3)})" if mapped.ignored else "",
    )
    return mapped.state, mapped.origin


def _copy(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, value in expected.items():
            value.copy_(state[key].to(value.dtype))


def expand_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A 1-input-channel conv kernel (O, 1, *k) repeated over `in_channels` and divided by it.

    The response to a channel duplicated k times is then the 1-channel response (timm's rule).
    timm's `adapt_input_conv` takes 2D kernels only, so 3D kernels are folded to 4D around it.
    """
    from timm.models import adapt_input_conv

    flat = weight.reshape(weight.shape[0], weight.shape[1], weight.shape[2], -1)
    expanded = adapt_input_conv(in_channels, flat, base_chans=weight.shape[1])
    return expanded.reshape(weight.shape[0], in_channels, *weight.shape[2:])


def _first_conv_key(network: nn.Module) -> str | None:
    for name, module in network.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return f"{name}.weight" if name else "weight"
    return None


def _expand_first_conv(network: nn.Module, state: dict, path: Path) -> dict:
    """`state` with its first conv expanded from 1 to the network's k input channels, when that
    alone differs; anything else (other layers, other channel counts) is left for the checks."""
    key = _first_conv_key(network)
    if key is None or key not in state:
        return state
    have, want = state[key], network.state_dict()[key]
    kernel_have, kernel_want = have.shape[:1] + have.shape[2:], want.shape[:1] + want.shape[2:]
    if kernel_have != kernel_want or have.shape[1] != 1 or want.shape[1] == 1:
        return state
    k = want.shape[1]
    log.info(
        "%s: first conv %s expanded from 1 to %d input channels (kernel repeated, divided by %d)",
        path,
        key,
        k,
        k,
    )
    return {**state, key: expand_input_conv(have, k)}


def save_safetensors(
    network: nn.Module,
    path: Path,
    card_json: str,
    extra: dict | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
):
    """Write `network`'s weights as safetensors with the model card (JSON) in the metadata.

    `extra_tensors` (keys starting with `extra/`, e.g. a converted projection head) are stored in
    the file for fine-tuning code to find, and skipped when the network is loaded.
    """
    from safetensors.torch import save_file

    from medfound import __version__

    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    state.update(extra_tensors or {})
    metadata = {CARD_KEY: card_json, "medfound_version": __version__, **(extra or {})}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata))


def card_in_file(path: str | Path) -> dict | None:
    """The card a medfound .safetensors file carries (read from its header only), or None."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            return card_from_metadata(fh.metadata() or {})
    except Exception as exc:
        raise WeightsError(f"{path}: unreadable weight file ({type(exc).__name__}: {exc})") from exc


def card_from_metadata(metadata: dict[str, str]) -> dict | None:
    """The card a medfound safetensors file carries, as a dict, or None."""
    raw = metadata.get(CARD_KEY)
    return json.loads(raw) if raw else None
