"""Named digit styles: a multi-domain set generated from gray digits, for few-shot translation.

FUNIT (arXiv:1905.01723) learns to translate into a domain it has never trained on from a few
examples, after training on many *seen* domains. Digits here become domains by a *style*: a
recorded recipe (stroke and background colours or photo textures, stroke width, outline,
blur, noise, low resolution, MNIST-M's ``|patch - digit|`` blend) applied to a gray digit.
:data:`SEEN_STYLES` train the translator; :data:`UNSEEN_STYLES` are held back as few-shot
targets. The textures are cut from scikit-learn's two sample photos (``data/blend.py``).

A style is rendered in torch, on whole batches, by :func:`render`; every random choice (colour
jitter, texture window, noise) is drawn from the ``torch.Generator`` it is given, so a rendered
set is a pure function of (recipe, digits, seed). The registered datasets ``style-NAME``
(:data:`STYLE_DATASETS`) are MNIST's digits of the split at 32x32 in style NAME, drawn with the
seed :func:`style_seed` (style name, split, :data:`STYLE_SEED`).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .blend import sample_photos
from .imageset import DataError, ImageSet
from .transforms import to_geometry

STYLE_SIZE = 32
STYLE_SEED = 0
TEXTURE_SCALE = 4  # photos are shrunk by this factor first, so a 32 px window holds texture
Colour = tuple[float, float, float]
Paint = Colour | str  # an RGB colour in [0, 1], or a photo texture: "china" or "flower"
PHOTOS = {"china": 0, "flower": 1}  # the order of load_sample_images()


@dataclass(frozen=True)
class Style:
    """A digit style. ``stroke`` is plain, thick (3x3 dilation), thin (3x3 erosion) or
    outline (dilation minus erosion); ``blend`` replaces the composition by MNIST-M's
    ``|background - digit|``; ``jitter`` moves each image's colours uniformly by up to that
    much per channel; ``lowres`` averages blocks of that many pixels (then nearest upsampling);
    ``blur`` is a Gaussian sigma in pixels; ``noise`` a Gaussian standard deviation."""

    name: str
    foreground: Paint = (1.0, 1.0, 1.0)
    background: Paint = (0.0, 0.0, 0.0)
    stroke: str = "plain"
    blend: bool = False
    jitter: float = 0.1
    lowres: int = 1
    blur: float = 0.0
    noise: float = 0.0

    def recipe(self) -> dict:
        return asdict(self)


def _styles(*styles: Style) -> dict[str, Style]:
    return {style.name: style for style in styles}


SEEN_STYLES: dict[str, Style] = _styles(
    Style("plain", jitter=0.0),
    Style("red-on-black", (0.9, 0.15, 0.1)),
    Style("green-on-navy", (0.2, 0.85, 0.3), (0.05, 0.05, 0.35)),
    Style("black-on-white", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    Style("blue-on-yellow-thick", (0.1, 0.2, 0.9), (0.95, 0.9, 0.2), stroke="thick"),
    Style("cyan-thin-on-maroon", (0.2, 0.9, 0.9), (0.45, 0.05, 0.1), stroke="thin"),
    Style("white-outline-on-green", (1.0, 1.0, 1.0), (0.1, 0.45, 0.15), stroke="outline"),
    Style("orange-blurred", (1.0, 0.55, 0.1), blur=1.2),
    Style("magenta-lowres-on-gray", (0.9, 0.2, 0.8), (0.5, 0.5, 0.5), lowres=4),
    Style("white-on-china", (1.0, 1.0, 1.0), "china"),
    Style("black-on-flower", (0.0, 0.0, 0.0), "flower"),
    Style("yellow-noisy-on-blue", (0.95, 0.9, 0.1), (0.1, 0.15, 0.6), noise=0.12),
    Style("china-blend", background="china", blend=True),
)
#: held back from translator training: the few-shot targets
UNSEEN_STYLES: dict[str, Style] = _styles(
    Style("flower-blend", background="flower", blend=True),
    Style("pink-outline-on-teal-noisy", (1.0, 0.5, 0.75), (0.0, 0.4, 0.45), stroke="outline",
          noise=0.08),
    Style("lime-lowres-blurred-on-purple", (0.6, 1.0, 0.1), (0.3, 0.05, 0.4), lowres=2,
          blur=0.8),
)
STYLES: dict[str, Style] = {**SEEN_STYLES, **UNSEEN_STYLES}


def get_style(name: str) -> Style:
    if name not in STYLES:
        raise DataError(f"no digit style {name!r}; styles: {', '.join(STYLES)}")
    return STYLES[name]


@functools.lru_cache(maxsize=4)
def _textures(device: str) -> Tensor:
    """The sample photos as floats ``P x 3 x H/4 x W/4`` in [0, 1] (antialiased shrink)."""
    photos = torch.from_numpy(sample_photos()).permute(0, 3, 1, 2).float() / 255
    size = (photos.shape[2] // TEXTURE_SCALE, photos.shape[3] // TEXTURE_SCALE)
    return F.interpolate(photos, size=size, mode="bilinear", antialias=True,
                         align_corners=False).to(device)


def _paint(paint: Paint, count: int, height: int, width: int, jitter: float,
           generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``count x 3 x height x width``: a jittered colour, or windows cut from a photo."""
    if isinstance(paint, str):
        if paint not in PHOTOS:
            raise DataError(f"texture {paint!r} is not a sample photo ({', '.join(PHOTOS)})")
        photo = _textures(str(device))[PHOTOS[paint]]
        top = torch.randint(0, photo.shape[1] - height + 1, (count,), generator=generator)
        left = torch.randint(0, photo.shape[2] - width + 1, (count,), generator=generator)
        rows = (top[:, None] + torch.arange(height))[:, :, None].to(device)
        columns = (left[:, None] + torch.arange(width))[:, None, :].to(device)
        return photo[:, rows, columns].permute(1, 0, 2, 3)  # 3 x N x H x W -> N x 3 x H x W
    colour = torch.tensor(paint, dtype=torch.float32).expand(count, 3)
    if jitter:
        colour = colour + (torch.rand(count, 3, generator=generator) * 2 - 1) * jitter
    return colour.clamp(0, 1).to(device)[:, :, None, None].expand(count, 3, height, width)


