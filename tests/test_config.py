"""Experiment configs: YAML/JSON round trips, the shipped default, overrides and errors
that name the key."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

import crossalign
from crossalign.models.dual_encoder import DualEncoderConfig
from crossalign.train.config import (
    ExperimentConfig,
    default_config_path,
    load_config,
    save_config,
)


def non_default_dict() -> dict:
    """A complete config dict in which every section differs from the defaults."""
    data = ExperimentConfig().to_dict()
    data["seed"] = 11
    data["data"].update(
        name="flickr8k",
        root="datasets/flickr8k",
        image_size=48,
        noise=0.1,
        tokenizer="hf",
        tokenizer_name="some-text-model",
        max_len=24,
        min_freq=2,
    )
    data["model"].update(
        image_kwargs={"widths": [8, 16], "out_dim": 16, "pool": "flatten"},
        text_kwargs={"embed_dim": 8, "hidden_dim": 8},
        embed_dim=8,
        projection="mlp",
        init_temperature=0.05,
        learn_temperature=False,
    )
    data["train"].update(
        steps=10,
        lr=0.0005,
        betas=[0.85, 0.95],
        clip_grad_norm=None,
        precision="bf16",
        compile=True,
        output_dir="runs/non_default",
        progress=False,
    )
    return data


def write(tmp_path, text: str, name: str = "experiment.yaml"):
    """Write ``text`` to a config file in ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_dict_to_yaml_file_to_config_round_trip(tmp_path):
    original = non_default_dict()
    path = write(tmp_path, yaml.safe_dump(original))
    loaded = load_config(path)
    assert loaded.to_dict() == original
    assert loaded == ExperimentConfig.from_dict(original)
    assert loaded != ExperimentConfig()


def test_save_config_then_load_config_gives_the_same_config(tmp_path):
    config = ExperimentConfig.from_dict(non_default_dict())
    save_config(config, tmp_path / "nested" / "config.yaml")
    assert load_config(tmp_path / "nested" / "config.yaml") == config


def test_json_files_load_like_yaml(tmp_path):
    original = non_default_dict()
    path = write(tmp_path, json.dumps(original), name="experiment.json")
    assert load_config(path).to_dict() == original


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == ExperimentConfig()


def test_shipped_default_config_loads_with_its_documented_sections():
    path = default_config_path()
    assert path.is_file()
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(raw) == {"seed", "data", "model", "train"}
    config = load_config(path)
    assert config.seed == raw["seed"]
    for section in ("data", "model", "train"):
        for key, value in raw[section].items():
            assert getattr(getattr(config, section), key) == value, f"{section}.{key}"
    assert config.data.name == "shapes"


def test_unknown_top_level_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "seed: 1\noptimizer: {lr: 0.1}\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert "optimizer" in str(err.value) and str(path) in str(err.value)


def test_unknown_key_in_a_section_names_key_section_and_file(tmp_path):
    path = write(tmp_path, "train:\n  stepz: 3\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert (
        "stepz" in str(err.value)
        and "'train'" in str(err.value)
        and str(path) in str(err.value)
    )


@pytest.mark.parametrize(
    "text, section",
    [("data: [1, 2]\n", "data"), ("train: 5\n", "train"), ("model: a gru\n", "model")],
)
def test_section_that_is_not_a_mapping_names_section_and_file(tmp_path, text, section):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert f"'{section}'" in str(err.value) and str(path) in str(err.value)


