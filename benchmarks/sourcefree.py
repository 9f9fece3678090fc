"""Source-free rows (docs/methods-new.md): SHOT adapts finished source-model runs of the
digits tasks with ``data.source=none``, i.e. it reads no source image, only the source model
and the unlabeled target training images.

The source runs are those ``tamebias bench`` wrote (``SOURCE_RUNS/TASK/RECIPE/seedN``, e.g.
``source_only+bn+aug``); each SHOT run keeps that run's data settings (target, geometry, batch,
subsets), adds weak target views, runs as many adaptation steps as the source run trained and
picks its model by ``im`` (no target label). Existing finished runs are reused; rows compare
the adapted model with its own source model, seed by seed.

    python benchmarks/sourcefree.py --source-runs runs/bench \\
        --tasks mnist-usps,usps-mnist,mnist5k-ucidigits --seeds 0,1,2 \\
        --runs-dir runs/sourcefree --output benchmarks/results/sourcefree.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tamebias.api import fit
from tamebias.rundir import RunDir


def shot_overrides(source_run: Path, seed: int, threads: int) -> list[str]:
    saved = RunDir(source_run).read_config()
    data = saved["data"]
    subset = [f"data.target_subset={data['target_subset']}"] if data["target_subset"] else []
    test = [f"data.target_test={data['target_test']}"] if data["target_test"] else []
    return ["data.source=none", f"data.target={data['target']}", *test, *subset,
            f"data.size={data['size']}", f"data.channels={data['channels']}",
            f"data.batch_size={data['batch_size']}", f"data.subset_seed={data['subset_seed']}",
            "data.augment.target=weak", f"model.backbone={saved['model']['backbone']}",
            f"model.norm={saved['model']['norm']}", "method.name=shot",
            f"method.steps={saved['method']['steps']}", f"init.weights={source_run}",
            "train.selection=im", f"train.seed={seed}", f"train.threads={threads}",
            "train.progress=false", "train.eval_every=500", "train.log_every=100"]


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": 100 * statistics.fmean(values),
            "std": 100 * statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-runs", required=True,
                        help="folder of finished source runs: TASK/RECIPE/seedN")
    parser.add_argument("--recipe", default="source_only+bn+aug")
    parser.add_argument("--tasks", default="mnist-usps,usps-mnist,mnist5k-ucidigits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs-dir", default="runs/sourcefree")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/results/sourcefree.json")
    parser.add_argument("--tabulate-only", action="store_true")
    args = parser.parse_args()
    seeds = [int(value) for value in args.seeds.split(",")]
    rows = []
    for task in args.tasks.split(","):
        source_results, shot_results = [], []
        for seed in seeds:
            source_run = Path(args.source_runs) / task / args.recipe / f"seed{seed}"
            folder = Path(args.runs_dir) / task / "shot-sourcefree" / f"seed{seed}"
            if not RunDir(folder).result.exists():
                if args.tabulate_only:
                    continue
                started = time.perf_counter()
                fit(None, shot_overrides(source_run, seed, args.threads), run_dir=folder)
                print(f"{folder}: {time.perf_counter() - started:.0f} s", flush=True)
            source_results.append(json.loads(RunDir(source_run).result.read_text()))
            shot_results.append(json.loads(RunDir(folder).result.read_text()))
        if not shot_results:
            continue
        source_accuracy = [r["target"]["accuracy"] for r in source_results]
        shot_accuracy = [r["target"]["accuracy"] for r in shot_results]
        rows.append({
            "task": task, "method": "shot (source-free)", "source_recipe": args.recipe,
            "seeds": [r["config"]["train"]["seed"] for r in shot_results],
            "steps": shot_results[0]["steps"], "selection": "im",
            "source_model_accuracy": source_accuracy,
            "source_model_selection": source_results[0]["selection"],
            "accuracy": shot_accuracy,
            "last_rule_accuracy": [r["final_target_accuracy"] for r in shot_results],
            "gain": [a - b for a, b in zip(shot_accuracy, source_accuracy, strict=True)],
            "source_model": summary(source_accuracy),
            "accuracy_summary": summary(shot_accuracy),
            "wall_seconds": [round(r["wall_seconds"]) for r in shot_results],
            "source_images_read": sum(r["protocol"]["source_train"] for r in shot_results),
            "runs": [r["run_dir"] for r in shot_results],
        })
    protocol = {
        "adaptation": "shot defaults (IM + 0.3 x clustering pseudo-labels, Adam 1e-3), encoder "
                      "only, head frozen; data.source=none (no source image read); weak target "
                      "views; as many steps as the source run; evaluation every 500 steps, "
                      "model picked by im (no target label)",
        "source_models": f"{args.recipe} runs of tamebias bench (their own selection rule)",
        "machine": "CPU, one thread per run", "seeds": seeds,
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # rows of other tasks (another --source-runs) stay
        done = {row["task"] for row in rows}
        rows = [row for row in json.loads(path.read_text())["rows"]
                if row["task"] not in done] + rows
    path.write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=1) + "\n")
    lines = ["| task | source model (" + args.recipe + ") | SHOT source-free (im) | per seed | "
             "gain per seed | `last` rule |", "|---|---|---|---|---|---|"]
    for row in rows:
        source, shot = row["source_model"], row["accuracy_summary"]
        lines.append(
            f"| {row['task']} | {source['mean']:.2f} ± {source['std']:.2f}"
            f" | {shot['mean']:.2f} ± {shot['std']:.2f} | "
            + " / ".join(f"{100 * a:.2f}" for a in row["accuracy"]) + " | "
            + " / ".join(f"{100 * g:+.2f}" for g in row["gain"]) + " | "
            + " / ".join(f"{100 * a:.2f}" for a in row["last_rule_accuracy"]) + " |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
