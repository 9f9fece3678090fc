"""Typed run configuration: dataclasses, read from TOML/JSON files plus dotted overrides,
coerced and checked field by field, and saved into every run directory.

This module knows no registry: ``compose.load_config`` types the ``method`` section by the
chosen method and checks names against the registries (methods, validators, backbones)."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import read_json, write_json_atomic


class ConfigError(ValueError):
    """A configuration value or key that does not fit the typed config."""


@dataclass
class OptimConfig:
    """One optimizer: ``name`` is adam, adamw or sgd; ``schedule`` scales the learning rate with
    stage progress p: constant, cosine, or ``inverse`` (DANN's lr / (1 + 10 p) ** 0.75)."""

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"
    clip_grad_norm: float | None = None


@dataclass
class MethodConfig:
    """Base of every method's config; ``name`` picks the method from the registry."""

    name: str = "source_only"


@dataclass
class AugmentConfig:
    """Batched on-device augmentation (``data/augment.py``). ``source`` and ``target`` pick the
    view applied to the regular source / target batches: ``none``, ``weak`` or ``strong``.
    Methods that train on a strong target view (FixMatch-style consistency) receive it besides
    the regular one. ``policy`` ``auto`` is ``digits`` for 1-channel or <= 32 px inputs (no
    flips, zero padding) and ``natural`` otherwise (flips, reflection, colour); ``strength``
    scales every magnitude."""

    policy: str = "auto"
    source: str = "none"
    target: str = "none"
    strength: float = 1.0


@dataclass
class DataConfig:
    """Source and target datasets and the one input geometry of the task.

    ``size``/``channels`` left unset keep the native geometry, which must then agree across
    domains. ``source_subset``/``target_subset`` draw fixed random subsets of the training
    splits (ADDA protocol: 2000 MNIST, 1800 USPS) with ``subset_seed``. The source validation
    set (``source_val_fraction``) is drawn from source training images not used for training.
    """

    source: str = "mnist5k"
    target: str = "ucidigits"
    root: str | None = None
    download: bool = False
    size: int | None = None
    channels: int | None = None
    source_subset: int | None = None
    target_subset: int | None = None
    subset_seed: int = 0
    source_val_fraction: float = 0.1
    # the labeled target evaluation set (data/target.py): unset = the target's own test split;
    # a spec (folder:, list:, npz:, a name); "transductive"; or "none" (no target accuracy)
    target_test: str | None = None
    batch_size: int = 128
    on_device: bool = True
    # data/stream.py: memory (decode once), stream (decode per batch in `workers` processes),
    # auto (stream folder/list inputs whose decoded size passes cache_budget_gb)
    cache: str = "auto"
    cache_budget_gb: float = 8.0
    workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # category shift (data/shift.py): a preset name, or class lists (names or indices);
    # all unset = closed set on identical class lists
    category_shift: str | None = None
    shared_classes: list[str | int] | None = None
    source_private: list[str | int] | None = None
    target_private: list[str | int] | None = None
    # semi-supervised DA (data/shots.py): ``target_shots`` labeled target images per class and
    # ``target_val_shots`` more as a labeled target validation set (train.selection=target_val),
    # drawn from the target training split with ``subset_seed``; the rest is the unlabeled pool
    target_shots: int = 0
    target_val_shots: int = 0
    # or the labeled target images and validation images as given sets (MME's split files:
    # labeled_target_images_*_k.txt, validation_target_images_*_3.txt as list:FILE), the
    # target itself being the unlabeled pool (unlabeled_target_images_*_k.txt)
    target_labeled: str | None = None
    target_validation: str | None = None


@dataclass
class ModelConfig:
    backbone: str = "lenet"
    pretrained: str | None = None
    # learning-rate multiplier for the parameters of a pretrained backbone (the fine-tuning
    # practice of the DANN / DANCE / MME papers: the ImageNet body at lr/10, new layers at lr)
    pretrained_lr_scale: float = 0.1
    channels_last: bool = True  # NHWC memory format for convolutions (faster on CPU and GPU)
    # none | bn | in | ibn | dsbn (models/norm.py); unset: the backbone's own (LeNet none, else bn)
    norm: str | None = None
    # the mlp backbone (feature vectors): hidden widths, the last is the feature size; dropout
    mlp_widths: list[int] = field(default_factory=lambda: [256, 256])
    mlp_dropout: float = 0.0


@dataclass
class TrainConfig:
    """How to train: seed, device, cadences, and the model-selection rule
    (``last``, ``source_val``, an unsupervised validator of ``evaluation.validators.VALIDATORS``
    such as ``snd`` or ``dev``, or ``target_oracle`` — the last for analysis only)."""

    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    log_every: int = 100
    eval_every: int = 500
    checkpoint_every: int = 1000
    selection: str = "source_val"
    amp: bool = False
    # speed switches (training/speed.py): bf16 on a CPU only with native bf16 (auto), always
    # (force) or never; torch.compile of the networks; the optimizer kernel
    # (auto | fused | foreach | loop)
    cpu_bf16: str = "auto"
    compile: bool = False
    optimizer_impl: str = "auto"
    progress: bool = True
    # AdaBN: after training, recompute batch-norm statistics on the target training images
    # (needs a model with batch norm, e.g. model.norm=bn); the result is the adapted model
    adabn: bool = False
    # open-set rejection under a category shift: "entropy" (reject when entropy > threshold,
    # default log(K)/2 as in DANCE) or "confidence" (reject when max softmax < threshold, 0.5)
    rejection: str = "entropy"
    rejection_threshold: float | None = None
    # also log every metric to RUN/tensorboard (needs the tensorboard package)
    tensorboard: bool = False


@dataclass
class InitConfig:
    """Start from another run's weights: ``weights = "RUN:module,module"`` loads the named
    submodules of the method (``classifier``, ``classifier.backbone``, ``translator``,
    ``teacher``, ...; default ``classifier``) from a finished run's ``best.pt`` (else its
    ``checkpoint.pt``) or a checkpoint file, before the first stage. The run's lineage records
    it; a method skips the stages whose result was loaded (e.g. ADDA's source stage)."""

    weights: str | None = None


@dataclass
class RunConfig:
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: InitConfig = field(default_factory=InitConfig)
    name: str | None = None
    output_dir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())


