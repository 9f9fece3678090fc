"""The input pipeline on a synthetic folder of JPEGs: the memory path (decode everything once)
against the streaming path (decode each batch in DataLoader workers).

For each image count it builds ``COUNT`` JPEGs (``--side`` px, 10 class folders) once, then
measures in a fresh process per (count, path): images/s of producing augmented batches alone
(for the memory path also the one-time decode), images/s of training ResNet-50 at
``--input`` px for a few steps, and the peak resident memory of the process (and, for the
streaming path, of its largest worker). Writes ``OUT.json`` and ``OUT.md``.

    python benchmarks/pipeline.py --counts 5000,20000 --out benchmarks/results/pipeline
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_folder(root: Path, count: int, side: int) -> Path:
    """``count`` JPEGs in 10 class folders: smooth colour gradients with a class bar."""
    import numpy as np
    from PIL import Image

    folder = root / f"jpeg{count}"
    if (folder / "done").exists():
        return folder
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, side)
    for index in range(count):
        label = index % 10
        colour = rng.uniform(0.2, 1.0, 3)
        pixels = (np.outer(ramp, 1 - ramp)[..., None] * colour * 255 * 3).clip(0, 255)
        band = side // 10
        pixels[label * band:(label + 1) * band] = 255 - pixels[label * band:(label + 1) * band]
        target = folder / f"class{label}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(target / f"{index:06d}.jpg", quality=90)
    (folder / "done").write_text("")
    return folder


def _children_peak_mb() -> float | None:
    """The largest peak resident size (VmHWM) among this process's live children (Linux)."""
    import os

    peaks = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in task.read_text().split():
            status = Path(f"/proc/{pid}/status")
            if status.exists():
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
    return round(max(peaks)) if peaks else None


def measure(folder: str, target: str, cache: str, size: int, batch: int, batches: int, steps: int,
            workers: int, threads: int) -> dict:
    """One (folder, path) measurement, in this process."""
    import torch

    from tamebias.api import build_run, build_streams
    from tamebias.compose import load_config
    from tamebias.data.domain import prepare_data

    torch.set_num_threads(threads)
    overrides = [f"data.source=folder:{folder}", f"data.target=folder:{target}",
                 "data.target_test=none", f"data.size={size}", "data.channels=3",
                 f"data.batch_size={batch}", f"data.cache={cache}", f"data.workers={workers}",
                 "data.source_val_fraction=0", "train.selection=last",
                 "data.augment.policy=natural", "data.augment.source=weak",
                 "model.backbone=resnet50", "method.name=source_only", f"method.steps={steps}",
                 "train.device=cpu", f"train.threads={threads}"]
    config = load_config(None, overrides)
    started = time.perf_counter()
    data = prepare_data(config.data)  # the memory path decodes every image here
    prepare_seconds = time.perf_counter() - started
    data, method, device = build_run(config, data)
    streams = build_streams(config, data, method, device)
    streams.batch(0)  # workers started, first batch decoded
    started = time.perf_counter()
    for step in range(1, batches + 1):
        streams.batch(step)
    pipeline_seconds = time.perf_counter() - started
    optimizer = torch.optim.SGD(method.classifier.parameters(), lr=0.01)
    method.train()
    started = time.perf_counter()
    for step in range(batches + 1, batches + 1 + steps):
        images = streams.batch(step).source
        loss = torch.nn.functional.cross_entropy(method.classifier(images.images), images.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - started
    workers_peak = _children_peak_mb()
    return {
        "cache": data.protocol["cache"], "images": len(data.source_train),
        "prepare_seconds": round(prepare_seconds, 2),
        "decode_once_images_per_second": (round(len(data.source_train) / prepare_seconds, 1)
                                          if cache == "memory" else None),
        "pipeline_images_per_second": round(batches * batch / pipeline_seconds, 1),
        "train_images_per_second": round(steps * batch / train_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_worker_rss_mb": workers_peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="5000,20000")
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--input", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30, help="batches timed, no training")
    parser.add_argument("--steps", type=int, default=2, help="training steps timed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default="/tmp/tamebias-pipeline")
    parser.add_argument("--out", default="benchmarks/results/pipeline")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure:  # a child process: one measurement, JSON on stdout
        print(json.dumps(measure(**json.loads(arguments.measure))))
        return
    rows = []
    for count in (int(value) for value in arguments.counts.split(",")):
        started = time.perf_counter()
        folder = make_folder(Path(arguments.root), count, arguments.side)
        target = make_folder(Path(arguments.root), 20, arguments.side)  # unused by source_only
        print(f"{count} JPEGs ready in {time.perf_counter() - started:.0f} s", flush=True)
        for cache in ("stream", "memory"):
            job = {"folder": str(folder), "target": str(target), "cache": cache,
                   "size": arguments.input,
                   "batch": arguments.batch, "batches": arguments.batches,
                   "steps": arguments.steps, "workers": arguments.workers,
                   "threads": arguments.threads}
            output = subprocess.run([sys.executable, __file__, "--measure", json.dumps(job)],
                                    capture_output=True, text=True, check=True).stdout
            row = {"jpegs": count, **json.loads(output.strip().splitlines()[-1])}
            print(row, flush=True)
            rows.append(row)
    protocol = {"jpeg_side": arguments.side, "input": arguments.input,
                "batch": arguments.batch, "batches_timed": arguments.batches,
                "train_steps_timed": arguments.steps, "workers": arguments.workers,
                "torch_threads": arguments.threads, "backbone": "resnet50 (random init)",
                "augmentation": "natural policy, weak view of the source batch, on the CPU",
                "machine": f"{platform.processor() or platform.machine()}, "
                           f"{__import__('os').cpu_count()} cores (shared)"}
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"protocol": protocol, "rows": rows},
                                                   indent=2) + "\n")
    lines = ["# Input pipeline: memory vs streaming", "",
             "Written by `benchmarks/pipeline.py`; protocol: " + json.dumps(protocol), "",
             "| JPEGs | path | decode once img/s | batches img/s | train img/s | peak RSS MB |"
             " worker peak RSS MB | data prepare s |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['jpegs']} | {row['cache']} | "
                     f"{row['decode_once_images_per_second'] or ''} | "
                     f"{row['pipeline_images_per_second']} | {row['train_images_per_second']} | "
                     f"{row['peak_rss_mb']} | {row['peak_worker_rss_mb'] or ''} | "
                     f"{row['prepare_seconds']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
