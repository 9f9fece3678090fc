"""The summary table of docs/methods-new.md, from a bench results file: each method's plain and
``+bn+aug`` rows side by side (accuracy by the row's selection rule, mean ± std over seeds, and
the ``last`` / ``im`` label-free rules), plus, for SHOT, its own source stage's final target
accuracy read from the run folders (the model SHOT adapts).

    python benchmarks/methods_summary.py benchmarks/results/methods-embedded.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from tamebias.bench import shown_name


def cell(row: dict | None) -> str:
    if row is None:
        return "–"
    seeds = len(row["per_seed"])
    rules = row.get("rule_accuracy_mean") or {}
    im = f"{rules['im']:.2f}" if "im" in rules else "–"
    return (f"{row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f} ({seeds}) · "
            f"{row['last_accuracy_mean']:.2f} · {im}")


def source_stage_accuracy(row: dict) -> str:
    """SHOT's source model: the target accuracy of its source stage's last evaluation."""
    values = []
    for run in row["runs"]:
        evals = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()
                 if '"event": "eval"' in line]
        source = [e for e in evals if e["stage"] == "source"]
        if source:
            values.append(100 * source[-1]["target_accuracy"])
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def main(path: str) -> None:
    rows = json.loads(Path(path).read_text())["rows"]
    table: dict[str, dict[str, dict]] = {}
    for row in rows:
        name = shown_name(row)
        form = "bn+aug" if name.endswith("+bn+aug") else "plain"
        base = name.removesuffix("+bn+aug")
        table.setdefault(base, {})[form] = row
    print("| method | plain: selected (seeds) · last · im "
          "| +bn+aug: selected (seeds) · last · im |")
    print("|---|---|---|")
    for base in sorted(table, key=lambda n: (n != "source_only", n != "dann", n)):
        forms = table[base]
        print(f"| {base} | {cell(forms.get('plain'))} | {cell(forms.get('bn+aug'))} |")
    for base, forms in table.items():
        if base == "shot":
            print()
            print("SHOT's source stage (final evaluation, before adaptation): plain "
                  f"{source_stage_accuracy(forms['plain']) if 'plain' in forms else '–'}, "
                  f"+bn+aug {source_stage_accuracy(forms['bn+aug']) if 'bn+aug' in forms else '–'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/methods-embedded.json")
