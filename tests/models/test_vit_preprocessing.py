"""Each card's preprocessing equals its publisher's recipe on a fixed image.

The image is a real one (scikit-image's immunohistochemistry stain, the camera picture for the
grayscale models), cut to 300 x 260 so that resizing, the aspect ratio and the centre crop all
matter. The recipes are the ones each model card publishes, run with the library the publisher uses
(torchvision, timm, transformers' image processors, open_clip, scikit-image). The publishers'
pipelines round to 8 bits after resizing (PIL); medfound stays in float, so the figures differ by
about one 8-bit step: a mean difference under 0.008 and a largest under 0.05, in normalised units,
where a wrong interpolation, crop or normalisation differs by far more.
"""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from medfound.io import get_preset, preprocess, read_image
from medfound.models import get_card

# The publishers' statistics, written out (not imported from the cards under test)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
H_OPTIMUS_MEAN, H_OPTIMUS_STD = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("recipes")
    Image.fromarray(skimage.data.immunohistochemistry()[:300, :260]).save(folder / "rgb.png")
    Image.fromarray(skimage.data.camera()[:300, :260]).save(folder / "gray.png")
    return folder


def _torchvision(*steps):
    return lambda image: T.Compose([*steps, T.ToTensor()])(image.convert("RGB"))


def _timm_eval(mean, std):
    import timm.data

    # the hub's pretrained_cfg: 224, bicubic, crop_pct 1.0, centre crop
    return lambda image: timm.data.create_transform(
        input_size=(3, 224, 224), interpolation="bicubic", crop_pct=1.0, crop_mode="center",
        mean=mean, std=std,
    )(image.convert("RGB"))  # fmt: skip


def _hf_processor(kind: str, **config):
    import transformers

    processor = getattr(transformers, kind)(**config)
    return lambda image: torch.from_numpy(
        processor(image.convert("RGB"), return_tensors="np")["pixel_values"][0]
    )


def _open_clip(image):
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    # BiomedCLIP's open_clip_config.json: OpenAI's statistics, open_clip's eval transform at 224
    transform = open_clip.image_transform(
        224, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD
    )
    return transform(image)


def _medsam(image):
    from skimage.transform import resize

    array = np.asarray(image.convert("RGB"), dtype=np.float64)
    array = resize(array, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True)
    # MedSAM casts the resized image to uint8 before its min-max (clipped here: the cast would
    # wrap the spline's overshoot around); medfound keeps the float and clamps the overshoot
    array = np.clip(array, 0, 255).astype(np.uint8).astype(np.float64)
    array = (array - array.min()) / np.clip(array.max() - array.min(), 1e-8, None)
    return torch.from_numpy(array).permute(2, 0, 1).float()


_BICUBIC = T.InterpolationMode.BICUBIC
_IMAGENET_NORM = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
# alias -> (image, the published recipe: PIL image -> normalised tensor)
RECIPES = {
    # UNI and CTransPath resize the short side only: medfound also crops the centre square, so that
    # tiles of any shape batch (the same on the square tiles they are made for)
    "uni": ("rgb", _torchvision(T.Resize(224), T.CenterCrop(224)), _IMAGENET_NORM),
    "ctranspath": ("rgb", _torchvision(T.Resize(224), T.CenterCrop(224)), _IMAGENET_NORM),
    "prov-gigapath": ("rgb", _torchvision(T.Resize(256, _BICUBIC), T.CenterCrop(224)), _IMAGENET_NORM),
    "uni2-h": ("rgb", _timm_eval(IMAGENET_MEAN, IMAGENET_STD), None),
    "virchow": ("rgb", _timm_eval(IMAGENET_MEAN, IMAGENET_STD), None),
    "virchow2": ("rgb", _timm_eval(IMAGENET_MEAN, IMAGENET_STD), None),
    "h-optimus-0": ("rgb", _timm_eval(H_OPTIMUS_MEAN, H_OPTIMUS_STD), None),
    "phikon": (
        "rgb",
        _hf_processor("ViTImageProcessor", size={"height": 224, "width": 224}, resample=2,
                      image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD),
        None,
    ),
    "phikon-v2": (
        "rgb",
        _hf_processor("BitImageProcessor", size={"shortest_edge": 224}, crop_size=224, resample=3,
                      image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD),
        None,
    ),
    "rad-dino": (
        "gray",
        _hf_processor("BitImageProcessor", size={"shortest_edge": 518}, crop_size=518, resample=3,
                      image_mean=[0.5307] * 3, image_std=[0.2583] * 3),
        None,
    ),
    "biomedclip": ("rgb", _open_clip, None),
    "medsam": ("gray", _medsam, None),
}  # fmt: skip


def _ours(name: str, path) -> torch.Tensor:
    card = get_card(name)
    tensor = preprocess(read_image(path), get_preset(card.preset), **card.preprocess_args())
    # what the model wrapper does next (FoundationModel.normalise)
    from medfound.models.foundation import FoundationModel

    model = FoundationModel(card, torch.nn.Identity())
    with torch.no_grad():
        return model.normalise(tensor[None])[0]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_preprocessing_equals_the_published_recipe(images, name):
    kind, recipe, normalise = RECIPES[name]
    path = images / f"{kind}.png"
    expected = recipe(Image.open(path))
    expected = normalise(expected) if normalise else expected
    ours = _ours(name, path)
    assert ours.shape == expected.shape == (3, get_card(name).input_size, get_card(name).input_size)
    difference = (ours - expected).abs()
    assert difference.mean() < 0.008 and difference.max() < 0.05, (
        difference.mean(),
        difference.max(),
    )


def test_a_wrong_interpolation_is_caught(images):
    # the bar above is tight enough: bilinear where Prov-GigaPath uses bicubic fails it
    path = images / "rgb.png"
    wrong = _torchvision(T.Resize(256), T.CenterCrop(224))(Image.open(path))
    difference = (_ours("prov-gigapath", path) - _IMAGENET_NORM(wrong)).abs()
    assert not (difference.mean() < 0.008 and difference.max() < 0.05)
