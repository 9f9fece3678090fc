"""Check the GPU code paths on the first GPU machine at hand, in one call (< 10 minutes on
one modern GPU): benchmarks/gpu_check.sh runs this from the repository root.

1. the test suite's GPU-marked tests (``pytest -m gpu``);
2. a bf16 DANN run on the embedded digits pair (mnist5k -> ucidigits: no download), with its
   training img/s;
3. a 2-GPU data-parallel smoke run (``tamebias fit --nproc 2``) when two GPUs are visible;
4. ResNet-50 steps at 224 px on the Office-31 category-shift task (office31-aw-open-set,
   DANCE) on synthetic images written to a temporary data root (random weights: the
   machine may have no internet for ImageNet weights), with the time per step.

Each part prints one line and the script ends with a summary (and exit code 1 when a part
failed). ``--cpu-smoke`` runs parts 2 and 4 tiny on the CPU, to check the script itself."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OFFICE31 = sorted([
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair",
    "desk_lamp", "desktop_computer", "file_cabinet", "headphones", "keyboard",
    "laptop_computer", "letter_tray", "mobile_phone", "monitor", "mouse", "mug",
    "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
    "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can"])


def tamebias(*arguments: str, timeout: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tamebias", *arguments]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, timeout=timeout, text=True, capture_output=True)


def result_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def synthetic_office(root: Path, per_class: int) -> None:
    """Random 256 px colour images, Office-31's classes, amazon and webcam domains."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for domain, tint in (("amazon", 0), ("webcam", 60)):
        for index, name in enumerate(OFFICE31):
            folder = root / "office31" / domain / "images" / name
            folder.mkdir(parents=True, exist_ok=True)
            for count in range(per_class):
                pixels = rng.integers(0, 196, (256, 256, 3)) + tint
                pixels[:, :, index % 3] = (index * 8 + count) % 256  # a class colour
                Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(
                    folder / f"{count}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="parts 2 and 4, tiny, on the CPU (checks this script)")
    parser.add_argument("--output", default=None, help="folder for the runs (default: temp)")
    options = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not options.cpu_smoke:
        print("no CUDA device visible: nothing to check (--cpu-smoke checks the script)")
        return 1
    gpus = torch.cuda.device_count() if cuda else 0
    device = "cuda" if cuda else "cpu"
    output = Path(options.output or tempfile.mkdtemp(prefix="tamebias-gpu-check-"))
    summary: list[tuple[str, bool, str]] = []
    if cuda:
        print(f"{gpus} GPU(s): {torch.cuda.get_device_name(0)}; torch {torch.__version__}")

    # 1. the GPU-marked tests
    if cuda:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "tests"],
                              text=True, capture_output=True, timeout=300)
        last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        summary.append(("gpu tests", done.returncode == 0,
                        f"{last} ({time.perf_counter() - started:.0f} s)"))
        if done.returncode:
            print(done.stdout[-3000:], done.stderr[-2000:])

    # 2. bf16 DANN on the embedded digits pair
    steps = 2000 if cuda else 10
    run = output / "dann-bf16"
    done = tamebias("fit", "--recipe", "dann+bn+aug", "--run-dir", str(run),
                    "--set", f"method.steps={steps}", "--set", f"train.device={device}",
                    "--set", f"train.amp={str(cuda).lower()}", "--set", "train.progress=false",
                    "--set", f"train.eval_every={steps // 2}",
                    "--set", f"train.log_every={max(steps // 10, 1)}",
                    *([] if cuda else ["--set", "train.threads=1"]), timeout=300)
    if done.returncode == 0:
        result = result_of(run)
        summary.append(("bf16 dann digits" if cuda else "dann digits (cpu)", True,
                        f"{steps} steps, {result['train_images_per_second']:.0f} img/s, "
                        f"target accuracy {100 * result['target']['accuracy']:.2f}%, "
                        f"{result['wall_seconds']:.0f} s wall"))
    else:
        summary.append(("dann digits", False, done.stderr.strip()[-300:]))

    # 3. data-parallel on two GPUs
    if gpus >= 2:
        run = output / "dann-ddp"
        done = tamebias("fit", "--nproc", "2", "--recipe", "dann+bn+aug", "--run-dir",
                        str(run), "--set", "method.steps=500", "--set", "train.amp=true",
                        "--set", "train.progress=false", "--set", "train.eval_every=250",
                        timeout=300)
        ok = done.returncode == 0
        detail = (f"500 steps on 2 GPUs, {result_of(run)['train_images_per_second']:.0f} img/s"
                  if ok else done.stderr.strip()[-300:])
        summary.append(("2-GPU DDP smoke", ok, detail))
    elif cuda:
        summary.append(("2-GPU DDP smoke", True, f"skipped: {gpus} GPU visible"))

    # 4. ResNet-50 at 224 px, Office-31 open-set, synthetic images
    root = output / "data"
    synthetic_office(root, per_class=2 if cuda else 1)
    run = output / "office31-resnet50"
    size, batch, steps = (224, 36, 3) if cuda else (64, 4, 1)
    started = time.perf_counter()
    done = tamebias("fit", "--task", "office31-aw-open-set", "--recipe", "dance", "--run-dir",
                    str(run), "--set", f"data.root={root}", "--set", "model.pretrained=null",
                    "--set", f"data.size={size}", "--set", f"data.batch_size={batch}",
                    "--set", f"method.steps={steps}", "--set", f"train.eval_every={steps}",
                    "--set", "data.source_val_fraction=0", "--set", "train.selection=last",
                    "--set", f"train.device={device}", "--set", "train.progress=false",
                    "--set", f"train.amp={str(cuda).lower()}",
                    *([] if cuda else ["--set", "train.threads=1"]), timeout=400)
    if done.returncode == 0:
        result = result_of(run)
        per_step = result["train_seconds"] / max(result["steps"], 1)
        summary.append((f"resnet50 {size} px office31 open-set", True,
                        f"{steps} steps of batch {batch}, {per_step:.2f} s/step (first "
                        f"steps: cudnn autotuning included), "
                        f"{result['train_images_per_second']:.0f} img/s, "
                        f"{time.perf_counter() - started:.0f} s wall"))
    else:
        summary.append(("resnet50 office31", False, done.stderr.strip()[-300:]))

    print("\nsummary")
    for name, ok, detail in summary:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    print(f"runs in {output}")
    return 0 if all(ok for _, ok, _ in summary) else 1


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
