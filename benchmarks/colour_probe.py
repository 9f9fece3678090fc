"""Probe a finished run on the colour proxy (docs/colour-shift.md), final model:

- target accuracy on 2,000 target test images, and on the same images turned gray (BT.601
  luma, repeated to three channels): how much the colour itself costs the model;
- how separable the domains are in the test-time features: a logistic regression on the
  features of 2,000 source test and 2,000 target test images, fit on half, scored on the other
  half (0.5 = indistinguishable); also with the gray target.

    python benchmarks/colour_probe.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from tamebias.api import restore_run
from tamebias.data.datasets import load_dataset
from tamebias.data.transforms import LUMA_WEIGHTS, to_geometry

SAMPLE = 2000


def separability(first: torch.Tensor, second: torch.Tensor) -> float:
    features = torch.cat([first, second]).numpy()
    domains = np.r_[np.ones(len(first)), np.zeros(len(second))]
    order = np.random.default_rng(0).permutation(len(features))
    fit, score = order[: len(order) // 2], order[len(order) // 2 :]
    probe = LogisticRegression(max_iter=2000).fit(features[fit], domains[fit])
    return float(probe.score(features[score], domains[score]))


def probe(run_dir: str) -> dict[str, float]:
    run = restore_run(run_dir, "last", device="cpu")
    size, _, channels = (int(value) for value in run.protocol["input"].split("x"))
    if channels != 3:
        raise SystemExit(f"{run_dir}: the probe needs a 3-channel run, got {channels}")
    source = to_geometry(load_dataset(run.config.data.source, "test"), size, 3)
    target = to_geometry(load_dataset(run.config.data.target, "test"), size, 3)
    generator = torch.Generator().manual_seed(0)
    source_images = source.images[torch.randperm(len(source), generator=generator)[:SAMPLE]]
    chosen = torch.randperm(len(target), generator=generator)[:SAMPLE]
    target_images, labels = target.images[chosen].float() / 255, target.labels[chosen]
    luma = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    gray_images = (target_images * luma).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    classifier = run.method.classifier

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([classifier.features(part) for part in images.split(500)])

    with torch.no_grad():
        source_features = features(source_images.float() / 255)
        target_features, gray_features = features(target_images), features(gray_images)
        accuracy = (classifier.head(target_features).argmax(1) == labels).float().mean()
        gray_accuracy = (classifier.head(gray_features).argmax(1) == labels).float().mean()
    return {
        "target_accuracy": round(100 * float(accuracy), 2),
        "gray_target_accuracy": round(100 * float(gray_accuracy), 2),
        "domain_separability": round(separability(source_features, target_features), 4),
        "domain_separability_gray": round(separability(source_features, gray_features), 4),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        print(path, json.dumps(probe(path)))
