"""Zero-shot classification with a dual encoder: classes written as sentences, no
classifier training.

CLIP (Radford et al., 2021) turns a contrastive image-text model into a classifier for
any label set: write each class name into a sentence template ("a photo of a {}"), embed
the sentences with the text tower, and give an image the class whose sentence is most
similar. *Prompt ensembling* embeds several templates (and synonyms) per class and
averages the unit vectors before renormalising; it removes the quirks of any single
wording.

On ShapesWorld the classes are the colours and the shapes of single-object images, and
the templates are written in the data set's own grammar, the only language its text
tower knows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from crossalign.data.shapes import (
    COLOUR_WORDS,
    COLOURS,
    SHAPE_WORDS,
    SHAPES,
    ShapesWorld,
)
from crossalign.evaluation import embed_texts

__all__ = [
    "ATTRIBUTE_CLASSES",
    "ATTRIBUTE_SYNONYMS",
    "COLOUR_TEMPLATES",
    "SHAPE_TEMPLATES",
    "attribute_images",
    "class_embeddings",
    "zero_shot_accuracy",
    "zero_shot_predict",
]

#: Templates for colour classes ("{}" is the colour); they vary size, shape and wording.
COLOUR_TEMPLATES: tuple[str, ...] = (
    "a small {} circle",
    "a large {} square",
    "there is a big {} triangle",
    "a picture of a tiny {} diamond",
    "a little {} cross in the middle",
    "a large {} circle at the top",
    "there is a small {} square on the left",
    "a big {} triangle at the bottom right",
)
#: Templates for shape classes ("{}" is the shape); they vary size, colour and wording.
SHAPE_TEMPLATES: tuple[str, ...] = (
    "a small red {}",
    "a large blue {}",
    "there is a big green {}",
    "a picture of a tiny yellow {}",
    "a little white {} in the middle",
    "a large purple {} at the top",
    "there is a small orange {} on the left",
    "a big cyan {} at the bottom right",
)
ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {"colour": COLOURS, "shape": SHAPES}
ATTRIBUTE_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": COLOUR_WORDS,
    "shape": SHAPE_WORDS,
}
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": COLOUR_TEMPLATES,
    "shape": SHAPE_TEMPLATES,
}


def _check_attribute(attribute: str) -> None:
    if attribute not in ATTRIBUTE_CLASSES:
        raise ValueError(
            f"attribute must be one of {sorted(ATTRIBUTE_CLASSES)}, got {attribute!r}"
        )


def class_embeddings(
    model: Any,
    tokenizer: Any,
    class_names: Sequence[str],
    templates: Sequence[str],
    synonyms: Mapping[str, Sequence[str]] | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """One unit vector per class ``[C, E]``: the mean of its prompts' text embeddings,
    renormalised.

    Each class is written into every template, with every synonym when
    ``synonyms[name]`` is given (otherwise the name itself). One template and no
    synonyms is the plain, single-prompt classifier; more of them is prompt ensembling.
    """
    if not class_names or not templates:
        raise ValueError("class_names and templates must both be non-empty")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(
            f"every template needs exactly one '{{}}' for the class name; these do "
            f"not: {bad}"
        )
    rows = []
    for name in class_names:
        words = synonyms.get(name, (name,)) if synonyms else (name,)
        prompts = [template.format(word) for template in templates for word in words]
        embedded = embed_texts(model, prompts, tokenizer, device=device)
        rows.append(F.normalize(embedded.mean(dim=0), dim=0))
    return torch.stack(rows)


@torch.inference_mode()
def zero_shot_predict(
    model: Any, images: torch.Tensor, classes: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Class index ``[B]`` of each image: the class embedding with the highest cosine
    similarity."""
    model.eval()
    device = classes.device
    predictions = []
    for start in range(0, images.shape[0], batch_size):
        embedded = model.encode_image(
            images[start : start + batch_size].to(device)
        ).float()
        predictions.append((embedded @ classes.T.float()).argmax(dim=1).cpu())
    return torch.cat(predictions)


def attribute_images(
    attribute: str,
    size: int = 400,
    split: str = "test",
    seed: int = 0,
    image_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-object ShapesWorld images and the class index of their ``attribute``
    (colour or shape)."""
    _check_attribute(attribute)
    world = ShapesWorld(
        split, size=size, seed=seed, image_size=image_size, min_objects=1, max_objects=1
    )
    images = world.render(range(size))
    names = ATTRIBUTE_CLASSES[attribute]
    labels = torch.tensor(
        [
            names.index(getattr(scene.objects[0], attribute))
            for scene in world.scenes(range(size))
        ]
    )
    return images, labels


def zero_shot_accuracy(
    model: Any,
    tokenizer: Any,
    attribute: str,
    ensemble: bool = True,
    size: int = 400,
    split: str = "test",
    seed: int = 0,
    image_size: int = 64,
    device: str | torch.device = "cpu",
) -> float:
    """Zero-shot accuracy on the ``attribute`` ("colour" or "shape") of single-object
    images.

    ``ensemble=False`` uses the first template with the class name only;
    ``ensemble=True`` averages all templates of the attribute and every synonym of each
    class.
    """
    _check_attribute(attribute)
    templates = _TEMPLATES[attribute] if ensemble else _TEMPLATES[attribute][:1]
    synonyms = ATTRIBUTE_SYNONYMS[attribute] if ensemble else None
    classes = class_embeddings(
        model,
        tokenizer,
        ATTRIBUTE_CLASSES[attribute],
        templates,
        synonyms,
        device=device,
    )
    images, labels = attribute_images(
        attribute, size=size, split=split, seed=seed, image_size=image_size
    )
    return int((zero_shot_predict(model, images, classes) == labels).sum()) / len(
        labels
    )
