"""Segmentation runs: the one training loop (``Trainer``) with dense evaluation, and the
function that builds and trains a segmentation run from its typed config.

``DenseTrainer`` is the classification ``Trainer`` with two parts replaced: ``evaluate``
scores per-pixel predictions (confusion matrix -> per-class IoU, mIoU, pixel accuracy) and the
validators read pixels (``evaluation/dense.py``). Stages, steps, ``ctx.update``, logging,
checkpoints and resume are the loop's own.

Selection rules (``train.selection``): ``last``; ``source_val`` (mIoU on the labelled source
validation scenes); ``entropy`` / ``im`` (pixel validators on unlabelled target training
scenes); ``target_oracle`` (target test mIoU: analysis only, never a headline).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, MethodConfig, TrainConfig, apply_overrides, build
from ..data.cityscapes import read_dense
from ..data.dense import AUGMENT_POLICIES, DenseData, DenseSet, DenseStreams
from ..data.scenes import cached_scenes
from ..evaluation.dense import DenseProbe, SegmentationScores, evaluate_dense
from ..methods.segmentation import SEGMENTATION_METHODS, build_segmentation_method
from ..models.segmenters import SEGMENTERS, build_segmenter
from ..registry import lookup
from ..rundir import RunDir
from . import checkpoint
from .trainer import Trainer

SELECTION_RULES = ("last", "source_val", "entropy", "im", "target_oracle")


@dataclass
class SegDataConfig:
    """The scene pair (``scenes:STYLE``, data/scenes.py) or real sets (``gta5:PATH``,
    ``cityscapes:PATH``, data/cityscapes.py) and how many scenes each split holds."""

    source: str = "scenes:mnist"
    target: str = "scenes:usps"
    # training scenes per side (synthetic pairs); real sets: a fixed random subset (0: all)
    train_count: int = 4000
    val_count: int = 500  # source validation scenes, made beside the training ones
    test_count: int = 1000  # target test scenes (real sets: 0 = the whole val split)
    size: int = 64  # scene side (synthetic); real sets: the short side after resizing
    root: str | None = None  # the digits' data root (default: $TAMEBIAS_DATA)
    scene_seed: int = 0  # the synthetic data's seed (fixed by the protocol, not the run seed)
    batch_size: int = 16
    augment: str = "none"  # joint image+mask augmentation of source batches
    target_augment: str = "none"


@dataclass
class SegModelConfig:
    name: str = "unet_small"  # SEGMENTERS
    pretrained: str | None = None  # imagenet (torch hub cache) or a ResNet-50 weights file


@dataclass
class SegRunConfig:
    task: str = "custom"
    method: MethodConfig = field(default_factory=MethodConfig)
    data: SegDataConfig = field(default_factory=SegDataConfig)
    model: SegModelConfig = field(default_factory=SegModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(selection="last"))
    # a finished segmentation run whose segmenter this run starts from (its selected weights):
    # the method skips its source stage (e.g. adaptation from the source-only run)
    init: str | None = None


def load_seg_config(overrides: list[str], base: dict[str, Any] | None = None) -> SegRunConfig:
    """A segmentation run config from dotted overrides (``method=adaptseg``,
    ``method.steps=500``, ``data.target=scenes:photo``, ``train.seed=1``); the method section
    is typed by the chosen method's own config dataclass."""
    values = apply_overrides(base or {}, overrides)
    method_values = dict(values.pop("method", {}) or {})
    name = method_values.get("name", "source_only")
    method_class = lookup(SEGMENTATION_METHODS, name, "segmentation method")
    method = build(method_class.Config, method_values, "method.")
    train_values = {"selection": "last", **(values.pop("train", {}) or {})}
    config = build(SegRunConfig, {**values, "train": train_values})
    config.method = method
    lookup(SEGMENTERS, config.model.name, "segmenter")
    if config.train.selection not in SELECTION_RULES:
        raise ConfigError(f"train.selection={config.train.selection!r} is not a segmentation "
                          f"rule; choose from {', '.join(SELECTION_RULES)}")
    for key in ("augment", "target_augment"):
        if getattr(config.data, key) not in AUGMENT_POLICIES:
            raise ConfigError(f"data.{key} must be one of {', '.join(AUGMENT_POLICIES)}")
    return config


