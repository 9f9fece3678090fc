"""CDAN+E: conditional adversarial alignment of features *and* class predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.critics import DomainCritic
from ..models.layers import reverse_gradient
from ..models.norm import use_domain
from .base import StepContext
from .common import binary_accuracy, domain_labels
from .dann import DANN, DANNConfig
from .parts import mcc_term


@dataclass
class CDANConfig(DANNConfig):
    """DANN's settings (SGD 0.01, momentum 0.9, inverse decay; the reversal coefficient ramps
    0 -> 1) plus the paper's conditioning: entropy weighting on (CDAN+E), and the randomized
    multilinear map (output 1,024) when features x classes exceeds 4,096."""

    name: str = "cdan"
    entropy: bool = True
    randomized: str = "auto"  # auto (by the 4,096 rule), on, off
    randomized_dim: int = 1024
    critic_hidden: tuple[int, ...] = field(default_factory=lambda: (1024, 1024))


def multilinear_map(features: Tensor, probabilities: Tensor) -> Tensor:
    """The flattened outer product g (x) f: row i is ``vec(probabilities_i features_i^T)``
    (B x C*d), class-major."""
    return torch.bmm(probabilities.unsqueeze(2), features.unsqueeze(1)).flatten(1)


class RandomizedMultilinear(nn.Module):
    """The randomized map ``(R_f f) * (R_g g) / sqrt(d)`` with fixed Gaussian R_f, R_g, an
    unbiased estimate of the multilinear map's inner products (buffers: saved, never
    trained)."""

    def __init__(self, feature_dim: int, num_classes: int, output_dim: int) -> None:
        super().__init__()
        self.register_buffer("feature_map", torch.randn(feature_dim, output_dim))
        self.register_buffer("class_map", torch.randn(num_classes, output_dim))
        self.output_dim = output_dim

    def forward(self, features: Tensor, probabilities: Tensor) -> Tensor:
        return ((features @ self.feature_map) * (probabilities @ self.class_map)
                / math.sqrt(self.output_dim))


def entropy_weights(probabilities: Tensor, source_count: int) -> Tensor:
    """CDAN+E's sample weights ``1 + exp(-H(g))``, normalized within each domain to sum to
    one, then over the batch to average one: confident samples count more, and each domain
    weighs the same in the critic's loss."""
    entropy = -(probabilities * torch.log(probabilities + 1e-5)).sum(1)
    weights = 1 + torch.exp(-entropy)
    source, target = weights[:source_count], weights[source_count:]
    weights = torch.cat([source / source.sum(), target / target.sum()])
    return weights / weights.sum() * len(weights)


class CDAN(DANN):
    """Conditional domain adversarial network with entropy conditioning, CDAN+E (Long et al.,
    NeurIPS 2018, arXiv:1705.10667).

    As DANN, a critic tries to tell source from target and the encoder fights it through
    gradient reversal; but the critic sees the features conditioned on the classifier's
    predictions, the multilinear map g (x) f (randomized when it would be large), so the
    class-conditional distributions are aligned, not only the marginals. The predictions
    entering the map are detached (as the authors'), and each sample's critic loss is
    weighted by ``1 + exp(-entropy)`` of its prediction (+E), so uncertain, hard-to-transfer
    samples push less. One stage, one optimizer over encoder, head and critic; DANN's
    self-training and MCC parts compose the same way."""

    Config = CDANConfig
    description = "CDAN+E: critic on features x predictions, entropy-weighted (Long et al. 2018)"

    def __init__(self, config: CDANConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        if config.randomized not in ("auto", "on", "off"):
            raise ValueError("method.randomized must be auto, on or off")
        product = classifier.feature_dim * classifier.num_classes
        randomize = config.randomized == "on" or (config.randomized == "auto" and product > 4096)
        self.randomized = (RandomizedMultilinear(classifier.feature_dim, classifier.num_classes,
                                                 config.randomized_dim) if randomize else None)
        critic_input = config.randomized_dim if randomize else product
        self.critic = DomainCritic(critic_input, config.critic_hidden, config.critic_dropout)

    def condition(self, features: Tensor, probabilities: Tensor) -> Tensor:
        if self.randomized is not None:
            return self.randomized(features, probabilities)
        return multilinear_map(features, probabilities)

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        coefficient = self.coefficient(ctx.progress)
        with ctx.autocast(), use_domain(self.classifier, len(source)):
            features = self.classifier.features(torch.cat([source.images, target.images]))
            logits = self.classifier.head(features)
            class_loss = F.cross_entropy(logits[: len(source)].float(), source.labels)
            probabilities = logits.detach().float().softmax(1)
            conditioned = self.condition(reverse_gradient(features, coefficient),
                                         probabilities.to(features.dtype))
            domain_logits = self.critic(conditioned).float()
            labels = domain_labels(len(source), len(target), features.device)
            weights = (entropy_weights(probabilities, len(source)) if self.config.entropy
                       else torch.ones_like(labels))
            domain_loss = F.binary_cross_entropy_with_logits(domain_logits, labels, weights)
            mcc_loss, mcc_metrics = mcc_term(
                self.config.mcc, logits[len(source):] if self.config.mcc.weight > 0 else None)
        return self.finish(ctx, target, class_loss + domain_loss + mcc_loss, {
            **mcc_metrics,
            "class_loss": class_loss.detach(),
            "domain_loss": domain_loss.detach(),
            "domain_accuracy": binary_accuracy(domain_logits, labels),
            "source_accuracy": (logits[: len(source)].detach().argmax(1)
                                == source.labels).float().mean(),
        })
