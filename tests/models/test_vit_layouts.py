"""Parity of every published layout: the reference network is built at a tiny width from its own
library, saved as its publisher saves it, loaded through medfound, and the embeddings compared
(relative error < 1e-4)."""

import json
import re
from functools import partial

import pytest
import timm
import torch

from medfound.errors import WeightsError
from medfound.models import get_card, load_model
from medfound.models.layouts import detect
from tests.models.vit_tiny import (
    TINY_VIT,
    assert_close_embeddings,
    normalised,
    scramble,
    tiny_card,
)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _images(size: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _embed(card, weights, x) -> torch.Tensor:
    with torch.no_grad():
        return load_model(card, weights)(x)


# --- timm's own layout, built with the hub's arguments (as the publishers' READMEs do) ---------

_SWIGLU = {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU}
# The publishers' own timm calls (their READMEs and hub configs), written out here rather than
# read off the cards: a card whose arguments differ fails on shapes or on the embedding.
_HUB = {
    "uni": ("vit_large_patch16_224", dict(patch_size=16, init_values=1e-5, dynamic_img_size=True)),
    "uni2-h": (
        "vit_giant_patch14_224",
        dict(patch_size=14, init_values=1e-5, mlp_ratio=2.66667 * 2, no_embed_class=True,
             reg_tokens=8, dynamic_img_size=True, **_SWIGLU),
    ),
    "virchow": (
        "vit_huge_patch14_224",
        dict(init_values=1e-5, mlp_ratio=5.3375, global_pool="", dynamic_img_size=True, **_SWIGLU),
    ),
    "virchow2": (
        "vit_huge_patch14_224",
        dict(init_values=1e-5, mlp_ratio=5.3375, global_pool="", reg_tokens=4,
             dynamic_img_size=True, **_SWIGLU),
    ),
    "prov-gigapath": (
        "vit_giant_patch14_dinov2",
        dict(in_chans=3, patch_size=16, init_values=1e-5, mlp_ratio=5.33334),
    ),
    "h-optimus-0": ("vit_giant_patch14_reg4_dinov2", dict(init_values=1e-5, dynamic_img_size=False)),
}  # fmt: skip
# the publishers' embedding of timm's output: the class token (timm's own pooling), or for
# Virchow the class token and the mean of the patch tokens; Virchow2 skips its 4 registers
_PUBLISHED_EMBEDDING = {
    "virchow": lambda tokens: torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1),
    "virchow2": lambda tokens: torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], -1),
}


@pytest.mark.parametrize("name", sorted(_HUB))
def test_timm_hub_checkpoints_give_the_publishers_embedding(tmp_path, name):
    architecture, hub_args = _HUB[name]
    patch = hub_args.get("patch_size", 14)
    size = 2 * patch
    dim = 64 if name in _PUBLISHED_EMBEDDING else 32
    card = tiny_card(name, size, dim, img_size=size, **TINY_VIT)
    assert card.architecture == architecture
    reference = timm.create_model(
        architecture, pretrained=False, num_classes=0, **{**hub_args, "img_size": size, **TINY_VIT}
    )
    scramble(reference)
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    x = _images(size)
    with torch.no_grad():
        out = reference(normalised(x, card.input_mean, card.input_std))
    expected = _PUBLISHED_EMBEDDING[name](out) if name in _PUBLISHED_EMBEDDING else out
    assert_close_embeddings(_embed(card, tmp_path / "pytorch_model.bin", x), expected)
    # the folder, as downloaded, loads too
    assert_close_embeddings(_embed(card, tmp_path, x), expected)


# --- Hugging Face transformers ----------------------------------------------------------------


def _phikon_reference():
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=32,
        patch_size=16,
        layer_norm_eps=1e-12,
    )
    return scramble(ViTModel(config, add_pooling_layer=True))


def _phikon_card():
    return tiny_card("phikon", 32, 32, img_size=32, patch_size=16, **TINY_VIT)


def test_phikon_hub_folder_matches_transformers(tmp_path):
    reference = _phikon_reference()
    reference.save_pretrained(tmp_path)  # config.json + model.safetensors, the hub's names
    x = _images(32)
    with torch.no_grad():
        expected = reference(pixel_values=normalised(x, *IMAGENET)).last_hidden_state[:, 0]
    assert_close_embeddings(_embed(_phikon_card(), tmp_path, x), expected)


