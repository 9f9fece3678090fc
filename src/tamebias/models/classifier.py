"""A classifier is a backbone (``features``) followed by a linear ``head``."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import build_backbone


class Classifier(nn.Module):
    """``head(features(x))``. Inputs are float images in [0, 1]; the classifier normalizes them
    itself (``(x - mean) / std`` per channel), so every method feeds the same kind of tensor."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        mean: tuple[float, ...] = (0.5,),
        std: tuple[float, ...] = (0.5,),
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim: int = backbone.feature_dim
        self.num_classes = num_classes
        self.classifier_head = nn.Linear(self.feature_dim, num_classes)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:  # NHWC convolutions: ~1.5x faster training on CPU, faster AMP on GPU
            self.to(memory_format=torch.channels_last)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        images = (images - self.mean) / self.std
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier_head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_classifier(
    backbone: str, num_classes: int, channels: int, size: int, pretrained: str | None = None,
    channels_last: bool = True, load_weights: bool = True, norm: str | None = None,
    pretrained_lr_scale: float = 1.0, mlp_widths: list[int] | None = None,
    mlp_dropout: float = 0.0,
) -> Classifier:
    """The backbone by name plus a head; ImageNet-pretrained backbones get ImageNet
    normalization, everything else maps [0, 1] to [-1, 1]. A pretrained backbone is marked
    with ``lr_scale`` (``pretrained_lr_scale``), which every optimizer over it applies.
    Feature vectors (``size`` 1, ``channels`` the dimension) need the ``mlp`` backbone, which
    standardizes its own inputs."""
    if size == 1 and backbone != "mlp":
        raise ValueError(f"the data are feature vectors ({channels} dimensions) but "
                         f"model.backbone={backbone} reads images; use model.backbone=mlp")
    network = build_backbone(backbone, channels, size, pretrained, load_weights, norm,
                             mlp_widths, mlp_dropout)
    if backbone == "mlp":
        return Classifier(network, num_classes, (0.0,), (1.0,), channels_last=False)
    if pretrained:
        network.lr_scale = pretrained_lr_scale
    if pretrained and channels == 3:
        return Classifier(network, num_classes, IMAGENET_MEAN, IMAGENET_STD, channels_last)
    return Classifier(network, num_classes, channels_last=channels_last)
