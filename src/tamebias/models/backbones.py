"""Feature extractors: LeNet (ADDA), DTN (SVHN-size digits) and torchvision ResNets.

Every backbone maps ``B x C x H x W`` float images (already normalized) to ``B x feature_dim``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..registry import lookup
from .mlp import MLP
from .norm import NORMS, convert_norm


class LeNet(nn.Module):
    """The LeNet variant of ADDA (Tzeng et al., 2017): two 5x5 convolutions (20, 50 filters),
    max pooling, and a 500-unit fully connected layer; features are the 500 units. The paper's
    network has no normalization; ``batch_norm`` adds it after each convolution and the fully
    connected layer (the base for the BN, IN, IBN and DSBN options)."""

    def __init__(self, in_channels: int, size: int, batch_norm: bool = False) -> None:
        super().__init__()

        def norm(channels: int, kind: type[nn.Module]) -> list[nn.Module]:
            return [kind(channels)] if batch_norm else []

        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 20, kernel_size=5), *norm(20, nn.BatchNorm2d),
            nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(20, 50, kernel_size=5), *norm(50, nn.BatchNorm2d), nn.Dropout2d(0.5),
            nn.MaxPool2d(2), nn.ReLU(inplace=True),
        )
        spatial = ((size - 4) // 2 - 4) // 2
        if spatial < 1:
            raise ValueError(f"LeNet needs inputs of at least 16x16, got {size}x{size}")
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * spatial * spatial, 500), *norm(500, nn.BatchNorm1d),
            nn.ReLU(inplace=True), nn.Dropout(0.5),
        )
        self.feature_dim = 500

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(images))


class DTN(nn.Module):
    """The digit-transfer network used for SVHN->MNIST (three strided 5x5 convolutions with
    batch norm, 64/128/256 filters, then a 512-unit layer); features are the 512 units."""

    def __init__(self, in_channels: int, size: int) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [
                nn.Conv2d(inputs, outputs, 5, stride=2, padding=2), nn.BatchNorm2d(outputs),
                nn.Dropout2d(0.1), nn.ReLU(inplace=True),
            ]

        self.conv = nn.Sequential(*block(in_channels, 64), *block(64, 128), *block(128, 256))
        spatial = -(-size // 8)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(256 * spatial * spatial, 512), nn.BatchNorm1d(512),
            nn.ReLU(inplace=True), nn.Dropout(0.5),
        )
        self.feature_dim = 512

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(images))


class ResNet(nn.Module):
    """A torchvision ResNet without its classification layer. Inputs smaller than 64 pixels get
    the CIFAR stem (3x3 stride-1 first convolution, no max pooling) unless weights are loaded."""

    def __init__(self, arch: str, in_channels: int, size: int, pretrained: str | None,
                 load_weights: bool = True) -> None:
        super().__init__()
        import torchvision

        network = getattr(torchvision.models, arch)(weights=None)
        if pretrained and load_weights:  # else: the pretrained layout, weights from elsewhere
            network.load_state_dict(load_pretrained_state(arch, pretrained))
        if in_channels != 3:
            if pretrained and in_channels != 1:
                raise ValueError(f"{arch} ImageNet weights need 1 or 3 input channels")
            rgb_filters = network.conv1.weight.detach()
            network.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            if pretrained:  # a gray image sees the sum of the RGB filters
                with torch.no_grad():
                    network.conv1.weight.copy_(rgb_filters.sum(1, keepdim=True))
        if size < 64 and not pretrained:
            network.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            network.maxpool = nn.Identity()
        self.feature_dim = network.fc.in_features
        network.fc = nn.Identity()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def load_pretrained_state(arch: str, pretrained: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from a file path, or ``"imagenet"`` from the torch hub cache
    (downloaded there when a network is available)."""
    if pretrained != "imagenet":
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state)
    import torchvision

    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:  # no network and nothing cached
        raise FileNotFoundError(
            f"ImageNet weights for {arch} are not in the torch cache ({cached}) and could not "
            f"be downloaded ({error}). Download {weights.url} to that path, or pass the file "
            "with model.pretrained=PATH."
        ) from error


@dataclass(frozen=True)
class BackboneInfo:
    description: str
    build: Callable[[int, int, str | None, bool], nn.Module]
    default_norm: str = "bn"  # what model.norm unset means for this backbone


def _no_pretrained(name: str, builder: Callable[[int, int], nn.Module]):
    def build(in_channels: int, size: int, pretrained: str | None, _: bool) -> nn.Module:
        if pretrained:
            raise ValueError(f"backbone {name!r} has no pretrained weights")
        return builder(in_channels, size)

    return build


BACKBONES: dict[str, BackboneInfo] = {
    "lenet": BackboneInfo(
        "LeNet as in ADDA: 2 conv (20, 50) + 500-d features; digits at 28 or 32 px",
        _no_pretrained("lenet", LeNet),
        default_norm="none",
    ),
    "dtn": BackboneInfo(
        "DTN: 3 strided conv with BN (64/128/256) + 512-d features; SVHN-size 32 px digits",
        _no_pretrained("dtn", DTN),
    ),
    "resnet18": BackboneInfo(
        "torchvision ResNet-18, 512-d features; optional ImageNet weights (model.pretrained)",
        lambda channels, size, pretrained, load: ResNet("resnet18", channels, size, pretrained,
                                                        load),
    ),
    "resnet34": BackboneInfo(
        "torchvision ResNet-34, 512-d features; optional ImageNet weights (model.pretrained); "
        "the backbone of MME's and PAC's DomainNet / Office-Home results",
        lambda channels, size, pretrained, load: ResNet("resnet34", channels, size, pretrained,
                                                        load),
    ),
    "resnet50": BackboneInfo(
        "torchvision ResNet-50, 2048-d features; optional ImageNet weights (model.pretrained)",
        lambda channels, size, pretrained, load: ResNet("resnet50", channels, size, pretrained,
                                                        load),
    ),
    "mlp": BackboneInfo(
        "multilayer perceptron for feature vectors (npz with float x): inputs standardized "
        "with source statistics; widths model.mlp_widths, batch norm unless model.norm=none",
        lambda channels, size, pretrained, load: MLP(channels * size * size, [256, 256]),
    ),
}


def build_backbone(
    name: str, in_channels: int, size: int, pretrained: str | None = None,
    load_weights: bool = True, norm: str | None = None,
    mlp_widths: list[int] | None = None, mlp_dropout: float = 0.0,
) -> nn.Module:
    """``load_weights=False`` builds the pretrained layout without reading the weights (for
    restoring a checkpoint of a run that started from them). ``norm`` (``models/norm.py``:
    none, bn, in, ibn, dsbn) converts the backbone's batch norms; unset keeps its default
    (none for LeNet, bn otherwise). ``mlp_widths`` / ``mlp_dropout`` shape the mlp."""
    info = lookup(BACKBONES, name, "backbone")
    kind = norm or info.default_norm
    if kind not in NORMS:
        raise ValueError(f"model.norm must be one of {', '.join(NORMS)}, got {kind!r}")
    if name == "lenet" and kind != "none":
        network = LeNet(in_channels, size, batch_norm=True)  # BN layers to convert from
    elif name == "mlp":
        if pretrained:
            raise ValueError("backbone 'mlp' has no pretrained weights")
        network = MLP(in_channels * size * size, mlp_widths or [256, 256],
                      batch_norm=kind != "none", dropout=mlp_dropout)
    else:
        network = info.build(in_channels, size, pretrained, load_weights)
    return convert_norm(network, kind)