def test_phikon_state_dict_in_transformers_5_names_loads(tmp_path):
    reference = _phikon_reference()
    path = tmp_path / "phikon.pt"
    torch.save(reference.state_dict(), path)  # transformers 5 renames modules in memory
    x = _images(32)
    with torch.no_grad():
        expected = reference(pixel_values=normalised(x, *IMAGENET)).last_hidden_state[:, 0]
    assert_close_embeddings(_embed(_phikon_card(), path, x), expected)


def _dinov2_reference(patch: int, size: int, swiglu: bool = False):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=4,
        image_size=size,
        patch_size=patch,
        layerscale_value=1e-5,
        use_swiglu_ffn=swiglu,  # ViT-g's MLP: hidden (int(2/3 * 4 * 32) + 7) // 8 * 8 = 88
    )
    return scramble(Dinov2Model(config))


# timm's packed SwiGLU of the same size: int(32 * 5.5) = 176 = 2 x 88
_TINY_SWIGLU = {"mlp_layer": "swiglu_packed", "act_layer": "silu", "mlp_ratio": 5.5}


@pytest.mark.parametrize(("name", "patch"), [("phikon-v2", 16), ("rad-dino", 14)])
def test_dinov2_hub_folders_match_transformers(tmp_path, name, patch):
    size = 2 * patch
    card = tiny_card(name, size, 32, img_size=size, patch_size=patch, **TINY_VIT)
    reference = _dinov2_reference(patch, size)
    reference.save_pretrained(tmp_path)
    x = _images(size)
    with torch.no_grad():
        pixels = normalised(x, card.input_mean, card.input_std)
        expected = reference(pixel_values=pixels).pooler_output
    assert_close_embeddings(_embed(card, tmp_path, x), expected)


