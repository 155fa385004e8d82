"""Checkpoint layouts of published transformer models, and explicit maps onto timm's names.

A layout is told from its keys (`detect`), then renamed key by key (`to_timm`). Each map is written
out rule by rule from the publisher's module names, so a user can read which tensor goes where:

- timm: timm's own names (UNI, UNI2-h, Virchow/2, Prov-GigaPath, H-optimus-0; medfound's exports).
- hf-vit: transformers' ViTModel (Phikon), as saved on the hub; also transformers 5's names.
- hf-dinov2: transformers' Dinov2Model (Phikon-v2, RAD-DINO's model.safetensors).
- dinov2: the original DINOv2 code (RAD-DINO's backbone_compatible.safetensors).
- open_clip: an open_clip bundle whose vision tower is timm's (BiomedCLIP).
- sam: a segment-anything checkpoint (MedSAM's medsam_vit_b.pth); the image encoder is taken.
- swin-timm0.5: timm 0.5's Swin (CTransPath's ckpt['model']).

Tensors a layout carries that an image embedding does not use (a text tower, SAM's prompt encoder
and mask decoder, a pooler, DINOv2's mask token) are returned as `ignored`, for the loader to report;
buffers that timm recomputes (Swin's attention masks and position indices) are dropped.
"""

import re
from collections.abc import Callable

import torch

LAYOUTS = ("timm", "hf-vit", "hf-dinov2", "dinov2", "open_clip", "sam", "swin-timm0.5")
LAYOUT_EXAMPLES = {
    "timm": "timm's names (UNI, Virchow, H-optimus-0, Prov-GigaPath; medfound's own files)",
    "hf-vit": "transformers' ViTModel (Phikon)",
    "hf-dinov2": "transformers' Dinov2Model (Phikon-v2, RAD-DINO model.safetensors)",
    "dinov2": "the original DINOv2 code (RAD-DINO backbone_compatible.safetensors)",
    "open_clip": "an open_clip bundle (BiomedCLIP open_clip_pytorch_model.bin)",
    "sam": "a segment-anything checkpoint (MedSAM medsam_vit_b.pth)",
    "swin-timm0.5": "timm 0.5's Swin Transformer (CTransPath ctranspath.pth)",
}


def detect(keys) -> str:
    """The layout a state dict's keys are in (one of LAYOUTS)."""
    keys = list(keys)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, key) for key in keys)

    if has(r"^visual\.trunk\."):
        return "open_clip"
    if has(r"^image_encoder\.") or has(r"\.mlp\.lin1\.weight$"):
        return "sam"
    if has(r"\.layernorm_before\."):
        return "hf-vit"
    if has(r"^(dinov2\.)?embeddings\.patch_embeddings\."):
        return "hf-dinov2"
    if has(r"\.(attn_mask|relative_position_index)$") or has(r"^layers\.0\.downsample\."):
        return "swin-timm0.5"
    if has(r"^mask_token$") or has(r"\.mlp\.w12\.") or has(r"^blocks\.\d+\.\d+\."):
        return "dinov2"
    return "timm"


class Mapped:
    """A state dict renamed to timm's names: `state`, where each key came from (`origin`, for
    messages in the file's own names) and the file's keys not used (`ignored`)."""

    def __init__(self):
        self.state: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}
        self.ignored: list[str] = []

    def put(self, key: str, value: torch.Tensor, origin: str) -> None:
        if key in self.state:  # two of the file's tensors for one place: never keep either silently
            first = self.origin.get(key, key)
            raise ValueError(f"{origin} and {first} would both load into {key}")
        self.state[key] = value
        if origin != key:
            self.origin[key] = origin


Rule = tuple[str, str]  # (regex on the file's key, replacement giving timm's key)

# Hugging Face transformers' ViT and DINOv2 encoders (hub names, then transformers 5's names).
_HF_EMBEDDINGS: list[Rule] = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^layernorm\.(weight|bias)$", r"norm.\1"),
]
_HF_VIT: list[Rule] = [
    *_HF_EMBEDDINGS,
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.mlp\.(fc1|fc2)\.", r"blocks.\1.mlp.\2."),
]
_HF_DINOV2: list[Rule] = [
    *_HF_EMBEDDINGS,
    (r"^encoder\.layer\.(\d+)\.(norm1|norm2)\.", r"blocks.\1.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale(1|2)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.(fc1|fc2)\.", r"blocks.\1.mlp.\2."),
    # the SwiGLU variant (ViT-g): packed input projection, then output projection
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.fc2."),
]
# query, key and value projections, fused by timm into one qkv projection (in that order)
_HF_QKV = re.compile(
    r"^(?:encoder\.layer|layers)\.(\d+)\.attention\."
    r"(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$"
)
_HF_UNUSED = (r"^pooler\.", r"^embeddings\.mask_token$", r"^embeddings\.position_ids$")

