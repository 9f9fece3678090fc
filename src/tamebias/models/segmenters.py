"""Segmentation networks: ``features(x)`` (a ``B x D x h x w`` map), ``head(features)``
(``B x K x h x w`` class scores) and ``forward(x)`` (the scores upsampled bilinearly to the
input's ``H x W``). Inputs are float images in [0, 1]; the network normalizes them itself.

- ``fcn_small``: a small fully-convolutional net for CPU benchmarks (five 3x3 convolutions
  with batch norm: 16 and 32 channels at stride 2, 64 at stride 4, then two dilated ones
  (dilation 2, 4) for context; a 1x1 classifier; output stride 4, ~0.1 M parameters).
  Its logits are upsampled from a quarter of the resolution, too coarse for thin strokes: on
  the 48 px scenes it stops near 49 mIoU on its own (source) validation scenes.
- ``unet_small``: the same encoder with two convolutions per level and a U-Net decoder
  (upsample, concatenate the skip of the same resolution, convolve) back to full resolution;
  ~0.14 M parameters, ~3.5x the compute of ``fcn_small``; the default of the scene tasks.
- ``fcn_resnet50`` / ``deeplabv3_resnet50``: torchvision's, with an ImageNet ResNet-50
  backbone when ``pretrained`` is ``imagenet`` (the torch hub cache; nothing is downloaded
  unless asked) or a weights file.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import lookup
from .classifier import IMAGENET_MEAN, IMAGENET_STD


def _conv(inputs: int, outputs: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, stride, padding=dilation, dilation=dilation,
                      bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


class SmallFCN(nn.Module):
    """Features of the small CPU segmenter (output stride 4, ``feature_dim`` channels)."""

    def __init__(self, channels: int, width: int = 16) -> None:
        super().__init__()
        self.network = nn.Sequential(
            *_conv(channels, width, stride=2), *_conv(width, 2 * width),
            *_conv(2 * width, 4 * width, stride=2),
            *_conv(4 * width, 4 * width, dilation=2), *_conv(4 * width, 4 * width, dilation=4))
        self.feature_dim = 4 * width

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)


class SmallUNet(nn.Module):
    """Features of the small U-Net: encoder levels at strides 1, 2 and 4 (``width``,
    ``2 width``, ``4 width`` channels; the stride-4 level dilated 2 and 4 for context), a decoder
    that upsamples, concatenates the skip of the same stride and convolves, ending at full
    resolution with ``feature_dim = width`` channels."""

    def __init__(self, channels: int, width: int = 16) -> None:
        super().__init__()
        self.level1 = nn.Sequential(*_conv(channels, width), *_conv(width, width))
        self.level2 = nn.Sequential(*_conv(width, 2 * width, stride=2),
                                    *_conv(2 * width, 2 * width))
        self.level3 = nn.Sequential(*_conv(2 * width, 4 * width, stride=2),
                                    *_conv(4 * width, 4 * width, dilation=2),
                                    *_conv(4 * width, 4 * width, dilation=4))
        self.up2 = nn.Sequential(*_conv(6 * width, 2 * width))
        self.up1 = nn.Sequential(*_conv(3 * width, width))
        self.feature_dim = width

    @staticmethod
    def _join(coarse: Tensor, skip: Tensor) -> Tensor:
        upsampled = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear",
                                  align_corners=False)
        return torch.cat([upsampled, skip], 1)

    def forward(self, images: Tensor) -> Tensor:
        full = self.level1(images)
        half = self.level2(full)
        quarter = self.level3(half)
        half = self.up2(self._join(quarter, half))
        return self.up1(self._join(half, full))


class Segmenter(nn.Module):
    """A dense classifier: ``backbone`` (image -> feature map), a 1x1 convolution ``head``,
    logits upsampled to the input size. ``num_classes`` output channels."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,),
                 head: nn.Module | None = None, channels_last: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.classifier_head = head if head is not None else nn.Conv2d(feature_dim,
                                                                      num_classes, 1)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:  # NHWC convolutions: ~1.3x faster training on CPU
            self.to(memory_format=torch.channels_last)

    def features(self, images: Tensor) -> Tensor:
        images = (images - self.mean) / self.std
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def head(self, features: Tensor) -> Tensor:
        return self.classifier_head(features)

    def forward(self, images: Tensor) -> Tensor:
        logits = self.head(self.features(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear",
                             align_corners=False)


class _TorchvisionBody(nn.Module):
    """The ResNet-50 body of a torchvision segmentation model (its ``out`` feature map)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.body = backbone

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)["out"]


def _small(num_classes: int, channels: int, pretrained: str | None) -> Segmenter:
    if pretrained:
        raise ValueError("fcn_small has no pretrained weights; train it from scratch")
    backbone = SmallFCN(channels)
    return Segmenter(backbone, backbone.feature_dim, num_classes)


def _unet(num_classes: int, channels: int, pretrained: str | None) -> Segmenter:
    if pretrained:
        raise ValueError("unet_small has no pretrained weights; train it from scratch")
    backbone = SmallUNet(channels)
    return Segmenter(backbone, backbone.feature_dim, num_classes)


def _torchvision(kind: str) -> Callable[[int, int, str | None], Segmenter]:
    def build(num_classes: int, channels: int, pretrained: str | None) -> Segmenter:
        from torchvision.models import ResNet50_Weights, segmentation

        if channels != 3:
            raise ValueError(f"{kind} reads RGB images (3 channels), got {channels}")
        weights = ResNet50_Weights.IMAGENET1K_V1 if pretrained == "imagenet" else None
        model = getattr(segmentation, kind)(weights=None, weights_backbone=weights,
                                            num_classes=num_classes, aux_loss=False)
        if pretrained and pretrained != "imagenet":  # a ResNet-50 state dict on disk
            state = torch.load(pretrained, map_location="cpu", weights_only=True)
            model.backbone.load_state_dict(state, strict=False)
        body = _TorchvisionBody(model.backbone)
        if pretrained:
            body.lr_scale = 0.1  # the pretrained body fine-tunes at a tenth of the rate
        return Segmenter(body, 2048, num_classes, IMAGENET_MEAN, IMAGENET_STD,
                         head=model.classifier)
    return build


SEGMENTERS: dict[str, Callable[[int, int, str | None], Segmenter]] = {
    "fcn_small": _small,
    "unet_small": _unet,
    "fcn_resnet50": _torchvision("fcn_resnet50"),
    "deeplabv3_resnet50": _torchvision("deeplabv3_resnet50"),
}

SEGMENTER_NOTES = {
    "fcn_small": "CPU: 5 conv-BN-ReLU, output stride 4, 0.1 M parameters (coarse on thin strokes)",
    "unet_small": "CPU: small U-Net back to full resolution, 0.14 M parameters (scene tasks)",
    "fcn_resnet50": "torchvision FCN, ResNet-50 body (model.pretrained=imagenet optional)",
    "deeplabv3_resnet50": "torchvision DeepLabV3, ResNet-50 body (model.pretrained=imagenet "
                          "optional; the GTA5->Cityscapes protocol)",
}


def build_segmenter(name: str, num_classes: int, channels: int = 3,
                    pretrained: str | None = None) -> Segmenter:
    """The segmenter ``name`` (``SEGMENTERS``) for ``num_classes`` classes."""
    return lookup(SEGMENTERS, name, "segmenter")(num_classes, channels, pretrained)
