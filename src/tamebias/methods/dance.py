"""DANCE: domain adaptative neighborhood clustering via entropy optimization."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..evaluation.openset import entropy
from ..models.classifier import Classifier
from ..models.heads import CosineHead
from ..models.layers import dropout_off
from ..models.memory import MemoryBank
from .base import Method, Stage, StepContext
from .common import rotation_stage


@dataclass
class DANCEConfig(MethodConfig):
    name: str = "dance"
    steps: int = 3000
    # the authors' SGD (lr 0.01, momentum 0.9, Nesterov, weight decay 5e-4, inverse decay);
    # a pretrained body (model.pretrained) trains at lr/10 (model.pretrained_lr_scale), as
    # theirs; a network from scratch at one rate
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        "sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="inverse"))
    temperature: float = 0.05
    eta: float = 0.05  # weight of both self-supervised losses
    margin: float = 0.5  # entropy separation acts only where |H - rho| > margin
    rho: float | None = None  # None: log(K) / 2, also the rejection threshold
    memory_momentum: float = 0.0  # the authors' configs use 0 (replace); 0.001 on VisDA
    # a trained source model is the analogue of the paper's pretrained backbone when training
    # from scratch: init.weights=RUN:classifier takes its backbone and its linear head's class
    # weights as the initial prototypes, RUN:classifier.backbone the backbone under a fresh
    # head (as the paper's new classifier on a pretrained backbone). Or: first pretrain the
    # backbone by rotation prediction on the images of both domains
    # (methods/common.py: rotation_stage), the digits analogue of a pretrained backbone whose
    # features are not shaped by the source classes; 0 skips the stage
    rotation_steps: int = 0
    rotation_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    # the paper's backbone (ResNet-50) has no dropout: its self-supervised losses, its memory
    # bank and its rejection all see the same deterministic target features. A backbone with
    # dropout (LeNet) keeps it on the source batch only unless this is true
    target_dropout: bool = False


def entropy_separation(logits: Tensor, rho: float, margin: float) -> Tensor:
    """-mean(max(|H - rho|, margin)): minimizing it pushes each entropy H away from rho, known
    samples to low entropy and unknown ones to high; samples within the margin get no gradient.
    """
    return -torch.clamp((entropy(logits) - rho).abs(), min=margin).mean()


class DANCE(Method):
    """DANCE (Saito, Kim, Sclaroff & Saenko, NeurIPS 2020, arXiv:2002.07953).

    Universal domain adaptation (closed, partial, open-set, open-partial without knowing which)
    by self-supervision on the target instead of whole-domain alignment. Features are
    L2-normalized and classified by a temperature-scaled cosine classifier whose weights are
    the source prototypes. Neighborhood clustering minimizes the entropy of each target
    sample's softmax similarity over the other target samples (a memory bank plus the current
    batch) and the prototypes, so target samples cluster with their neighbors or with a class;
    entropy separation pushes each target entropy away from rho = log(K)/2 beyond a margin, so
    known samples become confident and unknown ones uncertain. At test time a sample whose
    entropy exceeds rho is "unknown". One stage, ``adapt``: loss = CE(source) + eta (L_nc +
    L_es); with ``rotation_steps`` a self-supervised ``rotation`` stage comes first."""

    Config = DANCEConfig
    description = "DANCE: neighborhood clustering + entropy separation (Saito et al. 2020)"

    def __init__(self, config: DANCEConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        classifier.classifier_head = CosineHead(classifier.feature_dim, self.num_classes,
                                                config.temperature)
        self.memory = MemoryBank(classifier.feature_dim, config.memory_momentum)
        if config.rotation_steps > 0:
            self.rotation_head = nn.Linear(classifier.feature_dim, 4)

    @property
    def rejection_threshold(self) -> float:
        return self.config.rho if self.config.rho is not None else math.log(self.num_classes) / 2

    def stages(self) -> list[Stage]:
        adapt = Stage("adapt", self.adapt_step, {"model": [self.classifier]},
                      self.config.optim, self.config.steps)
        if self.config.rotation_steps > 0 and self.initialized:
            raise ValueError("method.rotation_steps and init.weights both give the backbone its "
                             "start; set one")
        if self.config.rotation_steps <= 0:
            return [adapt]
        return [rotation_stage(self.classifier, self.rotation_head, self.config.rotation_steps,
                               self.config.rotation_optim), adapt]

    def load_initial(self, name: str, weights: dict[str, Tensor]) -> None:
        """A source model's classifier: its backbone, and its linear head's class weights as
        the initial prototypes of the cosine head."""
        if name != "classifier":
            return super().load_initial(name, weights)
        backbone = {k[len("backbone."):]: v for k, v in weights.items()
                    if k.startswith("backbone.")}
        self.classifier.backbone.load_state_dict(backbone)
        head = weights.get("classifier_head.weight")
        if head is None or head.shape != self.classifier.classifier_head.weight.shape:
            raise ValueError(
                "init.weights: the run has no linear head of shape "
                f"{tuple(self.classifier.classifier_head.weight.shape)} to take prototypes from; "
                "give a source-only run on the same classes, or load classifier.backbone alone")
        with torch.no_grad():
            self.classifier.classifier_head.weight.copy_(head)
        self.classifier.classifier_head.renormalize()

    def neighborhood_logits(self, target_features: Tensor, target_logits: Tensor,
                            indices: Tensor) -> Tensor:
        """A target sample's similarities / T to the prototypes (its class logits), the memory
        bank and the other samples of the batch (itself masked out)."""
        temperature = self.config.temperature
        normalized = F.normalize(target_features, dim=1)
        memory = self.memory.similarities(normalized, indices, temperature)
        batch = normalized @ normalized.t() / temperature
        eye = torch.eye(len(batch), dtype=torch.bool, device=batch.device)
        batch = batch.masked_fill(eye, -1.0 / temperature)
        return torch.cat([target_logits, memory, batch], dim=1)

    def adapt_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert source is not None and target is not None
        config = self.config
        # dataset indices stay on the host (as the stream makes them): the bank's growth
        # check reads their maximum without a device sync; indexing accepts them as is
        indices = target.indices
        self.classifier.classifier_head.renormalize()
        with ctx.autocast():
            source_logits = self.classifier(source.images)
            class_loss = F.cross_entropy(source_logits, source.labels)
            with contextlib.nullcontext() if config.target_dropout else dropout_off(
                    self.classifier):
                target_features = self.classifier.features(target.images)
            target_logits = self.classifier.head(target_features)
            neighborhood = self.neighborhood_logits(target_features.float(),
                                                    target_logits.float(), indices)
            clustering_loss = entropy(neighborhood).mean()
            separation_loss = entropy_separation(target_logits, self.rejection_threshold,
                                                 config.margin)
        ctx.update("model", class_loss + config.eta * (clustering_loss + separation_loss))
        self.memory.update(target_features.detach().float(), indices)
        with torch.no_grad():
            target_entropy = entropy(target_logits.detach())
        return {
            "class_loss": class_loss.detach(),
            "clustering_loss": clustering_loss.detach(),
            "separation_loss": separation_loss.detach(),
            "target_rejected": (target_entropy > self.rejection_threshold).float().mean(),
            "source_accuracy": (source_logits.detach().argmax(1) == source.labels).float().mean(),
        }
