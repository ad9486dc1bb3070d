"""Flickr8k: 8,000 Flickr photos with five captions each, read from any of its three
formats.

Three layouts of the same data are in circulation; all three parse to the same image
file names, captions and splits:

``original``  (the authors' release)
    ``Flickr8k.token.txt`` with lines ``<image>.jpg#<k><TAB><caption>``, the split files
    ``Flickr_8k.trainImages.txt``, ``Flickr_8k.devImages.txt`` and
    ``Flickr_8k.testImages.txt`` (one file name per line), and the image folder
    ``Flicker8k_Dataset/`` (sic).
``karpathy``  (the split used by most retrieval and captioning papers)
    ``dataset_flickr8k.json``, holding ``{"images": [...], "dataset": "flickr8k"}``
    where each image is
    ``{"filename", "split", "sentences": [{"raw", "tokens"}, ...]}``. Karpathy's
    ``restval`` counts as train.
``kaggle``  (a popular re-upload)
    ``captions.txt``, a CSV file with header ``image,caption`` and one row per caption
    (captions holding a comma are quoted), and the image folder ``Images/``.

Captions come from the chosen format. The split comes from the first of these that
exists in ``root``: the three split files, ``dataset_flickr8k.json``, or else (the
Kaggle layout alone has no split) a deterministic fallback, announced with a warning:
file names are ranked by a SHA-256 hash of ``"<seed>:<name>"``, the first eighth goes to
test, the next eighth to val and the rest to train, each split listed in sorted
file-name order. On 8,000 images that gives 6000/1000/1000; on the 8,091 images of the
Kaggle upload, 6069/1011/1011. Put ``dataset_flickr8k.json`` or the split files beside
``captions.txt`` to get the standard split instead.

The real files have quirks. The loader handles each by a fixed rule and records it in
the dataset's :class:`LoadReport`, whatever ``on_error`` says, because nothing is lost:

- an id written ``2258277193_586949ec62.jpg.1#0`` is normalised to
  ``2258277193_586949ec62.jpg``;
- a caption with fewer than two words (the token file has a caption that is just
  ``"A"``) is dropped: it describes nothing and would count as a reference in BLEU and
  CIDEr;
- a caption repeated for the same image (same text up to white space) is kept once;
- blank lines are skipped.

Real problems lose data, so they follow ``on_error``: ``"raise"`` (the default) raises
an error naming the file (and line, for annotation files); ``"skip"`` leaves the item
out and records it. They are: malformed annotation lines or entries, an image listed
twice in different splits, an image of the split with no caption, an image missing on
disk, and (with ``verify_images=True``) an image that does not decode.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FORMATS = ("original", "karpathy", "kaggle")
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
KARPATHY_FILE = "dataset_flickr8k.json"
KAGGLE_FILE = "captions.txt"
ANNOTATION_FILES = {
    "original": TOKEN_FILE,
    "karpathy": KARPATHY_FILE,
    "kaggle": KAGGLE_FILE,
}
IMAGE_DIR_NAMES = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
MIN_CAPTION_WORDS = 2

# Kinds of report entries. Fixed quirks are recorded in both modes; problems raise or
# are skipped.
NORMALISED_ID = "normalised id"
SHORT_CAPTION = "single-word caption dropped"
DUPLICATE_CAPTION = "duplicate caption dropped"
DUPLICATE_SPLIT_ENTRY = "duplicate split entry dropped"
BLANK_LINE = "blank line skipped"
UNSPLIT_IMAGE = "image in no split"
MALFORMED = "malformed annotation"
SPLIT_CONFLICT = "image in two splits"
NO_CAPTIONS = "image without captions"
MISSING_IMAGE = "missing image"
CORRUPT_IMAGE = "corrupt image"

_CAPTION_ID = re.compile(
    r"^(?P<image>.+?\.jpg)(?P<extra>\.\d+)?#(?P<number>\d+)$", re.IGNORECASE
)
_IMAGE_NAME = re.compile(r"^(?P<image>.+?\.jpg)(?P<extra>\.\d+)?$", re.IGNORECASE)


class LoadReport:
    """What the loader fixed or left out while reading Flickr8k: ``(item, reason)``
    entries.

    ``item`` names the place (``path:line`` for annotation files, the image path for
    images); ``reason`` says what was wrong and what the loader did. :meth:`summary`
    counts entries per kind.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, item: str, reason: str) -> None:
        """Record one entry of the given kind."""
        self.entries.append((item, reason))
        self.counts[kind] += 1

    def count(self, kind: str) -> int:
        """Number of entries of one kind (e.g. ``flickr8k.MISSING_IMAGE``)."""
        return self.counts[kind]

    def summary(self) -> str:
        """One line: the number of entries and their count per kind."""
        if not self.entries:
            return "no issues"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return f"{len(self.entries)} issue(s): {kinds}"

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.entries)

    def __repr__(self) -> str:
        return f"LoadReport({self.summary()})"


