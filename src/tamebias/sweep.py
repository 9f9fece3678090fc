"""``tamebias sweep``: grid or random search over a method's hyperparameters and seeds, every
run scored by every unsupervised validator from its evaluation records, and a table of how
well each validator's pick matches the oracle's (target labels: analysis only).

Scoring rule (one for every validator), ``score_at="pick"`` (default): within a run, the
validator picks the evaluation with its highest value among the last evaluated stage's
evaluations (as ``train.selection=NAME`` would); the run's *score* is that value and its
*accuracy* the target test accuracy there. Across runs the validator picks the run with the
highest score. The oracle picks the best target accuracy over every evaluation of every run.
``score_at="last"`` uses every run's final evaluation instead (a pure hyperparameter choice;
the oracle then picks the best final accuracy)."""

from __future__ import annotations

import itertools
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .bench import keep_earlier_run, locked
from .compose import load_config
from .config import ConfigError, RunConfig, parse_override
from .data.domain import prepare_data
from .evaluation.selection import candidates, pick, record_score
from .evaluation.validators import VALIDATORS
from .recipe_fit import fit_or_reuse, required_runs, settings_for, train_required
from .recipes import recipe_overrides
from .records import EvalRecord
from .registry import lookup
from .rundir import SWEEP_FILE, RunBusyError, write_json_atomic, write_text_atomic
from .search import SweepSpec, optimize
from .tasks import TASKS
from .training.trainer import ON_EVALUATION, TrainingDiverged


def parse_grid(specs: list[str]) -> list[tuple[str, list[Any]]]:
    """``key=v1,v2,...`` (values read as JSON where they parse, else strings)."""
    grid = []
    for spec in specs:
        if "=" not in spec or not spec.split("=", 1)[1]:
            raise ConfigError(f"--grid {spec!r} must look like section.key=value1,value2,...")
        key, raw = spec.split("=", 1)
        values = [parse_override(f"{key}={item}")[1] for item in raw.split(",")]
        grid.append((key.strip(), values))
    keys = [key for key, _ in grid]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--grid names a key twice: {keys}")
    return grid