def load_dense_data(config: SegDataConfig) -> DenseData:
    """The four splits of a segmentation task (source train / val, unlabelled target train
    with its labels kept apart for the oracle, target test)."""
    if config.source.startswith("scenes:") and config.target.startswith("scenes:"):
        def scenes(spec: str, split: str, count: int) -> DenseSet:
            return cached_scenes(spec.split(":", 1)[1], split, count, config.scene_seed,
                                 config.root, config.size)

        source = scenes(config.source, "train", config.train_count + config.val_count)
        everything = torch.arange(len(source))
        source_train = source.subset(everything[:config.train_count])
        source_val = source.subset(everything[config.train_count:]) \
            if config.val_count else None
        target_train = scenes(config.target, "train", config.train_count)
        target_test = scenes(config.target, "test", config.test_count)
    else:
        def real(spec: str, split: str, limit: int | None) -> DenseSet:
            return read_dense(spec, split, config.size, config.root, limit, config.scene_seed)

        limit = config.train_count or None  # 0: every training image
        source_train = real(config.source, "train", limit)
        source_val = None
        target_train = real(config.target, "train", limit)
        target_test = real(config.target, "val", config.test_count or None)
    return DenseData(source_train, source_val, target_train.unlabeled(), target_test,
                     target_train.masks)


class DenseTrainer(Trainer):
    """The training loop with segmentation scores and pixel validators (module docstring)."""

    def __init__(self, method, data: DenseData, streams: DenseStreams, run_dir, device,
                 config: TrainConfig) -> None:
        super().__init__(method, data, streams, run_dir, device, config)
        self.probe = DenseProbe(data.target_train.images, device)

    def evaluate(self) -> tuple[SegmentationScores | None, SegmentationScores | None]:
        self.method.eval()
        try:
            with torch.no_grad():
                target = (evaluate_dense(self.method.predict, self.data.target_test,
                                         self.device)
                          if self.data.target_test is not None else None)
                source = (evaluate_dense(self.method.predict, self.data.source_val,
                                         self.device)
                          if self.data.source_val is not None else None)
        finally:
            self.method.train()
        return target, source

    def evaluation_record(self, stage, offset: int, done: int) -> dict[str, Any]:
        with self._inference():  # split across the ranks of a data-parallel run
            target, source = self.evaluate()
        return {
            "stage": stage.name, "step": done, "global_step": offset + done,
            "target_accuracy": target.pixel_accuracy if target else None,
            "target_mean_class_accuracy": None,
            "target_miou": target.miou if target else None,
            "target_per_class_iou": target.per_class_iou if target else None,
            "source_val_accuracy": source.pixel_accuracy if source else None,
            "source_val_miou": source.miou if source else None,
            "validators": self.probe.scores(self.method)}

    def selection_score(self):
        return lambda record: rule_value(record, self.selection)


def rule_value(record: dict[str, Any], rule: str) -> float | None:
    """How a selection rule scores one evaluation record (higher is better)."""
    if rule == "last":
        return float(record["global_step"])
    if rule == "source_val":
        return record.get("source_val_miou")
    if rule == "target_oracle":
        return record.get("target_miou")
    return (record.get("validators") or {}).get(rule)


