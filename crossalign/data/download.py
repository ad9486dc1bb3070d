"""Download and unpack Flickr8k safely: atomic files, checked archives, checked
structure.

The authors' original download page needs a form; the copy most tutorials use is the
pair of zip files attached to a GitHub release (``FLICKR8K_IMAGES_URL``, about 1 GB, and
``FLICKR8K_TEXT_URL``, about 2 MB). They unpack to the original layout read by
:class:`crossalign.data.flickr8k.Flickr8k`: the folder ``Flicker8k_Dataset/`` with 8,091
JPEGs, ``Flickr8k.token.txt`` with 40,460 caption lines (8,092 ids: one is the
``.jpg.1`` quirk) and the three split files. The mirror publishes no checksum, so the
structure check after extraction (counts of images and caption lines, presence of every
file) is what tells a complete download from a broken one.

Every step is atomic: a file is streamed to a temporary name and renamed when complete,
archives are unpacked into a temporary folder first, and the data set folder appears
only once all of it has been checked. An interrupted run leaves nothing half-written
behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from crossalign.data.flickr8k import SPLIT_FILES, TOKEN_FILE, find_image_dir
from crossalign.utils import atomic_path, default_cache_dir

FLICKR8K_IMAGES_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"
FLICKR8K_TEXT_URL = (
    "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip"
)
FLICKR8K_IMAGE_COUNT = 8091
FLICKR8K_CAPTION_LINES = 40460
MACOS_METADATA_DIR = "__MACOSX"

logger = logging.getLogger(__name__)


def download_file(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
) -> Path:
    """Stream ``url`` to ``dest`` through a temporary file, check it, then rename it
    into place.

    The download is checked against the server's ``Content-Length`` (a cut connection is
    caught) and, when given, against ``sha256``. On any failure ``dest`` is left as it
    was and no partial file remains. ``file://`` URLs work too.
    """
    dest = Path(dest)
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            tmp.open("wb") as out,
        ):
            length = response.headers.get("Content-Length")
            expected_bytes = int(length) if length is not None else None
            received = 0
            with tqdm(
                total=expected_bytes,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                while chunk := response.read(chunk_size):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected_bytes is not None and received != expected_bytes:
            raise OSError(
                f"download of {url} stopped after {received} of {expected_bytes} "
                "bytes; run it again"
            )
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise ValueError(
                f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got "
                f"{digest.hexdigest()}; "
                "the file is corrupt or has changed on the server, so it was not kept"
            )
    return dest


def _refuse_unsafe_name(name: str, archive: Path) -> None:
    """Raise for a member name that is absolute, has a drive or contains ``..`` (path
    traversal)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if (
        path.is_absolute()
        or ".." in path.parts
        or (path.parts and ":" in path.parts[0])
    ):
        raise ValueError(
            f"{archive}: refusing member {name!r}, whose path points outside the "
            "extraction folder"
        )


def _extract_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _refuse_unsafe_name(info.filename, archive)
        zf.extractall(into)


def _extract_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _refuse_unsafe_name(member.name, archive)
            if not (member.isfile() or member.isdir()):
                raise ValueError(
                    f"{archive}: refusing member {member.name!r}: only files and "
                    "folders are extracted, not links or devices"
                )
        if hasattr(tarfile, "data_filter"):
            tf.extractall(into, members=members, filter="data")
        else:
            tf.extractall(into, members=members)


