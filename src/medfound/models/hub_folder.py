"""A model folder as downloaded from a hub -> the weight file to load, with its config checked.

Takes a plain folder (`huggingface-cli download ... --local-dir DIR`, `git clone`), or a Hugging Face
cache entry (`models--ORG--NAME`, whose `refs/main` names the snapshot). The card's `weight_files`
say which files to look for, in order; a sharded checkpoint is taken through its `.index.json`.
The folder's `config.json`, when there is one, is compared with the card's network, so a folder of
another model (another width, depth or head count) is refused by name before any tensor is read.
"""

import json
import logging
from pathlib import Path

from medfound.errors import WeightsError, first_items
from medfound.models.card import ModelCard

log = logging.getLogger(__name__)

DEFAULT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def snapshot_of(folder: Path) -> Path:
    """`folder` itself, or for a Hugging Face cache entry the snapshot its `refs/main` names."""
    snapshots = folder / "snapshots"
    is_cache_entry = (folder / "refs").is_dir() or (folder / "blobs").is_dir()
    if not snapshots.is_dir() or not (is_cache_entry or folder.name.startswith("models--")):
        return folder
    ref = folder / "refs" / "main"
    if ref.is_file():
        name = ref.read_text().strip()
        if Path(name).name != name or name in ("", ".", ".."):
            raise WeightsError(f"{ref}: {name!r} is not a snapshot name")
        if (snapshots / name).is_dir():
            return snapshots / name
        raise WeightsError(f"{ref}: names snapshot {name!r}, which is not in {snapshots}")
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) == 1:
        return found[0]
    raise WeightsError(
        f"{folder}: a hub cache entry with {len(found)} snapshots and no refs/main to choose one; "
        "give the snapshot folder itself"
    )


def weight_file_in(folder: Path, card: ModelCard) -> Path:
    """The card's weight file in `folder` (first of `card.weight_files`, then the usual names)."""
    folder = snapshot_of(folder)
    names = tuple(dict.fromkeys((*card.weight_files, *DEFAULT_FILES)))
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            log.info("%s: loading %s", folder, name)
            return candidate
        if candidate.is_symlink():  # a hub cache's link to a blob that never arrived
            raise WeightsError(
                f"{candidate}: links to {candidate.readlink()}, which is missing: an incomplete "
                "download; download the model again"
            )
    present = sorted(p.name for p in folder.iterdir())
    raise WeightsError(
        f"{folder}: no weight file for {card.name!r}; looked for {', '.join(names)}; "
        f"the folder holds: {first_items(present, 8) or 'nothing'}"
    )


def check_config(folder: Path, card: ModelCard, network) -> None:
    """Refuse a folder whose config.json describes another network than the card's.

    Shapes catch most mismatches when the tensors load; what a state dict cannot show is checked
    here: the head count (a 1024-wide model splits into 16 heads or 8 alike) and, in Hugging Face
    configs, the LayerNorm eps.
    """
    path = snapshot_of(folder) / "config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable config ({exc})") from exc
    if not isinstance(config, dict):
        return
    # Hugging Face transformers' configs; timm's hub configs keep the arguments in model_args
    args = config.get("model_args") if isinstance(config.get("model_args"), dict) else config
    expected = _network_facts(network)
    found = {
        "heads": args.get("num_attention_heads", args.get("num_heads")),
        "width": args.get("hidden_size", args.get("embed_dim")),
        "depth": args.get("num_hidden_layers", args.get("depth")),
        "layer norm eps": args.get("layer_norm_eps"),
    }
    wrong = [
        f"{name} {found[name]} (model {expected[name]})"
        for name in found
        if _number(found[name]) is not None
        and expected.get(name) is not None
        and _number(found[name]) != expected[name]
    ]
    if wrong:
        raise WeightsError(
            f"{path}: describes another network than {card.name!r}: {', '.join(wrong)}"
        )


