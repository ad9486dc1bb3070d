"""Writers of tiny Flickr8k fixtures in each exact on-disk format, quirks included.

A :class:`Flickr8kSpec` is the ground truth (image names, captions, splits); the writers
put it on disk the way the real releases do, and with ``quirks=True`` add the real
files' quirks on top (an id written ``<name>.jpg.1#k``, a one-word caption ``"A"``, a
repeated caption line, blank lines). A correct loader reads back exactly the spec,
whatever the format and the quirks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")
SPLIT_FILE_NAMES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
_SUBJECTS = [
    "A dog",
    "Two children",
    "A man in a red shirt",
    "A woman",
    "A black cat",
    "Three birds",
    "A girl",
]
_VERBS = ["ran across", "sat on", "jumped over", "looked at", "played near"]
_PLACES = [
    "the grass",
    "a wooden bench",
    "the beach , near the water",
    "a fence",
    "the snow , at night",
    "a road",
]


@dataclass
class Flickr8kSpec:
    """Ground truth of a fixture: captions per image (in file order) and the split
    lists."""

    captions: dict[str, list[str]]
    splits: dict[str, list[str]]

    @property
    def image_ids(self) -> list[str]:
        return list(self.captions)


def image_name(i: int) -> str:
    """A file name shaped like the real ones, e.g. ``1000268201_693b08cb0e.jpg``."""
    digest = hashlib.sha1(str(i).encode()).hexdigest()[:10]
    return f"{1000268201 + 104729 * i}_{digest}.jpg"


def make_spec(
    n_train: int = 12, n_val: int = 4, n_test: int = 4, captions_per_image: int = 5
) -> Flickr8kSpec:
    """Build a spec: distinct multi-word captions, some with commas and one with double
    quotes."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    i = 0
    for split in SPLITS:
        for _ in range(counts[split]):
            name = image_name(i)
            captions[name] = [
                f"{_SUBJECTS[(i + k) % len(_SUBJECTS)]} "
                f"{_VERBS[(2 * i + k) % len(_VERBS)]} "
                f"{_PLACES[(i + 3 * k) % len(_PLACES)]} ."
                for k in range(captions_per_image)
            ]
            splits[split].append(name)
            i += 1
    first = next(iter(captions))
    captions[first][-1] = 'A sign that reads "stop" , next to a road .'
    return Flickr8kSpec(captions, splits)