@dataclass
class _Policy:
    """Applies ``on_error``: fixed quirks are noted, problems raise or are recorded and
    skipped."""

    on_error: str
    report: LoadReport = field(default_factory=LoadReport)

    def note(self, kind: str, item: str, reason: str) -> None:
        self.report.add(kind, item, reason)

    def problem(
        self, kind: str, item: str, reason: str, error: type[Exception] = ValueError
    ) -> None:
        if self.on_error == "raise":
            raise error(
                f"{item}: {reason} (pass on_error='skip' to leave it out and record it)"
            )
        self.report.add(kind, item, reason)


@dataclass
class Flickr8kAnnotations:
    """Captions and splits of Flickr8k as read from disk, before any image is opened.

    ``captions`` maps each image file name to its captions (file order); ``splits`` maps
    ``train``/``val``/``test`` to file names; ``split_source`` says where the split came
    from.
    """

    format: str
    captions: dict[str, list[str]]
    splits: dict[str, list[str]]
    split_source: str
    report: LoadReport


def detect_format(root: str | Path) -> str:
    """Return which Flickr8k format ``root`` holds: ``"original"``, ``"karpathy"`` or
    ``"kaggle"``.

    Checked in that order, by the presence of the format's annotation file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Flickr8k root {root} is not a folder; pass the folder that holds the "
            "annotation files"
        )
    for fmt in FORMATS:
        if (root / ANNOTATION_FILES[fmt]).is_file():
            return fmt
    looked_for = ", ".join(f"{name} ({fmt})" for fmt, name in ANNOTATION_FILES.items())
    raise FileNotFoundError(
        f"No Flickr8k annotations in {root}: looked for {looked_for}. "
        "Pass the folder that holds one of them, or fetch the data with "
        "download_flickr8k()"
    )


def find_image_dir(root: str | Path, image_dir: str | Path | None = None) -> Path:
    """Return the folder holding the images: ``image_dir`` if given, else the first
    known name in ``root``."""
    if image_dir is not None:
        path = Path(image_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"image_dir={str(image_dir)!r} is not a folder")
        return path
    root = Path(root)
    for name in IMAGE_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f"No image folder in {root}: looked for {', '.join(IMAGE_DIR_NAMES)}. "
        "Pass image_dir= the folder that holds the .jpg files"
    )


def fallback_split(image_ids: Sequence[str], seed: int = 0) -> dict[str, list[str]]:
    """Split file names deterministically into train/val/test in the proportions 6:1:1.

    Names are ranked by SHA-256 of ``"<seed>:<name>"`` (the same on every machine and
    Python version); the first ``n // 8`` go to test, the next ``n // 8`` to val, the
    rest to train. Each split is returned in sorted order.
    """
    ranked = sorted(
        set(image_ids),
        key=lambda name: (hashlib.sha256(f"{seed}:{name}".encode()).hexdigest(), name),
    )
    n_eval = len(ranked) // 8
    return {
        "train": sorted(ranked[2 * n_eval :]),
        "val": sorted(ranked[n_eval : 2 * n_eval]),
        "test": sorted(ranked[:n_eval]),
    }


def flatten_captions(
    captions: Sequence[Sequence[str]],
) -> tuple[list[str], torch.Tensor]:
    """Flatten captions per image into one list plus the image index of each caption.

    This is the many-to-many ground truth of retrieval: caption ``j`` belongs to image
    ``image_index[j]``.
    """
    flat = [caption for caps in captions for caption in caps]
    image_index = torch.tensor(
        [i for i, caps in enumerate(captions) for _ in caps], dtype=torch.long
    )
    return flat, image_index


def _normalise_name(
    name: str, item: str, pattern: re.Pattern[str], policy: _Policy
) -> re.Match[str] | None:
    """Match an image name or caption id; report and drop a ``.jpg.1``-style suffix."""
    match = pattern.match(name)
    if match is not None and match.group("extra"):
        policy.note(
            NORMALISED_ID, item, f"id {name!r} read as image {match.group('image')!r}"
        )
    return match


def _word_count(caption: str) -> int:
    return sum(any(ch.isalnum() for ch in token) for token in caption.split())


def _add_caption(
    captions: dict[str, list[str]],
    seen: set[tuple[str, str]],
    image: str,
    caption: str,
    item: str,
    policy: _Policy,
) -> None:
    """Add one caption unless it is empty (a problem), too short or a repeat (fixed
    quirks)."""
    caption = caption.strip()
    if not caption:
        policy.problem(MALFORMED, item, f"empty caption for {image}")
        return
    if _word_count(caption) < MIN_CAPTION_WORDS:
        policy.note(
            SHORT_CAPTION,
            item,
            f"caption {caption!r} of {image} has fewer than {MIN_CAPTION_WORDS} words",
        )
        return
    key = (image, " ".join(caption.split()))
    if key in seen:
        policy.note(
            DUPLICATE_CAPTION,
            item,
            f"caption {caption!r} of {image} repeats an earlier one",
        )
        return
    seen.add(key)
    captions.setdefault(image, []).append(caption)


def _read_lines(path: Path, policy: _Policy) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for non-blank lines; report blank and undecodable
    lines."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            item = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip(
                    "\r\n"
                )
            except UnicodeDecodeError as exc:
                policy.problem(MALFORMED, item, f"not valid UTF-8 ({exc.reason})")
                continue
            if not line.strip():
                policy.note(BLANK_LINE, item, "blank line")
                continue
            yield number, line


def _read_token_file(path: Path, policy: _Policy) -> dict[str, list[str]]:
    """Read ``Flickr8k.token.txt``: lines ``<image>.jpg#<k><TAB><caption>``."""
    captions: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for number, line in _read_lines(path, policy):
        item = f"{path}:{number}"
        caption_id, tab, caption = line.partition("\t")
        match = (
            _normalise_name(caption_id.strip(), item, _CAPTION_ID, policy)
            if tab
            else None
        )
        if match is None:
            policy.problem(
                MALFORMED,
                item,
                f"expected '<image>.jpg#<k><TAB><caption>', got {line[:80]!r}",
            )
            continue
        _add_caption(captions, seen, match.group("image"), caption, item, policy)
    return captions


