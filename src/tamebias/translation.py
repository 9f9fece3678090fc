"""What a trained image translator (CyCADA's CycleGAN) does: image grids of both directions and
their round trips, and a translated copy of the source training set as a prepared ``.npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .api import TrainedRun, restore_run
from .data.imageset import ImageSet
from .evaluation.metrics import predict
from .report.figures import subplots


def _translator(run: TrainedRun):
    translator = getattr(run.method, "translator", None)
    if translator is None:
        raise ValueError(
            f"the run's method {run.config.method.name!r} has no image translator; "
            "`tamebias translate` needs a run of a pixel-level method such as cycada")
    return translator


def varied_sample(dataset: ImageSet, count: int) -> Tensor:
    """Indices of ``count`` images that cycle through the classes (class 0, 1, 2, ..., then
    each class's second image, ...), so a grid shows every class even when a split is stored
    sorted by label. The labels only choose what to draw."""
    labels = dataset.labels
    order = torch.argsort(labels, stable=True)
    grouped = labels[order]
    rank = torch.arange(len(labels)) - torch.searchsorted(grouped, grouped)  # within class
    key = rank * (int(labels.max()) + 1) + grouped
    return order[torch.argsort(key, stable=True)[:count]]


def _sample(dataset: ImageSet, count: int, device: torch.device) -> Tensor:
    return dataset.images[varied_sample(dataset, count)].to(device).float() / 255


@torch.no_grad()
def translation_grids(run_dir: str | Path, output: str | Path | None = None, count: int = 12,
                      root: str | None = None, which: str = "last") -> Path:
    """Write a PNG with six rows of ``count`` test images: source, source->target, cycle
    reconstruction; target, target->source, reconstruction. Returns its path
    (default ``RUN/translation.png``)."""
    from torchvision.utils import make_grid

    run = restore_run(run_dir, which, root)
    translator = _translator(run)
    source = _sample(run.load_split(run.config.data.source, "test"), count, run.device)
    target = _sample(run.load_split(run.config.data.target, "test"), count, run.device)
    images = translator.translate(source, target)
    rows = [
        ("source", source), ("source -> target", images["fake_target"]),
        ("source -> target -> source", images["cycle_source"]),
        ("target", target), ("target -> source", images["fake_source"]),
        ("target -> source -> target", images["cycle_target"]),
    ]
    figure, axes = subplots(len(rows), 1, figsize=(count * 0.7 + 1, len(rows) * 1.0))
    for axis, (title, batch) in zip(axes, rows, strict=True):
        grid = make_grid(batch.float().clamp(0, 1).cpu(), nrow=count, padding=1, pad_value=1)
        axis.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_title(title, fontsize=8, loc="left")
        axis.axis("off")
    figure.suptitle(f"{run.config.data.source} <-> {run.config.data.target} "
                    f"({Path(run_dir).name})", fontsize=9)
    figure.tight_layout()
    path = Path(output) if output is not None else Path(run_dir) / "translation.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


@torch.no_grad()
def export_translated(run_dir: str | Path, path: str | Path, root: str | None = None,
                      which: str = "last", batch_size: int = 512) -> Path:
    """Translate the run's whole source training split to the target style and write it as a
    prepared ``.npz`` (``x`` uint8 N x H x W [x C], ``y`` int64 with the source labels), usable
    by any method as ``data.source=npz:PATH``. The whole split is written, also for runs that
    trained on a subset of it (``data.source_subset``)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"the export is a .npz file (x uint8, y int64); got {path}")
    run = restore_run(run_dir, which, root)
    translator = _translator(run)  # in eval mode, as restore_run leaves the whole method
    dataset = run.load_split(run.config.data.source, "train")
    pieces = []
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start:start + batch_size].to(run.device).float() / 255
        translated = translator.source_to_target(images).clamp(0, 1)
        pieces.append((translated * 255).round().to(torch.uint8).cpu())
    images = torch.cat(pieces).permute(0, 2, 3, 1).numpy()  # N x H x W x C
    if images.shape[-1] == 1:
        images = images[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=np.ascontiguousarray(images),
                        y=dataset.labels.numpy().astype(np.int64))
    return path


@torch.no_grad()
def judge_translation(run_dir: str | Path, judge_dir: str | Path, root: str | None = None,
                      which: str = "last", split: str = "test", batch_size: int = 512,
                      flips: int = 5) -> dict:
    """How a second run's classifier (the *judge*, e.g. an oracle trained on labeled target
    images) reads the run's source ``split`` before and after translation to the target style,
    against the source labels. ``translated_accuracy`` is the share of translations that still
    show their class to a target-domain reader: the label noise the task classifier trains on.
    A diagnosis of the translator, not a selection rule (the judge may have seen target labels).
    Returns the counts, both accuracies and the ``flips`` most frequent (label, read as) pairs."""
    run = restore_run(run_dir, which, root)
    translator = _translator(run)
    judge = restore_run(judge_dir, "selected", root, device=str(run.device))
    if judge.protocol["classes"] != run.protocol["classes"] or \
            judge.protocol["input"] != run.protocol["input"]:
        raise ValueError(
            f"the judge {judge_dir} reads {judge.protocol['input']} images of classes "
            f"{judge.protocol['classes']}; the run {run_dir} translates "
            f"{run.protocol['input']} images of classes {run.protocol['classes']}")
    dataset = run.load_split(run.config.data.source, split)
    labels = dataset.labels.to(run.device)

    def read_translated(images: Tensor) -> Tensor:
        return judge.method.predict(translator.source_to_target(images).clamp(0, 1))

    plain = predict(judge.method.predict, dataset.images, run.device, batch_size).argmax(1)
    translated = predict(read_translated, dataset.images, run.device, batch_size).argmax(1)
    wrong = translated != labels
    pairs = torch.stack([labels[wrong], translated[wrong]], 1)
    top = []
    if len(pairs):
        found, counts = torch.unique(pairs, dim=0, return_counts=True)
        for index in torch.argsort(counts, descending=True)[:flips].tolist():
            label, read = (int(v) for v in found[index])
            top.append({"label": dataset.classes[label], "read_as": dataset.classes[read],
                        "count": int(counts[index])})
    return {"images": len(dataset), "split": split, "judge": str(judge_dir),
            "source_accuracy": float((plain == labels).float().mean()),
            "translated_accuracy": float((translated == labels).float().mean()),
            "flips": top}