def write_jpeg(path: Path, pixels: np.ndarray) -> None:
    """Write an ``[H, W, 3]`` uint8 array as a high-quality JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(path, "JPEG", quality=95)


def image_colour(i: int) -> tuple[int, int, int]:
    """The solid colour of fixture image ``i``."""
    return (40 + 37 * i % 200, 200 - 23 * i % 180, 60 + 53 * i % 190)


def write_images(
    image_dir: Path, names: list[str], size: tuple[int, int] = (40, 32)
) -> None:
    """Write one solid-colour JPEG (``size`` = width, height) per name, colour
    ``image_colour(i)``."""
    width, height = size
    for i, name in enumerate(names):
        write_jpeg(
            image_dir / name,
            np.full((height, width, 3), image_colour(i), dtype=np.uint8),
        )


# Flickr photos are at most 500 pixels on their longer side, in landscape and portrait.
PHOTO_SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (333, 500)]


def write_photos(image_dir: Path, names: list[str], seed: int = 0) -> None:
    """Write one photo-like JPEG per name at Flickr's usual sizes (``PHOTO_SIZES`` in
    turn): a smooth random colour field with fine noise, so that decoding and resizing
    cost what real photos cost and every image differs from every other."""
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        width, height = PHOTO_SIZES[i % len(PHOTO_SIZES)]
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        field = np.asarray(
            Image.fromarray(coarse, "RGB").resize((width, height), Image.BICUBIC)
        ).astype(np.int16)
        noise = rng.integers(-12, 13, size=(height, width, 3), dtype=np.int16)
        write_jpeg(image_dir / name, np.clip(field + noise, 0, 255))


def write_field_fixture(
    root: Path, n_train: int = 300, n_val: int = 30, n_test: int = 60
) -> Flickr8kSpec:
    """A small Flickr8k in the authors' layout, as a reader downloads it: the token
    file with its quirks, the three split files and a folder of photo-sized JPEGs.

    Used to execute the chapters with ``DATA = "flickr8k"`` end to end
    (tests/test_field_paths.py); the default sizes let chapter 1 draw a batch of 256.
    """
    spec = make_spec(n_train=n_train, n_val=n_val, n_test=n_test)
    write_original(root, spec, quirks=True, image_folder=None)
    write_photos(root / "Flicker8k_Dataset", spec.image_ids)
    return spec


def save_stand_in_weights(torch_home: Path, names: list[str]) -> list[Path]:
    """Save randomly initialised torchvision models where torchvision looks for its
    downloaded ImageNet weights (``$TORCH_HOME/hub/checkpoints/<file of the URL>``).

    With ``TORCH_HOME`` pointing there, ``pretrained=True`` loads these files instead of
    downloading (torchvision checks a file's hash only when it downloads it), so the
    pretrained code path runs offline, unchanged; the features are of course
    meaningless. Returns the files written.
    """
    from urllib.parse import urlparse

    import torch
    import torchvision

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        path = folder / Path(urlparse(weights.url).path).name
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
        written.append(path)
    return written


def write_corrupt_jpeg(path: Path, kind: str = "truncated") -> None:
    """Write a broken file with a ``.jpg`` name: a JPEG cut in half, or bytes that are
    no image."""
    if kind == "truncated":
        buffer = io.BytesIO()
        noise = np.random.default_rng(0).integers(
            0, 256, size=(32, 32, 3), dtype=np.uint8
        )
        Image.fromarray(noise, "RGB").save(buffer, "JPEG", quality=95)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    else:
        raise ValueError(f"kind={kind!r} must be 'truncated' or 'garbage'")


def _caption_rows(
    spec: Flickr8kSpec, quirks: bool
) -> list[tuple[str, int, str, str | None]]:
    """``(image, k, caption, quirk)`` rows in file order, quirk rows inserted when
    asked.

    A blank row's caption is the text of the blank line (white space or nothing).
    """
    rows: list[tuple[str, int, str, str | None]] = []
    for i, image in enumerate(spec.image_ids):
        for k, caption in enumerate(spec.captions[image]):
            rows.append(
                (image, k, caption, "normalised" if quirks and i == 0 else None)
            )
        if quirks and i == 1:
            rows.append((image, len(spec.captions[image]), "A", "short"))
        if quirks and i == 2:
            rows.append((image, 0, spec.captions[image][0], "duplicate"))
        if quirks and i == 3:
            rows.append(("", 0, "   ", "blank"))
    if quirks:
        rows.append(("", 0, "", "blank"))
    return rows


def _quirk_lines(
    rows: list[tuple[str, int, str, str | None]], first_line: int
) -> dict[str, list[int]]:
    lines: dict[str, list[int]] = {}
    for offset, (_, _, _, quirk) in enumerate(rows):
        if quirk is not None:
            lines.setdefault(quirk, []).append(first_line + offset)
    return lines


def write_split_files(root: Path, splits: dict[str, list[str]]) -> None:
    """Write the three original split files (one file name per line)."""
    for split, file_name in SPLIT_FILE_NAMES.items():
        (root / file_name).write_text(
            "".join(f"{name}\n" for name in splits[split]), encoding="utf-8"
        )


def write_original(
    root: Path,
    spec: Flickr8kSpec,
    *,
    quirks: bool = False,
    split_files: bool = True,
    image_folder: str | None = "Flicker8k_Dataset",
) -> dict[str, list[int]]:
    """Write the authors' layout; return the line numbers of the quirk lines by kind."""
    root.mkdir(parents=True, exist_ok=True)
    rows = _caption_rows(spec, quirks)
    lines = []
    for image, k, caption, quirk in rows:
        if quirk == "blank":
            lines.append(caption)
        else:
            lines.append(
                f"{image}{'.1' if quirk == 'normalised' else ''}#{k}\t{caption}"
            )
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if split_files:
        write_split_files(root, spec.splits)
    if image_folder is not None:
        write_images(root / image_folder, spec.image_ids)
    return _quirk_lines(rows, first_line=1)


def write_kaggle(
    root: Path,
    spec: Flickr8kSpec,
    *,
    quirks: bool = False,
    image_folder: str | None = "Images",
) -> dict[str, list[int]]:
    """Write the Kaggle layout (``captions.txt`` CSV + ``Images/``); return quirk line
    numbers."""
    root.mkdir(parents=True, exist_ok=True)
    rows = _caption_rows(spec, quirks)
    with (root / "captions.txt").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image", "caption"])
        for image, _, caption, quirk in rows:
            if quirk == "blank":
                handle.write(caption + "\n")
            else:
                writer.writerow(
                    [f"{image}{'.1' if quirk == 'normalised' else ''}", caption]
                )
    if image_folder is not None:
        write_images(root / image_folder, spec.image_ids)
    return _quirk_lines(rows, first_line=2)


def write_karpathy(
    root: Path,
    spec: Flickr8kSpec,
    *,
    quirks: bool = False,
    restval: bool = True,
    image_folder: str | None = "Images",
) -> dict[str, list[str]]:
    """Write Karpathy's ``dataset_flickr8k.json``; every other train image is marked
    ``restval``.

    Returns the JSON locations (``images[i].sentences[j]``) of the quirk entries by
    kind.
    """
    root.mkdir(parents=True, exist_ok=True)
    split_of = {image: split for split, names in spec.splits.items() for image in names}
    entries, locations, sentence_id = [], {}, 0
    for i, image in enumerate(spec.image_ids):
        raws = list(spec.captions[image])
        if quirks and i == 1:
            raws.append("A")
            locations["short"] = [f"images[{i}].sentences[{len(raws) - 1}]"]
        if quirks and i == 2:
            raws.append(raws[0])
            locations["duplicate"] = [f"images[{i}].sentences[{len(raws) - 1}]"]
        split = split_of[image]
        if restval and split == "train" and spec.splits["train"].index(image) % 2 == 1:
            split = "restval"
        sentences = []
        for raw in raws:
            tokens = [
                token.lower()
                for token in raw.replace('"', " ").split()
                if token.isalnum()
            ]
            sentences.append(
                {"tokens": tokens, "raw": raw, "imgid": i, "sentid": sentence_id}
            )
            sentence_id += 1
        filename = f"{image}.1" if quirks and i == 0 else image
        if quirks and i == 0:
            locations["normalised"] = [f"images[{i}]"]
        entries.append(
            {
                "sentids": [s["sentid"] for s in sentences],
                "imgid": i,
                "sentences": sentences,
                "split": split,
                "filename": filename,
            }
        )
    (root / "dataset_flickr8k.json").write_text(
        json.dumps({"images": entries, "dataset": "flickr8k"}), encoding="utf-8"
    )
    if image_folder is not None:
        write_images(root / image_folder, spec.image_ids)
    return locations