def _original_dinov2_names(hf_state: dict, chunks: int = 0) -> dict:
    """transformers' Dinov2 names -> the DINOv2 code's (what RAD-DINO's backbone_compatible file
    holds); written here from the two codebases' module names, checked below against timm's own
    reader of that layout. `chunks` > 0 nests the blocks as DINOv2's block_chunks does
    (blocks.CHUNK.INDEX, the index counting over all blocks)."""
    out = {}
    for key, value in hf_state.items():
        key = key.replace("mlp.weights_in", "mlp.w12").replace("mlp.weights_out", "mlp.w3")
        key = key.replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
        key = key.replace("embeddings.position_embeddings", "pos_embed")
        key = key.replace("embeddings.", "").replace("encoder.layer.", "blocks.")
        key = key.replace("attention.output.dense", "attn.proj")
        key = re.sub(r"layer_scale(\d)\.lambda1", r"ls\1.gamma", key)
        key = "norm." + key.split(".")[-1] if key.startswith("layernorm.") else key
        out[key] = value
    for block in {k.split(".")[1] for k in out if k.startswith("blocks.")}:
        for kind in ("weight", "bias"):
            parts = [
                out.pop(f"blocks.{block}.attention.attention.{p}.{kind}")
                for p in ("query", "key", "value")
            ]
            out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(parts)
    if chunks:
        per_chunk = -(-len({k.split(".")[1] for k in out if k.startswith("blocks.")}) // chunks)
        out = {
            re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{int(m[1]) // per_chunk}.{m[1]}.", k): v
            for k, v in out.items()
        }
    return out


def test_rad_dino_backbone_compatible_file_matches(tmp_path):
    from safetensors.torch import load_file, save_file

    card = tiny_card("rad-dino", 28, 32, img_size=28, **TINY_VIT)
    reference = _dinov2_reference(14, 28)
    reference.save_pretrained(tmp_path / "hf")  # the hub's names
    original = _original_dinov2_names(load_file(tmp_path / "hf" / "model.safetensors"))
    assert "mask_token" in original and detect(original) == "dinov2"
    save_file(
        {k: v.contiguous() for k, v in original.items()},
        tmp_path / "backbone_compatible.safetensors",
    )
    x = _images(28)
    with torch.no_grad():
        expected = reference(
            pixel_values=normalised(x, card.input_mean, card.input_std)
        ).pooler_output
        # the layout written above is the one timm's own DINOv2 reader takes
        timm_model = timm.create_model(
            card.architecture, pretrained=False, num_classes=0, **card.architecture_args
        )
        from timm.models.vision_transformer import checkpoint_filter_fn

        timm_model.load_state_dict(checkpoint_filter_fn(dict(original), timm_model))
        assert_close_embeddings(
            timm_model.eval()(normalised(x, card.input_mean, card.input_std)), expected
        )
    assert_close_embeddings(_embed(card, tmp_path, x), expected)


def test_dinov2_swiglu_in_both_layouts_and_chunked_blocks(tmp_path):
    from safetensors.torch import load_file, save_file

    card = tiny_card("rad-dino", 28, 32, img_size=28, **TINY_VIT, **_TINY_SWIGLU)
    reference = _dinov2_reference(14, 28, swiglu=True)
    reference.save_pretrained(tmp_path / "hf")  # mlp.weights_in / weights_out
    x = _images(28)
    with torch.no_grad():
        pixels = normalised(x, card.input_mean, card.input_std)
        expected = reference(pixel_values=pixels).pooler_output
    assert_close_embeddings(_embed(card, tmp_path / "hf", x), expected)
    hub = load_file(tmp_path / "hf" / "model.safetensors")
    original = _original_dinov2_names(hub, chunks=2)  # blocks.0.0.mlp.w12, blocks.1.1.mlp.w3
    assert "blocks.1.1.mlp.w12.weight" in original and detect(original) == "dinov2"
    save_file({k: v.contiguous() for k, v in original.items()}, tmp_path / "dinov2.safetensors")
    assert_close_embeddings(_embed(card, tmp_path / "dinov2.safetensors", x), expected)


# --- open_clip (BiomedCLIP) --------------------------------------------------------------------


def _biomedclip_reference():
    """A tiny CLIP as BiomedCLIP's open_clip config builds it (timm tower, class-token pooling,
    linear projection), with a small text tower under `text.` as BiomedCLIP's has; and its card."""
    import dataclasses

    import open_clip

    vision = dict(
        timm_model_name="vit_tiny_patch16_224",
        timm_model_pretrained=False,
        timm_pool="",
        timm_proj="linear",
        image_size=224,
    )
    text = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    reference = scramble(open_clip.CustomTextCLIP(embed_dim=16, vision_cfg=vision, text_cfg=text))
    card = tiny_card("biomedclip", 224, 16, proj_dim=16)
    return reference, dataclasses.replace(card, architecture="vit_tiny_patch16_224")


def test_biomedclip_open_clip_bundle_matches_encode_image(tmp_path):
    reference, card = _biomedclip_reference()
    torch.save(reference.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    x = _images(224, n=1)
    with torch.no_grad():
        expected = reference.encode_image(normalised(x, card.input_mean, card.input_std))
    assert_close_embeddings(_embed(card, tmp_path, x), expected)


# --- segment-anything (MedSAM) ----------------------------------------------------------------


def test_medsam_checkpoint_matches_segment_anything_image_encoder(tmp_path):
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    encoder = ImageEncoderViT(  # SAM's ViT-B arguments (build_sam), at a tiny size
        img_size=64,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=2,
        out_chans=16,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=2,
        global_attn_indexes=(1,),
    )
    sam = Sam(
        encoder,
        PromptEncoder(
            embed_dim=16, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4
        ),
        MaskDecoder(
            transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32, num_heads=2),
            transformer_dim=16,
        ),
    )
    scramble(sam)
    torch.save(sam.state_dict(), tmp_path / "medsam_vit_b.pth")
    card = tiny_card(
        "medsam",
        64,
        16,
        img_size=64,
        window_size=2,
        global_attn_indexes=(1,),
        neck_chans=16,
        **TINY_VIT,
    )
    x = _images(64)
    # MedSAM's inference: each image rescaled to [0, 1] by its own min and max, no mean/std
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    scaled = (x - low) / (x.amax(dim=(1, 2, 3), keepdim=True) - low)
    with torch.no_grad():
        expected = sam.image_encoder(scaled).mean(dim=(2, 3))
    assert_close_embeddings(_embed(card, tmp_path / "medsam_vit_b.pth", 0.5 * x + 0.2), expected)


# --- timm 0.5's Swin (CTransPath) --------------------------------------------------------------

_CTRANSPATH_STEM = [  # the CTransPath checkpoint's patch embedding keys
    "patch_embed.proj.0.weight",
    "patch_embed.proj.1.weight",
    "patch_embed.proj.1.bias",
    "patch_embed.proj.1.running_mean",
    "patch_embed.proj.1.running_var",
    "patch_embed.proj.1.num_batches_tracked",
    "patch_embed.proj.3.weight",
    "patch_embed.proj.4.weight",
    "patch_embed.proj.4.bias",
    "patch_embed.proj.4.running_mean",
    "patch_embed.proj.4.running_var",
    "patch_embed.proj.4.num_batches_tracked",
    "patch_embed.proj.6.weight",
    "patch_embed.proj.6.bias",
    "patch_embed.norm.weight",
    "patch_embed.norm.bias",
]


def _timm05_swin_layout(model: torch.nn.Module) -> dict:
    """A timm 1.x Swin state dict as timm 0.5 saved it: each stage's patch merging at the end of
    the stage before, with the attention masks of shifted blocks and the relative position index
    stored as buffers."""
    out = {}
    for key, value in model.state_dict().items():
        key = re.sub(
            r"^layers\.(\d+)\.downsample\.",
            lambda m: f"layers.{int(m.group(1)) - 1}.downsample.",
            key,
        )
        out[key] = value
    for name, module in model.named_modules():
        if name.endswith(".attn") and hasattr(module, "relative_position_index"):
            out[f"{name}.relative_position_index"] = module.relative_position_index
        if getattr(module, "attn_mask", None) is not None:
            out[f"{name}.attn_mask"] = module.attn_mask
    return out


def test_ctranspath_checkpoint_matches_timm_swin_with_its_stem(tmp_path):
    from timm.models.swin_transformer import checkpoint_filter_fn

    from medfound.models.vit import ConvStem

    args = dict(
        img_size=64, window_size=2, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)
    )
    card = tiny_card("ctranspath", 64, 128, **args)
    reference = timm.create_model(
        card.architecture, pretrained=False, num_classes=0, embed_layer=ConvStem, **args
    )
    scramble(reference)
    old = _timm05_swin_layout(reference)
    assert [k for k in old if k.startswith("patch_embed.")] == _CTRANSPATH_STEM
    assert (
        any(k.endswith("attn_mask") for k in old) and "layers.0.downsample.reduction.weight" in old
    )
    torch.save({"model": old}, tmp_path / "ctranspath.pth")  # CTransPath's ckpt['model']
    x = _images(64)
    with torch.no_grad():
        expected = reference(normalised(x, *IMAGENET))
        # timm's own reader of timm 0.5 checkpoints agrees with the layout written above
        other = timm.create_model(
            card.architecture, pretrained=False, num_classes=0, embed_layer=ConvStem, **args
        )
        other.load_state_dict(checkpoint_filter_fn(dict(old), other))
        assert_close_embeddings(other.eval()(normalised(x, *IMAGENET)), expected)
    assert_close_embeddings(_embed(card, tmp_path / "ctranspath.pth", x), expected)


# --- mismatches are named ----------------------------------------------------------------------


def test_a_checkpoint_of_another_width_names_its_first_bad_keys(tmp_path):
    reference = _phikon_reference()
    reference.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()  # the file alone: its folder's config would refuse first
    wider = tiny_card(
        "phikon", 32, 48, img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=2
    )
    with pytest.raises(WeightsError) as error:
        load_model(wider, tmp_path / "model.safetensors")
    message = str(error.value)
    assert "model.safetensors" in message and "shape" in message
    # reported in medfound's name and in the file's own
    assert "cls_token (file: embeddings.cls_token): file (1, 1, 32) vs model (1, 1, 48)" in message


def test_a_layout_the_model_is_not_published_in_is_refused(tmp_path):
    _phikon_reference().save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()  # the file alone: its folder's config would refuse first
    card = tiny_card("rad-dino", 28, 32, img_size=28, **TINY_VIT)
    with pytest.raises(
        WeightsError, match="ViTModel \\(Phikon\\), a layout this model is not published in"
    ):
        load_model(card, tmp_path / "model.safetensors")


def test_missing_layer_scale_keys_are_named(tmp_path):
    # UNI is built with LayerScale (init_values); a checkpoint of a plain ViT-L lacks its gammas
    card = tiny_card("uni", 32, 32, img_size=32, **TINY_VIT)
    plain = timm.create_model(
        "vit_large_patch16_224", pretrained=False, num_classes=0, img_size=32, **TINY_VIT
    )
    torch.save(plain.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(
        WeightsError, match=r"4 missing: blocks\.0\.ls1\.gamma, blocks\.0\.ls2\.gamma"
    ):
        load_model(card, tmp_path)


def test_hub_cache_entry_resolves_its_snapshot_and_checks_the_config(tmp_path):
    entry = tmp_path / "models--owkin--phikon"
    snapshot = entry / "snapshots" / "abc123"
    _phikon_reference().save_pretrained(snapshot)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("abc123")
    x = _images(32)
    assert load_model(_phikon_card(), entry)(x).shape == (2, 32)
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps(config | {"num_attention_heads": 4}))
    with pytest.raises(WeightsError, match=r"another network than .*heads 4 \(model 2\)"):
        load_model(_phikon_card(), entry)


def test_a_folder_without_weights_lists_what_it_holds(tmp_path):
    (tmp_path / "README.md").write_text("gated")
    with pytest.raises(WeightsError, match=r"looked for ctranspath\.pth.*holds: README\.md"):
        load_model(tiny_card("ctranspath", 64, 128, img_size=64), tmp_path)


def test_sharded_safetensors_load_through_their_index(tmp_path):
    from safetensors.torch import save_file

    card = tiny_card("uni", 32, 32, img_size=32, **TINY_VIT)
    reference = scramble(
        timm.create_model(card.architecture, num_classes=0, **card.architecture_args)
    )
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for shard, names in shards.items():
        save_file({k: state[k] for k in names}, tmp_path / shard)
    index = {"weight_map": {k: shard for shard, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    x = _images(32)
    with torch.no_grad():
        expected = reference(normalised(x, *IMAGENET))
    assert_close_embeddings(_embed(card, tmp_path, x), expected)


def test_embed_command_takes_a_hub_folder(tmp_path, monkeypatch):
    import dataclasses

    from typer.testing import CliRunner

    from medfound.cli.main import app
    from medfound.io import get_preset, preprocess, read_image
    from medfound.models import registry
    from medfound.tasks.probe import read_embeddings
    from tests.factories import image_folder

    card = dataclasses.replace(_phikon_card(), name="phikon-tiny-for-test")
    monkeypatch.setitem(registry._REGISTRY, card.name, card)
    reference = _phikon_reference()
    reference.save_pretrained(tmp_path / "owkin-phikon")
    image_folder(tmp_path / "tiles", n=3, size=40)
    out = tmp_path / "embeddings.parquet"
    args = ["embed", str(tmp_path / "tiles"), "--model", card.name, "--weights"]
    args += [str(tmp_path / "owkin-phikon"), "-o", str(out), "--workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ids, vectors, invalid = read_embeddings(out)
    assert len(ids) == 3 and not invalid
    for path, vector in zip(ids, vectors, strict=True):
        image = preprocess(read_image(path), get_preset("path"), **card.preprocess_args())
        with torch.no_grad():
            hidden = reference(pixel_values=normalised(image[None], *IMAGENET)).last_hidden_state
        assert_close_embeddings(torch.from_numpy(vector)[None], hidden[:, 0])


@pytest.mark.parametrize(
    "shard", ["../outside.safetensors", "/abs/model.safetensors", "x.index.json"]
)
def test_a_shard_index_cannot_point_outside_its_folder(tmp_path, shard):
    index = {"weight_map": {"cls_token": shard}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="is not a weight file's name in its folder"):
        load_model(tiny_card("uni", 32, 32, img_size=32, **TINY_VIT), tmp_path)


def test_sharded_weights_are_identified_by_every_shard(tmp_path):
    from medfound.models.weights import weights_digest

    test_sharded_safetensors_load_through_their_index(tmp_path)
    index = tmp_path / "model.safetensors.index.json"
    before = weights_digest(index)
    shard = tmp_path / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1] + b" ")
    assert weights_digest(index) != before


def test_a_hub_cache_link_to_a_missing_blob_is_an_incomplete_download(tmp_path):
    snapshot = tmp_path / "models--MahmoodLab--UNI" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_model.bin").symlink_to("../../blobs/0123")
    with pytest.raises(WeightsError, match="incomplete download"):
        load_model(
            tiny_card("uni", 32, 32, img_size=32, **TINY_VIT), tmp_path / "models--MahmoodLab--UNI"
        )


def test_a_folder_whose_preprocessing_differs_from_the_card_is_warned_about(tmp_path, caplog):
    reference = _phikon_reference()
    reference.save_pretrained(tmp_path)
    published = {  # Phikon's processor as its card says: 224 x 224, bilinear, ImageNet statistics
        "image_processor_type": "ViTImageProcessor",
        "size": {"height": 32, "width": 32},
        "resample": 2,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(published))
    with caplog.at_level("WARNING"):
        load_model(_phikon_card(), tmp_path)
    assert "preprocessing says" not in caplog.text
    other = published | {"resample": 3, "image_mean": [0.5, 0.5, 0.5]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(other))
    with caplog.at_level("WARNING"):
        load_model(_phikon_card(), tmp_path)
    assert "interpolation bicubic (card: bilinear)" in caplog.text
    assert "mean [0.5, 0.5, 0.5] (card: (0.485, 0.456, 0.406))" in caplog.text


def test_a_medfound_file_of_one_transformer_is_refused_by_another_of_the_same_shape(tmp_path):
    from medfound.models.weights import save_safetensors

    uni = tiny_card("uni", 32, 32, img_size=32, **TINY_VIT)
    phikon_v2 = tiny_card("phikon-v2", 32, 32, img_size=32, **TINY_VIT)
    model = load_model(uni, random_init=True)
    save_safetensors(model.network, tmp_path / "uni.safetensors", uni.to_json())
    assert load_model(uni, tmp_path / "uni.safetensors")(_images(32)).shape == (2, 32)
    with pytest.raises(
        WeightsError, match=r"holds weights of 'vit_large_patch16_224\.uni_mass100k'"
    ):
        load_model(phikon_v2, tmp_path / "uni.safetensors")


def test_a_config_with_another_layer_norm_eps_is_refused(tmp_path):
    _phikon_reference().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"layer_norm_eps": 1e-6}))
    with pytest.raises(WeightsError, match=r"layer norm eps 1e-06 \(model 1e-12\)"):
        load_model(_phikon_card(), tmp_path)
    # given as a file of that folder, the folder's config is read all the same
    with pytest.raises(WeightsError, match="layer norm eps"):
        load_model(_phikon_card(), tmp_path / "model.safetensors")


