"""Cards of today's published medical foundation models (vision transformers), registered by
models/registry.py.

Each card carries the publisher's recipe: the timm arguments of its hub config, the input size,
the resize and normalisation of its model card, the embedding its authors define, and where the
weights come from. Nothing is downloaded: the user fetches the files (most are gated) and gives
the file or folder with --weights.
"""

from medfound.io.presets import Resize
from medfound.models.card import ModelCard

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
H_OPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
H_OPTIMUS_STD = (0.211883, 0.230117, 0.177517)
RAD_DINO_MEAN = (0.5307,) * 3
RAD_DINO_STD = (0.2583,) * 3

_TOKENS = "(T, D) tokens per image: class token, {registers}then the patches; D = {width}"
_HF = "Hugging Face hub {repo}"
_GATED = ", gated: accept the terms on its page, then download (huggingface-cli download {repo})"
_CC_NC_ND = "CC-BY-NC-ND-4.0: non-commercial research only, no derivatives shared"
_OWKIN = "Owkin non-commercial licence: research only"
_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
# SwiGLU MLP of the DINOv2-trained giants: the packed (gate and value in one matrix) form timm uses
_SWIGLU = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}


def _tokens(width: int, registers: int = 0) -> str:
    return _TOKENS.format(registers=f"{registers} registers, " if registers else "", width=width)


def _pathology(name: str, **fields) -> ModelCard:
    """A pathology tile encoder: RGB H&E tiles at 224 px, ImageNet statistics unless said."""
    defaults = {
        "family": "vit",
        "modality": "pathology (H&E)",
        "spatial_dims": 2,
        "in_channels": 3,
        "input_size": 224,
        "preset": "path",
        "input_mean": IMAGENET_MEAN,
        "input_std": IMAGENET_STD,
        "weight_files": _TIMM_FILES,
    }
    return ModelCard(name=name, **(defaults | fields))