def _stroke(mask: Tensor, kind: str) -> Tensor:
    if kind == "plain":
        return mask
    dilated = F.max_pool2d(mask, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-mask, 3, stride=1, padding=1)
    if kind == "thick":
        return dilated
    if kind == "thin":
        return eroded
    if kind == "outline":
        return (dilated - eroded).clamp(0, 1)
    raise DataError(f"stroke must be plain, thick, thin or outline, got {kind!r}")


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                          groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                    groups=channels)


def render(digits: Tensor, style: Style | str, generator: torch.Generator | None = None
           ) -> Tensor:
    """Gray digits (``N x 1 x H x W`` or ``N x 3 x H x W`` floats in [0, 1], bright strokes on
    dark; RGB is averaged to gray) in ``style``: ``N x 3 x H x W`` floats in [0, 1]. Random
    draws come from ``generator`` (the global generator when None) on the CPU, so the result
    does not depend on the device."""
    style = get_style(style) if isinstance(style, str) else style
    if digits.dim() != 4 or digits.shape[1] not in (1, 3):
        raise DataError(f"render needs N x 1 (or 3) x H x W digits, got {tuple(digits.shape)}")
    mask = digits.float().mean(1, keepdim=True).clamp(0, 1)
    count, _, height, width = mask.shape
    device = mask.device
    mask = _stroke(mask, style.stroke)
    background = _paint(style.background, count, height, width, style.jitter, generator, device)
    if style.blend:
        images = (background - mask).abs()
    else:
        foreground = _paint(style.foreground, count, height, width, style.jitter, generator,
                            device)
        images = mask * foreground + (1 - mask) * background
    if style.lowres > 1:
        images = F.avg_pool2d(images, style.lowres, ceil_mode=True)
        images = F.interpolate(images, size=(height, width), mode="nearest")
    if style.blur:
        images = _gaussian_blur(images, style.blur)
    if style.noise:
        noise = torch.randn(images.shape, generator=generator).to(device)
        images = images + style.noise * noise
    return images.clamp(0, 1)


def style_seed(name: str, split: str, seed: int = STYLE_SEED) -> int:
    """The generator seed of dataset ``style-NAME``'s ``split`` (stable across runs and
    machines: a CRC32 of the three)."""
    return zlib.crc32(f"{name}|{split}|{seed}".encode())


def render_set(digits: ImageSet, style: Style | str, seed: int, chunk: int = 4096) -> ImageSet:
    """``digits`` (gray) at 32x32 in ``style``, drawn from ``torch.Generator().manual_seed(
    seed)``; uint8 RGB, labels kept, the recipe in ``meta["style"]``."""
    style = get_style(style) if isinstance(style, str) else style
    gray = to_geometry(digits, STYLE_SIZE, 1).images
    generator = torch.Generator().manual_seed(seed)
    pieces = [render(gray[start:start + chunk].float() / 255, style, generator)
              for start in range(0, len(gray), chunk)]
    pixels = (torch.cat(pieces) * 255).round().to(torch.uint8)
    meta = {key: value for key, value in digits.meta.items()
            if key in ("data_root", "files", "transductive")}
    result = ImageSet(pixels, digits.labels.clone(), list(digits.classes),
                      f"style-{style.name}", meta)
    result.meta.update(style=style.recipe(), style_seed=seed,
                       format=f"{digits.meta.get('format')}+style")
    return result


def styled(base, base_name: str, name: str):
    """A dataset loader: ``base``'s digits of the split in style ``name``."""

    def load(split: str, root: str | Path | None, download: bool) -> ImageSet:
        digits = base(split, root, download)
        if digits.shape[0] != 1:
            raise DataError(f"style-{name}: {base_name} should be gray, got "
                            f"{digits.shape[0]} channels")
        result = render_set(digits, name, style_seed(name, split))
        result.meta["split"] = split
        return result

    return load


def style_datasets(base, base_name: str = "mnist") -> dict[str, tuple[str, object]]:
    """``style-NAME`` -> (description, loader) for every style, on ``base``'s digits."""
    def describe(name: str) -> str:
        kind = "unseen" if name in UNSEEN_STYLES else "seen"
        return f"{base_name} digits at 32x32 RGB in the {kind} generated style {name} " \
               "(data/styles.py)"

    return {f"style-{name}": (describe(name), styled(base, base_name, name)) for name in STYLES}
