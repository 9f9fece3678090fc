"""MME: minimax entropy for semi-supervised domain adaptation."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.heads import CosineHead
from ..models.layers import reverse_gradient
from .base import DataNeeds, Method, Stage, StepContext
from .common import labeled_loss, prediction_entropy
from .parts import SourceTargetConfig


@dataclass
class MMEConfig(SourceTargetConfig):
    name: str = "mme"
    temperature: float = 0.05  # the cosine classifier's T
    entropy_weight: float = 0.1  # λ


class MME(Method):
    """Minimax entropy (Saito et al., ICCV 2019, arXiv:1904.06487).

    The head is a cosine classifier over L2-normalized features (temperature 0.05): its
    weights are class prototypes. Each step makes two updates of one optimizer: cross-entropy
    on labeled source + the labeled target shots; then, on unlabeled target images, the
    *classifier maximizes* the entropy of its predictions (moving the prototypes toward the
    target features) while the *feature extractor minimizes* it, through a gradient-reversal
    layer between them (λ = 0.1). One stage."""

    Config = MMEConfig
    description = "MME: minimax entropy over a cosine classifier (Saito et al. 2019)"
    needs = DataNeeds(target_shots=True)

    def __init__(self, config: MMEConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        classifier.classifier_head = CosineHead(classifier.feature_dim, self.num_classes,
                                                config.temperature)

    def stages(self) -> list[Stage]:
        return [Stage("train", self.step, {"model": [self.classifier]}, self.config.optim,
                      self.config.steps)]

    def minimax_entropy(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """-λ H(target predictions), and H. The head reads the features through a gradient
        reversal: minimizing this loss, the head *raises* the entropy and the encoder
        (reversed gradient) *lowers* it."""
        features = self.classifier.features(images)
        entropy = prediction_entropy(self.classifier.head(reverse_gradient(features, 1.0)))
        return -self.config.entropy_weight * entropy, entropy

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        target = batch.target
        assert target is not None
        self.classifier.classifier_head.renormalize()
        class_loss, accuracy = labeled_loss(self.classifier, batch, ctx)
        ctx.update("model", class_loss)
        with ctx.autocast():
            minimax_loss, entropy = self.minimax_entropy(target.images)
        ctx.update("model", minimax_loss)
        return {"class_loss": class_loss.detach(), "target_entropy": entropy.detach(),
                "source_accuracy": accuracy}