def extract_archive(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    skip_macos_metadata: bool = True,
) -> Path:
    """Unpack a zip or tar archive into ``dest`` via a temporary folder, refusing unsafe
    members.

    Members with absolute paths, ``..`` components or (in tars) links are refused before
    anything is written. The archive is unpacked beside ``dest``; then each top-level
    entry is renamed into ``dest`` (created if needed), after checking that none exists
    there yet. A failure leaves ``dest`` untouched. ``__MACOSX/`` resource-fork folders
    are dropped unless asked otherwise.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    if zipfile.is_zipfile(archive):
        extract = _extract_zip
    elif tarfile.is_tarfile(archive):
        extract = _extract_tar
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        extract(archive, staging)
        entries = [
            entry
            for entry in staging.iterdir()
            if not (skip_macos_metadata and entry.name == MACOS_METADATA_DIR)
        ]
        clashes = [entry.name for entry in entries if (dest / entry.name).exists()]
        if clashes:
            raise FileExistsError(
                f"extracting {archive} would overwrite {', '.join(sorted(clashes))} in "
                f"{dest}"
            )
        dest.mkdir(exist_ok=True)
        for entry in entries:
            os.replace(entry, dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def check_flickr8k_structure(
    root: str | os.PathLike,
    expected_images: int = FLICKR8K_IMAGE_COUNT,
    expected_caption_lines: int = FLICKR8K_CAPTION_LINES,
) -> None:
    """Check that ``root`` holds the complete original layout; raise naming everything
    missing.

    Needs the image folder with at least ``expected_images`` ``.jpg`` files,
    ``Flickr8k.token.txt`` with at least ``expected_caption_lines`` non-blank lines and
    the three split files. Raises ``FileNotFoundError`` if a file or folder is absent,
    else ``ValueError`` if a count is short.
    """
    root = Path(root)
    missing, short = [], []
    try:
        image_dir = find_image_dir(root)
    except FileNotFoundError as exc:
        missing.append(str(exc))
    else:
        n_images = sum(1 for _ in image_dir.glob("*.jpg"))
        if n_images < expected_images:
            short.append(
                f"{image_dir} holds {n_images} .jpg files, expected {expected_images}"
            )
    token_file = root / TOKEN_FILE
    if token_file.is_file():
        with token_file.open("rb") as handle:
            n_lines = sum(1 for line in handle if line.strip())
        if n_lines < expected_caption_lines:
            short.append(
                f"{token_file} has {n_lines} caption lines, expected "
                f"{expected_caption_lines}"
            )
    else:
        missing.append(f"{TOKEN_FILE} is missing")
    missing += [
        f"{name} is missing"
        for name in SPLIT_FILES.values()
        if not (root / name).is_file()
    ]
    if missing or short:
        problems = "; ".join(missing + short)
        error = FileNotFoundError if missing else ValueError
        raise error(f"Flickr8k structure check failed in {root}: {problems}")


def download_flickr8k(
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
    *,
    text_url: str | None = None,
    sha256: str | None = None,
    text_sha256: str | None = None,
    force: bool = False,
    progress: bool = True,
    expected_images: int = FLICKR8K_IMAGE_COUNT,
    expected_caption_lines: int = FLICKR8K_CAPTION_LINES,
) -> Path:
    """Download Flickr8k (images and text) into ``<cache_dir>/flickr8k`` and return that
    folder.

    ``cache_dir`` defaults to :func:`crossalign.utils.default_cache_dir`; ``url`` and
    ``text_url`` default to the public mirror above. A folder that already passes the
    structure check is returned without downloading unless ``force=True``. Both archives
    are fetched and unpacked in a staging folder, the result is checked, and only then
    renamed to ``flickr8k``: a failed or interrupted run leaves no partial data set and
    keeps an earlier complete one.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / "flickr8k"
    if root.is_dir() and not force:
        try:
            check_flickr8k_structure(root, expected_images, expected_caption_lines)
            return root
        except (FileNotFoundError, ValueError) as exc:
            logger.warning("%s; downloading Flickr8k again", exc)
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".flickr8k.download-", dir=cache))
    try:
        unpacked = staging / "flickr8k"
        for archive_url, checksum in (
            (url or FLICKR8K_IMAGES_URL, sha256),
            (text_url or FLICKR8K_TEXT_URL, text_sha256),
        ):
            name = (
                PurePosixPath(urllib.parse.urlparse(archive_url).path).name or "archive"
            )
            archive = download_file(
                archive_url, staging / "archives" / name, checksum, progress=progress
            )
            extract_archive(archive, unpacked)
            archive.unlink()
        check_flickr8k_structure(unpacked, expected_images, expected_caption_lines)
        if root.exists():
            old = staging / "previous"
            os.replace(root, old)
        os.replace(unpacked, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
