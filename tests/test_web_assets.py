"""tools/fetch_web_assets.py: digests, the file selection and unpacking, on hand-made
tarballs."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import fetch_web_assets as tool  # noqa: E402

ASSET = tool.WebAsset(
    package="demo",
    version="1.0.0",
    integrity="sha512-unused",
    folder="demo",
    strip="package/dist/",
    keep=(
        "package/LICENSE",
        "package/dist/entry.mjs",
        "package/dist/chunks/*.mjs",
        "package/dist/fonts/**",
    ),
)


def make_tarball(path: Path, files: dict[str, bytes]) -> Path:
    """Write a gzipped tarball holding ``files`` (member name -> content), as npm pack
    does."""
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def test_sri_digest_of_known_inputs():
    # SHA-512 of the empty string and of "abc" (FIPS 180-2 test vector), base64-encoded.
    assert tool.sri_digest(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )
    assert tool.sri_digest(b"abc") == (
        "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
    )


@pytest.mark.parametrize(
    ("member", "kept"),
    [
        ("package/LICENSE", True),
        ("package/dist/entry.mjs", True),
        ("package/dist/entry.mjs.map", False),
        ("package/dist/chunks/a.mjs", True),
        ("package/dist/chunks/a.mjs.map", False),
        ("package/dist/chunks/deeper/b.mjs", False),
        ("package/dist/fonts/woff/x.woff", True),
        ("package/dist/other.js", False),
        ("package/README.md", False),
    ],
)
def test_wanted_selects_exactly_the_listed_files(member, kept):
    assert tool.wanted(member, ASSET) is kept


def test_unpack_strips_the_prefix_and_keeps_the_licence(tmp_path):
    tarball = make_tarball(
        tmp_path / "demo.tgz",
        {
            "package/LICENSE": b"MIT",
            "package/dist/entry.mjs": b"export default 1;",
            "package/dist/entry.mjs.map": b"{}",
            "package/dist/chunks/a.mjs": b"export const a = 2;",
            "package/dist/fonts/woff/x.woff": b"\x00font",
        },
    )
    target = tmp_path / "out"
    assert tool.unpack(tarball, ASSET, target) == 4
    unpacked = sorted(
        path.relative_to(target).as_posix()
        for path in target.rglob("*")
        if path.is_file()
    )
    assert unpacked == ["LICENSE", "chunks/a.mjs", "entry.mjs", "fonts/woff/x.woff"]
    assert (target / "chunks" / "a.mjs").read_bytes() == b"export const a = 2;"


def test_unpack_refuses_paths_that_escape_the_target(tmp_path):
    tarball = make_tarball(
        tmp_path / "evil.tgz", {"package/dist/fonts/../../../escape.txt": b"x"}
    )
    with pytest.raises(ValueError, match="outside"):
        tool.unpack(tarball, ASSET, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_unpack_without_any_wanted_file_is_an_error(tmp_path):
    tarball = make_tarball(tmp_path / "empty.tgz", {"package/README.md": b"hello"})
    with pytest.raises(RuntimeError, match="none of the files"):
        tool.unpack(tarball, ASSET, tmp_path / "out")


def test_is_current_compares_the_stamp_with_the_pins(tmp_path):
    assert not tool.is_current(tmp_path)
    (tmp_path / tool.STAMP_NAME).write_text(
        json.dumps(tool.expected_stamp()), encoding="utf-8"
    )
    assert tool.is_current(tmp_path)
    stale = dict.fromkeys(tool.expected_stamp(), "sha512-old")
    (tmp_path / tool.STAMP_NAME).write_text(json.dumps(stale), encoding="utf-8")
    assert not tool.is_current(tmp_path)


def test_pins_are_exact_versions_with_sha512_digests():
    for asset in tool.ASSETS:
        assert (
            asset.version.count(".") == 2 and asset.version.replace(".", "").isdigit()
        ), asset.spec
        assert (
            asset.integrity.startswith("sha512-")
            and len(asset.integrity) == len("sha512-") + 88
        )
