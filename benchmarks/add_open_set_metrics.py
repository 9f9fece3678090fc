"""Add open-set metrics that newer versions record (AUROC) to finished category-shift runs.

Re-evaluates each run's selected model on its target test split and writes the metrics its
``result.json`` lacks into ``target.open_set``. It first checks that the metrics the record
already holds come out the same (so the checkpoint is the model the record describes) and
refuses to touch a record where they do not. Nothing is trained; ``tamebias bench`` then
shows the new columns for those runs.

    python benchmarks/add_open_set_metrics.py runs/bench/categoryshift/*/*/seed*
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from tamebias.api import evaluate_run


def update(run_dir: Path) -> str:
    record_path = run_dir / "result.json"
    if not record_path.exists():
        return "no result.json (unfinished run): skipped"
    record = json.loads(record_path.read_text())
    stored = record["target"].get("open_set")
    if not stored:
        return "not a category-shift run: skipped"
    fresh = evaluate_run(run_dir).open_set
    missing = sorted(set(fresh) - set(stored))
    if not missing:
        return "complete"
    for key, value in stored.items():
        if isinstance(value, float) and not math.isclose(value, fresh[key], abs_tol=1e-9):
            raise SystemExit(f"{run_dir}: {key} re-evaluates to {fresh[key]} but the record "
                             f"says {value}; not a checkpoint of this record, left alone")
    stored.update({key: fresh[key] for key in missing})
    record_path.write_text(json.dumps(record, indent=2))
    return "added " + ", ".join(f"{key}={fresh[key]}" for key in missing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    for run_dir in parser.parse_args().runs:
        print(f"{run_dir}: {update(run_dir)}")


if __name__ == "__main__":
    main()
