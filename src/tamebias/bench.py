"""The benchmark runner: tasks x methods x seeds -> rows built from run records, merged into
``benchmarks/results/<suite>.json`` with a Markdown table beside it."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import __version__
from .api import RunResult, run_identity
from .compose import load_config
from .config import RunConfig
from .data.domain import prepare_data
from .evaluation.openset import METRICS as OPEN_SET_METRICS
from .evaluation.selection import rule_accuracies
from .methods import METHODS
from .recipe_fit import fit_or_reuse, required_runs, settings_for, train_required
from .recipes import declare, declared, file_recipes, recipe, recipe_overrides
from .registry import lookup
from .rundir import (
    LOCK_FILE,
    RunBusyError,
    RunDir,
    fsync_folder,
    hold_run,
    read_json,
    warn,
    write_json_atomic,
    write_text_atomic,
)
from .tasks import TASKS


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def augmentation_label(config: dict[str, Any]) -> str:
    augment = config["data"].get("augment") or {}
    views = {name: augment.get(name, "none") for name in ("source", "target")}
    if all(view == "none" for view in views.values()):
        return "none"
    return (f"{augment.get('policy', 'auto')} policy: source {views['source']}, "
            f"target {views['target']}")


def row_from_runs(task: str, results: list[RunResult], label: str | None = None,
                  variant_overrides: list[str] | None = None) -> dict[str, Any]:
    """One results row from the runs of one task x method (one run per seed); ``label``
    names a variant (a method plus ``variant_overrides``)."""
    first = results[0]
    accuracies = [100 * r.accuracy for r in results]
    config = first.config
    protocol = first.protocol
    return {
        "task": task,
        "protocol": {
            "source": protocol["source"], "target": protocol["target"],
            "subset": protocol["subset"], "input": protocol["input"],
            "source_train": protocol["source_train"], "source_val": protocol["source_val"],
            "target_train": protocol["target_train"], "target_test": protocol["target_test"],
            "augmentation": augmentation_label(config),
            "batch_size": config["data"]["batch_size"],
            **({"category_shift": protocol["category_shift"]}
               if "category_shift" in protocol else {}),
            **({"target_shots": protocol["ssda"]["shots"],
                "target_val_shots": protocol["ssda"]["validation_shots"]}
               if "ssda" in protocol else {}),
        },
        "method": label or first.method,
        "norm": config["model"].get("norm"),
        "variant_overrides": list(variant_overrides or []),
        "backbone": config["model"]["backbone"],
        "steps": first.steps,
        "seeds": [r.config["train"]["seed"] for r in results],
        "selection": first.selection,
        # target labels reached a run (its method, its selection, or a run it was built from)
        "analysis_only": any(r.analysis_only for r in results),
        "built_from": sorted({parent["run"] for r in results
                              for parent in (r.lineage or {}).get("parents", [])}),
        "accuracy_mean": statistics.fmean(accuracies),
        "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "per_seed": accuracies,
        # the `last` rule needs no extra run: the final evaluation is in every run record
        "last_accuracy_mean": statistics.fmean(
            100 * (r.final_target_accuracy or 0.0) for r in results),
        "last_per_seed": [100 * (r.final_target_accuracy or 0.0) for r in results],
        # every other label-free rule, from the validators each evaluation recorded
        "rule_accuracy_mean": rule_means(results),
        "mean_class_accuracy_mean": statistics.fmean(
            100 * r.target["mean_class_accuracy"] for r in results),
        "oracle_best_accuracy_mean": statistics.fmean(
            100 * (r.oracle_best_target_accuracy or 0.0) for r in results),
        "wall_seconds": sum(r.wall_seconds for r in results),
        # training seconds per stage, mean over seeds (runs written before it: empty)
        "stage_seconds_mean": {
            name: statistics.fmean(r.stage_seconds[name] for r in results)
            for name in first.stage_seconds if all(name in r.stage_seconds for r in results)},
        "train_images_per_second": statistics.fmean(
            r.train_images_per_second for r in results),
        "machine": first.machine,
        "tamebias_version": __version__,
        "method_config": config["method"],
        "runs": [r.run_dir for r in results],
        **category_shift_fields(results),
        **ssda_fields(protocol),
    }


def ssda_fields(protocol: dict[str, Any]) -> dict[str, Any]:
    """Semi-supervised rows: the setting, shots and validation shots per class."""
    ssda = protocol.get("ssda")
    if not ssda:
        return {}
    return {"setting": "ssda", "shots": ssda["shots"],
            "validation_shots": ssda["validation_shots"]}


def rule_means(results: list[RunResult]) -> dict[str, float]:
    """Mean target accuracy (%) over seeds of the evaluation each validator picks, for the
    validators every run recorded (older runs recorded only ``source_val``)."""
    per_run = [rule_accuracies(r.history) for r in results]
    shared = set.intersection(*(set(rules) for rules in per_run)) if per_run else set()
    return {name: statistics.fmean(100 * rules[name] for rules in per_run)
            for name in sorted(shared)}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present and len(present) == len(values) else None


def category_shift_fields(results: list[RunResult]) -> dict[str, Any]:
    """The setting, class split, rejection rule and open-set means (%) of category-shift runs;
    nothing for closed-set runs on identical classes."""
    shift = results[0].protocol.get("category_shift")
    if not shift:
        return {}
    fields: dict[str, Any] = {
        "setting": shift["setting"],
        "classes": {key: shift[key] for key in ("preset", "shared", "source_private",
                                                 "target_private")},
        "rejection": results[0].target["open_set"]["rejection"],
    }
    for key in OPEN_SET_METRICS:
        # %, except AUROC (a fraction); records written before AUROC was recorded lack it
        scale = 1 if key == "auroc" else 100
        values = [r.target["open_set"].get(key) for r in results]
        per_seed = [None if v is None else scale * v for v in values]
        fields[f"{key}_mean"] = _mean(per_seed)
        fields[f"{key}_per_seed"] = per_seed
        # the `last` rule: the final evaluation of every run (no target labels used)
        last = [r.history[-1].get(f"target_{key}") if r.history else None for r in results]
        fields[f"last_{key}_mean"] = _mean([None if v is None else scale * v for v in last])
    return fields


def category_shift_table(suite: str, rows: list[dict[str, Any]]) -> str:
    """The Markdown table of a category-shift suite."""

    def show(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    lines = [
        f"# Results: {suite}",
        "",
        "Written by `tamebias bench` from run records; do not edit by hand. Target test split, "
        "%, mean over seeds, model picked by `selection` (no target labels). A sample whose "
        "`rejection` score passes the threshold is answered *unknown*. `known` is the mean "
        "per-class accuracy over shared classes (rejections count as errors), `unknown` the "
        "recall of target-private samples, `H` their harmonic mean, `per-class` DANCE's mean "
        "over shared classes plus *unknown* as one class. `closed acc` is plain argmax "
        "accuracy (no rejection; unknown samples always wrong): the number DANCE reports in "
        "the closed and partial settings, where the target has no unknowns. `AUROC` is the "
        "area under the ROC curve of the rejection score for unknown vs known target samples: "
        "threshold-free (0.5 = chance), it separates a score that ranks unknowns well but "
        "misses the fixed threshold from one that cannot tell them apart. `H (last)` is the "
        "final model.",
        "",
        "| task | setting | method | steps | selection | rejection | H | per-class | known | "
        "unknown | AUROC | closed acc | H per seed | H (last) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(("closed", "partial", "open-set", "open-partial"))}
    for row in sorted(rows, key=lambda r: (r["protocol"]["source"], order.get(
            r.get("setting"), 9), r["method"])):
        rule = row.get("rejection") or {}
        per_seed = " / ".join(show(v) for v in row.get("h_score_per_seed", [])
                              if v is not None)
        lines.append(
            f"| {row['task']} | {row.get('setting', 'closed')} | {row['method']} | "
            f"{row['steps']} | {row['selection']} | "
            f"{rule.get('kind', '')} {show(rule.get('threshold'))} | "
            f"{show(row.get('h_score_mean'))} | {show(row.get('per_class_mean_mean'))} | "
            f"{show(row.get('known_accuracy_mean'))} | "
            f"{show(row.get('unknown_recall_mean'))} | "
            f"{'' if row.get('auroc_mean') is None else format(row['auroc_mean'], '.3f')} | "
            f"{row['accuracy_mean']:.2f} | "
            f"{per_seed} | {show(row.get('last_h_score_mean'))} | "
            f"{row['wall_seconds']:.0f} |"
        )
    lines += ["", "## Class splits", ""]
    seen = set()
    for row in sorted(rows, key=lambda r: r["task"]):
        if row["task"] in seen or "classes" not in row:
            continue
        seen.add(row["task"])
        classes, protocol = row["classes"], row["protocol"]
        lines.append(
            f"- **{row['task']}** ({row['setting']}, preset {classes['preset']}): "
            f"shared {', '.join(classes['shared'])}; source-private "
            f"{', '.join(classes['source_private']) or 'none'}; target-private (unknown) "
            f"{', '.join(classes['target_private']) or 'none'}. {protocol['source']} -> "
            f"{protocol['target']}; source train/val {protocol['source_train']}/"
            f"{protocol['source_val']}, target train {protocol['target_train']}, target test "
            f"{protocol['target_test']}; input {protocol['input']}; batch "
            f"{protocol['batch_size']}."
        )
    return "\n".join(lines) + "\n"


def shown_name(row: dict[str, Any]) -> str:
    """A row's label in tables: a declared recipe by its name; a plain method run with an MCC
    term, batch norm or augmented views through ``--set`` that its own default form does not
    have (``Method.part_defaults``) reads as ``method+mcc+bn+aug``, never as its plain row."""
    label = row["method"]
    if label not in METHODS:  # a recipe (registered, or an experiment of a recipe file)
        return label
    defaults = METHODS[label].part_defaults if label in METHODS else {}
    mcc = (row.get("method_config") or {}).get("mcc") or {}
    views = any(key.startswith("data.augment.") for key in defaults)
    return (label + ("+mcc" if label != "mcc" and mcc.get("weight") else "")
            + ("+bn" if row.get("norm") == "bn" and defaults.get("model.norm") != "bn" else "")
            + ("+aug" if row["protocol"].get("augmentation", "none") != "none" and not views
               else ""))


def row_key(row: dict[str, Any]) -> tuple:
    # by the name the table shows: dann and dann with an MCC term are two rows
    return (row["task"], shown_name(row), row["backbone"], row["steps"], row["selection"],
            json.dumps(row["protocol"], sort_keys=True))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results JSON, or an error naming the file when it is torn."""
    values = read_json(path, "restore it from version control, or delete it and run the "
                       "bench again (rows are rebuilt from the run folders)")
    if not isinstance(values, dict) or not isinstance(values.get("rows"), list):
        raise ValueError(f"{path} holds no 'rows' list; restore it or delete it")
    return values["rows"]