def pick_by_rules(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Target mIoU / pixel accuracy of the evaluation each label-free rule picks (within the
    last evaluated stage), read from the run record without retraining."""
    last_stage = [r for r in history if r["stage"] == history[-1]["stage"]] if history else []
    picks = {}
    for rule in ("last", "source_val", "entropy", "im"):
        best, best_value = None, None
        for record in last_stage:
            value = rule_value(record, rule)
            if value is not None and (best_value is None or value >= best_value):
                best, best_value = record, value
        if best is not None:
            picks[rule] = {"global_step": best["global_step"], "miou": best["target_miou"],
                           "pixel_accuracy": best["target_accuracy"]}
    return picks


def initial_segmenter(run: str | Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The segmenter weights of a finished segmentation run (its ``best.pt`` when its rule
    kept one, else its last checkpoint)."""
    parent = RunDir(run)
    if not parent.is_finished():
        raise ConfigError(f"init={run}: not a finished segmentation run (no {parent.result})")
    path = parent.best if parent.best.exists() else parent.checkpoint
    state = checkpoint.load_latest(path, device)["method"]
    return {key.removeprefix("classifier."): value for key, value in state.items()
            if key.startswith("classifier.")}


def parent_analysis_only(run: str | Path) -> bool:
    import json

    return bool(json.loads(RunDir(run).result.read_text()).get("analysis_only"))


def fit_segmentation(config: SegRunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train one segmentation run into ``run_dir`` (resumed when a checkpoint is there,
    returned as it is when finished) and return its result (also ``result.json``)."""
    folder = RunDir(run_dir)
    if folder.is_finished():
        import json

        return json.loads(folder.result.read_text())
    started = time.perf_counter()
    train = config.train
    if train.threads:
        torch.set_num_threads(train.threads)
    device = torch.device("cuda" if train.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if train.device == "auto" else train.device))
    torch.manual_seed(train.seed)
    data = load_dense_data(config.data)
    segmenter = build_segmenter(config.model.name, data.num_classes,
                                data.source_train.images.shape[1], config.model.pretrained)
    method = build_segmentation_method(config.method, segmenter).to(device)
    if config.init and not checkpoint.exists(folder.checkpoint):
        method.classifier.load_state_dict(initial_segmenter(config.init, device))
    if config.init:
        method.initialized = ("classifier",)
    needs = method.needs
    streams = DenseStreams(data, config.data.batch_size, train.seed, device,
                           source=needs.source, target=needs.target,
                           labeled_target=needs.labeled_target, augment=config.data.augment,
                           target_augment=config.data.target_augment)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_json(RunDir.CONFIG, {"kind": "segmentation",
                                      **dataclasses.asdict(config)})
    trainer = DenseTrainer(method, data, streams, folder, device, train)
    report = trainer.run()
    if trainer.selection != "last" and folder.best.exists():
        method.load_state_dict(checkpoint.load_latest(folder.best, device)["method"])
    target, source = trainer.evaluate()
    protocol = {
        "source": config.data.source, "target": config.data.target,
        "source_train": len(data.source_train),
        "source_val": len(data.source_val) if data.source_val is not None else 0,
        "target_train": len(data.target_train),
        "target_test": len(data.target_test) if data.target_test is not None else 0,
        "size": list(data.source_train.images.shape[-2:]),
        "target_size": list(data.target_train.images.shape[-2:]), "classes": data.classes,
        "segmenter": config.model.name, "pretrained": config.model.pretrained,
        "batch_size": config.data.batch_size, "augment": config.data.augment,
        "target_augment": config.data.target_augment, "seed": train.seed,
        "scene_seed": config.data.scene_seed, "init": config.init}
    result = {
        "run_dir": str(folder), "task": config.task, "method": config.method.name,
        "selection": trainer.selection, "analysis_only": bool(
            method.analysis_only or trainer.selection == "target_oracle"
            or (config.init and parent_analysis_only(config.init))),
        "target": target.to_dict() if target else None,
        "source_val": source.to_dict() if source else None,
        "miou": target.miou if target else None,
        "pixel_accuracy": target.pixel_accuracy if target else None,
        "selected": report.selected, "rule_picks": pick_by_rules(report.history),
        "history": report.history, "protocol": protocol, "steps": report.steps,
        "train_seconds": report.train_seconds,
        "wall_seconds": report.earlier_wall_seconds + time.perf_counter() - started,
        "machine": {"device": str(device), "threads": torch.get_num_threads(),
                    "platform": platform.platform()},
        "config": dataclasses.asdict(config)}
    folder.write_json(RunDir.RESULT, result)
    return result
