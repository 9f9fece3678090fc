"""``tamebias.diagnose``: how shifted is the target? Distances between the domains (pixels and
features), a label-shift estimate, image statistics, sample grids and a t-SNE, written as
``diagnose.json`` plus PNGs into one folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .api import TrainedRun, fit, restore_run
from .compose import load_config
from .data.domain import prepare_data
from .data.imageset import DataError
from .evaluation.metrics import predict
from .evaluation.selection import fixed_sample
from .evaluation.shift import bbse, image_statistics, mmd, proxy_a_distance
from .registry import lookup
from .report.shift_figures import plot_proportions, plot_samples
from .report.tsne import draw, embed
from .rundir import DIAGNOSE_FILE
from .tasks import TASKS


def _model(source: str | None, target: str | None, run: str | Path | None, task: str | None,
           output: Path, overrides: list[str], steps: int, data_root: str | None,
           seed: int) -> tuple[TrainedRun, str]:
    """The model whose features are measured: a trained run's, or a quick source-only one."""
    if run is not None:
        if source or target or task:
            raise ValueError("pass either --run (a trained run: its own source and target) or "
                             "--source/--target/--task, not both")
        return restore_run(run, "selected", data_root), f"run {run}"
    base: list[str] = []
    if task is not None:
        base = lookup(TASKS, task, "task").overrides()
    elif not (source and target):
        raise ValueError("diagnose needs --source and --target (dataset names, e.g. mnist and "
                         "usps; npz:PATH or folder:PATH), a --task, or a trained --run DIR")
    names = [*([f"data.source={source}"] if source else []),
             *([f"data.target={target}"] if target else [])]
    config = load_config(None, [
        *base, *names, "method.name=source_only", f"method.steps={steps}",
        f"train.eval_every={steps}", f"train.checkpoint_every={steps}", f"train.seed={seed}",
        "train.progress=false", *([f"data.root={data_root}"] if data_root else []),
        *overrides])
    result = fit(config, run_dir=output / "source_only")
    return restore_run(result.run_dir, "selected", data_root), (
        f"source-only model trained here for {config.method.steps} steps "
        f"({output / 'source_only'})")


def diagnose(
    source: str | None = None, target: str | None = None, *, run: str | Path | None = None,
    task: str | None = None, output: str | Path = "diagnose",
    overrides: list[str] | None = None, steps: int = 500, samples: int = 1000,
    data_root: str | None = None, seed: int = 0, tsne: bool = True,
) -> dict[str, Any]:
    """Measure the shift from ``source`` to ``target`` and write ``OUTPUT/diagnose.json``,
    ``samples.png``, ``proportions.png`` and (``tsne``) ``tsne.png``.

    Features come from a trained run (``run``) or from a source-only model trained here for
    ``steps`` steps. Target *training* images are used without labels for every measure; the
    target test labels appear only in the fields marked ``analysis_`` (to check the estimate).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    trained, model_note = _model(source, target, run, task, output, list(overrides or []),
                                 steps, data_root, seed)
    config = trained.config
    if data_root is not None:
        config.data.root = data_root
    data = prepare_data(config.data)
    if data.source_train.is_vectors:
        raise DataError("tamebias diagnose draws image samples and pixel statistics, and the "
                        "data are feature vectors; measure a vector shift from a run's "
                        "features with tamebias.evaluation.shift (proxy_a_distance, mmd)")
    if data.target_test is None:
        raise DataError("tamebias diagnose checks its estimates against a labeled target test "
                        "set and this target has none; set data.target_test")
    device, method = trained.device, trained.method
    source_set = data.source_val if data.source_val is not None else data.source_train
    source_images = source_set.images[fixed_sample(len(source_set), samples, seed)]
    source_labels = source_set.labels[fixed_sample(len(source_set), samples, seed)]
    target_images = data.target_train.images[fixed_sample(len(data.target_train), samples,
                                                          seed + 1)]
    with torch.no_grad():
        source_features = predict(method.features, source_images, device).flatten(1).cpu()
        target_features = predict(method.features, target_images, device).flatten(1).cpu()
        source_predictions = predict(method.predict, source_images, device).argmax(1).cpu()
        target_predictions = predict(method.predict, target_images, device).argmax(1).cpu()
    pixels = (source_images.flatten(1).float() / 255, target_images.flatten(1).float() / 255)
    label_shift = bbse(source_predictions, source_labels, target_predictions, data.num_classes)
    test_counts = np.bincount(data.target_test.labels.numpy(), minlength=data.num_classes)
    report: dict[str, Any] = {
        "source": config.data.source, "target": config.data.target,
        "protocol": data.protocol, "model": model_note, "samples_per_domain": len(target_images),
        "source_split_used": source_set.name, "target_split_used": "train (no labels)",
        "features": {**proxy_a_distance(source_features, target_features, seed),
                     **mmd(source_features, target_features)},
        "pixels": {**proxy_a_distance(*pixels, seed), **mmd(*pixels)},
        "label_shift": {**label_shift, "assumption": (
            "BBSE assumes pure label shift (p(x|y) unchanged); a large pixel or feature "
            "A-distance means covariate shift too, and the estimate is then unreliable")},
        "source_val_accuracy": float((source_predictions == source_labels).double().mean()),
        "images": {"source": image_statistics(data.source_train.images),
                   "target": image_statistics(data.target_train.images)},
        "analysis_target_test_class_proportions": (test_counts / test_counts.sum()).tolist(),
        "figures": ["samples.png", "proportions.png"],
    }
    classes = data.classes
    plot_samples({f"source: {config.data.source}": source_images[:32],
                  f"target: {config.data.target}": target_images[:32]}, output / "samples.png")
    plot_proportions({"source (labels)": label_shift["source_class_proportions"],
                      "target predicted": label_shift["target_predicted_proportions"],
                      "target BBSE estimate": label_shift["target_class_proportions"],
                      "target test (analysis)": report["analysis_target_test_class_proportions"]},
                     classes, output / "proportions.png", "class proportions")
    if tsne:
        count = min(500, len(source_features), len(target_features))
        chosen = fixed_sample(len(data.target_test), count, seed + 2)
        with torch.no_grad():
            test_features = predict(method.features, data.target_test.images[chosen],
                                    device).flatten(1).cpu()
        parts = {"source_features": source_features[:count].numpy(),
                 "source_labels": source_labels[:count].numpy(),
                 "target_features": test_features.numpy(),
                 "target_labels": data.target_test.labels[chosen].numpy()}
        draw([("features", embed(parts, seed), parts)], output / "tsne.png", classes)
        report["figures"].append("tsne.png")
    (output / DIAGNOSE_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