def _read_kaggle_csv(path: Path, policy: _Policy) -> dict[str, list[str]]:
    """Read the Kaggle ``captions.txt``: CSV with header ``image,caption``, one row per
    caption."""
    captions: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [name.strip().lower() for name in header] != [
            "image",
            "caption",
        ]:
            raise ValueError(
                f"{path}:1: expected the header 'image,caption', got {header!r}"
            )
        first_line = reader.line_num + 1
        for row in reader:
            item = f"{path}:{first_line}"
            first_line = reader.line_num + 1
            if not any(cell.strip() for cell in row):
                policy.note(BLANK_LINE, item, "blank line")
                continue
            match = (
                _normalise_name(row[0].strip(), item, _IMAGE_NAME, policy)
                if len(row) == 2
                else None
            )
            if match is None:
                policy.problem(
                    MALFORMED,
                    item,
                    "expected '<image>.jpg,<caption>' (quote captions with commas), "
                    f"got {row!r}",
                )
                continue
            _add_caption(captions, seen, match.group("image"), row[1], item, policy)
    return captions


def _read_karpathy_json(
    path: Path, policy: _Policy, with_captions: bool = True
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Read Karpathy's ``dataset_flickr8k.json``; return ``(captions, splits)``
    (``restval`` -> train).

    With ``with_captions=False`` only the split is read (the captions come from another
    file).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(
            f"{path}: expected a JSON object with an 'images' list (Karpathy's format)"
        )
    if data.get("dataset", "flickr8k") != "flickr8k":
        raise ValueError(
            f"{path}: holds the data set {data['dataset']!r}, not 'flickr8k'"
        )
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(data["images"]):
        item = f"{path}: images[{i}]"
        filename = entry.get("filename") if isinstance(entry, dict) else None
        match = (
            _normalise_name(filename, item, _IMAGE_NAME, policy)
            if isinstance(filename, str)
            else None
        )
        if match is None:
            policy.problem(
                MALFORMED,
                item,
                "expected an entry with a 'filename' ending in .jpg, got "
                f"{str(entry)[:80]}",
            )
            continue
        image = match.group("image")
        if entry.get("split") not in KARPATHY_SPLITS:
            policy.problem(
                MALFORMED,
                item,
                f"split {entry.get('split')!r} of {image} is not one of "
                f"{sorted(KARPATHY_SPLITS)}",
            )
            continue
        splits[KARPATHY_SPLITS[entry["split"]]].append(image)
        for j, sentence in enumerate(
            entry.get("sentences", []) if with_captions else []
        ):
            sentence_item = f"{item}.sentences[{j}]"
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if (
                raw is None
                and isinstance(sentence, dict)
                and isinstance(sentence.get("tokens"), list)
            ):
                raw = " ".join(sentence["tokens"])
            if not isinstance(raw, str):
                policy.problem(
                    MALFORMED,
                    sentence_item,
                    "expected a sentence with 'raw' or 'tokens', got "
                    f"{str(sentence)[:80]}",
                )
                continue
            _add_caption(captions, seen, image, raw, sentence_item, policy)
    return captions, splits


def _read_split_file(path: Path, policy: _Policy) -> list[str]:
    """Read one split file (one image file name per line); repeats are reported and kept
    once."""
    names: dict[str, None] = {}
    for number, line in _read_lines(path, policy):
        item = f"{path}:{number}"
        match = _normalise_name(line.strip(), item, _IMAGE_NAME, policy)
        if match is None:
            policy.problem(
                MALFORMED,
                item,
                f"expected an image file name ending in .jpg, got {line[:80]!r}",
            )
        elif match.group("image") in names:
            policy.note(
                DUPLICATE_SPLIT_ENTRY, item, f"{match.group('image')} listed again"
            )
        else:
            names[match.group("image")] = None
    return list(names)


def _read_splits(
    root: Path, captions: dict[str, list[str]], seed: int, policy: _Policy
) -> tuple[dict[str, list[str]], str]:
    """Find the split for ``root``: split files, else Karpathy's JSON, else the fallback
    split."""
    present = [name for name in SPLIT_FILES.values() if (root / name).is_file()]
    if present and len(present) < len(SPLIT_FILES):
        missing = sorted(set(SPLIT_FILES.values()) - set(present))
        raise FileNotFoundError(
            f"{root} holds {', '.join(present)} but not {', '.join(missing)}; all "
            "three split files are needed"
        )
    if present:
        splits = {
            split: _read_split_file(root / name, policy)
            for split, name in SPLIT_FILES.items()
        }
        return splits, "split files " + ", ".join(SPLIT_FILES.values())
    if (root / KARPATHY_FILE).is_file():
        _, splits = _read_karpathy_json(
            root / KARPATHY_FILE, policy, with_captions=False
        )
        return splits, KARPATHY_FILE
    warnings.warn(
        f"{root}: no split files ({', '.join(SPLIT_FILES.values())}) and no "
        f"{KARPATHY_FILE}; using the "
        f"deterministic fallback split (seed={seed}; 6:1:1 by hashed file name, see "
        "crossalign.data.flickr8k). "
        f"Add {KARPATHY_FILE} beside the captions for the standard split",
        UserWarning,
        stacklevel=4,
    )
    return fallback_split(list(captions), seed), f"fallback split (seed={seed})"


def _check_disjoint(
    splits: dict[str, list[str]], source: str, policy: _Policy
) -> dict[str, list[str]]:
    """Drop (or raise for) images listed in more than one split: that would leak test
    data."""
    owner: dict[str, str] = {}
    for split in SPLITS:
        for image in splits[split]:
            owner.setdefault(image, split)
    clean: dict[str, list[str]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for image in splits[split]:
            if owner[image] == split:
                clean[split].append(image)
            else:
                policy.problem(
                    SPLIT_CONFLICT,
                    f"{source}: {image}",
                    f"listed in both {owner[image]} and {split}",
                )
    return clean


def read_flickr8k_annotations(
    root: str | Path, fmt: str = "auto", on_error: str = "raise", split_seed: int = 0
) -> Flickr8kAnnotations:
    """Read the captions and splits of Flickr8k in any of its three formats (no images
    opened)."""
    if fmt not in ("auto", *FORMATS):
        raise ValueError(
            f"fmt={fmt!r} is not one of 'auto', {', '.join(map(repr, FORMATS))}"
        )
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r} must be 'raise' or 'skip'")
    root = Path(root)
    fmt = detect_format(root) if fmt == "auto" else fmt
    annotation_file = root / ANNOTATION_FILES[fmt]
    if not annotation_file.is_file():
        raise FileNotFoundError(
            f"fmt={fmt!r} needs {annotation_file}, which does not exist; try fmt='auto'"
        )
    policy = _Policy(on_error)
    if fmt == "karpathy":
        captions, splits = _read_karpathy_json(annotation_file, policy)
        source = KARPATHY_FILE
    else:
        reader = _read_token_file if fmt == "original" else _read_kaggle_csv
        captions = reader(annotation_file, policy)
        splits, source = _read_splits(root, captions, split_seed, policy)
    splits = _check_disjoint(splits, source, policy)
    in_split = {image for names in splits.values() for image in names}
    for image in captions:
        if image not in in_split:
            policy.note(
                UNSPLIT_IMAGE,
                f"{annotation_file}: {image}",
                f"has captions but is in no split of {source}; not used",
            )
    return Flickr8kAnnotations(fmt, captions, splits, source, policy.report)


def _image_problem(path: Path) -> str | None:
    """Return why the image at ``path`` cannot be used, or None if it decodes."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return f"does not decode as an image ({type(exc).__name__}: {exc})"
    return None


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear, antialiased), then crop the
    centre square."""
    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = (
        max(size, round(width * scale)),
        max(size, round(height * scale)),
    )
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return image.crop((left, top, left + size, top + size))


class Flickr8k(torch.utils.data.Dataset):
    """Flickr8k images with all their captions, from any of the three on-disk formats.

    Item ``i`` is ``{"image", "captions", "image_id", "index"}``: a FloatTensor[3, S, S]
    in [0, 1], a list of caption strings, the file name and ``i``; with ``transform``
    the image is ``transform(PIL image)``. ``split`` is ``"train"``, ``"val"``,
    ``"test"`` or ``"all"`` (the three in that order). Quirks and problems are handled
    as the module docstring says and listed in ``.report``; with ``verify_images=True``
    every image is decoded once here (at reduced resolution, about a millisecond each)
    so ``on_error="skip"`` never yields a bad item later.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        fmt: str = "auto",
        image_size: int = 224,
        transform: Callable[[Image.Image], object] | None = None,
        on_error: str = "raise",
        image_dir: str | Path | None = None,
        verify_images: bool = True,
        *,
        split_seed: int = 0,
        progress: bool = True,
    ) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(
                f"split={split!r} must be one of 'train', 'val', 'test', 'all'"
            )
        if not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size={image_size!r} must be a positive int")
        annotations = read_flickr8k_annotations(root, fmt, on_error, split_seed)
        self.root = Path(root)
        self.split = split
        self.format = annotations.format
        self.split_source = annotations.split_source
        self.image_dir = find_image_dir(self.root, image_dir)
        self.image_size = image_size
        self.transform = transform
        self.report = annotations.report
        policy = _Policy(on_error, self.report)
        chosen = SPLITS if split == "all" else (split,)
        names = [(s, name) for s in chosen for name in annotations.splits[s]]
        self.image_ids: list[str] = []
        self.captions: list[list[str]] = []
        for name_split, name in tqdm(
            names, desc=f"Flickr8k {split}", disable=not progress, leave=False
        ):
            path = self.image_dir / name
            if not annotations.captions.get(name):
                policy.problem(
                    NO_CAPTIONS,
                    str(path),
                    f"in the {name_split} split of {self.split_source} but has no "
                    "caption",
                )
            elif not path.is_file():
                policy.problem(
                    MISSING_IMAGE,
                    str(path),
                    "listed in the split but not on disk",
                    FileNotFoundError,
                )
            elif verify_images and (problem := _image_problem(path)) is not None:
                policy.problem(CORRUPT_IMAGE, str(path), problem, OSError)
            else:
                self.image_ids.append(name)
                self.captions.append(annotations.captions[name])
        if self.report:
            logger.warning(
                "Flickr8k %s from %s: %s (see .report)",
                split,
                self.root,
                self.report.summary(),
            )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        path = self.image_dir / self.image_ids[index]
        try:
            with Image.open(path) as raw:
                image = raw.convert("RGB")
        except OSError as exc:
            raise OSError(
                f"{path}: cannot decode image ({exc}); build the data set with "
                "verify_images=True "
                "and on_error='skip' to leave corrupt files out"
            ) from exc
        if self.transform is not None:
            pixels = self.transform(image)
        else:
            pixels = (
                pil_to_tensor(resize_center_crop(image, self.image_size))
                .float()
                .div_(255)
            )
        return {
            "image": pixels,
            "captions": list(self.captions[index]),
            "image_id": self.image_ids[index],
            "index": index,
        }

    @property
    def num_captions(self) -> int:
        """Total number of captions over all images of the split."""
        return sum(len(caps) for caps in self.captions)

    def caption_image_index(self) -> tuple[list[str], torch.Tensor]:
        """All captions as one list, and a LongTensor giving the image index of each
        (for retrieval)."""
        return flatten_captions(self.captions)

    def __repr__(self) -> str:
        return (
            f"Flickr8k(split={self.split!r}, format={self.format!r}, "
            f"images={len(self)}, "
            f"captions={self.num_captions}, report={self.report.summary()!r})"
        )
