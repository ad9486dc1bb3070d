"""Experiment configuration: dataclasses that round-trip to YAML/JSON, with errors that
name the key."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import Field, asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from crossalign.models.dual_encoder import DualEncoderConfig


@dataclass
class DataConfig:
    """Which data set to train and evaluate on, and how to tokenise its captions.

    ``name="shapes"`` uses ShapesWorld (offline, generated on demand);
    ``name="flickr8k"`` reads Flickr8k from ``root`` (see ``crossalign.data.flickr8k``).
    With ``feature_cache`` set (Flickr8k), a frozen ``feature_encoder`` (a torchvision
    ResNet, ImageNet weights when ``pretrained_encoder``) runs once over each split and
    its pooled features are cached in that folder; the dual encoder then trains on them,
    with ``model.image_encoder: features``.
    """

    name: str = "shapes"
    root: str | None = None
    image_size: int = 64
    train_size: int = 20000
    val_size: int = 1000
    test_size: int = 1000
    noise: float = 0.0
    tokenizer: str = "word"
    tokenizer_name: str | None = None
    max_len: int = 32
    min_freq: int = 1
    num_workers: int = 0
    feature_cache: str | None = None
    feature_encoder: str = "resnet50"
    pretrained_encoder: bool = True


@dataclass
class TrainConfig:
    """How to optimise: budget, optimiser, schedule, precision, logging and
    checkpoints.

    ``tf32`` lets fp32 matrix products on CUDA use TF32 tensor cores
    (:func:`~crossalign.train.engine.enable_tf32`); it changes nothing on the CPU.
    ``log_every`` is also how often the loss is read back from the device.
    """

    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_accum: int = 1
    clip_grad_norm: float | None = 1.0
    precision: str = "fp32"
    tf32: bool = True
    channels_last: bool = True
    fused_optimizer: bool = True
    compile: bool = False
    device: str = "auto"
    log_every: int = 25
    eval_every: int = 0
    eval_size: int = 500
    checkpoint_every: int = 0
    output_dir: str | None = None
    progress: bool = True


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field's type, converting where YAML is ambiguous.

    YAML reads ``1e-3`` as a string (it wants ``1.0e-3``), so floats also accept strings
    that Python parses as numbers; ints accept only ints; lists and dicts are checked
    shallowly.
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item_type,) = typing.get_args(annotation) or (Any,)
            return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or annotation is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    name = getattr(annotation, "__name__", str(annotation))
    raise ValueError(f"{where} must be of type {name}, got {value!r}")


def _build_section(
    klass: type, values: dict[str, Any], section: str, source: str
) -> Any:
    """Instantiate one config section, checking key names and value types."""
    hints = typing.get_type_hints(klass)
    bad = set(values) - set(hints)
    if bad:
        raise ValueError(
            f"{source}: unknown keys {sorted(bad)} in section {section!r}; valid keys: "
            f"{sorted(hints)}"
        )
    try:
        checked = {
            key: _coerce(value, hints[key], f"{section}.{key}")
            for key, value in values.items()
        }
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return klass(**checked)


_Config = TypeVar("_Config", bound="SectionedConfig")


class SectionedConfig:
    """``to_dict``, ``from_dict`` and ``override`` for an experiment config made of
    sections.

    A subclass is a dataclass with a ``seed`` and one dataclass field per section, and
    names the section classes in ``SECTIONS`` (section name -> dataclass).
    """

    SECTIONS: ClassVar[dict[str, type]] = {}
    # Set by @dataclass on every subclass; declared so that type checkers take
    # asdict(self).
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON/YAML-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(
        cls: type[_Config], data: dict[str, Any], source: str = "config"
    ) -> _Config:
        """Build from nested dicts; unknown sections or keys raise a ``ValueError``
        naming them."""
        return cls(**build_sections(data, cls.SECTIONS, source))

    def override(self: _Config, assignments: Sequence[str]) -> _Config:
        """Apply ``section.key=value`` overrides (values parsed as YAML), e.g.
        ``train.steps=50``."""
        return self.from_dict(
            apply_overrides(self.to_dict(), assignments, self.SECTIONS),
            source="overrides",
        )


@dataclass
class ExperimentConfig(SectionedConfig):
    """A whole experiment: seed, data, model and training settings."""

    SECTIONS: ClassVar[dict[str, type]] = {
        "data": DataConfig,
        "model": DualEncoderConfig,
        "train": TrainConfig,
    }

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: DualEncoderConfig = field(default_factory=DualEncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def build_sections(data: Any, sections: dict[str, type], source: str) -> dict[str, Any]:
    """Check a config mapping (``seed`` + one mapping per section) and build each
    section's dataclass.

    Shared by every experiment config of the package; errors name ``source`` and the bad
    key.
    """
    if not isinstance(data, dict):
        raise ValueError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    unknown = set(data) - set(sections) - {"seed"}
    if unknown:
        raise ValueError(
            f"{source}: unknown top-level keys {sorted(unknown)}; valid: seed, "
            f"{', '.join(sections)}"
        )
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"{source}: seed must be an integer, got {seed!r}")
    built: dict[str, Any] = {"seed": seed}
    for name, klass in sections.items():
        values = data.get(name)
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ValueError(
                f"{source}: section {name!r} must be a mapping, got {values!r}"
            )
        built[name] = _build_section(klass, values, name, source)
    return built


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong, in a line: the parser's ``problem``, else the error's first line.

    Only the parser's errors have a ``problem``; the reader's (a control character, say)
    do not.
    """
    return getattr(err, "problem", None) or str(err).splitlines()[0]


def apply_overrides(
    data: dict[str, Any], assignments: Sequence[str], sections: dict[str, type]
) -> dict[str, Any]:
    """Apply ``section.key=value`` assignments (values parsed as YAML) to a config dict
    in place."""
    for item in assignments:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(
                f"override {item!r} must look like section.key=value, e.g. "
                "train.steps=100"
            )
        path, raw = item.split("=", 1)
        section, key = path.split(".", 1)
        if section not in sections:
            raise ValueError(
                f"override {item!r}: section must be one of {', '.join(sections)}"
            )
        try:
            data[section][key] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(
                f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)})"
            ) from None
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict, naming the file (and line) in any
    error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = (
            f"{path}:{mark.line + 1}:{mark.column + 1}"
            if mark is not None
            else str(path)
        )
        raise ValueError(f"{where}: not valid YAML ({_yaml_problem(err)})") from None
    return data or {}


def load_config(path: str | Path) -> ExperimentConfig:
    """Read an experiment config from a YAML or JSON file, naming the file in any
    error."""
    return ExperimentConfig.from_dict(read_config_file(path), source=str(path))


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write an experiment config as YAML."""
    from crossalign.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def default_config_path() -> Path:
    """The ShapesWorld CLIP config that ships with the package."""
    return Path(__file__).resolve().parent.parent / "configs" / "shapes_clip.yaml"
