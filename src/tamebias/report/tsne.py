"""The alignment picture: t-SNE of source and target test features, before and after
adaptation, colored by domain and by class."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch

from ..api import TrainedRun
from ..evaluation.metrics import predict
from .figures import subplots


def sample_indices(count: int, total: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[: min(count, total)]


def domain_features(run: TrainedRun, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Features of ``count`` source-test and ``count`` target-test images (fixed sample)."""
    source = run.load_split(run.config.data.source, "test")
    target = run.load_split(run.config.data.target, "test")
    parts = {}
    for name, dataset, offset in (("source", source, 0), ("target", target, 1)):
        chosen = sample_indices(count, len(dataset), seed + offset)
        with torch.no_grad():
            features = predict(run.method.features, dataset.images[chosen], run.device)
        parts[f"{name}_features"] = features.float().cpu().numpy()
        parts[f"{name}_labels"] = dataset.labels[chosen].numpy()
    return parts


def embed(parts: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    features = np.concatenate([parts["source_features"], parts["target_features"]])
    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def draw(panels: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], path: Path,
         classes: list[str]) -> None:
    """One column per model; top row colored by domain, bottom row by class."""
    figure, axes = subplots(2, len(panels), figsize=(5.2 * len(panels), 10), squeeze=False)
    colors = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for column, (title, points, parts) in enumerate(panels):
        count = len(parts["source_labels"])
        source, target = points[:count], points[count:]
        top, bottom = axes[0, column], axes[1, column]
        top.scatter(*source.T, s=6, c="tab:blue", alpha=0.6, label="source")
        top.scatter(*target.T, s=6, c="tab:red", alpha=0.6, label="target")
        top.set_title(f"{title}: by domain")
        top.legend(markerscale=3, fontsize=8)
        labels = np.concatenate([parts["source_labels"], parts["target_labels"]])
        bottom.scatter(*source.T, s=6, c=[colors(int(k) % colors.N) for k in
                                          parts["source_labels"]], marker="o", alpha=0.6)
        bottom.scatter(*target.T, s=10, c=[colors(int(k) % colors.N) for k in
                                           parts["target_labels"]], marker="x", alpha=0.6)
        bottom.set_title(f"{title}: by class (o source, x target)")
        for index in np.unique(labels)[:20]:
            center = np.median(points[labels == index], axis=0)
            bottom.annotate(classes[int(index)], center, fontsize=10, weight="bold")
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def tsne_report(after: TrainedRun, before: TrainedRun | None, output: Path, count: int = 500,
                seed: int = 0, labels: tuple[str, str] = ("source only", "adapted")) -> Path:
    """Write ``output`` (PNG) and the 2-D coordinates beside it (``.npz``)."""
    panels, arrays = [], {}
    for name, run in ((labels[0], before), (labels[1], after)):
        if run is None:
            continue
        parts = domain_features(run, count, seed)
        points = embed(parts, seed)
        panels.append((name, points, parts))
        key = "before" if name == labels[0] else "after"
        arrays[f"{key}_points"] = points
        arrays[f"{key}_source_labels"] = parts["source_labels"]
        arrays[f"{key}_target_labels"] = parts["target_labels"]
    output.parent.mkdir(parents=True, exist_ok=True)
    draw(panels, output, after.protocol["classes"])
    np.savez(output.with_suffix(".npz"), **arrays)
    return output