def configurations(grid: list[tuple[str, list[Any]]], sample: int | None = None,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Every combination of the grid, or ``sample`` distinct ones drawn at random."""
    combos = [dict(zip([k for k, _ in grid], values, strict=True))
              for values in itertools.product(*(v for _, v in grid))]
    if sample is not None and sample < len(combos):
        combos = random.Random(seed).sample(combos, sample)
    return combos


def _slug(params: dict[str, Any]) -> str:
    text = ",".join(f"{k.split('.')[-1]}={v}" for k, v in params.items()) or "defaults"
    return "".join(c if c.isalnum() or c in "=,.-_" else "_" for c in text)


def chosen_record(history: list[EvalRecord], validator: str, score_at: str = "pick"
                  ) -> EvalRecord | None:
    """The evaluation a validator is judged at in one run (``pick`` or ``last``)."""
    if score_at == "last":
        final = candidates(history)[-1:] or [None]
        return final[0] if final[0] is not None and record_score(final[0], validator) is not None \
            else None
    if score_at != "pick":
        raise ValueError(f"score_at must be pick or last, got {score_at!r}")
    return pick(history, validator)


def score_runs(runs: list[dict[str, Any]], validators: list[str] | None = None,
               score_at: str = "pick") -> list[dict[str, Any]]:
    """One row per validator from runs (``{"history": [...]}``): Spearman rank correlation of
    the runs' validator scores with their accuracies, the picked run's accuracy, the oracle's
    best accuracy and the gap, in accuracy points (%)."""
    from scipy.stats import spearmanr

    pool = ([r for run in runs for r in candidates(run["history"])] if score_at == "pick"
            else [run["history"][-1] for run in runs if run["history"]])
    oracle = max((r["target_accuracy"] for r in pool), default=None)
    rows = []
    for validator in validators or list(VALIDATORS):
        scored = []
        for run in runs:
            chosen = chosen_record(run["history"], validator, score_at)
            if chosen is not None:
                scored.append((record_score(chosen, validator), chosen["target_accuracy"], run))
        if not scored or oracle is None:
            continue
        scores, accuracies = [s for s, _, _ in scored], [a for _, a, _ in scored]
        correlation = None
        if len(scored) > 2 and len(set(scores)) > 1 and len(set(accuracies)) > 1:
            correlation = float(spearmanr(scores, accuracies).statistic)
        best_score = max(scores)
        picked = [a for s, a, _ in scored if s == best_score][-1]
        picked_run = [r for s, _, r in scored if s == best_score][-1]
        rows.append({
            "validator": validator, "score_at": score_at, "runs": len(scored),
            "rank_correlation": correlation,
            "picked_accuracy": 100 * picked, "oracle_best_accuracy": 100 * oracle,
            "pick_vs_oracle_gap": 100 * (oracle - picked),
            "picked_run": picked_run.get("run_dir"), "picked_params": picked_run.get("params"),
            "mean_run_accuracy": 100 * statistics.fmean(accuracies),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Validators: picking a model without target labels",
        "",
        "Written by `tamebias sweep` from run records; do not edit by hand. Every run of a "
        "sweep is judged by each validator at one evaluation (`scored at`: `pick` = the "
        "evaluation the validator itself picks within the run, `last` = the final one); the "
        "validator then picks the run with the best score. `rank corr.` is Spearman's rank "
        "correlation between the runs' scores and their target accuracies there; `picked` is "
        "the target test accuracy (%) of the validator's pick; `oracle-best` the best target "
        "accuracy among the same candidate evaluations (needs target labels: analysis only); "
        "`gap` their difference in points; `mean` the runs' mean accuracy there (what a random "
        "run would give).",
        "",
        "| task | method | validator | scored at | runs | rank corr. | picked | oracle-best | gap "
        "| mean | steps | grid |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["task"], r["method"], r["pick_vs_oracle_gap"])):
        correlation = ("n/a" if row["rank_correlation"] is None
                       else f"{row['rank_correlation']:+.2f}")
        grid = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in row["grid"].items())
        lines.append(
            f"| {row['task']} | {row['method']} | {row['validator']} | "
            f"{row.get('score_at', 'pick')} | {row['runs']} | "
            f"{correlation} | {row['picked_accuracy']:.2f} | {row['oracle_best_accuracy']:.2f} "
            f"| {row['pick_vs_oracle_gap']:.2f} | {row['mean_run_accuracy']:.2f} | "
            f"{row['steps']} | {grid}; seeds {row['seeds']} |")
    return "\n".join(lines) + "\n"


def _key(row: dict[str, Any]) -> tuple:
    return row["task"], row["method"], row["validator"], row.get("score_at", "pick")


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Merge rows into ``path`` (JSON; key: task, method, validator) and write ``.md`` beside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent / f".{path.stem}.lock"):
        existing = json.loads(path.read_text())["rows"] if path.exists() else []
        merged = {_key(r): r for r in existing}
        merged.update({_key(r): r for r in rows})
        ordered = list(merged.values())
        write_json_atomic(path, {"rows": ordered})
        write_text_atomic(path.with_suffix(".md"), markdown_table(ordered))


def _keep(run_dir: Path, config: RunConfig) -> None:
    """A run of another config in a sweep's folder is kept (renamed), never deleted."""
    keep_earlier_run(run_dir, config.to_dict(), replace_runs=True)


def sweep_plan(spec: Any) -> tuple[list[dict[str, Any]], list[tuple[str, list[Any]]]]:
    """The configurations a grid sweep trains (in order) and the grid's keys and values."""
    parsed = parse_grid(spec.grid)
    return configurations(parsed, spec.sample, spec.search_seed), parsed


def _config_maker(spec: Any, seed: int) -> Callable[..., RunConfig]:
    base = lookup(TASKS, spec.task, "task").overrides() if spec.task is not None else []

    def config_of(name: str, places: dict[str, Path], params: dict[str, Any] | None = None
                  ) -> RunConfig:
        mine = name == spec.method
        return load_config(None, [
            *base, *recipe_overrides(name, places), f"train.seed={seed}",
            "train.progress=false",
            *(spec.overrides if mine else settings_for(name, spec.overrides)),
            *(f"{k}={json.dumps(v)}" for k, v in (params or {}).items())])

    return config_of


def train_trial(spec: Any, index: int, params: dict[str, Any], cache: dict[str, Any],
                report: Callable[[int, EvalRecord], None] | None = None,
                on_run: Callable[[dict[str, Any]], None] | None = None,
                ) -> list[dict[str, Any]]:
    """Train (or reuse) configuration ``index`` (``params``) once per seed into
    ``SWEEP_DIR/NN-PARAMS-seedS``; ``report(position, record)`` hears every evaluation (a
    pruner may stop the trial there). ``cache`` keeps the decoded data between trials."""
    sweep_dir = Path(spec.sweep_dir)
    runs = []
    for position, seed in enumerate(spec.seeds):
        config_of = _config_maker(spec, seed)
        # the runs a recipe starts from take the sweep's settings, not the grid's
        # (the grid searches the recipe's own hyperparameters): one per seed
        places = {name: sweep_dir / "requires" / name / f"seed{seed}"
                  for name in required_runs(spec.method, spec.overrides)}
        config = config_of(spec.method, places, params)
        if "data" not in cache:
            cache["data"] = prepare_data(config.data)  # decoded once per process
        data = cache["data"]
        run_dir = sweep_dir / f"{index:02d}-{_slug(params)}-seed{seed}"
        listener = (lambda record, position=position: report(position, record)) \
            if report is not None else None
        token = ON_EVALUATION.set(listener)
        try:
            train_required(list(places), config_of, places.__getitem__, data, config,
                           _keep)
            result = _fit_waiting(config, run_dir, data)
        except TrainingDiverged as error:  # a bad configuration is a result, not a crash
            run = {"run_dir": str(run_dir), "params": params, "seed": seed,
                   "diverged": str(error), "history": [], "steps": 0,
                   "final_target_accuracy": None, "score": None}
        else:
            chosen = chosen_record(result.history, spec.objective, spec.score_at)
            run = {"run_dir": str(run_dir), "params": params, "seed": seed,
                   "history": result.history, "steps": result.steps,
                   "final_target_accuracy": result.final_target_accuracy,
                   "score": record_score(chosen, spec.objective) if chosen else None}
        finally:
            ON_EVALUATION.reset(token)
        runs.append(run)
        if on_run:
            on_run(run)
    return runs


def _fit_waiting(config: RunConfig, run_dir: Path, data: Any) -> Any:
    """``fit_or_reuse``; while another worker trains the same run folder (a configuration
    taken twice), wait for it and reuse its result."""
    while True:
        try:
            return fit_or_reuse(config, run_dir, data, _keep)[0]
        except RunBusyError:
            time.sleep(2.0)


def run_sweep(
    method: str, grid: list[str], seeds: list[int], sweep_dir: str | Path,
    task: str | None = None, overrides: list[str] | None = None, sample: int | None = None,
    search_seed: int = 0, results: str | Path | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None, score_at: str = "pick",
    workers: int = 1, sampler: str = "grid", trials: int | None = None,
    storage: str | None = None, objective: str = "source_val", prune: bool = False,
) -> dict[str, Any]:
    """Train every configuration x seed through an Optuna study (``search.py``: grid or TPE,
    ``workers`` processes, resumable from ``storage``; finished runs of the same config are
    reused; a run that diverges is recorded with ``diverged`` and left out of the scores),
    score them with every validator, write ``SWEEP_DIR/sweep.json`` and the rows to
    ``results`` (default ``SWEEP_DIR/validators.json``; merged by task, method, validator,
    score_at). ``method`` is a method or a recipe; the runs a recipe starts from are trained
    first (or reused) in ``SWEEP_DIR/requires/RECIPE/seedSEED`` with the sweep's settings,
    not the grid's."""
    if objective not in VALIDATORS:
        raise ConfigError(f"--objective must be a label-free validator: "
                          f"{', '.join(VALIDATORS)}; got {objective!r}")
    sweep_dir = Path(sweep_dir)
    spec = SweepSpec(method, list(grid), list(seeds), str(sweep_dir), task,
                     list(overrides or []), sample, search_seed, score_at, sampler, trials,
                     objective, prune)
    parsed = parse_grid(grid)
    runs, study = optimize(spec, train_trial, sweep_plan(spec), storage, workers, on_run)
    task_name = task or _pair_name(spec)
    finished = [run for run in runs if "diverged" not in run]
    if not finished:
        raise TrainingDiverged(f"every run of the sweep diverged or was pruned; see {sweep_dir}")
    search = (f"random {sample} of the grid (seed {search_seed})" if sample else "full grid") \
        if sampler == "grid" else f"tpe {trials} trials (seed {search_seed})"
    rows = [{"task": task_name, "method": method, **row, "steps": finished[0]["steps"],
             "diverged_runs": len(runs) - len(finished),
             "seeds": seeds, "grid": {k: v for k, v in parsed}, "search": search,
             "tamebias_version": __version__} for row in score_runs(finished, score_at=score_at)]
    record = {"task": task_name, "method": method, "grid": {k: v for k, v in parsed},
              "seeds": seeds, "runs": runs, "rows": rows, "study": study}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sweep_dir / SWEEP_FILE, record)
    write_results(Path(results) if results else sweep_dir / "validators.json", rows)
    return record


def _pair_name(spec: Any) -> str:
    config = _config_maker(spec, spec.seeds[0])(spec.method, {
        name: Path(spec.sweep_dir) for name in required_runs(spec.method, spec.overrides)})
    return f"{config.data.source}->{config.data.target}"
