"""PAC: rotation-prediction pretraining and consistency for semi-supervised adaptation."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ..config import OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.heads import CosineHead
from .base import DataNeeds, Method, Stage, StepContext
from .common import labeled_loss, rotation_stage
from .parts import SelfTraining, SelfTrainingConfig, SourceTargetConfig


@dataclass
class PACConfig(SourceTargetConfig):
    name: str = "pac"
    temperature: float = 0.05  # the cosine classifier's T
    # stage 1: 4-way rotation prediction on the images of both domains (labels unused)
    rotation_steps: int = 1000
    rotation_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    # stage 2: a weak-view prediction with confidence >= 0.9 labels the strong view
    consistency: SelfTrainingConfig = field(
        default_factory=lambda: SelfTrainingConfig(mode="fixmatch", threshold=0.9, weight=1.0))


class PAC(Method):
    """Pretraining And Consistency (Mishra et al., BMVC 2021, arXiv:2101.12727).

    Stage ``rotation``: the backbone learns to predict which of 4 quarter turns each image of
    either domain was given (methods/common.py: rotation_stage), so its features start
    class-agnostic and shaped by the target too. Stage ``train``: a cosine classifier
    (temperature 0.05) on cross-entropy over labeled source + the labeled target shots, plus
    consistency on unlabeled target: a weak-view prediction with confidence >= 0.9 is the hard
    label of the strong view (FixMatch's term, methods/parts.py)."""

    Config = PACConfig
    description = "PAC: rotation pretraining + consistency (Mishra et al. 2021)"
    needs = DataNeeds(target_shots=True, strong_target=True)

    def __init__(self, config: PACConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        classifier.classifier_head = CosineHead(classifier.feature_dim, self.num_classes,
                                                config.temperature)
        self.rotation_head = nn.Linear(classifier.feature_dim, 4)
        self.consistency = SelfTraining(config.consistency, classifier)

    def stages(self) -> list[Stage]:
        train = Stage("train", self.step, {"model": [self.classifier]}, self.config.optim,
                      self.config.steps)
        if self.config.rotation_steps <= 0:
            return [train]
        return [rotation_stage(self.classifier, self.rotation_head, self.config.rotation_steps,
                               self.config.rotation_optim), train]

    def step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        target = batch.target
        assert target is not None
        self.classifier.classifier_head.renormalize()
        class_loss, accuracy = labeled_loss(self.classifier, batch, ctx)
        consistency_loss, extra = self.consistency.loss(target, ctx)
        ctx.update("model", class_loss + consistency_loss)
        return {**extra, "class_loss": class_loss.detach(),
                "source_accuracy": accuracy}
