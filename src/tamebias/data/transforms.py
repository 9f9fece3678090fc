"""One-time geometry conversion of a whole image set (size and channel count)."""

from __future__ import annotations

import torch
import torch.nn.functional as functional

from tamebias.data.imageset import DataError, ImageSet

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Float elements processed per chunk (about 64 MiB of float32), keeping memory bounded.
CHUNK_ELEMENTS = 1 << 24


def _normalise_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    height, width = (int(value) for value in size)
    if height <= 0 or width <= 0:
        raise DataError(f"image size must be positive, got {size}")
    return height, width


def to_geometry(images: ImageSet, size: int | tuple[int, int], channels: int) -> ImageSet:
    """Return ``images`` at ``size`` (H x W, or one int for square) with ``channels`` (1 or 3).

    Resizing is bilinear with antialiasing on floats, rounded and clamped back to uint8;
    gray to RGB repeats the channel, RGB to gray uses BT.601 luma weights. When the geometry
    already matches, the same tensors are returned in a cheap copy. ``meta["geometry"]``
    records ``{"size": [H, W], "channels": C, "from": [C0, H0, W0]}``, where "from" is the
    geometry before the first conversion (kept across repeated conversions).
    """
    height, width = _normalise_size(size)
    source_channels, source_height, source_width = images.shape
    if not isinstance(images.images, torch.Tensor):  # streamed (data/stream.py)
        return ImageSet(images.images.converted((height, width), channels), images.labels,
                        list(images.classes), images.name, dict(images.meta))
    if images.is_vectors:  # feature vectors have no geometry to convert
        if (height, width, channels) != (1, 1, source_channels):
            raise DataError(
                f"{images.name}: feature vectors ({source_channels} dimensions) have no image "
                f"size or channels to convert to {height}x{width}x{channels}; leave data.size "
                "and data.channels unset")
        return ImageSet(images.images, images.labels, list(images.classes), images.name,
                        dict(images.meta))
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if source_channels not in (1, 3):
        raise DataError(
            f"{images.name}: cannot convert images with {source_channels} channels "
            "(only 1 or 3 are supported)"
        )
    meta = dict(images.meta)
    earlier = meta.get("geometry")
    native = [source_channels, source_height, source_width]
    if isinstance(earlier, dict) and "from" in earlier:
        native = list(earlier["from"])
    meta["geometry"] = {
        "size": [height, width],
        "channels": channels,
        "from": native,
    }
    same_size = (source_height, source_width) == (height, width)
    if same_size and source_channels == channels:
        return ImageSet(images.images, images.labels, list(images.classes), images.name, meta)

    count = len(images)
    output = torch.empty((count, channels, height, width), dtype=torch.uint8)
    per_image = max(source_channels * source_height * source_width, channels * height * width)
    chunk = max(1, CHUNK_ELEMENTS // per_image)
    luma = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
    for start in range(0, count, chunk):
        batch = images.images[start : start + chunk].to(torch.float32)
        if source_channels == 3 and channels == 1:
            batch = (batch * luma).sum(dim=1, keepdim=True)
        if not same_size:
            batch = functional.interpolate(
                batch, size=(height, width), mode="bilinear", antialias=True, align_corners=False
            )
        batch = batch.round_().clamp_(0, 255).to(torch.uint8)
        if source_channels == 1 and channels == 3:
            batch = batch.expand(-1, 3, -1, -1)
        output[start : start + chunk] = batch
    return ImageSet(output, images.labels, list(images.classes), images.name, meta)
