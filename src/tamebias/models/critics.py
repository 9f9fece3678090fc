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


class PixelCritic(nn.Module):
    """A fully-convolutional critic on dense maps (AdaptSegNet's discriminator, Tsai et al.,
    arXiv:1802.10349): ``layers`` 4x4 convolutions with stride 2 (``width`` doubling up to 8x),
    LeakyReLU 0.2, no normalization, then a 4x4 convolution to **one logit** per patch
    (``B x 1 x h x w``), trained with binary cross-entropy like ``DomainCritic``."""

    def __init__(self, channels: int, width: int = 64, layers: int = 4) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        inputs = channels
        for index in range(layers):
            outputs = width * min(2 ** index, 8)
            modules += [nn.Conv2d(inputs, outputs, 4, stride=2, padding=1),
                        nn.LeakyReLU(0.2, inplace=True)]
            inputs = outputs
        modules.append(nn.Conv2d(inputs, 1, 4, stride=2, padding=1))
        self.network = nn.Sequential(*modules)

    def forward(self, maps: Tensor) -> Tensor:
        return self.network(maps)