def _number(value) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):
        return None


def _network_facts(network) -> dict:
    trunk = getattr(network, "trunk", network)
    blocks = getattr(trunk, "blocks", None)
    if blocks is None or not len(blocks):
        return {}
    attention = getattr(blocks[0], "attn", None)
    norm = getattr(blocks[0], "norm1", None)
    return {
        "heads": getattr(attention, "num_heads", None),
        "width": getattr(trunk, "embed_dim", None),
        "depth": len(blocks),
        "layer norm eps": getattr(norm, "eps", None),
    }


# PIL's codes in Hugging Face processor configs
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def recipe_differences(folder: Path, card: ModelCard) -> list[str]:
    """Where the folder's own preprocessing config (Hugging Face `preprocessor_config.json`, a timm
    hub `config.json`'s `pretrained_cfg`, open_clip's `preprocess_cfg`) differs from the card.

    medfound follows the card; a difference means the card or the download is not what it seems,
    so the loader warns with these lines. A config it cannot read is reported, not raised."""
    try:
        return _recipe_differences(snapshot_of(folder), card)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        return [f"settings medfound cannot read ({type(exc).__name__}: {exc})"]


def _recipe_differences(folder: Path, card: ModelCard) -> list[str]:
    found: dict[str, object] = {}
    hf = _json(folder / "preprocessor_config.json")
    if hf:
        found["mean"], found["std"] = hf.get("image_mean"), hf.get("image_std")
        resample = hf.get("resample")
        if resample is not None:
            found["interpolation"] = _RESAMPLE.get(resample, f"resample={resample}")
        size, crop = hf.get("size"), hf.get("crop_size")
        if isinstance(size, dict) and "shortest_edge" in size and hf.get("do_center_crop", True):
            found["fit"] = "crop"
            side = crop.get("height") if isinstance(crop, dict) else crop
            found["input size"] = side
            short = _number(size["shortest_edge"])
            found["crop_pct"] = _number(side) / short if _number(side) and short else None
        elif isinstance(size, dict) and "height" in size:
            found["fit"], found["input size"] = "stretch", size["height"]
    timm_cfg = (_json(folder / "config.json") or {}).get("pretrained_cfg")
    if isinstance(timm_cfg, dict):
        found["mean"], found["std"] = timm_cfg.get("mean"), timm_cfg.get("std")
        found["interpolation"] = timm_cfg.get("interpolation")
        found["crop_pct"] = timm_cfg.get("crop_pct")
        input_size = timm_cfg.get("input_size")
        found["input size"] = input_size[-1] if isinstance(input_size, list) else None
    clip_cfg = (_json(folder / "open_clip_config.json") or {}).get("preprocess_cfg")
    if isinstance(clip_cfg, dict):
        found["mean"], found["std"] = clip_cfg.get("mean"), clip_cfg.get("std")
    recipe = card.resize
    expected = {
        "mean": card.input_mean,
        "std": card.input_std,
        "interpolation": recipe.interpolation if recipe else None,
        "fit": recipe.fit if recipe else None,
        "crop_pct": recipe.crop_pct if recipe else None,
        "input size": card.input_size,
    }
    return [
        f"{name} {found[name]} (card: {expected[name]})"
        for name in found
        if found[name] is not None
        and expected.get(name) is not None
        and not _same(found[name], expected[name])
    ]


def _same(found, expected) -> bool:
    if isinstance(expected, tuple | list) and _number(found) is not None:  # one value for all
        found = [found] * len(expected)
    if isinstance(expected, tuple | list):
        return (
            isinstance(found, list | tuple)
            and len(found) == len(expected)
            and all(
                _number(a) is not None and abs(_number(a) - b) < 1e-4
                for a, b in zip(found, expected, strict=True)
            )
        )
    if isinstance(expected, float):
        return _number(found) is not None and abs(_number(found) - expected) < 1e-4
    return found == expected


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
