"""Throughput of the baseline parts (issue 4) beside plain source-only LeNet: normalization
options, augmentation, self-training. Each row is a short `tamebias.fit` on the embedded pair
(mnist5k -> ucidigits, 28x28x1, batch 128 per domain), run one after another in one process;
plus the cost of one augmentation call per 128-image batch in isolation. Writes
benchmarks/results/speed_baselines.json and .md.

    python benchmarks/speed_baselines.py [--steps 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import tamebias
from tamebias.api import machine_info
from tamebias.data.augment import Augmenter
from tamebias.tasks import TASKS

ROWS = {
    "source_only (LeNet, no norm)": ["method.name=source_only"],
    "source_only + bn": ["method.name=source_only", "model.norm=bn"],
    "source_only + in": ["method.name=source_only", "model.norm=in"],
    "source_only + strong source augmentation": ["method.name=source_only",
                                                 "data.augment.source=strong"],
    "dann": ["method.name=dann"],
    "dann + dsbn": ["method.name=dann", "model.norm=dsbn"],
    "pseudo_label (self_training)": ["method.name=self_training"],
    "fixmatch + bn + weak views (the combination)": [
        "method.name=fixmatch", "model.norm=bn", "data.augment.source=weak",
        "data.augment.target=weak"],
    "mean_teacher": ["method.name=mean_teacher"],
}


def fit_speed(overrides: list[str], steps: int, threads: int) -> dict[str, float]:
    result = tamebias.fit(None, [
        *TASKS["mnist5k-ucidigits"].overrides(), *overrides, f"method.steps={steps}",
        f"train.eval_every={steps}", f"train.threads={threads}", "train.progress=false",
        "output_dir=/tmp/tamebias-speed"])
    return {"images_per_second": result.train_images_per_second,
            "steps_per_second": result.steps / result.train_seconds}


def augment_milliseconds(view: str, repeats: int = 100) -> float:
    augmenter = Augmenter("digits", 1, 28, seed=0)
    images = torch.rand(128, 1, 28, 28)
    augmenter(images, view, 0, 0)
    start = time.perf_counter()
    for step in range(repeats):
        augmenter(images, view, 0, step)
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    rows = {label: fit_speed(overrides, arguments.steps, arguments.threads)
            for label, overrides in ROWS.items()}
    augment = {view: augment_milliseconds(view) for view in ("weak", "strong")}
    base = rows["source_only (LeNet, no norm)"]["steps_per_second"]
    base_step_ms = 1000 / base
    record = {"steps": arguments.steps, "threads": arguments.threads, "rows": rows,
              "augment_ms_per_128": augment, "source_only_step_ms": base_step_ms,
              "machine": machine_info(torch.device("cpu")),
              "tamebias_version": tamebias.__version__}
    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "speed_baselines.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Speed: baseline parts beside source-only (written by benchmarks/speed_baselines.py)",
        "", f"mnist5k -> ucidigits, LeNet 28x28x1, batch 128 per domain, {arguments.steps} steps "
        f"per row, {arguments.threads} torch threads, evaluation excluded.", "",
        "| configuration | images/s (all images read) | steps/s | step vs source-only |",
        "|---|---|---|---|",
        *(f"| {label} | {row['images_per_second']:.0f} | {row['steps_per_second']:.1f} | "
          f"{base / row['steps_per_second']:.2f}x |"
          for label, row in rows.items()),
        "",
        f"- one augmentation call on 128 images: weak {augment['weak']:.2f} ms, strong "
        f"{augment['strong']:.2f} ms, against a {base_step_ms:.1f} ms source-only step",
        f"- machine: {record['machine']['cpu']} x{record['machine']['cpu_count']}, torch "
        f"{record['machine']['torch']}",
    ]
    (output / "speed_baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