def merge_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    existing = read_rows(path) if path.exists() else []
    merged = {row_key(row): row for row in existing}
    for row in rows:
        merged[row_key(row)] = row
    return list(merged.values())


def markdown_table(suite: str, rows: list[dict[str, Any]]) -> str:
    if any(row.get("setting", "ssda") != "ssda" for row in rows):
        return category_shift_table(suite, rows)
    lines = [
        f"# Results: {suite}",
        "",
        "Written by `tamebias bench` from run records; do not edit by hand. Accuracy is on the "
        "target test split, %, mean ± sample std over seeds, of the model picked by `selection` "
        "(never target labels, except rows marked *analysis*). `oracle-best` is the best target "
        "accuracy seen at any evaluation (needs target labels: analysis only). `published` is "
        "the paper's number on the same task (different budgets and networks: see "
        "benchmarks/README.md). `last rule` is the accuracy of the final model, the other "
        "selection rule that needs no target labels. `source_val` / `im` rule: the accuracy of the "
        "evaluation that rule picks within each run (source validation accuracy; information "
        "maximization on unlabeled target images), read from the run records; blank where "
        "the runs predate the recorded validators.",
        "",
        "| task | method | backbone | input | steps | selection | accuracy | per seed | "
        "published | `last` rule | `source_val` / `im` rule | oracle-best | img/s | wall s | "
        "machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["task"], r["analysis_only"], r["method"])):
        machine = row["machine"]
        where = machine.get("gpu") or f"cpu x{machine['torch_threads']}"
        method = shown_name(row) + (" *(analysis)*" if row["analysis_only"] else "")
        task = TASKS.get(row["task"])
        # a recipe row shows its paper method's published number (the paper's own setting)
        shown_as = getattr(declared(row["method"]), "published_as", None) or row["method"]
        published = "" if task is None else task.published.get(shown_as, "")
        if "+mcc" in method:  # another paper's loss on top: not the paper's own setting
            published = ""
        last = f"{row['last_accuracy_mean']:.2f}" if "last_accuracy_mean" in row else ""
        rules = row.get("rule_accuracy_mean") or {}
        other = (" / ".join(f"{rules[name]:.2f}" if name in rules else "–"
                            for name in ("source_val", "im")) if "im" in rules else "")
        lines.append(
            f"| {row['task']} | {method} | {row['backbone']} | {row['protocol']['input']} | "
            f"{row['steps']} | {row['selection']} | "
            f"{row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f} | "
            f"{' / '.join(f'{a:.2f}' for a in row['per_seed'])} | {published} | {last} | {other} | "
            f"{row['oracle_best_accuracy_mean']:.2f} | {row['train_images_per_second']:.0f} | "
            f"{row['wall_seconds']:.0f} | {where} |"
        )
    lines += ["", "## Protocols", ""]
    seen = set()
    for row in sorted(rows, key=lambda r: r["task"]):
        if row["task"] in seen:
            continue
        seen.add(row["task"])
        protocol = row["protocol"]
        lines.append(
            f"- **{row['task']}**: {protocol['source']} -> {protocol['target']}; "
            f"{protocol['subset']}; source train/val {protocol['source_train']}/"
            f"{protocol['source_val']}, target train {protocol['target_train']} (unlabeled), "
            f"target test {protocol['target_test']}; input {protocol['input']}; "
            f"augmentation {protocol['augmentation']}; batch {protocol['batch_size']}"
            + (f"; {protocol['target_shots']} labeled target image(s) per class, "
               f"{protocol['target_val_shots']} per class for validation"
               if "target_shots" in protocol else "") + "."
        )
    return "\n".join(lines) + "\n"


def rewrite_table(suite: str, results_dir: str | Path = "benchmarks/results") -> Path:
    """Regenerate ``<suite>.md`` from the rows in ``<suite>.json``."""
    results_dir = Path(results_dir)
    rows = read_rows(results_dir / f"{suite}.json")
    path = results_dir / f"{suite}.md"
    write_text_atomic(path, markdown_table(suite, rows))
    return path


def run_bench(
    suite: str, tasks: list[str], methods: list[str], seeds: list[int],
    overrides: list[str] | None = None, results_dir: str | Path = "benchmarks/results",
    runs_dir: str | Path = "runs/bench",
    on_row: Callable[[dict[str, Any]], None] | None = None, replace_runs: bool = False,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Run every task x method x seed, write rows as each task x method finishes. A run folder
    holding a run of another config is never deleted: the bench stops, or with
    ``replace_runs`` moves it aside (:func:`keep_earlier_run`). ``workers`` > 1 trains that
    many rows at once in worker processes (a run two rows start from is trained once: the
    second waits for it and reuses it)."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    for task_name in tasks:
        lookup(TASKS, task_name, "task")  # an unknown name fails before any training
    jobs = [(suite, task_name, label, seeds, overrides, str(results_dir), str(runs_dir),
             replace_runs, workers > 1) for task_name in tasks for label in methods]
    _DATA.clear()
    rows = []

    def finish(row: dict[str, Any]) -> None:
        rows.append(row)
        json_path = results_dir / f"{suite}.json"
        with locked(results_dir / f".{suite}.lock"):  # several bench processes may share
            merged = merge_rows(json_path, [row])
            write_json_atomic(json_path, {"suite": suite, "rows": merged})
            write_text_atomic(results_dir / f"{suite}.md", markdown_table(suite, merged))
        if on_row:
            on_row(row)

    if workers == 1:
        for job in jobs:
            finish(bench_row(*job))
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # workers are spawned: they get the recipes this process read from a file
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=declare, initargs=(file_recipes(),)) as pool:
        for future in as_completed([pool.submit(bench_row, *job) for job in jobs]):
            finish(future.result())
    return rows


_DATA: dict[str, Any] = {}  # the last task's decoded data, kept for its next rows


def bench_row(suite: str, task_name: str, label: str, seeds: list[int],
              overrides: list[str] | None, results_dir: str, runs_dir: str,
              replace_runs: bool, wait: bool = False) -> dict[str, Any]:
    """Train (or reuse) the runs of one task x method, one per seed; return its row. With
    ``wait``, a run folder another worker trains in is waited for, then reused."""
    task = lookup(TASKS, task_name, "task")
    chosen = recipe(label)
    variant_overrides = [*chosen.overrides, *(
        f"init.weights=<{need.recipe} run>:{','.join(need.modules)}"
        for need in chosen.requires)]
    results = []
    for seed in seeds:
        # your overrides may name {task}, {seed}, {suite} and {runs}, e.g. a run of
        # another row as init.weights
        fields = {"task": task_name, "seed": seed, "suite": suite, "runs": str(runs_dir)}

        settings = [o.format(**fields) for o in overrides or []]

        def config_of(name: str, places: dict[str, Path], seed: int = seed,
                      settings: list[str] = settings) -> RunConfig:
            return load_config(None, [
                *task.overrides(), f"train.seed={seed}", "train.progress=false",
                *recipe_overrides(name, places),
                *(settings if name == label else settings_for(name, settings)),
            ])

        def folder_of(name: str, seed: int = seed) -> Path:
            return Path(runs_dir) / suite / task_name / name / f"seed{seed}"

        def keep(run_dir: Path, config: RunConfig) -> None:
            keep_earlier_run(run_dir, config.to_dict(), replace_runs, Path(results_dir),
                             suite)

        places = {name: folder_of(name) for name in required_runs(label, settings)}
        config = config_of(label, places)
        if task_name not in _DATA:
            _DATA.clear()
            _DATA[task_name] = prepare_data(config.data)  # decoded once per task
        data = _DATA[task_name]
        while True:  # another worker trains a run this row needs: wait, then reuse it
            try:
                train_required(list(places), config_of, folder_of, data, config, keep)
                results.append(fit_or_reuse(config, folder_of(label), data, keep)[0])
                break
            except RunBusyError:
                if not wait:
                    raise
                time.sleep(2.0)
    return row_from_runs(task_name, results, label, variant_overrides)


def config_changes(earlier: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted settings whose values differ between two configs (as dicts)."""
    changes = []
    for key in sorted(set(earlier) | set(now)):
        old, new = earlier.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key} {old!r} -> {new!r}")
    return changes


def changed_settings(earlier: dict[str, Any], now: dict[str, Any]) -> str:
    """The settings that differ between two configs, the first four named, for a refusal
    ("" when none differs)."""
    changes = config_changes(earlier, now)
    more = f"; and {len(changes) - 4} more" if len(changes) > 4 else ""
    return "; ".join(changes[:4]) + more


def keep_earlier_run(run_dir: Path, config: dict[str, Any], replace_runs: bool,
                     results_dir: Path | None = None, suite: str | None = None) -> None:
    """Never lose a run: when ``run_dir`` holds a run of another config, refuse (naming the
    flag), or with ``replace_runs`` rename it to ``<seed>.<config hash>`` and point the rows
    of the results JSON that cite it at the new name."""
    saved = RunDir(run_dir).config
    if not saved.exists():
        return
    earlier = read_json(saved, f"move {run_dir} away and run the bench again")
    if run_identity(earlier) == run_identity(config):
        return
    shown = changed_settings(json.loads(run_identity(earlier)), json.loads(run_identity(config)))
    if not replace_runs:
        raise ValueError(
            f"{run_dir} holds a run of another config ({shown}); nothing was deleted. Pass "
            "--replace-runs to keep it as a folder named by its config hash and train the new "
            "config in its place, or choose another --runs-dir")
    digest = hashlib.sha256(run_identity(earlier).encode()).hexdigest()[:10]
    kept = run_dir.with_name(f"{run_dir.name}.{digest}")
    if kept.exists():
        raise ValueError(f"{run_dir} holds a run of another config but {kept} exists too; "
                         "move one of them away")
    with hold_run(run_dir):  # not while another process trains in it
        os.replace(run_dir, kept)
    (kept / LOCK_FILE).unlink(missing_ok=True)
    fsync_folder(run_dir.parent)
    json_path = Path(results_dir or run_dir) / f"{suite}.json"
    if results_dir is not None and json_path.exists():
        with locked(results_dir / f".{suite}.lock"):
            rows = read_rows(json_path)
            for row in rows:
                row["runs"] = [str(kept) if Path(run) == run_dir else run
                               for run in row.get("runs", [])]
            write_json_atomic(json_path, {"suite": suite, "rows": rows})
    warn(f"{run_dir} held a run of another config ({shown}); kept it as {kept}")

