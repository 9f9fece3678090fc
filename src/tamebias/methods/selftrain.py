"""Self-training on unlabeled target data: pseudo-labels (online or in rounds), FixMatch-style
weak->strong consistency, and mean teacher / self-ensembling — one component any method adds
to its step through config (``method.self_training.mode=...``), and three registered methods
that are source-only training with the component on.

A *teacher* labels each target batch and the model (the *student*) learns from it:

- ``pseudo_label``: the teacher is the model itself (``rounds=0``, online) or a snapshot
  refreshed every ``rounds`` steps; the student sees the regular target view; cross-entropy
  on the teacher's confident hard labels.
- ``fixmatch``: the teacher is the model itself on the regular (weak) view; the student sees
  the strong view; cross-entropy on confident hard labels.
- ``mean_teacher``: the teacher is an exponential moving average of the model, on the regular
  view; the student sees the strong view; squared difference of class probabilities on
  confident samples.

Teachers predict without dropout and without gradients. ``balance`` adds French et al.'s
class-balance term (binary cross-entropy between the batch-mean prediction and the uniform
distribution), which keeps self-training from collapsing onto a few classes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch, UnlabeledBatch
from ..models.classifier import Classifier
from ..models.layers import dropout_off
from ..models.norm import use_domain
from .base import DataNeeds, Method, Stage, StepContext

MODES = ("off", "pseudo_label", "fixmatch", "mean_teacher")


@dataclass
class SelfTrainingConfig:
    """``mode``: off, pseudo_label, fixmatch or mean_teacher (see the module docstring).
    ``threshold``: teacher confidence a target sample needs to count. ``weight``: the term's
    weight, ramped linearly from 0 over the first ``warmup`` fraction of the stage.
    ``rounds`` (pseudo_label): 0 labels with the current model (online); N > 0 labels with a
    snapshot taken every N steps (self-training in rounds; nothing is learned from target
    before the first snapshot). ``ema``: the mean teacher's decay. ``balance``: weight of the
    class-balance term."""

    mode: str = "off"
    weight: float = 1.0
    threshold: float = 0.95
    warmup: float = 0.0
    rounds: int = 0
    ema: float = 0.99
    balance: float = 0.0


def validate_self_training(config: SelfTrainingConfig) -> None:
    if config.mode not in MODES:
        raise ValueError(f"method.self_training.mode must be one of {', '.join(MODES)}, "
                         f"got {config.mode!r}")
    if not 0 <= config.threshold <= 1:
        raise ValueError("method.self_training.threshold must be in [0, 1]")
    if not 0 <= config.warmup <= 1:
        raise ValueError("method.self_training.warmup must be in [0, 1]")
    if not 0 <= config.ema < 1:
        raise ValueError("method.self_training.ema must be in [0, 1)")
    if config.rounds < 0:
        raise ValueError("method.self_training.rounds must not be negative")
    if config.rounds and config.mode != "pseudo_label":
        raise ValueError("method.self_training.rounds applies to mode=pseudo_label only")


def needs_strong_view(config: SelfTrainingConfig) -> bool:
    return config.mode in ("fixmatch", "mean_teacher")


class SelfTraining(nn.Module):
    """The target term. Holds the teacher copy when the mode needs one (so it is saved with
    the method's state). Call ``loss`` inside a step and ``after_update`` after the
    optimizer step that trained the student."""

    def __init__(self, config: SelfTrainingConfig, classifier: Classifier) -> None:
        super().__init__()
        validate_self_training(config)
        self.config = config
        self.student = [classifier]  # a list: not registered twice in the state dict
        uses_copy = config.mode == "mean_teacher" or (config.mode == "pseudo_label"
                                                      and config.rounds > 0)
        self.teacher: Classifier | None = None
        if uses_copy:
            self.teacher = copy.deepcopy(classifier).requires_grad_(False)

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off" and self.config.weight > 0

    def train(self, mode: bool = True) -> SelfTraining:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # no dropout, fixed BatchNorm statistics
        return self

    def weight(self, progress: float) -> float:
        if self.config.warmup <= 0:
            return self.config.weight
        return self.config.weight * min(1.0, progress / self.config.warmup)

    def teacher_ready(self, step: int) -> bool:
        """A snapshot teacher labels nothing before its first refresh (after ``rounds``
        steps); derived from the step, so there is no state to keep or sync."""
        return not (self.config.mode == "pseudo_label" and self.config.rounds > 0
                    and step < self.config.rounds)

    @torch.no_grad()
    def teacher_probabilities(self, images: Tensor) -> Tensor:
        if self.teacher is not None:
            return self.teacher(images).float().softmax(1)
        student = self.student[0]
        with dropout_off(student):
            return student(images).float().softmax(1)

    def loss(self, target: UnlabeledBatch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted target loss for this step (a zero tensor when off or warming up)."""
        config, student = self.config, self.student[0]
        weight = self.weight(ctx.progress)
        device = target.images.device
        if not self.enabled or weight == 0 or not self.teacher_ready(ctx.step):
            zero = torch.zeros((), device=device)
            return zero, {"pseudo_mask": zero}
        with use_domain(student, "target"), use_domain(self.teacher or student, "target"):
            teacher = self.teacher_probabilities(target.images)
            view = target.strong if needs_strong_view(config) else target.images
            if view is None:
                raise ValueError(f"self_training.mode={config.mode} needs the strong target "
                                 "view; the method must declare DataNeeds(strong_target=True)")
            with ctx.autocast():
                logits = student(view).float()
        confidence, pseudo = teacher.max(1)
        mask = (confidence >= config.threshold).float()
        if config.mode == "mean_teacher":
            difference = ((logits.softmax(1) - teacher) ** 2).sum(1)
            loss = (difference * mask).mean()
        else:
            loss = (F.cross_entropy(logits, pseudo, reduction="none") * mask).mean()
        if config.balance > 0:
            average = logits.softmax(1).mean(0)
            uniform = torch.full_like(average, 1.0 / average.numel())
            loss = loss + config.balance * F.binary_cross_entropy(average, uniform)
        return weight * loss, {"pseudo_mask": mask.mean(), "self_training_loss": loss.detach()}

    @torch.no_grad()
    def after_update(self, ctx: StepContext) -> None:
        """EMA update of the mean teacher; snapshot refresh at every ``rounds`` steps."""
        if self.teacher is None or not self.enabled:
            return
        student = self.student[0]
        if self.config.mode == "mean_teacher":
            decay = self.config.ema
            for mean, value in zip(self.teacher.parameters(), student.parameters(), strict=True):
                mean.lerp_(value.detach(), 1 - decay)
            for mean, value in zip(self.teacher.buffers(), student.buffers(), strict=True):
                mean.copy_(value)
        elif (ctx.step + 1) % self.config.rounds == 0:
            self.teacher.load_state_dict(student.state_dict())


@dataclass
class SelfTrainingMethodConfig(MethodConfig):
    """Source cross-entropy plus the self-training term; the presets below set the mode."""

    name: str = "self_training"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    self_training: SelfTrainingConfig = field(
        default_factory=lambda: SelfTrainingConfig(mode="pseudo_label"))


def source_and_self_training_step(method: Method, batch: DomainBatch,
                                  ctx: StepContext) -> dict[str, Tensor]:
    source, target = batch.source, batch.target
    assert source is not None and target is not None
    classifier = method.classifier
    with ctx.autocast(), use_domain(classifier, "source"):
        logits = classifier(source.images)
        class_loss = F.cross_entropy(logits.float(), source.labels)
    target_loss, metrics = method.self_training.loss(target, ctx)
    ctx.update("model", class_loss + target_loss)
    method.self_training.after_update(ctx)
    return {"class_loss": class_loss.detach(),
            "source_accuracy": (logits.detach().argmax(1) == source.labels).float().mean(),
            **metrics}


class SelfTrainingMethod(Method):
    """Source cross-entropy plus target self-training (pseudo-labels by default)."""

    Config = SelfTrainingMethodConfig
    description = "pseudo-labeling: confident target predictions as labels (online or rounds)"
    needs = DataNeeds(target=True)
    domain_aware = True

    def __init__(self, config: SelfTrainingMethodConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        self.self_training = SelfTraining(config.self_training, classifier)
        self.needs = DataNeeds(strong_target=needs_strong_view(config.self_training))

    def stages(self) -> list[Stage]:
        return [Stage("adapt", self.step, {"model": [self.classifier]}, self.config.optim,
                      self.config.steps)]

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        return source_and_self_training_step(self, batch, ctx)


@dataclass
class FixMatchConfig(SelfTrainingMethodConfig):
    name: str = "fixmatch"
    self_training: SelfTrainingConfig = field(
        default_factory=lambda: SelfTrainingConfig(mode="fixmatch", threshold=0.95))


class FixMatch(SelfTrainingMethod):
    """FixMatch-style consistency (Sohn et al., 2020) for adaptation: the model's confident
    predictions on the weak target view train it on the strong view."""

    Config = FixMatchConfig
    description = "FixMatch-style consistency: confident weak-view labels train the strong view"


@dataclass
class MeanTeacherConfig(SelfTrainingMethodConfig):
    """French et al.'s defaults: EMA decay 0.99, confidence threshold 0.968, consistency
    weight 3, class-balance weight 0.005."""

    name: str = "mean_teacher"
    self_training: SelfTrainingConfig = field(
        default_factory=lambda: SelfTrainingConfig(mode="mean_teacher", threshold=0.968,
                                                   weight=3.0, ema=0.99, balance=0.005))


class MeanTeacher(SelfTrainingMethod):
    """Self-ensembling / mean teacher for adaptation (French et al., arXiv:1706.05208): an
    EMA teacher's confident predictions must match the student's on another view."""

    Config = MeanTeacherConfig
    description = "mean teacher / self-ensembling: an EMA teacher's predictions as targets"
