"""The chapters on the paths readers switch on in the field: ``DATA = "flickr8k"``.

The book's saved outputs come from ShapesWorld on a CPU, and nbval checks those. A
reader in Colab sets ``DATA = "flickr8k"`` instead, and that path must not be first
executed by them. CI cannot download Flickr8k or torchvision's ImageNet weights, so
this test builds both stand-ins:

- a small Flickr8k in the authors' layout (token file with the real file's quirks, the
  three split files, photo-sized JPEGs; ``flickr8k_fixtures.write_field_fixture``);
- randomly initialised ResNets saved under the file names torchvision's downloader
  uses, in a temporary ``TORCH_HOME``, so the chapters' ``pretrained=True`` code runs
  unchanged and offline (``flickr8k_fixtures.save_stand_in_weights``).

Each chapter then runs end to end through ``tools/run_notebooks.py --output-dir`` (its
saved outputs stay as they are) with ``CROSSALIGN_DATA=flickr8k``. Asserts about what
ShapesWorld results must reach are guarded by ``DATA == "shapes"`` in the chapters;
the asserts that check the path itself (feature shapes, metric keys, one caption per
test image) run. The features of random weights are meaningless, so no number is
checked here; what is checked is that every cell runs and prints what it should.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from flickr8k_fixtures import save_stand_in_weights, write_field_fixture

pytestmark = pytest.mark.field

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tools" / "run_notebooks.py"


@pytest.fixture(scope="module")
def flickr_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables that point a chapter at the fixture and the stand-in
    weights, with an empty crossalign cache (features are computed as a reader's first
    run computes them)."""
    base = tmp_path_factory.mktemp("field")
    write_field_fixture(base / "flickr8k")
    save_stand_in_weights(base / "torch", ["resnet18", "resnet50"])
    return {
        **os.environ,
        "CROSSALIGN_DATA": "flickr8k",
        "CROSSALIGN_FAST": "1",
        "FLICKR8K_ROOT": str(base / "flickr8k"),
        "TORCH_HOME": str(base / "torch"),
        "CROSSALIGN_CACHE": str(base / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONHASHSEED": "0",
    }


def execute_chapter(
    name: str, environment: dict[str, str], out_dir: Path, *options: str
) -> nbformat.NotebookNode:
    """Run ``book/<name>.ipynb`` through the notebook runner with ``environment`` (and
    the runner's ``options``); return the executed notebook, or fail with the runner's
    report."""
    run = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--output-dir",
            str(out_dir),
            *options,
            str(ROOT / "book" / f"{name}.ipynb"),
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
    )
    if run.returncode != 0:
        pytest.fail(
            f"{name} failed with {environment.get('CROSSALIGN_DATA')=}, "
            f"{environment.get('CROSSALIGN_FAST')=}:\n{run.stdout[-3000:]}"
            f"\n{run.stderr[-6000:]}"
        )
    print(run.stdout.strip())
    return nbformat.read(out_dir / f"{name}.ipynb", as_version=4)


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the chapter's cells printed to stdout, in order."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def test_chapter_1_retrieval_runs_on_flickr8k(
    flickr_environment: dict[str, str], tmp_path: Path
) -> None:
    text = printed(execute_chapter("01_overview", flickr_environment, tmp_path))
    assert "DATA='flickr8k', FAST=True" in text
    # the frozen-feature path: a cached pooled ResNet-18, not the ShapesWorld CNN
    assert "DualEncoderConfig(image_encoder='features'" in text
    cache = Path(flickr_environment["CROSSALIGN_CACHE"]) / "flickr8k_features"
    assert sorted(p.name for p in cache.glob("*pooled.safetensors")) == [
        f"flickr8k_{split}_resnet18-imagenet-224px-pooled.safetensors"
        for split in ("test", "train")
    ]
    assert "image->text" in text and "text->image" in text  # the R@K table
    assert "contain a large red circle" not in text  # ShapesWorld-only cells skipped


def test_chapter_2_language_models_run_on_flickr8k_captions(
    flickr_environment: dict[str, str], tmp_path: Path
) -> None:
    text = printed(execute_chapter("02_language_models", flickr_environment, tmp_path))
    assert "DATA='flickr8k', FAST=True" in text
    assert "1500 training captions, 150 held-out captions" in text  # 300 + 30 images
    assert "GPT, whole prefix" in text and "4-gram, Kneser-Ney" in text


def test_chapter_9_captioner_runs_on_flickr8k(
    flickr_environment: dict[str, str], tmp_path: Path
) -> None:
    notebook = execute_chapter("09_captioning_project", flickr_environment, tmp_path)
    text = printed(notebook)
    assert "data: flickr8k" in text
    assert "decoded 60 images" in text  # the whole test split of the fixture
    assert "BLEU-4" in text and "CIDEr-D" in text
    # METEOR needs Java: a score where it is installed, a clear error where not
    assert "METEOR: " in text or "Java" in text
    cache = Path(flickr_environment["CROSSALIGN_CACHE"]) / "flickr8k_features"
    assert sorted(p.name for p in cache.glob("*grid.safetensors")) == [
        f"flickr8k_{split}_resnet18-imagenet-224px-grid.safetensors"
        for split in ("test", "train")
    ]


def full_size_chapters() -> list[str]:
    """Chapters whose ``FAST`` switch changes something: their code uses ``FAST``
    beyond the settings cell that defines and prints it."""
    names = []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        code = [
            cell.source
            for cell in nbformat.read(path, as_version=4).cells
            if cell.cell_type == "code" and "FAST = " not in cell.source
        ]
        if any("FAST" in source for source in code):
            names.append(path.stem)
    return names


def test_the_full_size_chapters_are_found() -> None:
    found = full_size_chapters()
    assert {
        "01_overview",
        "02_language_models",
        "06_contrastive_math",
        "09_captioning_project",
    } <= set(found)
    # chapters whose runs are small either way say FAST changes nothing there
    assert not {"04_alignment_pipeline", "08_environment_and_tools"} & set(found)


@pytest.mark.parametrize("name", full_size_chapters())
def test_full_size_path_runs_in_a_smoke_run(name: str, tmp_path: Path) -> None:
    """``FAST = False``, every budget written ``full(n)`` cut 40-fold: each line of the
    full-size path runs, with the models and settings it names.

    No result can hold at such budgets, so a failed assert in a cell that only asserts
    (a check of what training reached) is allowed and listed; an error anywhere else,
    an assert that fails inside a cell doing other work included, fails the test."""
    environment = {
        **os.environ,
        "CROSSALIGN_DATA": "shapes",
        "CROSSALIGN_FAST": "0",
        "CROSSALIGN_SMOKE": "1",
        "CROSSALIGN_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONHASHSEED": "0",
    }
    text = printed(
        execute_chapter(name, environment, tmp_path, "--allow-failed-checks")
    )
    assert "DATA='shapes', FAST=False" in text
    assert "CROSSALIGN_SMOKE=1: full-size budgets are cut" in text
