"""Segmentation benchmarks: tasks (a scene pair or GTA5->Cityscapes with a fixed protocol) x
methods x seeds -> rows in ``benchmarks/results/segmentation.json``.

Per seed the source-only run is trained first; every adaptation method starts from its
selected segmenter (``init``: the method's source stage is that run, so the gain of a row over
source only is what adaptation adds); the oracle trains on target labels alone (analysis).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import without_runtime
from .bench import changed_settings
from .config import ConfigError
from .registry import lookup
from .rundir import RunDir
from .training.segmentation import SegRunConfig, fit_segmentation, load_seg_config

SCENE_PROTOCOL = {"data.train_count": 2000, "data.val_count": 200, "data.test_count": 300,
                  "data.size": 48, "data.batch_size": 16, "model.name": "unet_small",
                  "train.eval_every": 500, "train.log_every": 50, "train.checkpoint_every": 500}


@dataclass(frozen=True)
class SegTask:
    description: str
    settings: dict[str, Any]
    source_steps: int  # source-only (and oracle) steps
    adapt_steps: int  # steps of each adaptation method after the source-only run
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    selection: dict[str, str] = field(default_factory=dict)  # method -> rule (default: last)

    def overrides(self) -> list[str]:
        return [f"{key}={json.dumps(value)}" for key, value in self.settings.items()]


def _scenes(target: str, what: str) -> SegTask:
    return SegTask(
        f"MNIST scenes (3 digits on a black 48x48 canvas) -> {what}; 11 classes (background + "
        "10 digits), 2,000 train scenes per side, 200 source validation, 300 target test; "
        "unet_small from scratch, Adam 1e-3, batch 16",
        {"data.source": "scenes:mnist", "data.target": f"scenes:{target}", **SCENE_PROTOCOL},
        source_steps=2500, adapt_steps=500,
        # a narrower critic than the paper's 64 (CPU: at 64 the critic costs 4x the segmenter)
        method_settings={**{name: {"critic_width": 16} for name in ("adaptseg", "advent",
                                                                      "cycada")},
                         # DACS's self-training needs more than 500 steps to settle: 1,500,
                         # evaluated every 500 and picked by the label-free pixel IM
                         "dacs": {"steps": 1500}},
        selection={"dacs": "im"})


SEG_TASKS: dict[str, SegTask] = {
    "scenes-mnist-usps": _scenes("usps", "USPS scenes (other hand, same canvas)"),
    "scenes-mnist-photo": _scenes(
        "photo", "MNIST scenes in random colours over photo windows (scikit-learn samples)"),
    "scenes-mnist-bold": _scenes("bold", "MNIST scenes, bold coloured strokes on flat colour"),
    # the papers' protocol (AdaptSegNet / ADVENT): DeepLab-family ResNet on ImageNet weights,
    # SGD 2.5e-4 (momentum 0.9, weight decay 5e-4), critic Adam 1e-4, 19 classes, evaluated on
    # the 500 Cityscapes val images; images resized to a 512 px short side
    "gta5-cityscapes": SegTask(
        "GTA5 (24,966 images) -> Cityscapes (2,975 train unlabelled, 500 val evaluated); "
        "19 classes; deeplabv3_resnet50 (ImageNet backbone), 512 px short side, batch 2; "
        "SGD 2.5e-4; AdaptSegNet/ADVENT protocol (120k source-only, 120k adaptation steps "
        "after it in this runner)",
        {"data.source": "gta5:gta5", "data.target": "cityscapes:cityscapes", "data.size": 512,
         "data.train_count": 0, "data.test_count": 0,
         "data.batch_size": 2, "data.augment": "flip", "model.name": "deeplabv3_resnet50",
         "model.pretrained": "imagenet", "train.eval_every": 10000, "train.log_every": 100,
         "train.checkpoint_every": 5000,
         "method.optim": {"name": "sgd", "lr": 2.5e-4, "momentum": 0.9,
                          "weight_decay": 5e-4, "schedule": "cosine"}},
        source_steps=120000, adapt_steps=120000),
}
SUITES = {"segmentation": ["scenes-mnist-usps", "scenes-mnist-photo"],
          "gta5-cityscapes": ["gta5-cityscapes"]}
METHODS = ("source_only", "adabn", "adaptseg", "minent", "advent", "cbst", "dacs", "cycada",
           "oracle")


def _steps(method: str, task: SegTask) -> list[str]:
    if method in ("source_only", "oracle"):
        return [f"method.steps={task.source_steps}"]
    if method == "adabn":
        return ["method.target_batches=50"]
    if method == "cycada":  # translator, then the task stage, then output alignment
        return [f"method.translate_steps={task.adapt_steps}", f"method.steps={task.adapt_steps}",
                f"method.output_steps={task.adapt_steps}"]
    return [f"method.steps={task.adapt_steps}"]


def run_task(task_name: str, methods: list[str], seeds: list[int], output: Path,
             overrides: list[str], data_root: str | None = None,
             say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every (method, seed) run of one task into ``output/TASK/METHOD/seedN`` (finished runs
    are reused), and one row per method."""
    lookup(SEG_TASKS, task_name, "segmentation task")  # an unknown task fails before any run
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        base = [f"train.seed={seed}", *([f"data.root={data_root}"] if data_root else [])]
        source_dir = output / task_name / "source_only" / f"seed{seed}"
        for method in methods:
            if method != "source_only" and method != "oracle" and not RunDir(
                    source_dir).is_finished():
                run_one(task_name, "source_only", seed, source_dir, base, overrides,
                        results if "source_only" in methods else {}, say)
            folder = output / task_name / method / f"seed{seed}"
            extra = [] if method in ("source_only", "oracle") else [f"init={source_dir}"]
            run_one(task_name, method, seed, folder, [*base, *extra], overrides, results, say)
    return [row(task_name, method, runs) for method, runs in results.items()]


