"""Checkpoint selection without target labels: the validators computed on fixed samples of
the unlabeled target *training* split and of the source validation split, at every evaluation.

The trainer records every validator's value in each evaluation record (``record["validators"]``)
so a sweep can compare validators afterwards without retraining, and keeps ``best.pt`` by the
one named in ``train.selection``."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from ..data.domain import DomainData
from ..models.norm import use_domain
from ..records import EvalRecord
from .metrics import predict
from .validators import VALIDATORS, ValidatorInputs

SAMPLES = 1000  # target-train and source-val images each validator reads (fixed subsets)
SOURCE_VALIDATORS = ("source_val", "dev")  # these need a labeled source validation split


def fixed_sample(total: int, count: int, seed: int) -> Tensor:
    """``count`` indices of ``total``, the same at every evaluation and on resume (a private
    generator: the global RNG, and so training, is untouched)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[: min(count, total)].sort().values


class ValidationProbe:
    """Scores a model with every validator on fixed samples: target training images (no
    labels are read) and source validation images with their labels."""

    def __init__(self, data: DomainData, device: torch.device, samples: int = SAMPLES,
                 seed: int = 0) -> None:
        self.device = device
        chosen = fixed_sample(len(data.target_train), samples, seed)
        self.target_images = data.target_train.images[chosen]  # images only: no labels
        self.source_images = self.source_labels = None
        if data.source_val is not None and len(data.source_val):
            chosen = fixed_sample(len(data.source_val), samples, seed + 1)
            self.source_images = data.source_val.images[chosen]
            self.source_labels = data.source_val.labels[chosen]

    @classmethod
    def target_only(cls, images: Tensor, device: torch.device, samples: int = SAMPLES,
                    seed: int = 0) -> ValidationProbe:
        """A probe of unlabeled target images alone (the validators that need no source
        split); with the run's target training images it reads the sample training read."""
        probe = cls.__new__(cls)
        probe.device = device
        probe.target_images = images[fixed_sample(len(images), samples, seed)]
        probe.source_images = probe.source_labels = None
        return probe

    def inputs(self, predict_logits: Callable[[Tensor], Tensor],
               features: Callable[[Tensor], Tensor],
               module: nn.Module | None = None) -> ValidatorInputs:
        """Outputs on both samples; ``module``'s domain-specific norms (DSBN) are routed to
        the domain each sample comes from."""
        def outputs(images: Tensor, domain: str) -> tuple[Tensor, Tensor]:
            with use_domain(module, domain) if module is not None else nullcontext():
                return (predict(predict_logits, images, self.device).float().cpu(),
                        predict(features, images, self.device).float().flatten(1).cpu())

        target_logits, target_features = outputs(self.target_images, "target")
        if self.source_images is None:
            empty = torch.empty(0)
            return ValidatorInputs(target_logits, target_features, empty,
                                   empty.long(), empty)
        source_logits, source_features = outputs(self.source_images, "source")
        return ValidatorInputs(target_logits, target_features, source_logits,
                               self.source_labels, source_features)

    def scores(self, method: nn.Module) -> dict[str, float]:
        """Every validator (those needing source validation data only when it exists) for a
        method exposing ``predict(images)`` and ``features(images)``."""
        was_training = method.training
        method.eval()
        try:
            with torch.no_grad():
                inputs = self.inputs(method.predict, method.features, method)
        finally:
            method.train(was_training)
        return {name: validator(inputs) for name, validator in VALIDATORS.items()
                if self.source_images is not None or name not in SOURCE_VALIDATORS}


def selection_score(rule: str) -> Callable[[EvalRecord], float]:
    """How an evaluation record is scored by a validator named in ``train.selection``."""
    if rule not in VALIDATORS:
        raise KeyError(f"no validator {rule!r}; choose from {', '.join(VALIDATORS)}")
    return lambda record: record["validators"][rule]


def record_score(record: EvalRecord, validator: str) -> float | None:
    """A validator's value in one evaluation record; None when missing or not finite.
    ``source_val`` is the trainer's own rule, the accuracy on the whole source validation
    split (the probe's 1,000-image sample only where a record lacks it)."""
    value = record.get("source_val_accuracy") if validator == "source_val" else None
    if value is None:
        value = (record.get("validators") or {}).get(validator)
    return None if value is None or not math.isfinite(value) else float(value)


def candidates(history: list[EvalRecord]) -> list[EvalRecord]:
    """Evaluations a selection rule may pick: those of the last evaluated stage."""
    return [r for r in history if r["stage"] == history[-1]["stage"]] if history else []


def pick(history: list[EvalRecord], validator: str) -> EvalRecord | None:
    """The evaluation a validator picks in one run (ties go to the later one, as in training)."""
    best, best_value = None, None
    for record in candidates(history):
        value = record_score(record, validator)
        if value is not None and (best_value is None or value >= best_value):
            best, best_value = record, value
    return best


def rule_accuracies(history: list[EvalRecord]) -> dict[str, float]:
    """Target test accuracy (fraction) of the evaluation each recorded validator picks within
    one run: every label-free rule, read from the run record without retraining."""
    names = {name for record in candidates(history) for name in record.get("validators") or {}}
    if any(record.get("source_val_accuracy") is not None for record in candidates(history)):
        names.add("source_val")
    chosen = {name: pick(history, name) for name in sorted(names)}
    return {name: record["target_accuracy"] for name, record in chosen.items()
            if record is not None and record.get("target_accuracy") is not None}
