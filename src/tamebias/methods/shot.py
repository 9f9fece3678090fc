"""SHOT: source-free adaptation — a source model, then the target alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier
from ..models.layers import dropout_off
from ..models.memory import MemoryBank
from ..models.norm import use_domain
from .base import DataNeeds, Method, Stage, StepContext
from .common import information_maximization, source_stage


@dataclass
class SHOTConfig(MethodConfig):
    """The paper's settings: label smoothing 0.1 for the source model; information
    maximization (entropy weight 1, diversity on) plus pseudo-label cross-entropy with
    beta = 0.3 (the authors' default and object-recognition value; their digits script runs
    0.1). Both stages use source-only's optimizer, Adam 1e-3 (constant); the paper's SGD 0.01
    (momentum 0.9, weight decay 5e-4, inverse decay) is ``method.optim.name=sgd
    method.optim.lr=0.01 method.optim.weight_decay=5e-4 method.optim.schedule=inverse`` (and
    the same for ``method.source_optim``); the ``im`` validator (no target label) picked Adam
    over it on every seed (docs/methods-new.md). ``init.weights=RUN`` (a finished source
    run's classifier) or ``source_steps=0`` skips the source stage."""

    name: str = "shot"
    source_steps: int = 3000
    steps: int = 3000  # adaptation steps
    source_optim: OptimConfig = field(default_factory=OptimConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    label_smoothing: float = 0.1
    entropy_weight: float = 1.0
    diversity: bool = True
    pseudo_label_weight: float = 0.3


def cluster_labels(features: Tensor, probabilities: Tensor) -> Tensor:
    """SHOT's self-supervised pseudo-labels: class centroids weighted by the predictions, each
    sample labeled by its nearest centroid (cosine), then centroids of those labels and the
    nearest again. Features get a constant 1 appended and are L2-normalized (as the authors');
    a class nobody is assigned to is not a candidate in the second round."""
    features = torch.cat([features.float(), features.new_ones(len(features), 1)], 1)
    features = F.normalize(features, dim=1)
    weights = probabilities.float()
    for _ in range(2):
        centroids = weights.t() @ features / (weights.sum(0).unsqueeze(1) + 1e-8)
        distances = 1 - features @ F.normalize(centroids, dim=1).t()
        present = weights.sum(0) > 0
        labels = distances.masked_fill(~present, float("inf")).argmin(1)
        weights = F.one_hot(labels, probabilities.shape[1]).float()
    return labels


class SHOT(Method):
    """Source hypothesis transfer, SHOT (Liang et al., ICML 2020, arXiv:2002.08546).

    Source-free: stage ``source`` trains encoder + head on labeled source with label
    smoothing (or is skipped, ``source_steps=0``, when the classifier starts from a finished
    source run). Stage ``adapt`` reads **no source batch** (its ``DataNeeds`` say so and the
    loop hands it target alone): the head is frozen (the source hypothesis) and the encoder
    alone learns, by information maximization (confident predictions, diverse over the
    batch) plus cross-entropy on self-supervised pseudo-labels — nearest prediction-weighted
    class centroids of the target features. The paper clusters the whole target set each
    epoch; here the centroids come from a bank of each target image's latest features
    (dropout off), refreshed every step."""

    Config = SHOTConfig
    description = "SHOT: source-free; frozen source head, target-only info max + clustering (2020)"

    def __init__(self, config: SHOTConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        if not 0 <= config.label_smoothing < 1:
            raise ValueError("method.label_smoothing must be in [0, 1)")
        self.bank = MemoryBank(classifier.feature_dim, normalize=False)  # raw: the head reads them

    @property
    def needs(self) -> DataNeeds:  # type: ignore[override]
        """Source batches only for a source stage: none when the source model is loaded
        (``init.weights=RUN``) or ``source_steps=0`` (a source-free run draws none at all)."""
        return DataNeeds(source="classifier" not in self.initialized
                         and self.config.source_steps > 0)

    def stages(self) -> list[Stage]:
        adapt = Stage("adapt", self.adapt_step, {"encoder": [self.classifier.backbone]},
                      self.config.optim, self.config.steps, needs=DataNeeds(source=False))
        if "classifier" in self.initialized:  # init.weights=RUN: a finished source model
            return [adapt]
        source = source_stage(self.classifier, self.config.source_steps,
                              self.config.source_optim, label_smoothing=self.config.label_smoothing)
        return [source, adapt]

    def pseudo_labels(self, target_images: Tensor, indices: Tensor) -> Tensor:
        with torch.no_grad(), dropout_off(self.classifier):
            self.bank.update(self.classifier.features(target_images), indices)
        written = self.bank.written.nonzero().squeeze(1)
        features = self.bank.features[written]
        with torch.no_grad():
            probabilities = self.classifier.head(features).float().softmax(1)
        labels = torch.full_like(self.bank.written, -1, dtype=torch.long)
        labels[written] = cluster_labels(features, probabilities)
        return labels[indices]

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        target = batch.target
        assert batch.source is None and target is not None, "SHOT adapts on target alone"
        config = self.config
        with use_domain(self.classifier, "target"):
            # dataset indices stay on the host (as the stream makes them): no sync to size the bank
            pseudo = (self.pseudo_labels(target.images, target.indices)
                      if config.pseudo_label_weight > 0 else None)
            with ctx.autocast():
                logits = self.classifier(target.images).float()
        im_loss, metrics = information_maximization(logits, config.diversity)
        loss = config.entropy_weight * im_loss
        if pseudo is not None:
            pseudo_loss = F.cross_entropy(logits, pseudo)
            loss = loss + config.pseudo_label_weight * pseudo_loss
            metrics["pseudo_label_loss"] = pseudo_loss.detach()
        ctx.update("encoder", loss)
        return metrics
