"""Each CPU speed switch of training/speed.py measured on the side-by-side DANN step (LeNet, no
norm, MNIST -> USPS 28x28x1, batch 64 + 64, SGD), in one process, interleaved: every round
times each variant for ``--steps`` steps, rounds repeat, so load drifts hit all variants
alike. Also the evaluation pass (USPS test, 2,007 images) by batch size and grad mode, and
torch.compile's compile time. Writes the ``levers`` key of benchmarks/results/speed.json and
its section of speed.md.

    python benchmarks/speed_levers.py [--steps 40] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import merge_json, merge_markdown  # noqa: E402

from tamebias.api import build_run, build_streams  # noqa: E402
from tamebias.compose import load_config  # noqa: E402
from tamebias.evaluation.metrics import evaluate  # noqa: E402
from tamebias.tasks import TASKS  # noqa: E402
from tamebias.training import speed  # noqa: E402
from tamebias.training.trainer import Context  # noqa: E402

TASK = [*TASKS["mnist-usps"].overrides(), "method.name=dann", "model.norm=none",
        "data.augment.source=none", "data.augment.target=none", "data.batch_size=64",
        "method.optim.name=sgd", "method.optim.lr=0.01", "method.optim.schedule=inverse"]


def variant(name: str, data, config):
    """A fresh method, its stage and its context for one switch setting."""
    _, method, device = build_run(config, data)
    stage = method.stages()[0]
    implementation = {"fused": "fused", "foreach": "foreach"}.get(name, "auto")
    ctx = Context.for_stage(stage, device, amp=name == "bf16 (forced)",
                            optimizer_impl=implementation)
    compile_seconds = None
    if name == "compile":
        speed.compile_networks(method)
    method.train()
    streams = build_streams(config, data, method, device)
    start = time.perf_counter()
    for step in range(3):  # warm-up (compilation happens here)
        stage.step(streams.batch(step), ctx)
    if name == "compile":
        compile_seconds = time.perf_counter() - start
    return {"method": method, "stage": stage, "ctx": ctx, "streams": streams,
            "compile_seconds": compile_seconds}


def time_steps(entry, steps: int, first: int) -> float:
    start = time.perf_counter()
    for step in range(first, first + steps):
        entry["stage"].step(entry["streams"].batch(step), entry["ctx"])
    return steps * 128 / (time.perf_counter() - start)


def profile(entry, steps: int = 20) -> list[tuple[str, float]]:
    """Share of CPU self time per operator over a few steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profile

    with run_profile(activities=[ProfilerActivity.CPU]) as profiler:
        time_steps(entry, steps, 1000)
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    return [(e.key, e.self_cpu_time_total / total) for e in top]


def evaluation_seconds(method, data, device, batch_size: int, mode) -> float:
    method.eval()
    start = time.perf_counter()
    with mode():
        evaluate(method.predict, data.target_test, device, batch_size)
    method.train()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16-steps", type=int, default=4,
                        help="steps of the forced-bf16 variant (slow where emulated)")
    parser.add_argument("--output", default="benchmarks/results")
    arguments = parser.parse_args()
    config = load_config(None, [*TASK, f"train.threads={arguments.threads}"])
    data, _, device = build_run(config)
    names = ["float32 (default)", "fused", "foreach", "compile", "bf16 (forced)"]
    entries = {name: variant(name, data, config) for name in names}
    speeds: dict[str, list[float]] = {name: [] for name in names}
    loads = []
    for round_index in range(arguments.rounds):
        loads.append(" ".join(f"{value:.2f}" for value in os.getloadavg()))
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            steps = arguments.bf16_steps if name == "bf16 (forced)" else arguments.steps
            speeds[name].append(time_steps(entries[name], steps, 10 + round_index * steps))
    base = statistics.mean(speeds["float32 (default)"])
    method = entries["float32 (default)"]["method"]
    evaluation = {}
    for _ in range(arguments.rounds):
        for batch_size in (1024, 4096):
            for label, mode in (("no_grad", torch.no_grad), ("inference_mode",
                                                              torch.inference_mode)):
                evaluation.setdefault(f"batch {batch_size}, {label}", []).append(
                    evaluation_seconds(method, data, device, batch_size, mode))
    operators = profile(entries["float32 (default)"])
    supported, reason = speed.cpu_bf16_support()
    record = {
        "task": "dann step, lenet (no norm), mnist->usps 28x28x1, batch 64+64, sgd",
        "threads": arguments.threads, "steps_per_round": arguments.steps,
        "bf16_steps_per_round": arguments.bf16_steps, "rounds": arguments.rounds,
        "images_per_second": speeds,
        "ratio_to_float32": {name: statistics.mean(values) / base
                             for name, values in speeds.items()},
        "compile_seconds": entries["compile"]["compile_seconds"],
        "evaluation_seconds": evaluation, "profile_self_cpu_share": operators,
        "cpu_bf16": {"native": supported, "why": reason},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_before": loads,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    output = Path(arguments.output)
    merge_json(output / "speed.json", "levers", record)
    lines = [
        "## CPU speed switches on the side-by-side DANN step (written by "
        "benchmarks/speed_levers.py)", "",
        f"{record['task']}; {arguments.threads} torch thread(s), {arguments.rounds} interleaved "
        f"rounds of {arguments.steps} steps per variant ({arguments.bf16_steps} for forced "
        f"bf16), measured {record['measured_at']}; CPU capability "
        f"{record['cpu_capability']}, native bf16: {'yes' if supported else 'no'} ({reason}).",
        "", "| switch | images/s per round | x float32 |", "|---|---|---|",
        *(f"| {name} | " + " / ".join(f"{value:.0f}" for value in values)
          + f" | {record['ratio_to_float32'][name]:.2f} |" for name, values in speeds.items()),
        "",
        f"- torch.compile: {record['compile_seconds']:.1f} s to compile (the first 3 steps)",
        "- evaluation of the USPS test split (2,007 images), seconds per pass: "
        + "; ".join(f"{name}: " + " / ".join(f"{value:.2f}" for value in values)
                    for name, values in evaluation.items()),
        "- where the float32 step's CPU time goes (torch.profiler, self time, 20 steps): "
        + ", ".join(f"{name} {100 * share:.0f}%" for name, share in operators),
        f"- load average (1, 5, 15 min) at each round: {'; '.join(loads)}",
    ]
    merge_markdown(output / "speed.md", "levers", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