def test_timm_and_unreadable_preprocessing_settings_are_warned_about_not_raised(tmp_path, caplog):
    from medfound.models.hub_folder import recipe_differences

    card = get_card("uni2-h")
    timm_cfg = {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "input_size": [3, 224, 224],
    }
    (tmp_path / "config.json").write_text(
        json.dumps({"pretrained_cfg": timm_cfg | {"interpolation": "bicubic"}})
    )
    assert recipe_differences(tmp_path, card) == []
    (tmp_path / "config.json").write_text(
        json.dumps({"pretrained_cfg": timm_cfg | {"interpolation": "bilinear"}})
    )
    assert recipe_differences(tmp_path, card) == ["interpolation bilinear (card: bicubic)"]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"resample": [3]}))
    assert recipe_differences(tmp_path, card)[0].startswith("settings medfound cannot read")


def test_a_plain_folder_holding_a_snapshots_folder_is_not_a_hub_cache(tmp_path):
    from medfound.models.hub_folder import snapshot_of

    (tmp_path / "snapshots" / "epoch1").mkdir(parents=True)
    assert snapshot_of(tmp_path) == tmp_path
    (tmp_path / "refs").mkdir()
    assert snapshot_of(tmp_path) == tmp_path / "snapshots" / "epoch1"


def test_two_tensors_for_one_place_are_refused(tmp_path):
    from safetensors.torch import load_file

    _phikon_reference().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    # the same block's output projection under transformers 4's name and transformers 5's
    state["layers.0.attention.o_proj.weight"] = state[
        "encoder.layer.0.attention.output.dense.weight"
    ]
    torch.save(state, tmp_path / "both.pt")
    with pytest.raises(WeightsError, match=r"would both load into blocks\.0\.attn\.proj\.weight"):
        load_model(_phikon_card(), tmp_path / "both.pt")


def test_a_data_parallel_wrapped_open_clip_bundle_loads(tmp_path):
    reference, card = _biomedclip_reference()
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "ddp.pt")
    x = _images(224, n=1)
    with torch.no_grad():
        expected = reference.encode_image(normalised(x, card.input_mean, card.input_std))
    assert_close_embeddings(_embed(card, tmp_path / "ddp.pt", x), expected)


def test_a_card_counting_registers_wrongly_is_refused():
    import dataclasses

    from medfound.errors import UnknownModelError
    from medfound.models import build_model

    card = tiny_card("virchow2", 28, 64, img_size=28, **TINY_VIT)
    with pytest.raises(UnknownModelError, match="card counts 0 register tokens, the network 4"):
        build_model(dataclasses.replace(card, register_tokens=0))
