"""The ablation table of docs/colour-shift.md, written from run records (never typed by hand).

    python benchmarks/colour_ablations.py "LABEL=RUN_DIR[,RUN_DIR...]" ...

One row per label: target accuracy (%) of the model picked by the run's own selection rule,
per seed and mean, the final evaluation (`last`), the best evaluation seen (target labels:
analysis only), and the training log's last domain accuracy and class loss (DANN's critic on
the training batches; blank for methods without a critic).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def read_run(run_dir: Path) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_logs = [entry for entry in logs if "event" not in entry]
    last_log = train_logs[-1] if train_logs else {}
    config = result["config"]
    return {
        "seed": config["train"]["seed"],
        "selected": 100 * result["target"]["accuracy"],
        "last": 100 * result["final_target_accuracy"],
        "best": 100 * result["oracle_best_target_accuracy"],
        "selection": result["selection"],
        "steps": result["steps"],
        "input": result["protocol"]["input"],
        "task": result["task"],
        "domain_accuracy": last_log.get("domain_accuracy"),
        "class_loss": last_log.get("class_loss", last_log.get("loss")),
    }


def mean(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(groups: list[tuple[str, list[Path]]]) -> str:
    lines = ["| condition | task | input | steps | selection | accuracy | per seed | `last` | "
             "best seen *(analysis)* | final domain acc. | final class loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, run_dirs in groups:
        runs = sorted((read_run(path) for path in run_dirs), key=lambda run: run["seed"])
        first = runs[0]
        domain = [run["domain_accuracy"] for run in runs if run["domain_accuracy"] is not None]
        loss = [run["class_loss"] for run in runs if run["class_loss"] is not None]
        domain_text = f"{statistics.fmean(domain):.3f}" if domain else ""
        loss_text = f"{statistics.fmean(loss):.3f}" if loss else ""
        per_seed = " / ".join(f"{run['selected']:.2f} (s{run['seed']})" for run in runs)
        lines.append(
            f"| {label} | {first['task']} | {first['input']} | {first['steps']} | "
            f"{first['selection']} | {mean([run['selected'] for run in runs])} | {per_seed} | "
            f"{mean([run['last'] for run in runs])} | {mean([run['best'] for run in runs])} | "
            f"{domain_text} | {loss_text} |")
    return "\n".join(lines) + "\n"


def main(arguments: list[str]) -> None:
    groups = []
    for argument in arguments:
        label, _, paths = argument.partition("=")
        groups.append((label, [Path(path) for path in paths.split(",")]))
    sys.stdout.write(table(groups))


if __name__ == "__main__":
    main(sys.argv[1:])
