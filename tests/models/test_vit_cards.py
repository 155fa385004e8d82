"""The transformer cards at their published sizes: built on the meta device (no memory, no time),
their embeddings have the card's size, and the cards survive the trip through a weight file."""

import pytest
import torch

from medfound.models import build_model, list_models
from medfound.models.card import EMBEDDINGS, ModelCard

VIT_CARDS = [card for card in list_models() if card.family == "vit"]


def test_every_transformer_of_the_issue_has_a_card():
    aliases = {
        "uni", "uni2-h", "virchow", "virchow2", "prov-gigapath", "h-optimus-0",
        "phikon", "phikon-v2", "ctranspath", "rad-dino", "biomedclip", "medsam",
    }  # fmt: skip
    for alias in aliases:
        (card,) = list_models(alias)
        assert card.family == "vit", alias
    assert len(VIT_CARDS) == len(aliases)


@pytest.mark.parametrize("card", VIT_CARDS, ids=lambda card: card.name)
def test_published_size_gives_the_cards_embedding(card):
    with torch.device("meta"):
        model = build_model(card)
        size = card.input_size
        embedding = model(torch.zeros(2, card.in_channels, size, size))
    assert embedding.shape == (2, card.embedding_dim)
    assert card.embedding in EMBEDDINGS
    trunk = model.trunk
    if hasattr(trunk, "num_prefix_tokens"):  # class token + registers before the patches
        assert trunk.num_prefix_tokens == 1 + card.register_tokens
    assert card.weight_layouts and card.weights_source and card.licence
    if card.modality.startswith("pathology") and card.mpp is not None:
        assert 0.2 <= card.mpp <= 2.0


@pytest.mark.parametrize("card", VIT_CARDS, ids=lambda card: card.name)
def test_card_survives_json(card):
    assert ModelCard.from_dict(card.to_dict()) == card


def test_cls_plus_mean_skips_the_registers():
    from tests.models.vit_tiny import TINY_VIT, tiny_card

    card = tiny_card("virchow2", 28, 64, img_size=28, **TINY_VIT)
    model = build_model(card)
    tokens = torch.randn(1, 1 + 4 + 4, 32)
    tokens[:, 1:5] = 1e6  # registers: were they averaged, the embedding would show it
    embedding = model.pool(tokens)
    torch.testing.assert_close(embedding[:, :32], tokens[:, 0])
    torch.testing.assert_close(embedding[:, 32:], tokens[:, 5:].mean(1))
