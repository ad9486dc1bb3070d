"""Flickr8k: three formats, one truth; quirks fixed and reported; problems raised or
skipped; safe download."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from flickr8k_fixtures import (
    SPLIT_FILE_NAMES,
    image_colour,
    make_spec,
    write_corrupt_jpeg,
    write_images,
    write_kaggle,
    write_karpathy,
    write_original,
    write_split_files,
)
from PIL import Image

from crossalign.data import download
from crossalign.data import flickr8k as f8k
from crossalign.data.download import (
    check_flickr8k_structure,
    download_file,
    download_flickr8k,
    extract_archive,
)
from crossalign.data.flickr8k import (
    Flickr8k,
    detect_format,
    fallback_split,
    flatten_captions,
    resize_center_crop,
)

SPEC = make_spec(n_train=12, n_val=4, n_test=4)


def load(root: Path, split: str = "train", **kwargs) -> Flickr8k:
    return Flickr8k(root, split, image_size=16, progress=False, **kwargs)


def write_layout(root: Path, layout: str, quirks: bool = False):
    """Write one of the layouts in circulation; return what the writer says about its
    quirks."""
    if layout == "original":
        return write_original(root, SPEC, quirks=quirks)
    if layout == "karpathy":
        return write_karpathy(root, SPEC, quirks=quirks)
    if layout == "kaggle+split files":
        quirk_lines = write_kaggle(root, SPEC, quirks=quirks)
        write_split_files(root, SPEC.splits)
        return quirk_lines
    if layout == "kaggle+karpathy json":
        quirk_lines = write_kaggle(root, SPEC, quirks=quirks)
        write_karpathy(root, SPEC, image_folder=None)
        return quirk_lines
    raise AssertionError(layout)


LAYOUTS = ["original", "karpathy", "kaggle+split files", "kaggle+karpathy json"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_format_reads_back_the_same_images_captions_and_splits(tmp_path, layout):
    write_layout(tmp_path, layout)
    fmt = layout.split("+")[0]
    for split in ("train", "val", "test"):
        data = load(tmp_path, split, fmt=fmt)
        assert data.image_ids == SPEC.splits[split]
        assert data.captions == [SPEC.captions[name] for name in SPEC.splits[split]]
        assert len(data.report) == 0, data.report.entries
    assert data.format == fmt


def test_karpathy_restval_is_part_of_train(tmp_path):
    write_karpathy(tmp_path, SPEC, restval=True)
    entries = json.loads((tmp_path / "dataset_flickr8k.json").read_text())["images"]
    restval = [entry["filename"] for entry in entries if entry["split"] == "restval"]
    assert len(restval) == len(SPEC.splits["train"]) // 2
    assert set(restval) < set(load(tmp_path, "train").image_ids)


def test_split_all_is_train_then_val_then_test(tmp_path):
    write_original(tmp_path, SPEC)
    data = load(tmp_path, "all")
    assert (
        data.image_ids
        == SPEC.splits["train"] + SPEC.splits["val"] + SPEC.splits["test"]
    )


def test_auto_detection_and_its_order(tmp_path):
    write_kaggle(tmp_path / "k", SPEC, image_folder=None)
    write_karpathy(tmp_path / "j", SPEC, image_folder=None)
    write_original(tmp_path / "o", SPEC, image_folder=None)
    assert [detect_format(tmp_path / name) for name in "kjo"] == [
        "kaggle",
        "karpathy",
        "original",
    ]
    write_kaggle(tmp_path / "o", SPEC, image_folder=None)
    assert detect_format(tmp_path / "o") == "original"


def test_no_annotations_names_every_file_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load(tmp_path)
    for name in (
        "Flickr8k.token.txt",
        "dataset_flickr8k.json",
        "captions.txt",
        str(tmp_path),
    ):
        assert name in str(error.value)


def test_explicit_format_whose_file_is_absent_names_it(tmp_path):
    write_kaggle(tmp_path, SPEC)
    with pytest.raises(FileNotFoundError, match="dataset_flickr8k.json"):
        load(tmp_path, fmt="karpathy")


def test_bad_arguments_name_the_argument(tmp_path):
    write_original(tmp_path, SPEC)
    for kwargs, name in [
        ({"split": "dev"}, "split"),
        ({"on_error": "ignore"}, "on_error"),
        ({"fmt": "coco"}, "fmt"),
    ]:
        with pytest.raises(ValueError, match=name):
            Flickr8k(tmp_path, progress=False, **kwargs)
    with pytest.raises(ValueError, match="image_size"):
        Flickr8k(tmp_path, image_size=0, progress=False)


def test_partial_split_files_name_the_missing_one(tmp_path):
    write_kaggle(tmp_path, SPEC)
    write_split_files(tmp_path, SPEC.splits)
    (tmp_path / SPLIT_FILE_NAMES["val"]).unlink()
    with pytest.raises(FileNotFoundError, match="Flickr_8k.devImages.txt"):
        load(tmp_path)


def test_image_folder_names_in_circulation_and_explicit_image_dir(tmp_path):
    write_original(tmp_path, SPEC, image_folder="Images")
    assert load(tmp_path).image_dir == tmp_path / "Images"
    (tmp_path / "Images").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError) as error:
        load(tmp_path)
    assert all(name in str(error.value) for name in f8k.IMAGE_DIR_NAMES)
    assert len(load(tmp_path, image_dir=tmp_path / "elsewhere")) == len(
        SPEC.splits["train"]
    )


# --- the Kaggle layout alone: a deterministic fallback split, announced
# --------------------------


def test_kaggle_without_split_files_warns_and_splits_deterministically(tmp_path):
    write_kaggle(tmp_path, SPEC)
    with pytest.warns(UserWarning, match="fallback split"):
        splits = {
            split: load(tmp_path, split).image_ids for split in ("train", "val", "test")
        }
    n = len(SPEC.image_ids)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [
        n - 2 * (n // 8),
        n // 8,
        n // 8,
    ]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(
        SPEC.image_ids
    )
    assert all(names == sorted(names) for names in splits.values())
    with pytest.warns(UserWarning):
        again = load(tmp_path, "test")
    assert (
        again.image_ids == splits["test"]
        and again.split_source == "fallback split (seed=0)"
    )
    with pytest.warns(UserWarning):
        assert load(tmp_path, "test", split_seed=1).image_ids != splits["test"]


def test_fallback_split_is_6000_1000_1000_on_8000_names_and_ignores_input_order():
    names = [f"{i:010d}_abc.jpg" for i in range(8000)]
    splits = fallback_split(names, seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6000, 1000, 1000]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == names
    assert fallback_split(names[::-1], seed=0) == splits
    assert fallback_split(names, seed=1)["test"] != splits["test"]
    assert [
        len(fallback_split(names[:8091] + [f"x{i}.jpg" for i in range(91)])[s])
        for s in ("val", "test")
    ] == [1011, 1011]


# --- quirks: fixed by rule, reported in both modes
# -------------------------------------------------


@pytest.mark.parametrize("layout", ["original", "kaggle+split files", "karpathy"])
def test_quirks_are_fixed_and_reported_with_their_place(tmp_path, layout):
    places = write_layout(tmp_path, layout, quirks=True)
    data = load(tmp_path, "train")
    assert data.image_ids == SPEC.splits["train"]
    assert data.captions == [SPEC.captions[name] for name in SPEC.splits["train"]]
    report = data.report
    expected = {
        f8k.NORMALISED_ID: len(places["normalised"]),
        f8k.SHORT_CAPTION: 1,
        f8k.DUPLICATE_CAPTION: 1,
        f8k.BLANK_LINE: len(places.get("blank", [])),
    }
    assert {kind: report.count(kind) for kind in expected} == expected
    assert len(report) == sum(expected.values())
    annotation_file = tmp_path / f8k.ANNOTATION_FILES[data.format]
    items = [item for item, _ in report]
    for kind, place_list in places.items():
        for place in place_list:
            where = (
                f"{annotation_file}:{place}"
                if isinstance(place, int)
                else f"{annotation_file}: {place}"
            )
            assert where in items, (kind, where, items)
    first = SPEC.image_ids[0]
    assert any(f"{first}.1" in reason and f"{first}'" in reason for _, reason in report)
    assert "1 single-word caption dropped" in report.summary()


def test_reported_issues_are_logged(tmp_path, caplog):
    write_original(tmp_path, SPEC, quirks=True)
    with caplog.at_level(logging.WARNING, logger="crossalign.data.flickr8k"):
        data = load(tmp_path)
    assert data.report.summary() in caplog.text


def test_captions_with_commas_and_quotes_survive_the_csv(tmp_path):
    write_kaggle(tmp_path, SPEC)
    write_split_files(tmp_path, SPEC.splits)
    captions = dict(zip(load(tmp_path).image_ids, load(tmp_path).captions))
    first = SPEC.image_ids[0]
    assert captions[first][-1] == 'A sign that reads "stop" , next to a road .'
    assert any("," in caption for caps in captions.values() for caption in caps)


# --- problems: raise naming the place, or skip and record
# ----------------------------------------


def test_malformed_token_line_names_file_and_line(tmp_path):
    write_original(tmp_path, SPEC)
    token_file = tmp_path / "Flickr8k.token.txt"
    lines = token_file.read_text().splitlines()
    lines.insert(6, f"{SPEC.image_ids[1]}#5 a caption with no tab")
    token_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"{token_file}:7: expected"):
        load(tmp_path)
    data = load(tmp_path, on_error="skip")
    assert (
        data.report.count(f8k.MALFORMED) == 1
        and data.report.entries[0][0] == f"{token_file}:7"
    )
    assert data.captions == [SPEC.captions[name] for name in SPEC.splits["train"]]


def test_malformed_csv_row_names_its_line(tmp_path):
    write_kaggle(tmp_path, SPEC)
    write_split_files(tmp_path, SPEC.splits)
    csv_file = tmp_path / "captions.txt"
    with csv_file.open("a") as handle:
        handle.write(f"{SPEC.image_ids[0]},a caption, with an unquoted comma\n")
    last_line = len(csv_file.read_text().splitlines())
    with pytest.raises(ValueError, match=f"{csv_file}:{last_line}: expected"):
        load(tmp_path)
    data = load(tmp_path, on_error="skip")
    assert [item for item, _ in data.report] == [f"{csv_file}:{last_line}"]
    assert data.captions == [SPEC.captions[name] for name in SPEC.splits["train"]]


def test_image_in_split_without_captions(tmp_path):
    write_original(tmp_path, SPEC)
    stray = "999_stray.jpg"
    write_images(tmp_path / "Flicker8k_Dataset", [stray])
    with (tmp_path / SPLIT_FILE_NAMES["test"]).open("a") as handle:
        handle.write(stray + "\n")
    with pytest.raises(ValueError, match=stray):
        load(tmp_path, "test")
    data = load(tmp_path, "test", on_error="skip")
    assert data.image_ids == SPEC.splits["test"]
    assert data.report.count(f8k.NO_CAPTIONS) == 1


def test_image_listed_in_two_splits_is_refused(tmp_path):
    write_original(tmp_path, SPEC)
    leaked = SPEC.splits["train"][0]
    with (tmp_path / SPLIT_FILE_NAMES["test"]).open("a") as handle:
        handle.write(leaked + "\n")
    with pytest.raises(ValueError, match=f"{leaked}.*both train and test"):
        load(tmp_path, "test")
    data = load(tmp_path, "test", on_error="skip")
    assert (
        data.image_ids == SPEC.splits["test"]
        and data.report.count(f8k.SPLIT_CONFLICT) == 1
    )
    assert leaked in load(tmp_path, "train", on_error="skip").image_ids


def test_missing_image_raises_naming_it_or_is_skipped(tmp_path):
    write_original(tmp_path, SPEC)
    gone = tmp_path / "Flicker8k_Dataset" / SPEC.splits["val"][1]
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=str(gone)):
        load(tmp_path, "val")
    data = load(tmp_path, "val", on_error="skip")
    assert data.image_ids == [name for name in SPEC.splits["val"] if name != gone.name]
    assert data.report.entries == [(str(gone), "listed in the split but not on disk")]
    assert data.report.count(f8k.MISSING_IMAGE) == 1


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_corrupt_jpeg_raises_naming_it_or_is_skipped(tmp_path, kind):
    write_original(tmp_path, SPEC)
    bad = tmp_path / "Flicker8k_Dataset" / SPEC.splits["test"][2]
    write_corrupt_jpeg(bad, kind)
    with pytest.raises(OSError, match=str(bad)):
        load(tmp_path, "test")
    data = load(tmp_path, "test", on_error="skip")
    assert bad.name not in data.image_ids and len(data) == len(SPEC.splits["test"]) - 1
    assert data.report.count(f8k.CORRUPT_IMAGE) == 1 and data.report.entries[0][
        0
    ] == str(bad)
    assert all(data[i]["image"].shape == (3, 16, 16) for i in range(len(data)))


def test_without_verification_a_corrupt_image_fails_on_access_naming_it(tmp_path):
    write_original(tmp_path, SPEC)
    bad = tmp_path / "Flicker8k_Dataset" / SPEC.splits["test"][0]
    write_corrupt_jpeg(bad, "truncated")
    data = load(tmp_path, "test", verify_images=False)
    assert len(data) == len(SPEC.splits["test"])
    with pytest.raises(OSError, match=str(bad)):
        data[0]
    assert data[1]["image_id"] == SPEC.splits["test"][1]


# --- items
# --------------------------------------------------------------------------------------


def test_item_holds_the_resized_image_all_captions_and_ids(tmp_path):
    write_original(tmp_path, SPEC)
    data = load(tmp_path, "val")
    item = data[2]
    name = SPEC.splits["val"][2]
    assert item["image_id"] == name and item["index"] == 2
    assert item["captions"] == SPEC.captions[name]
    image = item["image"]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 16)
    colour = (
        torch.tensor(image_colour(SPEC.image_ids.index(name)), dtype=torch.float32)
        / 255
    )
    torch.testing.assert_close(
        image, colour[:, None, None].expand(3, 16, 16), atol=3 / 255, rtol=0
    )
    assert data[-1]["image_id"] == SPEC.splits["val"][-1] and data[-1]["index"] == 3
    with pytest.raises(IndexError):
        data[4]


def test_transform_receives_the_pil_image(tmp_path):
    write_original(tmp_path, SPEC)
    data = load(tmp_path, "val", transform=lambda image: (image.mode, image.size))
    assert data[0]["image"] == ("RGB", (40, 32))


def test_resize_center_crop_keeps_the_centre():
    left_red_right_blue = np.zeros((32, 64, 3), dtype=np.uint8)
    left_red_right_blue[:, :32] = (255, 0, 0)
    left_red_right_blue[:, 32:] = (0, 0, 255)
    crop = np.asarray(resize_center_crop(Image.fromarray(left_red_right_blue), 16))
    assert crop.shape == (16, 16, 3)
    assert (crop[:, :7] == (255, 0, 0)).all() and (crop[:, 9:] == (0, 0, 255)).all()
    top_green = np.zeros((64, 32, 3), dtype=np.uint8)
    top_green[:16] = (0, 255, 0)
    crop = np.asarray(resize_center_crop(Image.fromarray(top_green), 16))
    assert crop.shape == (16, 16, 3) and (crop[2:] == 0).all()
    assert resize_center_crop(Image.fromarray(top_green), 100).size == (100, 100)


def test_caption_image_index_maps_every_caption_to_its_image(tmp_path):
    write_original(tmp_path, SPEC)
    data = load(tmp_path, "val")
    captions, image_index = data.caption_image_index()
    assert data.num_captions == len(captions) == 20
    assert image_index.dtype == torch.long and image_index.tolist() == [
        i for i in range(4) for _ in range(5)
    ]
    assert all(
        captions[j] in data.captions[image_index[j]] for j in range(len(captions))
    )
    flat, index = flatten_captions([["a dog", "a cat"], ["two birds"], []])
    assert flat == ["a dog", "a cat", "two birds"] and index.tolist() == [0, 0, 1]


# --- download: atomic files, safe extraction, structure checks
# -----------------------------------


class CutConnection:
    """A response that delivers the first chunk of a real one, then fails or ends
    early."""

    def __init__(self, response, fail: bool) -> None:
        self.response, self.fail, self.chunks = response, fail, 0
        self.headers = {
            "Content-Length": str(
                int(response.headers["Content-Length"]) + (0 if fail else 1000)
            )
        }

    def read(self, size: int) -> bytes:
        self.chunks += 1
        if self.chunks > 1:
            if self.fail:
                raise ConnectionResetError("connection reset by peer")
            return b""
        return self.response.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.response.close()


def payload(tmp_path: Path, size: int = 5000) -> Path:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * (size // 256) + b"end")
    return source


def test_download_file_copies_the_bytes_and_checks_the_checksum(tmp_path):
    source = payload(tmp_path)
    dest = tmp_path / "out" / "file.bin"
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (
        download_file(
            source.as_uri(), dest, sha256=good, progress=False, chunk_size=1000
        )
        == dest
    )
    assert dest.read_bytes() == source.read_bytes()
    with pytest.raises(ValueError, match="checksum mismatch") as error:
        download_file(
            source.as_uri(),
            tmp_path / "out" / "other.bin",
            sha256="0" * 64,
            progress=False,
        )
    assert good in str(error.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]


def test_a_checksum_mismatch_keeps_the_earlier_file(tmp_path):
    source = payload(tmp_path)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"earlier complete download")
    with pytest.raises(ValueError, match="checksum"):
        download_file(source.as_uri(), dest, sha256="f" * 64, progress=False)
    assert dest.read_bytes() == b"earlier complete download"


@pytest.mark.parametrize("fail", [True, False], ids=["connection reset", "ends early"])
def test_an_interrupted_download_leaves_no_file(tmp_path, monkeypatch, fail):
    source = payload(tmp_path)
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(
        urllib.request,
        "urlopen",
        lambda url, timeout: CutConnection(real_urlopen(url), fail),
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        OSError, match="connection reset" if fail else "stopped after 1000 of"
    ):
        download_file(
            source.as_uri(), out / "file.bin", progress=False, chunk_size=1000
        )
    assert list(out.iterdir()) == []


def test_an_unreachable_url_leaves_no_file(tmp_path):
    with pytest.raises(urllib.error.URLError):
        download_file(
            (tmp_path / "absent.zip").as_uri(),
            tmp_path / "out" / "absent.zip",
            progress=False,
        )
    assert list((tmp_path / "out").iterdir()) == []


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink is not None:
            link = tarfile.TarInfo("link")
            link.type, link.linkname = tarfile.SYMTYPE, symlink
            tf.addfile(link)
    return path


@pytest.mark.parametrize("maker", [make_zip, make_tar], ids=["zip", "tar.gz"])
def test_extract_archive_unpacks_into_dest_and_drops_macos_metadata(tmp_path, maker):
    members = {
        "folder/a.txt": b"alpha",
        "b.txt": b"beta",
        "__MACOSX/folder/._a.txt": b"resource fork",
    }
    archive = maker(
        tmp_path / f"archive.{'zip' if maker is make_zip else 'tar.gz'}", members
    )
    dest = extract_archive(archive, tmp_path / "dest")
    assert (dest / "folder" / "a.txt").read_bytes() == b"alpha" and (
        dest / "b.txt"
    ).read_bytes() == b"beta"
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt", "folder"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name, "dest"]
    with pytest.raises(FileExistsError, match="b.txt"):
        extract_archive(archive, dest)
    assert (dest / "b.txt").read_bytes() == b"beta"


@pytest.mark.parametrize(
    "maker, name",
    [
        (make_zip, "../evil.txt"),
        (make_zip, "/etc/evil.txt"),
        (make_zip, "ok/../../evil.txt"),
        (make_tar, "../evil.txt"),
    ],
)
def test_extract_archive_refuses_path_traversal(tmp_path, maker, name):
    (tmp_path / "inner").mkdir()
    archive = maker(
        tmp_path / "inner" / "bad.archive", {"fine.txt": b"fine", name: b"evil"}
    )
    with pytest.raises(ValueError, match="refusing member"):
        extract_archive(archive, tmp_path / "inner" / "dest")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.archive", "inner"]


def test_extract_archive_refuses_tar_links(tmp_path):
    archive = make_tar(
        tmp_path / "links.tar.gz", {"fine.txt": b"fine"}, symlink="/etc/passwd"
    )
    with pytest.raises(ValueError, match="links"):
        extract_archive(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def zip_folder(folder: Path, archive: Path, only: list[str] | None = None) -> Path:
    """Zip the files under ``folder`` (or only the top-level names in ``only``) with
    relative names."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and (only is None or relative.parts[0] in only):
                zf.write(path, relative.as_posix())
    return archive