SELECTION_RULES = ("last", "source_val", "target_val", "target_oracle")


def build(cls: type, values: dict[str, Any] | None, where: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a plain dict, checking every key and value type."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(where + k for k in unknown)}; valid keys here: "
            f"{', '.join(where + n for n in names)}"
        )
    defaults = cls()
    arguments = {}
    for name in names:
        if name not in values:
            continue
        value, default = values[name], getattr(defaults, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a partial table updates this field's own default (e.g. DANN's SGD optimizer),
            # not the bare defaults of the field's type
            value = {**dataclasses.asdict(default), **value}
        arguments[name] = _coerce(value, hints[name], where + name)
    return cls(**arguments)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value  # already built and checked (e.g. a method's own config)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of settings, got {value!r}")
        return build(kind, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        arguments = typing.get_args(kind)
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            if len(value) != len(arguments):
                raise ConfigError(f"{where} must have {len(arguments)} items, got {value!r}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, arguments, strict=True))
        item = arguments[0] if arguments else Any
        items = [_coerce(v, item, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {kind!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value``; the value is read as JSON (numbers, true/false, null, lists) and
    otherwise kept as a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    values = json.loads(json.dumps(values))  # deep copy of plain data
    if isinstance(values.get("method"), str):  # method = "NAME" is short for method.name
        values["method"] = {"name": values["method"]}
    for text in overrides:
        path, value = parse_override(text)
        if path == ["method"] and isinstance(value, str):
            path = ["method", "name"]  # keeps earlier and later method.* overrides
        node = values
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix == ".json":
        return read_json(path, "fix or restore it (a run folder's config.json is written by "
                         "tamebias fit; delete the folder to train the run again)")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        return tomllib.loads(path.read_text())
    raise ConfigError(f"config file {path} must be .toml or .json")


def fill_unset(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each dotted key of ``defaults`` set where ``values`` leaves it unset
    (a method's default form, e.g. DANN's batch norm and weak views); keys the user gave,
    even to the dataclass default, are kept."""
    values = json.loads(json.dumps(values))
    for key, value in defaults.items():
        *sections, name = key.split(".")
        node = values
        for section in sections:
            child = node.setdefault(section, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {section} is not a section")
            node = child
        node.setdefault(name, value)
    return values


def check(config: RunConfig) -> None:
    """Checks that span fields and need no registry, made before any data is read; the
    checks against registries (methods, validators, backbones, ...) are in ``compose.py``."""
    if config.train.selection in ("source_val", "dev") and config.data.source == "none":
        raise ConfigError(
            f"train.selection={config.train.selection} needs source validation images, and a "
            "source-free run (data.source=none) has none: select with a target validator, "
            "e.g. train.selection=im (or snd, entropy, last)")
    if config.train.selection in ("source_val", "dev") and config.data.source_val_fraction <= 0:
        raise ConfigError(
            f"train.selection={config.train.selection} needs a source validation set: "
            "set data.source_val_fraction > 0 or train.selection=last"
        )
    if config.data.target_shots < 0 or config.data.target_val_shots < 0:
        raise ConfigError("data.target_shots and data.target_val_shots must not be negative")
    if (config.data.target_labeled or config.data.target_validation) and (
            config.data.target_shots or config.data.target_val_shots):
        raise ConfigError("give the labeled target images either by count (data.target_shots, "
                          "data.target_val_shots) or as sets (data.target_labeled, "
                          "data.target_validation), not both")
    if (config.train.selection == "target_val" and config.data.target_val_shots < 1
            and not config.data.target_validation):
        raise ConfigError(
            "train.selection=target_val needs a labeled target validation set: set "
            "data.target_val_shots (e.g. 3 per class, MME's protocol) or "
            "data.target_validation")
    if not 0 <= config.data.source_val_fraction < 1:
        raise ConfigError("data.source_val_fraction must be in [0, 1)")
    for key, value, allowed in (
            ("cpu_bf16", config.train.cpu_bf16, ("auto", "force", "never")),
            ("optimizer_impl", config.train.optimizer_impl, ("auto", "fused", "foreach", "loop"))):
        if value not in allowed:
            raise ConfigError(f"train.{key} must be one of {', '.join(allowed)}, got {value!r}")
    if config.data.channels not in (None, 1, 3):
        raise ConfigError(f"data.channels must be 1 or 3, got {config.data.channels}")
    if config.data.augment.strength < 0:
        raise ConfigError("data.augment.strength must not be negative")
    if not config.model.mlp_widths or min(config.model.mlp_widths) < 1:
        raise ConfigError("model.mlp_widths must list one or more positive layer widths")
    if not 0 <= config.model.mlp_dropout < 1:
        raise ConfigError("model.mlp_dropout must be in [0, 1)")
    if config.train.selection == "target_oracle" and config.data.target_test == "none":
        raise ConfigError("train.selection=target_oracle reads target test labels, but "
                          "data.target_test=none")
    if config.model.pretrained_lr_scale < 0:
        raise ConfigError("model.pretrained_lr_scale must not be negative (0 freezes the "
                          "pretrained body)")
    if config.train.rejection not in ("entropy", "confidence"):
        raise ConfigError(f"train.rejection must be entropy or confidence, "
                          f"got {config.train.rejection!r}")
    if config.data.cache not in ("auto", "memory", "stream"):
        raise ConfigError(f"data.cache must be auto, memory or stream, got {config.data.cache!r}")
    if config.data.workers < 0 or config.data.cache_budget_gb <= 0:
        raise ConfigError("data.workers must be >= 0 and data.cache_budget_gb > 0")
    if config.data.batch_size < 1:
        raise ConfigError("data.batch_size must be positive")
    if config.data.size is not None and config.data.size < 8:
        raise ConfigError(f"data.size must be at least 8 pixels, got {config.data.size}")
    for name, value in vars(config.method).items():
        if name.endswith("steps") and isinstance(value, int) and value < 0:
            raise ConfigError(f"method.{name} must not be negative, got {value}")
    for name in ("log_every", "eval_every", "checkpoint_every"):
        if getattr(config.train, name) < 1:
            raise ConfigError(f"train.{name} must be positive")
    check_learning_rates(config.method)


def check_learning_rates(method: MethodConfig) -> None:
    """Every optimizer's ``lr`` is a finite positive number (NaN or 0 would train nothing)."""
    for name, value in vars(method).items():
        optims = value.items() if isinstance(value, dict) else [("", value)]
        for key, optim in optims:
            if isinstance(optim, OptimConfig) and not (math.isfinite(optim.lr) and optim.lr > 0):
                where = f"method.{name}" + (f".{key}" if key else "")
                raise ConfigError(f"{where}.lr must be a finite positive number, got {optim.lr}")
