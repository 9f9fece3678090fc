"""Losses and stages shared by the segmentation methods: per-pixel cross-entropy with the
ignore index, the source stage, entropy maps, and the output-space adversarial step that
AdaptSegNet (softmax maps) and ADVENT (weighted self-information maps) share."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import OptimConfig
from ...data.batch import DomainBatch, SegmentedBatch
from ...data.dense import IGNORE_INDEX
from ...models.critics import PixelCritic
from ..base import Method, Stage, StepContext


def pixel_cross_entropy(logits: Tensor, masks: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled pixels (``IGNORE_INDEX`` left out)."""
    return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)


def pixel_accuracy(logits: Tensor, masks: Tensor) -> Tensor:
    labelled = masks != IGNORE_INDEX
    correct = (logits.detach().argmax(1) == masks) & labelled
    return correct.sum() / labelled.sum().clamp_min(1)


def supervised_loss(segmenter: nn.Module, batch: SegmentedBatch,
                    ctx: StepContext) -> tuple[Tensor, Tensor]:
    """Pixel cross-entropy of ``segmenter`` on a labelled dense batch, and the logits."""
    with ctx.autocast():
        logits = segmenter(batch.images)
    return pixel_cross_entropy(logits, batch.masks), logits


def source_stage(segmenter: nn.Module, steps: int, optim: OptimConfig,
                 name: str = "source", labeled_target: bool = False) -> Stage:
    """Train ``segmenter`` on labelled source batches (or, for the oracle, on the labelled
    target batches: ``labeled_target``)."""

    def step(batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        labelled = batch.labeled_target if labeled_target else batch.source
        assert isinstance(labelled, SegmentedBatch)
        loss, logits = supervised_loss(segmenter, labelled, ctx)
        ctx.update("segmenter", loss)
        return {"loss": loss.detach(), "pixel_accuracy": pixel_accuracy(logits, labelled.masks)}

    return Stage(name, step, {"segmenter": [segmenter]}, optim, steps)


def after_source(method: Method, stage: Stage) -> list[Stage]:
    """``stage`` preceded by the method's source stage (``method.config.source_steps`` on
    labelled source), which is skipped when the segmenter came from a finished run (``init``)
    or ``source_steps`` is 0."""
    config = method.config
    if config.source_steps and "classifier" not in method.initialized:
        return [source_stage(method.classifier, config.source_steps, config.optim), stage]
    return [stage]


def entropy_map(logits: Tensor) -> Tensor:
    """Per-pixel entropy of the softmax, normalized by log K (in [0, 1]): ``B x H x W``."""
    log_probabilities = logits.float().log_softmax(1)
    return -(log_probabilities.exp() * log_probabilities).sum(1) / math.log(logits.shape[1])


def self_information(logits: Tensor) -> Tensor:
    """ADVENT's weighted self-information map ``-p log p`` per class (``B x K x H x W``),
    normalized by log K, the critic's input in AdvEnt."""
    log_probabilities = logits.float().log_softmax(1)
    return -(log_probabilities.exp() * log_probabilities) / math.log(logits.shape[1])


def softmax_map(logits: Tensor) -> Tensor:
    """AdaptSegNet's critic input: the class probabilities per pixel."""
    return logits.float().softmax(1)


def output_adversarial_step(
    segmenter: nn.Module, critic: nn.Module, batch: DomainBatch, ctx: StepContext,
    critic_input: Callable[[Tensor], Tensor], adversarial_weight: float,
    entropy_weight: float = 0.0,
) -> dict[str, Tensor]:
    """One step of output-space alignment (AdaptSegNet, ADVENT): the segmenter minimizes
    source pixel cross-entropy plus ``adversarial_weight`` x the critic's loss on target maps
    with *source* labels (target outputs should look like source outputs), plus
    ``entropy_weight`` x the mean target pixel entropy (MinEnt); then the critic learns to tell
    source maps (1) from target maps (0), on detached maps. Two explicit updates:
    ``segmenter`` and ``critic``."""
    source, target = batch.source, batch.target
    assert isinstance(source, SegmentedBatch) and target is not None
    with ctx.autocast():
        source_logits = segmenter(source.images)
        target_logits = segmenter(target.images)
        class_loss = pixel_cross_entropy(source_logits, source.masks)
        loss = class_loss
        metrics: dict[str, Tensor] = {}
        target_maps = critic_input(target_logits)
        if adversarial_weight:
            fooled = critic(target_maps)
            adversarial_loss = F.binary_cross_entropy_with_logits(
                fooled.float(), torch.ones_like(fooled, dtype=torch.float32))
            loss = loss + adversarial_weight * adversarial_loss
            metrics["adversarial_loss"] = adversarial_loss.detach()
        if entropy_weight:
            entropy = entropy_map(target_logits).mean()
            loss = loss + entropy_weight * entropy
            metrics["target_entropy"] = entropy.detach()
    ctx.update("segmenter", loss)
    if adversarial_weight:
        with ctx.autocast():
            real = critic(critic_input(source_logits.detach()))
            fake = critic(target_maps.detach())
            critic_loss = 0.5 * (
                F.binary_cross_entropy_with_logits(real.float(), torch.ones_like(real.float()))
                + F.binary_cross_entropy_with_logits(fake.float(),
                                                     torch.zeros_like(fake.float())))
        ctx.update("critic", critic_loss)
        metrics["critic_loss"] = critic_loss.detach()
        metrics["critic_accuracy"] = 0.5 * ((real.detach() > 0).float().mean()
                                            + (fake.detach() <= 0).float().mean())
    return {"class_loss": class_loss.detach(),
            "pixel_accuracy": pixel_accuracy(source_logits, source.masks), **metrics}


class OutputAlignment(Method):
    """The shape AdaptSegNet and ADVENT share: a ``PixelCritic`` on one map of the segmenter's
    outputs (``output_map``: softmax, or weighted self-information), an optional ``source``
    warm-up stage, then ``adapt`` with :func:`output_adversarial_step` (updates ``segmenter``
    and, when ``adversarial_weight`` is set, ``critic``). Subclasses name the map."""

    output_map: Callable[[Tensor], Tensor]
    entropy_weight = 0.0  # MinEnt's term; ADVENT reads it from its config

    def __init__(self, config, classifier: nn.Module) -> None:
        super().__init__(config, classifier)
        self.critic = PixelCritic(classifier.num_classes, config.critic_width)

    def stages(self) -> list[Stage]:
        config = self.config
        optimizers = {"segmenter": [self.classifier]}
        optims = {"segmenter": config.optim}
        if config.adversarial_weight:
            optimizers["critic"] = [self.critic]
            optims["critic"] = config.critic_optim
        return after_source(self, Stage("adapt", self.adapt_step, optimizers, optims,
                                        config.steps))

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        return output_adversarial_step(self.classifier, self.critic, batch, ctx,
                                       self.output_map, self.config.adversarial_weight,
                                       self.entropy_weight)
