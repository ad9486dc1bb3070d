"""The book's configuration: citations fail the build when wrong, assets are wired as
fetched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import fetch_web_assets  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
SPHINX = CONFIG["sphinx"]["config"]


def build_tiny_book(directory: Path, page: str) -> subprocess.CompletedProcess[str]:
    """Build a two-page book (``page`` and the real bibliography page) with the book's
    settings.

    Everything that matters for citations comes from the real ``_config.yml``; only what
    would need the full book (executing notebooks, the fetched web assets) is switched
    off.
    """
    pytest.importorskip("jupyter_book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "off"
    config["exclude_patterns"] = []
    config["html"].pop("favicon", None)
    config["sphinx"]["config"]["html_static_path"] = []
    (directory / "book").mkdir()
    (directory / "_config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (directory / "_toc.yml").write_text(
        "format: jb-book\nroot: book/page\nchapters:\n  - file: book/A_bibliography\n",
        encoding="utf-8",
    )
    (directory / "book" / "page.md").write_text(page, encoding="utf-8")
    for name in ("A_bibliography.md", "references.bib"):
        (directory / "book" / name).symlink_to(ROOT / "book" / name)
    command = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build",
        str(directory),
        "--builder",
        "html",
        "--warningiserror",
        "--keep-going",
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_known_citation_builds_and_links_to_the_bibliography(tmp_path):
    result = build_tiny_book(
        tmp_path, "# Page\n\nContrastive pre-training {cite:p}`radford2021clip`.\n"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    html = (tmp_path / "_build" / "html" / "book" / "page.html").read_text(
        encoding="utf-8"
    )
    assert 'href="A_bibliography.html#' in html
    assert "Radford" in html and "2021" in html  # author-year style


def test_unknown_citation_key_fails_the_build(tmp_path):
    result = build_tiny_book(
        tmp_path, "# Page\n\nA claim {cite:p}`nobody2099missing`.\n"
    )
    assert result.returncode != 0
    assert "nobody2099missing" in result.stdout + result.stderr


def test_bibliography_page_lists_every_entry():
    page = (ROOT / "book" / "A_bibliography.md").read_text(encoding="utf-8")
    assert "```{bibliography}\n:all:\n```" in page
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]


def test_vendor_assets_are_served_from_a_static_path_jupyter_book_does_not_inject():
    # Jupyter Book adds every script under <book root>/_static to every page;
    # book/_static is a plain Sphinx static path, so only the entries configured below
    # are ever loaded.
    assert not (ROOT / "_static").exists()
    assert SPHINX["html_static_path"] == ["book/_static"]


def test_configured_asset_paths_are_files_the_fetcher_unpacks():
    by_package = {asset.package: asset for asset in fetch_web_assets.ASSETS}
    for setting, package in (
        ("mathjax_path", "mathjax"),
        ("mermaid_use_local", "mermaid"),
    ):
        asset = by_package[package]
        folder, _, inside = SPHINX[setting].removeprefix("vendor/").partition("/")
        assert folder == asset.folder
        assert fetch_web_assets.wanted(asset.strip + inside, asset), (
            f"{setting}={SPHINX[setting]} is not fetched"
        )


def test_the_book_loads_mermaid_bibtex_and_exercises_but_not_thebe():
    extensions = SPHINX["extensions"]
    for name in (
        "sphinxcontrib.mermaid",
        "sphinxcontrib.bibtex",
        "sphinx_exercise",
        "myst_nb",
        "sphinx_book_theme",
    ):
        assert name in extensions
    assert "sphinx_thebe" not in extensions
