"""Zero-shot classification by prompts: class embeddings, prediction, the ShapesWorld
attribute task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossalign.data.shapes import COLOUR_RGB, COLOURS, SHAPES
from crossalign.data.vocab import Vocabulary
from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig
from crossalign.zero_shot import (
    COLOUR_TEMPLATES,
    SHAPE_TEMPLATES,
    attribute_images,
    class_embeddings,
    zero_shot_accuracy,
    zero_shot_predict,
)

WORDS = COLOURS + SHAPES + ("disc",)
VOCAB = Vocabulary.build(
    [t.format(w) for t in COLOUR_TEMPLATES + SHAPE_TEMPLATES for w in WORDS]
)


def _dual_encoder() -> DualEncoder:
    torch.manual_seed(0)
    config = DualEncoderConfig(
        image_kwargs={"widths": [8, 16], "out_dim": 16},
        text_encoder="gru",
        text_kwargs={"vocab_size": len(VOCAB), "embed_dim": 8, "hidden_dim": 16},
        embed_dim=8,
    )
    return DualEncoder(config).eval()


class _ChannelMeans(nn.Module):
    """A stand-in image tower: the unit vector of each image's mean R, G, B."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.mean(dim=(2, 3)), dim=-1)


def test_class_embeddings_average_unit_prompt_embeddings_then_renormalise():
    model = _dual_encoder()
    templates = COLOUR_TEMPLATES[:3]
    synonyms = {"cyan": ("cyan", "turquoise")}
    classes = class_embeddings(model, VOCAB, ["red", "cyan"], templates, synonyms)
    with torch.no_grad():
        for row, words in enumerate([("red",), ("cyan", "turquoise")]):
            prompts = [t.format(w) for t in templates for w in words]
            ids, mask = VOCAB.encode_batch(prompts)
            expected = F.normalize(model.encode_text(ids, mask).mean(dim=0), dim=0)
            torch.testing.assert_close(classes[row], expected, rtol=1e-5, atol=1e-6)
    single = class_embeddings(model, VOCAB, ["red"], templates[:1])[0]
    ids, mask = VOCAB.encode_batch([templates[0].format("red")])
    with torch.no_grad():
        torch.testing.assert_close(
            single, model.encode_text(ids, mask)[0], rtol=1e-5, atol=1e-6
        )
    torch.testing.assert_close(classes.norm(dim=1), torch.ones(2))


def test_prediction_is_the_most_similar_class():
    images = torch.zeros(3, 3, 4, 4)
    images[0, 0] = 1.0  # red-ish
    images[1, 2] = 1.0  # blue-ish
    images[2, 1] = 0.6
    images[2, 0] = 0.5  # mostly green
    classes = torch.eye(3)
    assert zero_shot_predict(
        _ChannelMeans(), images, classes, batch_size=2
    ).tolist() == [0, 2, 1]


def test_attribute_images_have_one_object_whose_centre_has_the_labelled_colour():
    images, labels = attribute_images("colour", size=12, seed=3)
    _, shapes = attribute_images("shape", size=12, seed=3)
    from crossalign.data.shapes import ShapesWorld

    world = ShapesWorld("test", size=12, seed=3, min_objects=1, max_objects=1)
    for index, scene in enumerate(world.scenes(range(12))):
        assert len(scene.objects) == 1
        obj = scene.objects[0]
        assert (
            COLOURS[labels[index]] == obj.colour and SHAPES[shapes[index]] == obj.shape
        )
        side = images.shape[-1]
        pixel = images[index, :, int(obj.y * side), int(obj.x * side)]
        torch.testing.assert_close(
            pixel, torch.tensor(COLOUR_RGB[obj.colour]), rtol=0, atol=1e-6
        )


def test_accuracy_is_a_fraction_and_bad_arguments_are_reported():
    model = _dual_encoder()
    accuracy = zero_shot_accuracy(model, VOCAB, "shape", ensemble=False, size=20)
    assert 0.0 <= accuracy <= 1.0 and (accuracy * 20) == round(accuracy * 20)
    with pytest.raises(ValueError, match="attribute must be one of"):
        zero_shot_accuracy(model, VOCAB, "size")
    with pytest.raises(ValueError, match="exactly one"):
        class_embeddings(model, VOCAB, ["red"], ["a red"])
