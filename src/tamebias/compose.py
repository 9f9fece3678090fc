"""Composition: a run config typed by the chosen method and checked against the registries.

``config.py`` holds the dataclasses and the coercion of plain values and knows no registry;
this module is where the config meets the rest of the package: the ``method`` section is built
as the chosen method's own config dataclass, and names are checked against ``METHODS``,
``VALIDATORS``, ``BACKBONES``, the norms and the augmentation policies, before any data is
read. ``tamebias.load_config`` is :func:`load_config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import (
    SELECTION_RULES,
    ConfigError,
    RunConfig,
    apply_overrides,
    build,
    check,
    fill_unset,
    read_config_file,
)
from .data.augment import POLICIES, VIEWS
from .evaluation.validators import VALIDATORS
from .legacy import upgrade
from .methods import METHODS
from .models.backbones import BACKBONES
from .models.norm import NORMS
from .registry import lookup

__all__ = ["load_config", "validate"]


def load_config(
    source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """A RunConfig from a file path or dict (or defaults), with dotted overrides applied.
    The ``method`` section is typed by the chosen method's own config dataclass."""
    if isinstance(source, (str, Path)):
        values = read_config_file(source)
    else:
        values = dict(source or {})
    values = apply_overrides(values, list(overrides or []))
    try:
        values = upgrade(values)  # configs of older versions (legacy.py)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if isinstance(values.get("method"), str):
        values["method"] = {"name": values["method"]}
    method_values = dict(values.get("method") or {})
    method_name = method_values.get("name", "source_only")
    method_class = lookup(METHODS, method_name, "method")
    values = fill_unset(values, method_class.part_defaults)
    values["method"] = build(method_class.Config, method_values, "method.")
    values["method"].name = method_name
    config = build(RunConfig, values)
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    """Every check of a built config, before any data is read: names against the registries
    here, then the field checks of :func:`tamebias.config.check`."""
    rules = (*SELECTION_RULES, *(name for name in VALIDATORS if name not in SELECTION_RULES))
    if config.train.selection not in rules:
        raise ConfigError(
            f"train.selection must be one of {', '.join(rules)}, "
            f"got {config.train.selection!r}"
        )
    augment = config.data.augment
    if augment.policy not in POLICIES:
        raise ConfigError(f"data.augment.policy must be one of {', '.join(POLICIES)}, "
                          f"got {augment.policy!r}")
    for name in ("source", "target"):
        if getattr(augment, name) not in VIEWS:
            raise ConfigError(f"data.augment.{name} must be one of {', '.join(VIEWS)}, "
                              f"got {getattr(augment, name)!r}")
    lookup(BACKBONES, config.model.backbone, "backbone")
    if config.model.norm is not None and config.model.norm not in NORMS:
        raise ConfigError(f"model.norm must be one of {', '.join(NORMS)}, "
                          f"got {config.model.norm!r}")
    check(config)
