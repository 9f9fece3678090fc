"""Figures of a domain shift: sample grids of each domain and class proportions."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
from torch import Tensor

from .figures import subplots


def _grid(images: Tensor, columns: int) -> np.ndarray:
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=columns, padding=2, pad_value=128)
    return grid.permute(1, 2, 0).numpy()


def plot_samples(domains: dict[str, Tensor], path: Path | IO[bytes], columns: int = 8) -> None:
    """One grid of uint8 images per domain, side by side."""
    figure, axes = subplots(1, len(domains), figsize=(4.2 * len(domains), 4.4),
                            squeeze=False)
    for axis, (name, images) in zip(axes[0], domains.items(), strict=True):
        grid = _grid(images, columns)
        axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid,
                    cmap="gray" if grid.shape[-1] == 1 else None, vmin=0, vmax=255)
        axis.set_title(name)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_proportions(series: dict[str, list[float]], classes: list[str],
                     path: Path | IO[bytes], title: str = "class proportions") -> None:
    """Grouped bars, one group per class, one bar per named series."""
    figure, axes = subplots(figsize=(max(5.0, 0.6 * len(classes) + 2), 3.4))
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(classes))
    for index, (name, values) in enumerate(series.items()):
        axes.bar(positions + index * width - 0.4 + width / 2, values, width, label=name)
    axes.set_xticks(positions, classes, rotation=90 if len(classes) > 12 else 0)
    axes.set_ylabel("proportion")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_per_class(per_class: list[float], classes: list[str], path: Path | IO[bytes],
                   title: str = "target accuracy per class") -> None:
    figure, axes = subplots(figsize=(max(5.0, 0.5 * len(classes) + 2), 3.2))
    axes.bar(range(len(classes)), [100 * v for v in per_class], color="tab:blue")
    axes.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 12 else 0)
    axes.set_ylim(0, 100)
    axes.set_ylabel("accuracy %")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
