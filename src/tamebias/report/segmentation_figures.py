"""A side-by-side figure of segmentation runs on target test scenes: input, ground truth, then
each run's prediction (e.g. source only and an adapted method), one row per scene."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.dense import IGNORE_INDEX
from ..data.imageset import as_float
from ..methods.segmentation import build_segmentation_method
from ..models.segmenters import build_segmenter
from ..rundir import RunDir
from ..training import checkpoint
from ..training.segmentation import load_dense_data, load_seg_config


def _palette(classes: int) -> np.ndarray:
    import matplotlib

    colours = matplotlib.colormaps["tab20"](np.linspace(0, 1, 20))[:, :3]
    table = np.zeros((256, 3))
    table[0] = (0, 0, 0)  # background black
    for index in range(1, classes):
        table[index] = colours[(index - 1) % 20]
    table[IGNORE_INDEX] = (1, 1, 1)  # unlabelled rim: white
    return table


def _load(run: Path):
    stored = json.loads(RunDir(run).config.read_text())
    values = {key: value for key, value in stored.items() if key != "kind"}
    values["method"] = {k: v for k, v in values["method"].items()}
    values["init"] = None
    config = load_seg_config([], values)
    return config


def segmentation_figure(runs: dict[str, str | Path], output: str | Path,
                        count: int = 6) -> Path:
    """Input | truth | one column per run (label -> finished run folder) on the first
    ``count`` target test scenes of the first run's task; written to ``output`` (PNG)."""
    import matplotlib.pyplot as plt

    configs = {label: _load(Path(run)) for label, run in runs.items()}
    first = next(iter(configs.values()))
    data = load_dense_data(first.data)
    test = data.target_test
    assert test is not None and test.masks is not None
    images = test.images[:count]
    predictions = {}
    for label, run in runs.items():
        config = configs[label]
        segmenter = build_segmenter(config.model.name, data.num_classes, images.shape[1])
        method = build_segmentation_method(config.method, segmenter)
        folder = RunDir(run)
        path = folder.best if folder.best.exists() else folder.checkpoint
        method.load_state_dict(checkpoint.load_latest(path)["method"])
        method.eval()
        with torch.no_grad():
            predictions[label] = method.predict(as_float(images)).argmax(1).numpy()
    palette = _palette(data.num_classes)
    columns = ["input", "truth", *runs]
    figure, axes = plt.subplots(count, len(columns), figsize=(1.6 * len(columns), 1.6 * count),
                                squeeze=False)
    for row in range(count):
        panels = [images[row].permute(1, 2, 0).numpy(), palette[test.masks[row].numpy()],
                  *(palette[predictions[label][row]] for label in runs)]
        for column, panel in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(panel, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=8)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output
