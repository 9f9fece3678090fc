"""Training throughput of source-only LeNet at batch 128: a plain PyTorch loop over in-memory
tensors vs the toolkit, a FLOP count of one step, the machine's rough matmul peak, and where
the step's time goes. Writes benchmarks/results/speed.json and speed.md.

    python benchmarks/speed.py [--steps 300]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import tamebias
from tamebias.api import build_run, machine_info
from tamebias.compose import load_config
from tamebias.data.domain import DomainStreams
from tamebias.models.classifier import build_classifier
from tamebias.tasks import TASKS
from tamebias.training.trainer import Context

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import merge_json, merge_markdown  # noqa: E402

BATCH = 128


def plain_loop(images, labels, steps: int, channels_last: bool) -> float:
    """images/s of the simplest correct loop: index, float, forward, backward, Adam."""
    torch.manual_seed(0)
    model = build_classifier("lenet", 10, 1, 28, channels_last=channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    def run(count):
        for _ in range(count):
            index = torch.randint(0, len(images), (BATCH,))
            loss = F.cross_entropy(model(images[index].float() / 255), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    run(20)
    start = time.perf_counter()
    run(steps)
    return steps * BATCH / (time.perf_counter() - start)


def step_flops() -> int:
    model = build_classifier("lenet", 10, 1, 28)
    images, labels = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops()


def matmul_peak() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    start, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        a @ b
    return 2 * 2048**3 * repeats / (time.perf_counter() - start)


def source_only_step():
    """The embedded pair's batch streams and a ready source-only stage with its context."""
    config = load_config(None, ["method.name=source_only", *TASKS["mnist5k-ucidigits"].overrides()])
    data, method, device = build_run(config)
    streams = DomainStreams(data, BATCH, 0, device, False, False)
    stage = method.stages()[0]
    method.train()
    return streams, stage, Context.for_stage(stage, device)


def toolkit_breakdown(steps: int) -> dict[str, float]:
    """Time of data handling (batch indexing + float conversion) vs the method step."""
    streams, stage, context = source_only_step()
    data_seconds = step_seconds = 0.0
    for step in range(steps + 20):
        start = time.perf_counter()
        batch = streams.batch(step)
        middle = time.perf_counter()
        stage.step(batch, context)
        end = time.perf_counter()
        if step >= 20:
            data_seconds += middle - start
            step_seconds += end - middle
    return {"data_seconds": data_seconds, "step_seconds": step_seconds,
            "data_fraction": data_seconds / (data_seconds + step_seconds)}


def profile_step(steps: int = 30) -> list[tuple[str, float]]:
    """Share of CPU time per operator over a few toolkit training steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    streams, stage, context = source_only_step()
    for step in range(10):
        stage.step(streams.batch(step), context)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for step in range(steps):
            stage.step(streams.batch(step), context)
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    return [(e.key, e.self_cpu_time_total / total) for e in top]


def toolkit_fit(steps: int, method: str = "source_only") -> dict[str, float]:
    """A short fit on the embedded pair; images/s counts source + target images per step.
    ADDA runs only its adaptation stage here (its first stage is source-only training)."""
    extra = ["method.source_steps=0"] if method == "adda" else []
    result = tamebias.fit(None, [
        f"method.name={method}", *TASKS["mnist5k-ucidigits"].overrides(),
        f"method.steps={steps}", f"train.eval_every={steps}", "train.progress=false",
        "output_dir=/tmp/tamebias-speed", *extra])
    return {"images_per_second": result.train_images_per_second,
            "steps_per_second": result.steps / result.train_seconds,
            "train_seconds": result.train_seconds, "wall_seconds": result.wall_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output", default="benchmarks/results")
    steps = parser.parse_args().steps
    from tamebias.data.datasets import load_dataset
    from tamebias.data.transforms import to_geometry

    source = to_geometry(load_dataset("mnist5k", "train"), 28, 1)
    flops = step_flops()
    peak = matmul_peak()
    rows = {
        "plain_nchw": plain_loop(source.images, source.labels, steps, False),
        "plain_channels_last": plain_loop(source.images, source.labels, steps, True),
    }
    fit = toolkit_fit(steps)
    methods = {name: toolkit_fit(steps, name) for name in ("source_only", "dann", "adda")}
    breakdown = toolkit_breakdown(steps)
    operators = profile_step()
    record = {
        "model": "lenet 28x28x1, batch 128, Adam, source_only",
        "steps": steps,
        "plain_loop_images_per_second": rows["plain_nchw"],
        "plain_loop_channels_last_images_per_second": rows["plain_channels_last"],
        "toolkit_images_per_second": fit["images_per_second"],
        "toolkit_wall_seconds": fit["wall_seconds"],
        "training_flops_per_image": flops / BATCH,
        "achieved_gflops": fit["images_per_second"] * flops / BATCH / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "data_fraction_of_step": breakdown["data_fraction"],
        "methods": methods,
        "profile_self_cpu_share": operators,
        "machine": {**machine_info(torch.device("cpu")), "platform": platform.platform()},
        "tamebias_version": tamebias.__version__,
    }
    output = Path(parser.parse_args().output)
    output.mkdir(parents=True, exist_ok=True)
    merge_json(output / "speed.json", None, record)  # keeps the other scripts' keys
    lines = [
        "# Speed: source-only LeNet, batch 128, 28x28x1 (written by benchmarks/speed.py)", "",
        "| loop | images/s |", "|---|---|",
        f"| plain PyTorch loop, NCHW | {record['plain_loop_images_per_second']:.0f} |",
        f"| plain PyTorch loop, channels-last | "
        f"{record['plain_loop_channels_last_images_per_second']:.0f} |",
        f"| tamebias fit (channels-last default) | {record['toolkit_images_per_second']:.0f} |",
        "",
        "| method (LeNet, batch 128 per domain) | images/s (source + target) | steps/s |",
        "|---|---|---|",
        *(f"| {name} | {m['images_per_second']:.0f} | {m['steps_per_second']:.1f} |"
          for name, m in methods.items()),
        "",
        f"- training FLOPs per image (forward + backward, FlopCounterMode): "
        f"{record['training_flops_per_image'] / 1e6:.1f} MFLOP",
        f"- achieved: {record['achieved_gflops']:.1f} GFLOP/s; rough peak (2048^2 fp32 matmul): "
        f"{record['matmul_peak_gflops']:.0f} GFLOP/s",
        f"- data handling (index + uint8->float on device) is "
        f"{100 * record['data_fraction_of_step']:.1f}% of step time",
        "- where a source-only step's CPU time goes (torch.profiler, self time): "
        + ", ".join(f"{name} {100 * share:.0f}%" for name, share in operators),
        f"- machine: {record['machine']['cpu']} x{record['machine']['cpu_count']}, "
        f"{record['machine']['torch_threads']} torch threads, torch {record['machine']['torch']}",
    ]
    merge_markdown(output / "speed.md", "source-only", lines)  # and their sections
    print("\n".join(lines))


if __name__ == "__main__":
    main()