def mirror_archives(
    tmp_path: Path, text_files: list[str] | None = None
) -> tuple[str, str]:
    """Zips laid out like the mirror's: the image folder in one, the text files in the
    other."""
    source = tmp_path / "source"
    write_original(source, SPEC)
    images = zip_folder(
        source, tmp_path / "Flickr8k_Dataset.zip", ["Flicker8k_Dataset"]
    )
    text_names = text_files or ["Flickr8k.token.txt", *SPLIT_FILE_NAMES.values()]
    text = zip_folder(source, tmp_path / "Flickr8k_text.zip", text_names)
    return images.as_uri(), text.as_uri()


def test_download_flickr8k_from_file_urls_gives_a_loadable_dataset(
    tmp_path, monkeypatch
):
    images_url, text_url = mirror_archives(tmp_path)
    cache = tmp_path / "cache"
    counts = {
        "expected_images": len(SPEC.image_ids),
        "expected_caption_lines": 5 * len(SPEC.image_ids),
    }
    root = download_flickr8k(
        cache, images_url, text_url=text_url, progress=False, **counts
    )
    assert root == cache / "flickr8k" and sorted(p.name for p in cache.iterdir()) == [
        "flickr8k"
    ]
    assert load(root, "val").captions == [
        SPEC.captions[name] for name in SPEC.splits["val"]
    ]

    def no_network(*args, **kwargs):
        raise AssertionError("a complete data set must not be downloaded again")

    monkeypatch.setattr(download, "download_file", no_network)
    assert (
        download_flickr8k(
            cache, images_url, text_url=text_url, progress=False, **counts
        )
        == root
    )


def test_download_flickr8k_structure_failure_names_the_problem_and_leaves_nothing(
    tmp_path,
):
    text_files = [
        "Flickr8k.token.txt",
        SPLIT_FILE_NAMES["train"],
        SPLIT_FILE_NAMES["test"],
    ]
    images_url, text_url = mirror_archives(tmp_path, text_files)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="Flickr_8k.devImages.txt is missing"):
        download_flickr8k(
            cache,
            images_url,
            text_url=text_url,
            progress=False,
            expected_images=20,
            expected_caption_lines=100,
        )
    assert list(cache.iterdir()) == []


def test_structure_check_reports_short_counts(tmp_path):
    write_original(tmp_path, SPEC)
    check_flickr8k_structure(tmp_path, expected_images=20, expected_caption_lines=100)
    with pytest.raises(ValueError) as error:
        check_flickr8k_structure(
            tmp_path, expected_images=8091, expected_caption_lines=40460
        )
    assert "holds 20 .jpg files, expected 8091" in str(error.value)
    assert "has 100 caption lines, expected 40460" in str(error.value)
