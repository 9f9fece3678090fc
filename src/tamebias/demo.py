"""``tamebias demo``: adaptation on the embedded pair (MNIST-5k -> UCI digits, no download) in
about two minutes of CPU. Source only, the adaptation recipes that fit that budget, and the
oracle, one table with each recipe's gain over source only and the rule that picked its model;
``DEMO/demo.json`` records it for ``tamebias report DEMO``.

The source-only row is ``source_only+bn+aug`` (LeNet with batch norm, weak views of the
source): the same parts as the adaptation rows and the very run ADDA starts from, so a gain is
what adaptation adds, not what batch norm or augmentation add.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .rundir import DEMO_FILE

DEMO_TASK = "mnist5k-ucidigits"
BASELINE = "source_only+bn+aug"
# source only, the adaptation recipes, then the oracle (analysis only: target labels)
DEMO_RECIPES = (BASELINE, "adda+bn+aug+im", "fixmatch+bn+aug", "oracle")
DEMO_STEPS = 400
DEMO_EVALUATIONS = 4  # evaluations per run: what the selection rules choose among
SELECTION_RULES = {
    "source_val": "source validation accuracy (source labels)",
    "im": "information maximization on unlabeled target images",
    "last": "the final model",
    "target_oracle": "target labels (analysis only)",
}


def demo_overrides(steps: int, seed: int) -> list[str]:
    """What the demo sets on top of the task and the recipe (also for its bench rows)."""
    return [f"method.steps={steps}", f"train.seed={seed}",
            f"train.eval_every={max(1, steps // DEMO_EVALUATIONS)}"]


def run_demo(output: Path, steps: int = DEMO_STEPS, seed: int = 0,
             recipes: tuple[str, ...] = DEMO_RECIPES, overrides: list[str] | None = None,
             on_start: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Train every recipe on the demo task into ``output/RECIPE`` (a recipe's required runs are
    the demo's own rows when it has them) and write ``output/demo.json``."""
    from .data.domain import prepare_data
    from .recipe_fit import fit_recipe, recipe_config
    from .recipes import recipe as find_recipe
    from .recipes import required_recipes
    from .report.figures import write_run_report

    start = time.perf_counter()
    settings = [*demo_overrides(steps, seed), *(overrides or [])]
    for recipe in recipes:  # every name and setting checked before anything trains
        recipe_config(DEMO_TASK, recipe, overrides=settings)
    data = prepare_data(recipe_config(DEMO_TASK, recipes[0], overrides=settings).data)
    rows, results = [], {}
    for recipe in recipes:
        locations = {label: output / label for label in required_recipes(recipe)
                     if label in recipes}
        if on_start:
            on_start(recipe, find_recipe(recipe).summary)
        result = fit_recipe(DEMO_TASK, recipe, overrides=settings, run_dir=output / recipe,
                            data=data, locations=locations)
        write_run_report(result.run_dir)
        results[recipe] = result
        rows.append(recipe)
    baseline = results.get(BASELINE)
    table = []
    for recipe in rows:
        result = results[recipe]
        accuracy = 100 * result.accuracy
        table.append({
            "recipe": recipe, "method": result.method, "run_dir": result.run_dir,
            "accuracy": accuracy,
            "gain": None if baseline is None or recipe == BASELINE
            else accuracy - 100 * baseline.accuracy,
            "selection": result.selection, "analysis_only": result.analysis_only,
            "steps": result.steps, "wall_seconds": result.wall_seconds,
        })
    record = {
        "task": DEMO_TASK, "baseline": BASELINE, "steps": steps, "seed": seed,
        "overrides": settings, "rows": table,
        "selection_rules": {row["selection"]: SELECTION_RULES.get(row["selection"], "")
                            for row in table},
        "wall_seconds": time.perf_counter() - start,
        "threads": next(iter(results.values())).machine["torch_threads"],
        "protocol": next(iter(results.values())).protocol,
    }
    (output / DEMO_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record
