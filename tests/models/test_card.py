import dataclasses
import json

import numpy as np

from medfound.io import MedicalImage, get_preset, preprocess
from medfound.models import get_card


def test_input_spacing_survives_json_as_a_tuple():
    card = dataclasses.replace(get_card("genesis-chest-ct"), input_spacing=(1.0, 1.0, 2.0))
    restored = type(card).from_dict(json.loads(card.to_json()))
    assert restored == card and restored.input_spacing == (1.0, 1.0, 2.0)


def test_cards_written_before_input_spacing_still_load():
    data = json.loads(get_card("genesis-chest-ct").to_json())
    del data["input_spacing"]
    assert type(get_card("genesis-chest-ct")).from_dict(data).input_spacing is None


def test_preprocess_args_fit_preprocess():
    card = dataclasses.replace(get_card("genesis-chest-ct"), input_spacing=(2.0, 2.0, 2.0))
    assert card.preprocess_args() == {
        "spatial_dims": 3,
        "channels": 1,
        "native_size": (64, 64, 32),
        "native_spacing": (2.0, 2.0, 2.0),
        "native_resize": None,
    }
    image = MedicalImage(np.zeros((1, 8, 8, 8), np.float32), "x", spacing=(1.0, 1.0, 1.0))
    out = preprocess(image, get_preset("ct"), **card.preprocess_args())
    assert out.shape == (1, 64, 64, 32)
