"""Pieces several methods build with (methods never import each other; they import these).

- :func:`adversarial_feature_step`: ADDA's adaptation step (a critic on frozen source features
  against target features, then the target encoder with inverted labels), used by ADDA and by
  CyCADA's feature stage.
- :class:`SourceTargetConfig`: the config of semi-supervised DA's S+T (MME's SGD), the base of
  the configs of ``s+t``, ``ent``, MME and PAC.
- :class:`SelfTraining`: a target self-training term any method adds to its step
  (``method.self_training.mode=...``): pseudo-labels (online or in rounds), FixMatch-style
  weak->strong consistency, and mean teacher / self-ensembling; used by ``self_training``,
  DANN and PAC.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MethodConfig, OptimConfig
from ..data.batch import UnlabeledBatch
from ..models.classifier import Classifier
from ..models.critics import DomainCritic
from ..models.layers import dropout_off
from ..models.norm import use_domain
from .base import StepContext
from .common import binary_accuracy, domain_labels


def _sgd() -> OptimConfig:
    # MME's optimizer: SGD, momentum 0.9, weight decay 5e-4, lr 0.01 with an inverse decay
    return OptimConfig("sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="inverse")


@dataclass
class SourceTargetConfig(MethodConfig):
    name: str = "s+t"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=_sgd)


def adversarial_feature_step(
    source_encoder: Classifier, classifier: Classifier, critic: DomainCritic,
    source_images: Tensor, target_images: Tensor, ctx: StepContext,
    target_term: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]] | None = None,
    target_weight: float = 0.0,
) -> dict[str, Tensor]:
    """ADDA's adaptation step, shared with CyCADA's feature stage: a critic update on frozen
    source features (1) against target features (0) through optimizer ``critic``, then a
    ``target_encoder`` update of ``classifier``'s encoder with inverted labels, plus
    ``target_weight * target_term(target logits)`` when a term is given."""
    with ctx.autocast():
        with torch.no_grad():
            source_features = source_encoder.features(source_images)
        # the frozen encoder runs in eval mode; without dropout on this side too, the critic
        # could tell the domains apart by the dropout noise alone
        with dropout_off(classifier):
            target_features = classifier.features(target_images)
        labels = domain_labels(len(source_images), len(target_images), target_features.device)
        critic_logits = critic(torch.cat([source_features, target_features.detach()]))
        critic_loss = F.binary_cross_entropy_with_logits(critic_logits.float(), labels)
    ctx.update("critic", critic_loss)
    with ctx.autocast():
        fooled = critic(target_features)  # inverted labels: target should look source
        encoder_loss = F.binary_cross_entropy_with_logits(
            fooled.float(), torch.ones_like(fooled, dtype=torch.float32))
        extra: dict[str, Tensor] = {}
        total = encoder_loss
        if target_term is not None:
            term, extra = target_term(classifier.head(target_features))
            total = encoder_loss + target_weight * term
    ctx.update("target_encoder", total)
    return {
        "critic_loss": critic_loss.detach(),
        "encoder_loss": encoder_loss.detach(),
        "critic_accuracy": binary_accuracy(critic_logits, labels),
        **extra,
    }


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
            ema_update(self.teacher, student, self.config.ema)
        elif (ctx.step + 1) % self.config.rounds == 0:
            self.teacher.load_state_dict(student.state_dict())


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """The mean teacher's step (Tarvainen & Valpola 2017): each parameter moves to
    ``decay * teacher + (1 - decay) * student``; buffers (batch-norm statistics) are copied."""
    for mean, value in zip(teacher.parameters(), student.parameters(), strict=True):
        mean.lerp_(value.detach(), 1 - decay)
    for mean, value in zip(teacher.buffers(), student.buffers(), strict=True):
        mean.copy_(value)


# -- MCC (minimum class confusion, Jin et al. 2020): a term any method adds (method.mcc) ---
@dataclass
class MCCConfig:
    """``weight`` of the term (0: off); ``temperature`` rescales the logits before the softmax
    (the paper's T = 2.5)."""

    weight: float = 0.0
    temperature: float = 2.5


def validate_mcc(config: MCCConfig) -> None:
    if config.weight < 0:
        raise ValueError("method.mcc.weight must not be negative")
    if not config.temperature > 0:
        raise ValueError("method.mcc.temperature must be positive")


def class_confusion(logits: Tensor, temperature: float) -> Tensor:
    """The normalized class-confusion matrix (C x C) of a batch of target logits:
    ``P^T W P`` with P the softmax of ``logits / T`` and W the diagonal of the entropy weights
    ``1 + exp(-H(p_i))`` rescaled to sum to the batch size, then each column divided by its
    sum (Jin et al., Eq. 2-6)."""
    probabilities = (logits.float() / temperature).softmax(1)
    entropy = -(probabilities * torch.log(probabilities + 1e-5)).sum(1)
    weights = 1 + torch.exp(-entropy)
    weights = (len(logits) * weights / weights.sum()).unsqueeze(1)
    confusion = (probabilities * weights).t() @ probabilities
    return confusion / confusion.sum(0, keepdim=True)


def class_confusion_loss(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """Sum of the off-diagonal (between-class) confusion, divided by the class count."""
    confusion = class_confusion(logits, temperature)
    return (confusion.sum() - confusion.trace()) / confusion.shape[0]


def mcc_term(config: MCCConfig, target_logits: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted MCC term for a method's step (zero, no metric, when off)."""
    if config.weight <= 0 or target_logits is None:
        return torch.zeros((), device=None if target_logits is None
                           else target_logits.device), {}
    loss = class_confusion_loss(target_logits, config.temperature)
    return config.weight * loss, {"mcc_loss": loss.detach()}


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (a fixed translator: BatchNorm statistics do not move)."""
    mode = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(mode)


def input_channels(classifier: Classifier) -> int:
    """The image channels the classifier reads (those of its first convolution)."""
    for module in classifier.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError("a pixel-level method (cycada, fewshot_pixel) needs a convolutional backbone "
                     "to know the image channels")
