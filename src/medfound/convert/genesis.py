"""The original Models Genesis PyTorch release (`Genesis_Chest_CT.pt`) -> medfound safetensors.

The checkpoint is a torch pickle {"state_dict": {"module.down_tr64.ops.0.conv1.weight": ...},
"epoch", "optimizer_state_dict"}, read with `weights_only=True`. models/ does the work (weights.py
recognises the layout, genesis_names.py maps every original name and names every mismatch): this
module checks that the source really is that layout, loads it strictly into the card's UNet3D and
writes medfound's safetensors with the card, so `load_model(name, out)` needs no mapping again.
"""

from dataclasses import dataclass
from pathlib import Path

from medfound.errors import WeightsError
from medfound.files import file_sha256
from medfound.models import build_model, genesis_names, get_card
from medfound.models.card import ModelCard
from medfound.models.weights import load_state, read_state, save_safetensors

DEFAULT_MODEL = "unet3d_genesis.chest_ct"


@dataclass(frozen=True)
class GenesisConversion:
    """What `convert_genesis` did."""

    card: ModelCard
    tensors: int  # original entries mapped
    stripped_prefix: bool  # the keys carried DataParallel's `module.`


def convert_genesis(
    src: str | Path, out: str | Path, model: str = DEFAULT_MODEL
) -> GenesisConversion:
    """Convert an original Models Genesis checkpoint into a medfound weight file for `model`.

    Every original tensor is mapped to medfound's name and shape-checked; any missing,
    unexpected or mis-shaped key (encoder or decoder) is a WeightsError naming its original name.
    """
    src, out = Path(src), Path(out)
    card = get_card(model)
    if card.family != "genesis":
        raise WeightsError(
            f"{src}: the original Models Genesis checkpoint is a 3D Genesis U-Net, but --model "
            f"{card.name!r} is a {card.architecture!r}"
        )
    network = build_model(card).network
    state, _ = read_state(src, network)
    if not genesis_names.is_original_layout(state):
        raise WeightsError(
            f"{src}: not an original Models Genesis checkpoint (no down_tr*/up_tr*/out_tr keys); "
            "a medfound weight file needs no conversion: pass it to --weights"
        )
    stripped = all(k.startswith(genesis_names.WRAPPER) for k in state)
    load_state(network, state, src)  # maps, checks and logs; refuses any mismatch
    save_safetensors(
        network,
        out,
        card.to_json(),
        extra={
            "converted_from": src.name,
            "converted_from_sha256": file_sha256(src),
            "converted_by": "medfound convert genesis",
        },
    )
    return GenesisConversion(card=card, tensors=len(state), stripped_prefix=stripped)
