"""Optimizers and step-based learning-rate schedules (pure functions of stage progress, so a
resumed run needs no scheduler state)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ConfigError, OptimConfig


def build_optimizer(parameters: list[nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    if not parameters:
        raise ValueError("an optimizer was given no trainable parameters")
    if config.name == "adam":
        optimizer = torch.optim.Adam(
            parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
    elif config.name == "adamw":
        optimizer = torch.optim.AdamW(
            parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
    elif config.name == "sgd":
        optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, nesterov=config.momentum > 0,
        )
    else:
        raise ConfigError(f"optimizer must be adam, adamw or sgd, got {config.name!r}")
    for group in optimizer.param_groups:
        group["base_lr"] = config.lr
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
