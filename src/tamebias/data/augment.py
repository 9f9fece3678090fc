"""Batched, on-device augmentation of float image batches in [0, 1] (B x C x H x W).

Every op draws its random parameters for the whole batch at once from a generator seeded by
``(seed, stream, step)``, so a batch's augmentation is a pure function of the step (exact
resume) and nothing leaves the training device. Two views per policy: ``weak`` (small
geometric jitter) and ``strong`` (bigger affine warps, photometric changes, noise, cutout),
for methods that pseudo-label a weak view and train on a strong one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

VIEWS = ("none", "weak", "strong")
POLICIES = ("auto", "digits", "natural")


@dataclass(frozen=True)
class ViewSpec:
    """Magnitudes of one view. Angles in degrees, translation as a fraction of the side."""

    rotate: float = 0.0
    scale: float = 0.0  # scale drawn from [1 - scale, 1 + scale]
    shear: float = 0.0
    translate: float = 0.0
    flip: float = 0.0  # probability of a horizontal flip
    brightness: float = 0.0  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    invert: float = 0.0  # probability of 1 - x
    noise: float = 0.0  # std of additive Gaussian noise
    cutout: float = 0.0  # side of a zeroed square, as a fraction of the image side
    padding: str = "zeros"  # grid_sample padding: zeros for digits, reflection for photos

    def scaled(self, strength: float) -> ViewSpec:
        if strength == 1.0:
            return self
        values = {name: getattr(self, name) * strength for name in (
            "rotate", "scale", "shear", "translate", "brightness", "contrast", "saturation",
            "noise", "cutout")}
        return ViewSpec(**values, flip=self.flip, invert=self.invert, padding=self.padding)


# Digits: no flips (a flipped 2 is not a 2); dark background, so warps pad with zeros.
# Natural images: flips and reflection padding, colour jitter.
POLICY_VIEWS: dict[str, dict[str, ViewSpec]] = {
    "digits": {
        "weak": ViewSpec(rotate=8, scale=0.08, translate=0.08),
        "strong": ViewSpec(rotate=20, scale=0.2, shear=15, translate=0.15, brightness=0.4,
                           contrast=0.4, noise=0.08, cutout=0.35),
    },
    "natural": {
        "weak": ViewSpec(translate=0.125, flip=0.5, padding="reflection"),
        "strong": ViewSpec(rotate=15, scale=0.15, shear=10, translate=0.125, flip=0.5,
                           brightness=0.4, contrast=0.4, saturation=0.4, noise=0.03,
                           cutout=0.4, padding="reflection"),
    },
}


def resolve_policy(policy: str, channels: int, size: int) -> str:
    """``auto`` is ``digits`` for single-channel or small (<= 32 px) inputs, else ``natural``."""
    if policy not in POLICIES:
        raise ValueError(f"augmentation policy must be one of {', '.join(POLICIES)}, "
                         f"got {policy!r}")
    if policy != "auto":
        return policy
    return "digits" if channels == 1 or size <= 32 else "natural"


def _uniform(generator: torch.Generator, count: int, low: float, high: float,
             device: torch.device) -> Tensor:
    return torch.rand(count, generator=generator, device=device) * (high - low) + low


@functools.lru_cache(maxsize=16)
def _base_grid(height: int, width: int, device: torch.device) -> Tensor:
    """Pixel-centre coordinates in [-1, 1] (``align_corners=False``) with a ones column."""
    ys = (torch.arange(height, device=device) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device) * 2 + 1) / width - 1
    return torch.stack([xs.view(1, -1).expand(height, width),
                        ys.view(-1, 1).expand(height, width),
                        torch.ones(height, width, device=device)], -1)


def _affine(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    count, device = images.shape[0], images.device
    angle = _uniform(generator, count, -spec.rotate, spec.rotate, device) * (math.pi / 180)
    scale = _uniform(generator, count, 1 - spec.scale, 1 + spec.scale, device)
    shear = _uniform(generator, count, -spec.shear, spec.shear, device) * (math.pi / 180)
    shift = _uniform(generator, 2 * count, -spec.translate, spec.translate, device)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # output -> input sampling grid: rotation @ shear, divided by the scale (zoom in for s > 1)
    theta = torch.stack([
        torch.stack([cos, cos * tan - sin, shift[:count] * 2], 1),
        torch.stack([sin, sin * tan + cos, shift[count:] * 2], 1),
    ], 1)
    theta[:, :, :2] /= scale.view(-1, 1, 1)
    # the sampling grid as one small contraction (F.affine_grid is ~10x slower on CPU)
    grid = torch.einsum("hwk,bjk->bhwj", _base_grid(*images.shape[-2:], device), theta)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=spec.padding,
                         align_corners=False)


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def _photometric(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    count, device = images.shape[0], images.device
    if spec.brightness:
        images = images * _per_sample(
            _uniform(generator, count, 1 - spec.brightness, 1 + spec.brightness, device))
    if spec.contrast:
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        factor = _per_sample(
            _uniform(generator, count, 1 - spec.contrast, 1 + spec.contrast, device))
        images = (images - mean) * factor + mean
    if spec.saturation and images.shape[1] == 3:
        gray = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(
            1, keepdim=True)
        factor = _per_sample(
            _uniform(generator, count, 1 - spec.saturation, 1 + spec.saturation, device))
        images = (images - gray) * factor + gray
    return images.clamp(0, 1)


def _flip(images: Tensor, probability: float, generator: torch.Generator) -> Tensor:
    chosen = torch.rand(images.shape[0], generator=generator, device=images.device) < probability
    return torch.where(_per_sample(chosen), images.flip(-1), images)


def _invert(images: Tensor, probability: float, generator: torch.Generator) -> Tensor:
    chosen = torch.rand(images.shape[0], generator=generator, device=images.device) < probability
    return torch.where(_per_sample(chosen), 1 - images, images)


def _cutout(images: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    count, _, height, width = images.shape
    device = images.device
    half_h, half_w = fraction * height / 2, fraction * width / 2
    center_y = torch.rand(count, generator=generator, device=device) * height
    center_x = torch.rand(count, generator=generator, device=device) * width
    rows = torch.arange(height, device=device).view(1, -1, 1) + 0.5
    cols = torch.arange(width, device=device).view(1, 1, -1) + 0.5
    inside = ((rows - center_y.view(-1, 1, 1)).abs() < half_h) & (
        (cols - center_x.view(-1, 1, 1)).abs() < half_w)
    return images.masked_fill(inside.unsqueeze(1), 0.0)


def apply_view(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    """Apply one view to a float batch in [0, 1]; returns a new tensor in [0, 1]."""
    if spec.flip:
        images = _flip(images, spec.flip, generator)
    if spec.rotate or spec.scale or spec.shear or spec.translate:
        images = _affine(images, spec, generator)
    images = _photometric(images, spec, generator)
    if spec.invert:
        images = _invert(images, spec.invert, generator)
    if spec.noise:
        noise = torch.randn(images.shape, generator=generator, device=images.device)
        images = (images + spec.noise * noise).clamp(0, 1)
    if spec.cutout:
        images = _cutout(images, spec.cutout, generator)
    return images.contiguous()


class Augmenter:
    """Weak/strong views of one policy, deterministic in ``(seed, stream, step)``."""

    def __init__(self, policy: str, channels: int, size: int, seed: int,
                 strength: float = 1.0, device: torch.device | str = "cpu") -> None:
        self.policy = resolve_policy(policy, channels, size)
        self.specs = {view: spec.scaled(strength)
                      for view, spec in POLICY_VIEWS[self.policy].items()}
        self.seed = seed
        self.device = torch.device(device)

    def generator(self, stream: int, step: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed((self.seed * 1_000_003 + stream) * 10_000_019 + step)
        return generator

    def __call__(self, images: Tensor, view: str, stream: int, step: int) -> Tensor:
        if view == "none":
            return images
        if view not in self.specs:
            raise ValueError(f"augmentation view must be one of {', '.join(VIEWS)}, "
                             f"got {view!r}")
        return apply_view(images, self.specs[view], self.generator(stream, step))
