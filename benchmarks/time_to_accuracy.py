"""Time to accuracy: a recipe trained from a cold start (a fresh process per seed: imports,
data decoding and model building are on the clock), reporting the wall seconds until target
test accuracy first reaches 95% and the accuracy at 60 s. The target test split is read only
for this report (every ``--eval-every`` steps, with the clock stopped while it is scored),
never to select anything. Writes the ``time_to_accuracy`` key of benchmarks/results/speed.json
and its section of speed.md.

    python benchmarks/time_to_accuracy.py [--recipe fixmatch+bn+aug] [--seeds 0,1,2]
        [--budget 240] [--threads N] [--set data.batch_size=64 --set method.optim.lr=0.002]

The row in docs/speed.md is fixmatch+bn+aug with ``--set data.batch_size=64 --set
method.optim.lr=0.002`` (the ``fixmatch+bn+aug+fast`` experiment of
benchmarks/experiments.toml, whose 3-seed bench row checks that accuracy does not drop).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the cold-start clock: before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import merge_json, merge_markdown  # noqa: E402

TARGET = 0.95


def child(arguments: argparse.Namespace) -> dict:
    """One cold-start run; returns the accuracy curve on the (clock, step) axis."""
    import torch

    from tamebias.api import build_run, build_streams
    from tamebias.evaluation.metrics import evaluate
    from tamebias.models.norm import use_domain
    from tamebias.recipe_fit import recipe_config
    from tamebias.training.optim import set_learning_rate
    from tamebias.training.trainer import Context

    paused = 0.0  # seconds spent on the report-only evaluations

    def clock() -> float:
        return time.perf_counter() - STARTED - paused

    config = recipe_config(arguments.task, arguments.recipe, overrides=[
        f"train.seed={arguments.seed}", f"train.threads={arguments.threads}",
        "train.progress=false", *arguments.overrides])
    data, method, device = build_run(config)
    streams = build_streams(config, data, method, device)
    curve, offset, images = [], 0, 0
    first_step_at = None
    for stage in [stage for stage in method.stages() if stage.steps > 0]:
        if stage.on_start is not None:
            stage.on_start()
        ctx = Context.for_stage(stage, device, config.train.amp and device.type == "cuda",
                                config.train.optimizer_impl)
        method.train()
        for step in range(stage.steps):
            if first_step_at is None:
                first_step_at = clock()
            ctx.step, ctx.global_step, ctx.progress = step, offset + step, step / stage.steps
            for name, optimizer in ctx.optimizers.items():
                set_learning_rate(optimizer, ctx.configs[name].schedule, ctx.progress)
            batch = streams.batch(offset + step)
            if stage.needs is not None:
                batch = stage.needs.restrict(batch)
            stage.step(batch, ctx)
            images += sum(len(part) for part in (batch.source, batch.target) if part is not None)
            done = step + 1
            if done % arguments.eval_every == 0 or done == stage.steps:
                now = clock()
                pause_start = time.perf_counter()
                method.eval()
                with torch.inference_mode(), use_domain(method, "target"):
                    accuracy = evaluate(method.predict, data.target_test, device).accuracy
                method.train()
                paused += time.perf_counter() - pause_start
                curve.append({"seconds": now, "step": offset + done, "accuracy": accuracy})
                if now > arguments.budget or (accuracy >= TARGET and now > 60):
                    break
        else:
            offset += stage.steps
            continue
        break
    reached = next((point["seconds"] for point in curve if point["accuracy"] >= TARGET), None)
    before_60 = [point for point in curve if point["seconds"] <= 60]
    return {"seed": arguments.seed, "seconds_to_95": reached,
            "accuracy_at_60s": before_60[-1]["accuracy"] if before_60 else None,
            "startup_seconds": first_step_at, "images": images,
            "final": curve[-1] if curve else None, "curve": curve,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="mnist-usps")
    parser.add_argument("--recipe", default="fixmatch+bn+aug")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=240.0,
                        help="stop a run after this many seconds on the clock")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: the CPUs this process may use)")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", default="benchmarks/results")
    parser.add_argument("--rewrite", action="store_true",
                        help="rewrite the table from the rows stored in speed.json; run nothing")
    arguments = parser.parse_args()
    if arguments.rewrite:
        stored = json.loads((Path(arguments.output) / "speed.json").read_text())
        write(stored["time_to_accuracy"]["rows"], Path(arguments.output))
        return
    if arguments.threads is None:
        arguments.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    if arguments.child:
        print(json.dumps(child(arguments)))
        return
    runs = []
    for seed in [int(seed) for seed in arguments.seeds.split(",")]:
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        command = [sys.executable, __file__, "--child", "--seed", str(seed), "--task",
                   arguments.task, "--recipe", arguments.recipe, "--budget",
                   str(arguments.budget), "--eval-every", str(arguments.eval_every),
                   "--threads", str(arguments.threads),
                   *(item for override in arguments.overrides for item in ("--set", override))]
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(arguments.threads)})
        if done.returncode:
            raise SystemExit(f"seed {seed} failed: {done.stderr.strip().splitlines()[-1:]}")
        run = json.loads(done.stdout.strip().splitlines()[-1])
        run["load_before"] = load
        print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
        runs.append(run)
    reached = [run["seconds_to_95"] for run in runs]
    at_60 = [run["accuracy_at_60s"] for run in runs if run["accuracy_at_60s"] is not None]
    recipe = " ".join([arguments.recipe, *arguments.overrides])
    row = {"task": arguments.task, "recipe": recipe,
           "seconds_to_95": reached,
           "seconds_to_95_mean": statistics.mean(reached) if None not in reached else None,
           "accuracy_at_60s": at_60,
           "accuracy_at_60s_mean": statistics.mean(at_60) if at_60 else None,
           "final_accuracy": [run["final"]["accuracy"] for run in runs],
           "final_step": [run["final"]["step"] for run in runs],
           "startup_seconds": [run["startup_seconds"] for run in runs],
           "budget_seconds": arguments.budget, "eval_every": arguments.eval_every,
           "threads": arguments.threads, "seeds": [run["seed"] for run in runs],
           "load_before": [run["load_before"] for run in runs], "runs": runs,
           "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    output = Path(arguments.output)
    path = output / "speed.json"
    record = json.loads(path.read_text()).get("time_to_accuracy", {}) if path.exists() else {}
    rows = [old for old in record.get("rows", []) if old["recipe"] != recipe
            or old["task"] != arguments.task] + [row]
    write(rows, output)


def write(rows: list[dict], output: Path) -> None:
    """The rows into speed.json's ``time_to_accuracy`` key and their section of speed.md."""
    merge_json(output / "speed.json", "time_to_accuracy", {"rows": rows})

    def seconds(value):
        return "not reached" if value is None else f"{value:.0f}"

    lines = [
        "## Time to 95% target accuracy from a cold start "
        "(written by benchmarks/time_to_accuracy.py)", "",
        "Clock: wall seconds from process start (imports, data, model) with the report-only "
        "target-test evaluations (every `eval_every` steps) taken off; a run stops at its "
        "budget. Target accuracy is read for this report only, never for selection.", "",
        "| task | recipe | seconds to 95% (per seed; mean) | accuracy at 60 s % (per seed) | "
        "last accuracy % (step) | startup s | threads | budget s | load before |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['task']} | {r['recipe']} | "
          + " / ".join(seconds(value) for value in r["seconds_to_95"])
          + f"; {seconds(r['seconds_to_95_mean'])} | "
          + " / ".join(f"{100 * value:.1f}" for value in r["accuracy_at_60s"])
          + " | " + " / ".join(f"{100 * a:.1f} ({s})" for a, s in
                               zip(r["final_accuracy"], r["final_step"], strict=True))
          + " | " + " / ".join(f"{value:.0f}" for value in r["startup_seconds"])
          + f" | {r['threads']} | {r['budget_seconds']:.0f} | {'; '.join(r['load_before'])} |"
          for r in rows),
    ]
    merge_markdown(output / "speed.md", "time-to-accuracy", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