def task_config(task_name: str, method: str, overrides: list[str],
                base: list[str] | None = None) -> SegRunConfig:
    """The config of ``method`` on segmentation task ``task_name``: the task's protocol and
    data pair, the method's steps under that protocol, then ``overrides`` (``base`` goes
    between the task and the method: seed, data root, ``init``)."""
    task = lookup(SEG_TASKS, task_name, "segmentation task")
    base = [*task.overrides(), f"task={task_name}", *(base or [])]
    settings = [f"method={method}", *_steps(method, task),
                *(f"method.{k}={json.dumps(v)}" for k, v in
                  task.method_settings.get(method, {}).items()),
                *([f"train.selection={task.selection[method]}"] if method in task.selection
                  else [])]
    method_optim = [item for item in base if item.startswith("method.optim=")]
    if method == "adabn":  # no optimizer of its own beyond the (skipped) source stage
        method_optim = []
    return load_seg_config([*[b for b in base if not b.startswith("method.optim=")],
                            *settings, *method_optim, *overrides])


def seg_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a segmentation run computes (its saved config read at today's defaults), without
    where the data lives or how it is shown and threaded."""
    values = {key: value for key, value in config.items() if key != "kind"}
    typed = dataclasses.asdict(load_seg_config([], values))
    return without_runtime(json.loads(json.dumps(typed)))


def check_reuse(folder: Path, config: SegRunConfig) -> None:
    """A run folder is reused only by the config it was made with: a finished run of another
    protocol (say, before a method's steps changed) is refused, never silently returned."""
    saved = RunDir(folder).config
    if not saved.exists():
        return
    try:
        earlier = seg_identity(json.loads(saved.read_text()))
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"{saved} is unreadable ({error}); move {folder} away") from error
    now = seg_identity(dataclasses.asdict(config))
    if shown := changed_settings(earlier, now):
        raise ConfigError(f"{folder} holds a run of another config ({shown}); nothing was "
                          "deleted. Choose another --output or move that run away")


def run_one(task_name: str, method: str, seed: int, folder: Path, base: list[str],
            overrides: list[str], results: dict[str, list[dict[str, Any]]],
            say: Callable[[str], None]) -> None:
    config = task_config(task_name, method, overrides, base)
    check_reuse(folder, config)
    result = fit_segmentation(config, folder)
    say(f"{task_name} {method} seed {seed}: mIoU {100 * result['miou']:.2f}  pixel acc "
        f"{100 * result['pixel_accuracy']:.2f}  ({result['selection']}, "
        f"{result['wall_seconds']:.0f} s)")
    results.setdefault(method, []).append(result)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def row(task: str, method: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One results row (percentages) from the runs of every seed."""
    miou = [100 * r["miou"] for r in runs]
    accuracy = [100 * r["pixel_accuracy"] for r in runs]
    classes = runs[0]["target"]["classes"]
    per_class = []
    for index in range(len(classes)):
        values = [r["target"]["per_class_iou"][index] for r in runs
                  if r["target"]["per_class_iou"][index] is not None]
        per_class.append(round(100 * statistics.fmean(values), 2) if values else None)
    first = runs[0]
    return {
        "task": task, "method": method, "seeds": [r["config"]["train"]["seed"] for r in runs],
        "miou_mean": round(_mean_std(miou)[0], 2), "miou_std": round(_mean_std(miou)[1], 2),
        "pixel_accuracy_mean": round(_mean_std(accuracy)[0], 2),
        "pixel_accuracy_std": round(_mean_std(accuracy)[1], 2),
        "miou": [round(v, 2) for v in miou], "pixel_accuracy": [round(v, 2) for v in accuracy],
        "per_class_iou_mean": dict(zip(classes, per_class, strict=True)),
        "selection": first["selection"], "analysis_only": first["analysis_only"],
        "steps": first["steps"],
        "starts_from": "source_only run of the same seed" if first["protocol"].get("init")
        else None,
        "rule_picks_miou_mean": {
            rule: round(statistics.fmean(100 * r["rule_picks"][rule]["miou"] for r in runs), 2)
            for rule in first["rule_picks"] if all(rule in r["rule_picks"] for r in runs)},
        "protocol": {key: value for key, value in first["protocol"].items()
                     if key not in ("init", "seed")},
        "method_config": first["config"]["method"],
        "train_seconds_mean": round(statistics.fmean(r["train_seconds"] for r in runs), 1),
        "machine": first["machine"],
    }


def merge_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` written into the results file, replacing rows of the same task and method."""
    existing = json.loads(path.read_text()) if path.exists() else []
    keys = {(r["task"], r["method"]) for r in rows}
    merged = [r for r in existing if (r["task"], r["method"]) not in keys] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown_table(merged))
    return merged


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (written beside the JSON), every number with its
    protocol: seeds, steps, selection rule, where the run started."""
    lines = ["| task | method | mIoU % | pixel acc % | seeds | steps | selected by | "
             "starts from |", "|---|---|---|---|---|---|---|---|"]
    for item in sorted(rows, key=lambda r: (r["task"], r["method"] != "source_only",
                                            r["method"] == "oracle", r["method"])):
        name = item["method"] + (" (analysis)" if item["analysis_only"] else "")
        lines.append(
            f"| {item['task']} | {name} | {item['miou_mean']:.2f} ± {item['miou_std']:.2f} | "
            f"{item['pixel_accuracy_mean']:.2f} ± {item['pixel_accuracy_std']:.2f} | "
            f"{','.join(map(str, item['seeds']))} | {item['steps']} | {item['selection']} | "
            f"{item['starts_from'] or 'scratch'} |")
    return "\n".join(lines) + "\n"
