"""ADDA: adversarial discriminative domain adaptation, in two stages."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.critics import DomainCritic
from ..models.layers import dropout_off
from .base import Method, Stage, StepContext
from .common import binary_accuracy, domain_labels, source_stage


@dataclass
class ADDAConfig(MethodConfig):
    """Defaults are the paper's digits settings: LeNet, 500-500 critic, Adam (2e-4, beta1 0.5)
    for adaptation, batch 128, 10,000 iterations per stage."""

    name: str = "adda"
    source_steps: int = 10000
    steps: int = 10000  # adaptation steps
    source_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        "adam", lr=2e-4, betas=(0.5, 0.999)))
    critic_hidden: tuple[int, ...] = (500, 500)
    source_run: str | None = None  # reuse a trained source model: a run dir or checkpoint file


class ADDA(Method):
    """Adversarial discriminative domain adaptation (Tzeng et al., CVPR 2017,
    arXiv:1702.05464).

    Stage ``source`` trains encoder + head on labeled source (skipped when ``source_run``
    names a trained source model). Stage ``adapt`` snapshots the encoder into a frozen source
    encoder, then alternates a critic update (source features = 1, target features = 0) and a
    target-encoder update with inverted labels (target features = 1), the GAN loss of the
    paper. The target encoder starts from the source weights; the head is never retrained, so
    the adapted model is target encoder + source head."""

    Config = ADDAConfig
    description = "ADDA: frozen source encoder, target encoder trained against a critic (2017)"
    frozen_modules = ("source_encoder",)

    def __init__(self, config: ADDAConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        self.source_encoder = copy.deepcopy(classifier)  # filled when adaptation starts
        self.critic = DomainCritic(classifier.feature_dim, config.critic_hidden)

    def stages(self) -> list[Stage]:
        stages = []
        if self.config.source_run is None:
            stages.append(source_stage(self.classifier, self.config.source_steps,
                                       self.config.source_optim))
        adapt = Stage(
            "adapt", self.adapt_step,
            {"critic": [self.critic], "target_encoder": [self.classifier.backbone]},
            self.config.optim, self.config.steps, on_start=self.start_adaptation,
        )
        return [*stages, adapt]

    def start_adaptation(self) -> None:
        if self.config.source_run is not None:
            self.classifier.load_state_dict(load_source_classifier(self.config.source_run))
        self.source_encoder.load_state_dict(self.classifier.state_dict())

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        return adversarial_feature_step(self.source_encoder, self.classifier, self.critic,
                                        source.images, target.images, ctx)


def adversarial_feature_step(
    source_encoder: Classifier, classifier: Classifier, critic: DomainCritic,
    source_images: Tensor, target_images: Tensor, ctx: StepContext,
) -> dict[str, Tensor]:
    """ADDA's adaptation step, shared with CyCADA's feature stage: a critic update on frozen
    source features (1) against target features (0) through optimizer ``critic``, then a
    ``target_encoder`` update of ``classifier``'s encoder with inverted labels."""
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
    ctx.update("target_encoder", encoder_loss)
    return {
        "critic_loss": critic_loss.detach(),
        "encoder_loss": encoder_loss.detach(),
        "critic_accuracy": binary_accuracy(critic_logits, labels),
    }


def load_source_classifier(source: str) -> dict[str, Tensor]:
    """The classifier weights of another run (its ``best.pt`` if it has one, else its
    ``checkpoint.pt``) or of a checkpoint file."""
    return load_method_state(source, "classifier.")


def load_method_state(source: str, prefix: str = "",
                      setting: str = "method.source_run") -> dict[str, Tensor]:
    """The method weights under ``prefix`` (prefix removed) of another run (its ``best.pt``
    if it has one, else its ``checkpoint.pt``) or of a checkpoint file; read through
    :func:`tamebias.lineage.load_weights`, the one loader of another run's weights."""
    from ..lineage import load_weights

    return load_weights(source, setting, prefix)
