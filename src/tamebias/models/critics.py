"""Domain critics (discriminators) on features."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class DomainCritic(nn.Module):
    """An MLP from features to **one logit** (source vs target), trained with
    binary cross-entropy. A single logit keeps the adversarial gradient alive; a softmax over
    one output would be constant and give the encoder nothing."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (500, 500),
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, 1))
        self.network = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.network(features).squeeze(1)
