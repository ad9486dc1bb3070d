"""Fetch the pinned Mermaid and MathJax releases into ``book/_static/vendor`` for
offline pages.

    python tools/fetch_web_assets.py            # fetch if missing or outdated
    python tools/fetch_web_assets.py --check    # exit 1 unless the assets are in place

The book's pages must render diagrams and equations with no network, so both libraries
are served from the built site instead of a CDN. They come from the npm registry through
the ordinary ``npm pack`` client, at pinned versions whose tarballs are checked against
pinned SHA-512 digests, so every machine gets byte-identical files. Only what a browser
needs is unpacked (no source maps, no type declarations), each library next to its
licence. The target folder is git-ignored; ``make book`` and ``make test`` run this
script first.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
VENDOR_DIR = ROOT / "book" / "_static" / "vendor"
STAMP_NAME = "assets.json"


@dataclass(frozen=True)
class WebAsset:
    """One npm package release and the files of it that the built site serves.

    ``keep`` holds glob patterns relative to the package root; a file is unpacked when
    it matches one of them (and its path, with ``strip`` removed, lands under
    ``folder``).
    """

    package: str
    version: str
    integrity: str
    folder: str
    strip: str
    keep: tuple[str, ...]

    @property
    def spec(self) -> str:
        """The ``name@version`` string npm understands."""
        return f"{self.package}@{self.version}"


ASSETS = (
    # Mermaid's ES-module build: a small entry file that imports its diagram chunks
    # lazily.
    WebAsset(
        package="mermaid",
        version="11.12.1",
        integrity="sha512-UlIZrRariB11TY1RtTgUWp65tphtBv4CSq7vyS2ZZ2TgoMjs2nloq+wFqxiwcxlhHUvs7DPGgMjs2aeQxz5h9g==",
        folder="mermaid",
        strip="package/dist/",
        keep=(
            "package/LICENSE",
            "package/dist/mermaid.esm.min.mjs",
            "package/dist/chunks/mermaid.esm.min/*.mjs",
        ),
    ),
    # MathJax 3 (the version Sphinx targets): the TeX+MathML to CommonHTML bundle plus
    # what it loads on demand (TeX extensions, fonts, the accessibility and menu
    # components).
    WebAsset(
        package="mathjax",
        version="3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        folder="mathjax",
        strip="package/es5/",
        keep=(
            "package/LICENSE",
            "package/es5/tex-mml-chtml.js",
            "package/es5/input/**",
            "package/es5/output/**",
            "package/es5/ui/**",
            "package/es5/a11y/**",
            "package/es5/sre/**",
        ),
    ),
)


def sri_digest(data: bytes) -> str:
    """Return the Subresource-Integrity string (``sha512-<base64>``) npm records for
    ``data``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def npm_pack(spec: str, destination: Path) -> Path:
    """Download the tarball of ``spec`` with ``npm pack`` into ``destination``; return
    its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(
            "npm is not installed: install Node.js and npm (e.g. the Debian package "
            "npm), then rerun"
        )
    result = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(destination)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"npm pack {spec} failed (exit "
            f"{result.returncode}):\n{result.stderr.strip()}"
        )
    (record,) = json.loads(result.stdout)
    return destination / record["filename"]


def wanted(member: str, asset: WebAsset) -> bool:
    """Whether tarball member ``member`` is one of the files ``asset`` keeps.

    A pattern ending in ``/**`` keeps a whole folder; otherwise ``*`` matches within one
    folder.
    """
    for pattern in asset.keep:
        if pattern.endswith("/**"):
            if member.startswith(pattern[:-2]):
                return True
        elif fnmatch.fnmatchcase(member, pattern) and member.count(
            "/"
        ) == pattern.count("/"):
            return True
    return False


def unpack(tarball: Path, asset: WebAsset, target: Path) -> int:
    """Unpack the kept files of ``asset`` from ``tarball`` into ``target``; return how
    many."""
    count = 0
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile() or not wanted(member.name, asset):
                continue
            relative = (
                member.name.removeprefix(asset.strip)
                if member.name.startswith(asset.strip)
                else PurePosixPath(member.name).name
            )
            destination = target / relative
            if ".." in PurePosixPath(relative).parts:
                raise ValueError(
                    f"{tarball.name}: refusing to unpack {member.name!r} outside "
                    f"{target}"
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            destination.write_bytes(source.read())
            count += 1
    if count == 0:
        raise RuntimeError(
            f"{tarball.name}: none of the files {asset.keep} found; is the version "
            "right?"
        )
    return count


def expected_stamp() -> dict[str, str]:
    """The record of package versions and digests that a complete fetch leaves
    behind."""
    return {asset.spec: asset.integrity for asset in ASSETS}


def is_current(vendor_dir: Path = VENDOR_DIR) -> bool:
    """Whether ``vendor_dir`` already holds exactly the pinned releases."""
    stamp = vendor_dir / STAMP_NAME
    return (
        stamp.is_file()
        and json.loads(stamp.read_text(encoding="utf-8")) == expected_stamp()
    )


def fetch(vendor_dir: Path = VENDOR_DIR) -> None:
    """Fetch, verify and unpack every pinned asset into ``vendor_dir`` (replacing what
    is there)."""
    with tempfile.TemporaryDirectory(prefix="crossalign-assets-") as scratch:
        scratch_dir = Path(scratch)
        staging = scratch_dir / "vendor"
        for asset in ASSETS:
            tarball = npm_pack(asset.spec, scratch_dir)
            digest = sri_digest(tarball.read_bytes())
            if digest != asset.integrity:
                raise RuntimeError(
                    f"{asset.spec}: tarball digest {digest} differs from the pinned "
                    f"{asset.integrity}"
                )
            count = unpack(tarball, asset, staging / asset.folder)
            print(
                f"{asset.spec:<20} {count:4d} files -> "
                f"{vendor_dir.relative_to(ROOT) / asset.folder}"
            )
        (staging / STAMP_NAME).write_text(
            json.dumps(expected_stamp(), indent=1) + "\n", encoding="utf-8"
        )
        if vendor_dir.exists():
            shutil.rmtree(vendor_dir)
        vendor_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(vendor_dir))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report whether the assets are in place",
    )
    args = parser.parse_args()
    if is_current():
        print(f"web assets up to date in {VENDOR_DIR.relative_to(ROOT)}")
        return 0
    if args.check:
        print(
            f"web assets missing or outdated in {VENDOR_DIR.relative_to(ROOT)}: run "
            "python tools/fetch_web_assets.py",
            file=sys.stderr,
        )
        return 1
    fetch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