CARDS: list[tuple[ModelCard, tuple[str, ...]]] = [
    (
        _pathology(
            "vit_large_patch16_224.uni_mass100k",
            architecture="vit_large_patch16_224",
            architecture_args={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
            embedding_dim=1024,
            embedding="cls",
            # torchvision Resize(224) (short side only; medfound also crops the centre square)
            resize=Resize("crop", 1.0, "bilinear"),
            mpp=0.5,
            description="UNI: ViT-L/16 trained with DINOv2 on Mass-100K (100M tiles, 100k slides)",
            weights_source=_HF.format(repo="MahmoodLab/UNI") + _GATED.format(repo="MahmoodLab/UNI"),
            licence=_CC_NC_ND,
            weight_layouts=("timm",),
            feature_layout=_tokens(1024),
        ),
        ("uni",),
    ),
    (
        _pathology(
            "vit_giant_patch14_224.uni2_h",
            architecture="vit_giant_patch14_224",
            architecture_args={
                "img_size": 224,
                "patch_size": 14,
                "depth": 24,
                "num_heads": 24,
                "embed_dim": 1536,
                "mlp_ratio": 2.66667 * 2,
                "init_values": 1e-5,
                "no_embed_class": True,
                "reg_tokens": 8,
                "dynamic_img_size": True,
                **_SWIGLU,
            },
            embedding_dim=1536,
            embedding="cls",
            register_tokens=8,
            resize=Resize("crop", 1.0, "bicubic"),  # timm eval transform of its pretrained_cfg
            mpp=0.5,
            description="UNI2-h: ViT-H/14 with 8 registers, DINOv2 on 200M+ tiles of 350k+ slides",
            weights_source=_HF.format(repo="MahmoodLab/UNI2-h")
            + _GATED.format(repo="MahmoodLab/UNI2-h"),
            licence=_CC_NC_ND,
            weight_layouts=("timm",),
            feature_layout=_tokens(1536, 8),
        ),
        ("uni2-h",),
    ),
    (
        _pathology(
            "vit_huge_patch14_224.virchow",
            architecture="vit_huge_patch14_224",
            architecture_args={
                "img_size": 224,
                "init_values": 1e-5,
                "mlp_ratio": 5.3375,
                "dynamic_img_size": True,
                **_SWIGLU,
            },
            embedding_dim=2560,
            embedding="cls+mean",
            resize=Resize("crop", 1.0, "bicubic"),
            mpp=0.5,
            description="Virchow: ViT-H/14 trained with DINOv2 on 1.5M slides (MSKCC); "
            "embedding = class token + mean of the patch tokens (2 x 1280)",
            weights_source=_HF.format(repo="paige-ai/Virchow")
            + _GATED.format(repo="paige-ai/Virchow"),
            licence="Apache-2.0, gated: Paige's terms of access (no clinical use)",
            weight_layouts=("timm",),
            feature_layout=_tokens(1280),
        ),
        ("virchow",),
    ),
    (
        _pathology(
            "vit_huge_patch14_224.virchow2",
            architecture="vit_huge_patch14_224",
            architecture_args={
                "img_size": 224,
                "init_values": 1e-5,
                "mlp_ratio": 5.3375,
                "reg_tokens": 4,
                "dynamic_img_size": True,
                **_SWIGLU,
            },
            embedding_dim=2560,
            embedding="cls+mean",
            register_tokens=4,
            resize=Resize("crop", 1.0, "bicubic"),
            mpp=0.5,
            description="Virchow2: ViT-H/14 with 4 registers, DINOv2 on 3.1M slides at 5x-40x; "
            "embedding = class token + mean of the patch tokens, registers skipped (2 x 1280)",
            weights_source=_HF.format(repo="paige-ai/Virchow2")
            + _GATED.format(repo="paige-ai/Virchow2"),
            licence=_CC_NC_ND,
            weight_layouts=("timm",),
            feature_layout=_tokens(1280, 4),
        ),
        ("virchow2",),
    ),
    (
        _pathology(
            "vit_giant_patch14_dinov2.prov_gigapath",
            architecture="vit_giant_patch14_dinov2",
            architecture_args={
                "img_size": 224,
                "patch_size": 16,
                "embed_dim": 1536,
                "depth": 40,
                "num_heads": 24,
                "init_values": 1e-5,
                "mlp_ratio": 5.33334,
            },
            embedding_dim=1536,
            embedding="cls",
            resize=Resize("crop", 0.875, "bicubic"),  # Resize(256, bicubic) + CenterCrop(224)
            mpp=0.5,
            description="Prov-GigaPath tile encoder: ViT-g/16 trained with DINOv2 on 1.3B tiles "
            "of 171k Providence slides (the slide encoder is not included)",
            weights_source=_HF.format(repo="prov-gigapath/prov-gigapath")
            + _GATED.format(repo="prov-gigapath/prov-gigapath"),
            licence="Apache-2.0, gated: research use only, per its terms of access",
            weight_layouts=("timm",),
            feature_layout=_tokens(1536),
        ),
        ("prov-gigapath", "gigapath"),
    ),
    (
        _pathology(
            "vit_giant_patch14_reg4_dinov2.h_optimus_0",
            architecture="vit_giant_patch14_reg4_dinov2",
            architecture_args={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
            input_mean=H_OPTIMUS_MEAN,
            input_std=H_OPTIMUS_STD,
            embedding_dim=1536,
            embedding="cls",
            register_tokens=4,
            resize=Resize("crop", 1.0, "bicubic"),
            mpp=0.5,
            description="H-optimus-0 (Bioptimus): ViT-g/14 with 4 registers, DINOv2 on 500k+ "
            "slides; its own normalisation statistics",
            weights_source=_HF.format(repo="bioptimus/H-optimus-0")
            + _GATED.format(repo="bioptimus/H-optimus-0"),
            licence="Apache-2.0, gated",
            weight_layouts=("timm",),
            feature_layout=_tokens(1536, 4),
        ),
        ("h-optimus-0",),
    ),
    (
        _pathology(
            "vit_base_patch16_224.phikon",
            architecture="vit_base_patch16_224",
            # transformers' ViT default LayerNorm eps, which Phikon's config keeps
            architecture_args={"img_size": 224, "layer_norm_eps": 1e-12},
            embedding_dim=768,
            embedding="cls",
            resize=Resize("stretch", 1.0, "bilinear"),  # ViTImageProcessor: 224 x 224, resample 2
            mpp=0.5,
            description="Phikon (Owkin): ViT-B/16 trained with iBOT on 43M TCGA tiles",
            weights_source=_HF.format(repo="owkin/phikon") + " (huggingface-cli download "
            "owkin/phikon); transformers' ViTModel layout",
            licence=_OWKIN,
            weight_layouts=("hf-vit",),
            weight_files=("model.safetensors", "pytorch_model.bin"),
            feature_layout=_tokens(768),
        ),
        ("phikon",),
    ),
    (
        _pathology(
            "vit_large_patch16_224.phikon_v2",
            architecture="vit_large_patch16_224",
            architecture_args={"img_size": 224, "init_values": 1e-5},
            embedding_dim=1024,
            embedding="cls",
            # BitImageProcessor: short side, centre crop (its corner floored)
            resize=Resize("crop", 1.0, "bicubic", crop_offset="floor"),
            mpp=0.5,
            description="Phikon-v2 (Owkin): ViT-L/16 trained with DINOv2 on 456M tiles of "
            "PANCAN-XL (58k public slides)",
            weights_source=_HF.format(repo="owkin/phikon-v2") + " (huggingface-cli download "
            "owkin/phikon-v2); transformers' Dinov2Model layout",
            licence=_OWKIN,
            weight_layouts=("hf-dinov2",),
            feature_layout=_tokens(1024),
        ),
        ("phikon-v2",),
    ),
    (
        _pathology(
            "swin_tiny_patch4_window7_224.ctranspath",
            architecture="swin_tiny_patch4_window7_224",
            architecture_args={"img_size": 224, "embed_layer": "convstem"},
            embedding_dim=768,
            embedding="pooled",
            # torchvision Resize(224) (short side only; medfound also crops the centre square)
            resize=Resize("crop", 1.0, "bilinear"),
            description="CTransPath: Swin-T with a convolutional stem, semantically-relevant "
            "contrastive learning on 15M TCGA and PAIP tiles; embedding = mean of the final map. "
            "Its tiles mix magnifications, so no one scale is recommended",
            weights_source="the TransPath repository (github.com/Xiyue-Wang/TransPath): "
            "ctranspath.pth from its Google Drive link",
            licence="research use, per the TransPath repository",
            weight_layouts=("swin-timm0.5",),
            weight_files=("ctranspath.pth",),
            feature_layout="(C, H, W) per image; C = 768, 7 x 7 at 224",
        ),
        ("ctranspath",),
    ),
    (
        ModelCard(
            name="vit_base_patch14_dinov2.rad_dino",
            family="vit",
            architecture="vit_base_patch14_dinov2",
            architecture_args={"img_size": 518},
            modality="chest X-ray",
            spatial_dims=2,
            in_channels=3,
            input_size=518,
            embedding_dim=768,
            preset="cxr",
            input_mean=RAD_DINO_MEAN,
            input_std=RAD_DINO_STD,
            embedding="cls",
            # BitImageProcessor: short side 518, centre crop 518 (its corner floored)
            resize=Resize("crop", 1.0, "bicubic", crop_offset="floor"),
            description="RAD-DINO (Microsoft): ViT-B/14 trained with DINOv2 on 882k chest X-rays; "
            "grayscale repeated to RGB",
            weights_source=_HF.format(repo="microsoft/rad-dino")
            + " (huggingface-cli download microsoft/rad-dino): model.safetensors "
            "(transformers) or backbone_compatible.safetensors (DINOv2)",
            licence="Microsoft Research License Agreement: non-commercial research only",
            weight_layouts=("hf-dinov2", "dinov2"),
            weight_files=("model.safetensors", "backbone_compatible.safetensors"),
            feature_layout=_tokens(768),
        ),
        ("rad-dino",),
    ),
    (
        ModelCard(
            name="vit_base_patch16_224.biomedclip",
            family="vit",
            architecture="vit_base_patch16_224",
            architecture_args={"img_size": 224, "proj_dim": 512},
            modality="biomedical figures (radiology, pathology, microscopy, ...)",
            spatial_dims=2,
            in_channels=3,
            input_size=224,
            embedding_dim=512,
            preset="auto",
            input_mean=OPENAI_CLIP_MEAN,
            input_std=OPENAI_CLIP_STD,
            embedding="cls+proj",
            resize=Resize("crop", 1.0, "bicubic"),  # open_clip: Resize(224, bicubic) + crop
            description="BiomedCLIP (Microsoft) image tower: ViT-B/16 trained contrastively with "
            "PubMedBERT on 15M PubMed Central figure-caption pairs; embedding in the joint "
            "image-text space (512)",
            weights_source=_HF.format(
                repo="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
            )
            + ": open_clip_pytorch_model.bin (the text tower is not loaded)",
            licence="MIT",
            weight_layouts=("open_clip",),
            weight_files=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            feature_layout=_tokens(768),
        ),
        ("biomedclip",),
    ),
    (
        ModelCard(
            name="samvit_base_patch16.medsam",
            family="vit",
            architecture="samvit_base_patch16",
            architecture_args={"img_size": 1024},
            modality="CT, MRI, X-ray, ultrasound, endoscopy, pathology, ...",
            spatial_dims=2,
            in_channels=3,
            input_size=1024,
            embedding_dim=256,
            preset="auto",
            per_image_minmax=True,
            embedding="pooled",
            resize=Resize("stretch", 1.0, "spline"),  # MedSAM: 1024 x 1024, order 3, then min-max
            description="MedSAM image encoder: SAM's ViT-B fine-tuned on 1.57M medical image-mask "
            "pairs; embedding = the 256 x 64 x 64 neck map, averaged",
            weights_source="the MedSAM repository (github.com/bowang-lab/MedSAM): medsam_vit_b.pth "
            "from its Google Drive link (prompt encoder and mask decoder are not loaded)",
            licence="Apache-2.0",
            weight_layouts=("sam",),
            weight_files=("medsam_vit_b.pth",),
            feature_layout="(C, H, W) per image; C = 256, 64 x 64 at 1024",
        ),
        ("medsam",),
    ),
]
