"""Deep CORAL: source classification plus matching second-order statistics across domains."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..config import MethodConfig, OptimConfig
from ..models.classifier import Classifier
from .dan import DAN


@dataclass
class CORALConfig(MethodConfig):
    """The paper's settings: the CORAL loss on the last layer's outputs (the class logits;
    ``layer=features`` puts it on the features instead). The paper sets the weight so that
    both losses end about equal; 1 here. Source-only's optimizer, Adam 1e-3 (constant): the
    paper's SGD (lr 1e-3, momentum 0.9, weight decay 5e-4) is ``method.optim.name=sgd
    method.optim.weight_decay=5e-4``; the ``im`` validator (no target label) picked Adam over
    it on every seed (docs/methods-new.md)."""

    name: str = "coral"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=OptimConfig)
    weight: float = 1.0
    layer: str = "logits"


def covariance(values: Tensor) -> Tensor:
    """The unbiased covariance matrix (d x d) of the rows of ``values``."""
    centered = values.float() - values.float().mean(0, keepdim=True)
    return centered.t() @ centered / (len(values) - 1)


def coral_loss(source: Tensor, target: Tensor) -> Tensor:
    """``|C_source - C_target|_F^2 / (4 d^2)`` (Sun & Saenko, Eq. 1)."""
    dimension = source.shape[1]
    return (covariance(source) - covariance(target)).pow(2).sum() / (4 * dimension ** 2)


class CORAL(DAN):
    """Deep CORAL (Sun & Saenko, ECCV 2016 workshops, arXiv:1607.01719).

    Aligns the second-order statistics of the two domains: the squared Frobenius distance
    between the source and target covariance matrices of the last layer's outputs (the
    logits, as the paper; or the features) is added to the source cross-entropy. One stage,
    one optimizer over the classifier."""

    Config = CORALConfig
    description = "Deep CORAL: match source and target covariances (Sun & Saenko 2016)"

    def __init__(self, config: CORALConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        if config.layer not in ("logits", "features"):
            raise ValueError("method.layer must be logits or features")

    def aligned(self, features: Tensor, logits: Tensor) -> Tensor:
        return logits if self.config.layer == "logits" else features

    def alignment_loss(self, source: Tensor, target: Tensor) -> Tensor:
        return coral_loss(source, target)
