"""Classification heads beside the classifier's default linear one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CosineHead(nn.Module):
    """Temperature-scaled cosine classifier: logits = <f/|f|, w_k/|w_k|> / T. The normalized
    weights are the source class prototypes. No bias (as the authors' classifier). As the
    authors' ``weight_norm``, the weights are kept at unit norm (at creation and by
    ``renormalize`` before each step): the normalization in ``forward`` divides the gradient
    by the weights' norm, so weights of norm r would learn at 1/r^2 the intended rate."""

    def __init__(self, feature_dim: int, num_classes: int, temperature: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(F.normalize(torch.randn(num_classes, feature_dim), dim=1))
        self.temperature = temperature

    @torch.no_grad()
    def renormalize(self) -> None:
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def prototypes(self) -> Tensor:
        return F.normalize(self.weight, dim=1)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(features, dim=1) @ self.prototypes().t() / self.temperature
