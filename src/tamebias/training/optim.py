"""Optimizers and step-based learning-rate schedules (pure functions of stage progress, so a
resumed run needs no scheduler state)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ConfigError, OptimConfig
from .speed import optimizer_options


def lr_scales(modules: list[nn.Module]) -> dict[int, float]:
    """Learning-rate multipliers by parameter id, from submodules marked with ``lr_scale``
    (a pretrained backbone: models/classifier.py); unmarked parameters are left out (1)."""
    scales: dict[int, float] = {}
    for module in modules:
        for sub in module.modules():
            scale = getattr(sub, "lr_scale", None)
            if scale is not None and scale != 1.0:
                scales.update((id(parameter), float(scale)) for parameter in sub.parameters())
    return scales


def build_optimizer(parameters: list[nn.Parameter], config: OptimConfig,
                    scales: dict[int, float] | None = None,
                    implementation: str = "auto") -> torch.optim.Optimizer:
    """One optimizer over ``parameters``; with ``scales`` (see :func:`lr_scales`) a parameter
    group per multiplier, each at ``config.lr`` times its multiplier (schedules keep the ratio).
    ``implementation`` picks the kernel (training/speed.py: auto, fused, foreach, loop)."""
    if not parameters:
        raise ValueError("an optimizer was given no trainable parameters")
    by_scale: dict[float, list[nn.Parameter]] = {}
    for parameter in parameters:
        by_scale.setdefault((scales or {}).get(id(parameter), 1.0), []).append(parameter)
    groups = [{"params": group, "lr": config.lr * scale}
              for scale, group in sorted(by_scale.items(), reverse=True)]
    kernel = optimizer_options(config.name, implementation, parameters)
    if config.name == "adam":
        optimizer = torch.optim.Adam(
            groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
            **kernel)
    elif config.name == "adamw":
        optimizer = torch.optim.AdamW(
            groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
            **kernel)
    elif config.name == "sgd":
        optimizer = torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, nesterov=config.momentum > 0, **kernel)
    else:
        raise ConfigError(f"optimizer must be adam, adamw or sgd, got {config.name!r}")
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]  # what the schedule scales
    return optimizer


def schedule_factor(schedule: str, progress: float) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "inverse":  # Ganin & Lempitsky's annealing
        return (1.0 + 10.0 * progress) ** -0.75
    raise ConfigError(f"schedule must be constant, cosine or inverse, got {schedule!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, schedule: str, progress: float) -> None:
    factor = schedule_factor(schedule, progress)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