# applied one after the other (a chunked ViT-g key needs the first and the second)
_DINOV2_STEPS: list[Rule] = [
    (r"^blocks\.\d+\.(\d+)\.", r"blocks.\1."),  # chunked blocks (block_chunks > 0)
    (r"^(blocks\.\d+\.mlp)\.w12\.", r"\1.fc1."),  # SwiGLU (ViT-g): timm's packed SwiGLU
    (r"^(blocks\.\d+\.mlp)\.w3\.", r"\1.fc2."),
]
_SAM: list[Rule] = [
    (r"^(?:image_encoder\.)?(blocks\.\d+\.mlp)\.lin(1|2)\.", r"\1.fc\2."),
    (r"^(?:image_encoder\.)?(.*)$", r"\1"),
]
_OPEN_CLIP: list[Rule] = [
    (r"^visual\.trunk\.(.*)$", r"trunk.\1"),
    (r"^visual\.head\.proj\.weight$", "proj.weight"),
    (r"^(visual\..*)$", r"\1"),  # anything else of the image tower: reported as unexpected
]
_SWIN_TIMM05: list[Rule] = [
    # timm 0.5 ends a stage with its patch merging; timm 1.x starts the next stage with it
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample."),
    (r"^(.*)$", r"\1"),
]


def _renamed(key: str, rules: list[tuple[str, str | Callable]]) -> str | None:
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key, count=1)
        if count:
            return new
    return None


def _hf(state: dict, rules: list[Rule], prefix: str) -> Mapped:
    mapped, parts = Mapped(), {}
    for key, value in state.items():
        name = key.removeprefix(prefix)
        fused = _HF_QKV.match(name)
        if fused:
            block, which, kind = fused.group(1), fused.group(2) or fused.group(3), fused.group(4)
            parts.setdefault((block, kind), {})[which[0]] = (key, value)
            continue
        if any(re.search(pattern, name) for pattern in _HF_UNUSED) or name.startswith(
            "classifier."
        ):
            mapped.ignored.append(key)
            continue
        new = _renamed(name, rules)
        mapped.put(new if new is not None else key, value, key)
    for (block, kind), qkv in parts.items():
        target = f"blocks.{block}.attn.qkv.{kind}"
        if set(qkv) != {"q", "k", "v"}:  # a projection missing: keep the parts, reported
            for key, value in qkv.values():
                mapped.put(key, value, key)
            continue
        sources = [qkv[p][0] for p in "qkv"]
        value = torch.cat([qkv[p][1] for p in "qkv"])
        mapped.put(target, value, " + ".join(sources))
    return mapped


def _by_rules(state: dict, rules: list, ignore: tuple[str, ...] = (), chained=False) -> Mapped:
    """Each key renamed by the first rule that matches (`chained`: by every rule in turn)."""
    mapped = Mapped()
    for key, value in state.items():
        if any(re.search(pattern, key) for pattern in ignore):
            mapped.ignored.append(key)
            continue
        if chained:
            new = key
            for pattern, replacement in rules:
                new = re.sub(pattern, replacement, new, count=1)
        else:
            new = _renamed(key, rules)
        mapped.put(new, value, key)
    return mapped


def to_timm(state: dict[str, torch.Tensor], layout: str) -> Mapped:
    """`state` (in `layout`) renamed to timm's names; what it does not use listed in `ignored`."""
    if layout == "hf-vit":
        prefix = "vit." if any(k.startswith("vit.") for k in state) else ""
        return _hf(state, _HF_VIT, prefix)
    if layout == "hf-dinov2":
        prefix = "dinov2." if any(k.startswith("dinov2.") for k in state) else ""
        return _hf(state, _HF_DINOV2, prefix)
    if layout == "dinov2":
        return _by_rules(state, _DINOV2_STEPS, ignore=(r"^mask_token$",), chained=True)
    if layout == "sam":
        return _by_rules(state, _SAM, ignore=(r"^(prompt_encoder|mask_decoder)\.",))
    if layout == "open_clip":
        # the text tower, the logit scale and any other non-image tensors
        return _by_rules(state, _OPEN_CLIP, ignore=(r"^(?!visual\.)",))
    if layout == "swin-timm0.5":
        # attention masks and relative position indices are buffers timm recomputes;
        # CTransPath replaced the classifier by an identity, so a head is not an embedding's
        dropped = (r"\.(attn_mask|relative_position_index)$", r"^head\.")
        return _by_rules(state, _SWIN_TIMM05, ignore=dropped)
    if layout == "timm":
        return _by_rules(state, [(r"^(.*)$", r"\1")])
    raise ValueError(f"unknown layout {layout!r}; layouts are {LAYOUTS}")