def test_top_level_that_is_not_a_mapping_names_the_file(tmp_path):
    path = write(tmp_path, "- seed\n- data\n")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_config(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "data: {name: shapes\n")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_config(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_config(path)


@pytest.mark.parametrize(
    "item, section, key, expected",
    [
        ("train.steps=7", "train", "steps", 7),
        ("train.lr=0.01", "train", "lr", 0.01),
        ("data.noise=0.25", "data", "noise", 0.25),
        ("train.betas=[0.8, 0.95]", "train", "betas", [0.8, 0.95]),
        (
            "model.image_kwargs={widths: [4, 8], out_dim: 12}",
            "model",
            "image_kwargs",
            {"widths": [4, 8], "out_dim": 12},
        ),
        ("train.clip_grad_norm=null", "train", "clip_grad_norm", None),
        ("train.compile=true", "train", "compile", True),
        ("data.name=flickr8k", "data", "name", "flickr8k"),
        ("data.root=folder=with=equals", "data", "root", "folder=with=equals"),
    ],
)
def test_override_parses_values_as_yaml(item, section, key, expected):
    value = getattr(getattr(ExperimentConfig().override([item]), section), key)
    assert value == expected and type(value) is type(expected)


def test_override_changes_only_its_key_and_leaves_the_original_alone():
    base = ExperimentConfig()
    changed = base.override(["train.steps=5", "data.test_size=64", "train.steps=9"])
    expected = base.to_dict()
    expected["train"]["steps"] = 9
    expected["data"]["test_size"] = 64
    assert changed.to_dict() == expected
    assert base == ExperimentConfig()


@pytest.mark.parametrize(
    "item, named",
    [
        ("train.steps", "train.steps"),
        ("steps=3", "steps=3"),
        ("=3", "=3"),
        ("optim.lr=0.1", "optim.lr"),
        ("train.nosuch=1", "nosuch"),
        ("model.image_kwargs.widths=[4]", "image_kwargs.widths"),
    ],
)
def test_override_rejects_malformed_items_naming_them(item, named):
    with pytest.raises(ValueError) as err:
        ExperimentConfig().override([item])
    assert named in str(err.value)


def test_override_with_malformed_yaml_value_is_a_value_error_naming_it():
    """An unclosed list is a user typo, so it must be a ValueError (exit status 2 in the
    CLI), not a raw YAMLError."""
    with pytest.raises(ValueError, match="train.betas"):
        ExperimentConfig().override(["train.betas=[0.8, 0.9"])


def test_override_with_a_control_character_is_a_value_error_naming_it():
    """YAML's reader (not its parser) refuses control characters; its error has no
    ``problem``, and reading that attribute used to raise an AttributeError."""
    with pytest.raises(ValueError, match="train.steps.*not valid YAML"):
        ExperimentConfig().override(["train.steps=1\x07"])


def test_override_reads_exponent_notation_as_a_float():
    """``--set train.lr=1e-3`` is how everyone writes a learning rate; YAML 1.1 reads it
    as a string."""
    lr = ExperimentConfig().override(["train.lr=1e-3"]).train.lr
    assert lr == 0.001 and isinstance(lr, float)


def test_dual_encoder_config_from_dict_round_trips_and_rejects_unknown_keys():
    values = {
        "image_kwargs": {"widths": [4], "out_dim": 4},
        "embed_dim": 16,
        "projection": "mlp",
    }
    config = DualEncoderConfig.from_dict(values)
    assert config == DualEncoderConfig(**values)
    assert DualEncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="embed_dimension"):
        DualEncoderConfig.from_dict({**values, "embed_dimension": 16})


# Standard-library names that Python 3.10, the oldest version pyproject.toml accepts,
# does not have.
_NEWER_THAN_3_10 = {
    "typing": {
        "LiteralString",
        "Never",
        "NotRequired",
        "ReadOnly",
        "Required",
        "Self",
        "TypeIs",
        "TypeVarTuple",
        "Unpack",
        "assert_never",
        "assert_type",
        "dataclass_transform",
        "override",
        "reveal_type",
    },
    "enum": {"ReprEnum", "StrEnum", "verify"},
    "datetime": {"UTC"},
    "itertools": {"batched"},
    "contextlib": {"chdir"},
}
_MODULES_NEWER_THAN_3_10 = {"tomllib", "wsgiref.types"}


def test_the_package_imports_nothing_that_python_3_10_lacks():
    """``from typing import Self`` (Python 3.11) made crossalign.train.config, and
    with it training and the command line, fail to import on Python 3.10. The tests,
    tools and benchmarks are held to the same floor."""
    root = Path(crossalign.__file__).parents[1]
    folders = ("crossalign", "tests", "tools", "benchmarks")
    found = []
    for path in sorted(p for folder in folders for p in (root / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                names = {alias.name for alias in node.names}
                newer = names & _NEWER_THAN_3_10.get(node.module, set())
                if node.module in _MODULES_NEWER_THAN_3_10 or newer:
                    found.append(f"{path.name}:{node.lineno} {node.module} {newer}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in _MODULES_NEWER_THAN_3_10:
                        found.append(f"{path.name}:{node.lineno} {alias.name}")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.attr in _NEWER_THAN_3_10.get(node.value.id, set()):
                    found.append(
                        f"{path.name}:{node.lineno} {node.value.id}.{node.attr}"
                    )
            elif type(node).__name__ == "TryStar":  # except* (Python 3.11)
                found.append(f"{path.name}:{node.lineno} except*")
    assert not found, found


def test_style_and_type_checks_target_the_declared_python_floor():
    """ruff's pyupgrade and mypy check against requires-python's floor, so neither
    suggests nor accepts syntax or names that the oldest supported Python lacks."""
    text = (Path(crossalign.__file__).parents[1] / "pyproject.toml").read_text(
        encoding="utf-8"
    )
    floor = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', text, re.MULTILINE)
    assert floor, "pyproject.toml: requires-python must read >=X.Y"
    major, minor = floor.groups()
    assert f'\ntarget-version = "py{major}{minor}"\n' in text
    assert f'\npython_version = "{major}.{minor}"\n' in text
