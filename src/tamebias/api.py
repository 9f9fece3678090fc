"""The public Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from .compose import load_config
from .config import ConfigError, RunConfig
from .data.augment import Augmenter
from .data.datasets import load_dataset
from .data.domain import SOURCE_FREE, DomainData, DomainStreams, SourceCard, prepare_data
from .data.imageset import DataError, as_float
from .data.shift import CategoryShift
from .data.target import align_classes
from .data.transforms import to_geometry
from .data.vectors import FeatureAugmenter
from .evaluation.metrics import Evaluation, evaluate, prediction_statistics
from .evaluation.openset import make_rule
from .evaluation.selection import ValidationProbe
from .lineage import initialize, lineage_for, parse_init, write_lineage
from .methods import METHODS, Method, build_method
from .models.classifier import build_classifier
from .models.norm import adapt_batchnorm, use_domain
from .records import RunResult
from .rundir import RunDir, confined, hold_run, read_json, remove_leftovers
from .training import checkpoint, distributed
from .training.speed import default_threads
from .training.tensorboard import TensorBoardLines
from .training.trainer import Trainer


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "device": device.type,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use cpu or auto")
    return device


def task_name(config: RunConfig) -> str:
    return f"{config.data.source}->{config.data.target}"


def run_identity(config: dict[str, Any]) -> str:
    """The settings that define what a run computes: not where data lives, how progress is
    shown, or how many threads compute it. Settings added to the config after a run was made
    count at their defaults, so older runs keep their identity."""
    values = json.loads(json.dumps(config))
    try:
        values = load_config(values).to_dict()
    except (ConfigError, ValueError, KeyError):
        pass
    return json.dumps(without_runtime(values), sort_keys=True)


def without_runtime(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the settings that do not change what a run computes (where data
    lives, progress, threads, logging, compilation, the output folder); changed in place."""
    values["data"].pop("root", None)
    values["data"].pop("download", None)
    for key in ("progress", "threads", "tensorboard", "compile"):
        values["train"].pop(key, None)
    values.pop("output_dir", None)
    return values


def make_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if config.name:  # a name stays inside output_dir (no ../..)
        return confined(config.output_dir, config.name)
    name = (
        f"{config.method.name}-{config.data.source}-{config.data.target}"
        f"-seed{config.train.seed}-{stamp}"
    ).replace(":", "_").replace("/", "_")
    return Path(config.output_dir) / name


def rejection_rule(config: RunConfig, method: Any, protocol: dict[str, Any]):
    """The open-set rejection rule of a category-shift run (None for a plain closed-set run):
    ``train.rejection`` with ``train.rejection_threshold``, else the method's own threshold
    (DANCE's rho), else log(K)/2 for entropy and 0.5 for confidence."""
    if "category_shift" not in protocol:
        return None
    threshold = config.train.rejection_threshold
    if threshold is None and config.train.rejection == "entropy":
        threshold = getattr(method, "rejection_threshold", None)
    return make_rule(config.train.rejection, method.num_classes, threshold)


def source_card(config: RunConfig) -> SourceCard | None:
    """For a source-free run (``data.source=none``): the classes and input geometry of the
    source model it adapts, read from the finished run that ``init.weights`` names."""
    if config.data.source != SOURCE_FREE or not config.init.weights:
        return None  # a missing init.weights is reported by prepare_data
    folder = Path(parse_init(config.init.weights)[0])
    if folder.is_file():  # a checkpoint file inside a run folder
        folder = folder.parent
    protocol_path = RunDir(folder).protocol
    if not protocol_path.exists():
        raise DataError(f"data.source=none reads the source model's classes and input size "
                        f"from the run folder init.weights names, but {protocol_path} does not "
                        "exist; give the folder of a finished source run")
    protocol = read_json(protocol_path)
    try:
        height, width, channels = (int(part) for part in protocol["input"].split("x"))
        classes = tuple(protocol["classes"])
    except (KeyError, ValueError) as error:
        raise DataError(f"{protocol_path} records no input geometry and classes ({error})") \
            from None
    return SourceCard(classes, (channels, height, width), str(folder))


def run_data(config: RunConfig) -> DomainData:
    """The data of ``config``: both domains, or the target alone for a source-free run."""
    return prepare_data(config.data, source_card(config))


def build_run(config: RunConfig, data: DomainData | None = None):
    """Data, model and method for ``config`` (seeded), on the configured device."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    else:  # torch's count, capped by the CPUs this process may use (a container's quota)
        torch.set_num_threads(default_threads())
    device = resolve_device(config.train.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = data or run_data(config)
    channels, size, _ = data.geometry
    torch.manual_seed(config.train.seed)
    classifier = build_classifier(
        config.model.backbone, data.num_classes, channels, size, config.model.pretrained,
        config.model.channels_last, norm=config.model.norm,
        pretrained_lr_scale=config.model.pretrained_lr_scale,
        mlp_widths=config.model.mlp_widths, mlp_dropout=config.model.mlp_dropout,
    )
    if hasattr(classifier.backbone, "fit_inputs"):  # the mlp: source statistics, no target
        classifier.backbone.fit_inputs(data.source_train.images)
    initialized = parse_init(config.init.weights)[1] if config.init.weights else ()
    method = build_method(config.method, classifier, initialized).to(device)
    if config.data.source == SOURCE_FREE and method.needs.source:  # stages only narrow it
        raise ConfigError(
            f"data.source=none gives no source image, but {config.method.name} trains on "
            "labeled source here; a source-free run is shot from a finished source run: "
            "method.name=shot init.weights=RUN (its classifier) train.selection=im")
    return data, method, device


def build_streams(config: RunConfig, data: DomainData, method: Method,
                  device: torch.device) -> DomainStreams:
    """The run's batch streams, with the configured augmentation views."""
    augment = config.data.augment
    channels, size = data.geometry[0], data.geometry[1]
    if data.source_train.is_vectors:  # feature-space views: noise and feature dropout
        augmenter = FeatureAugmenter(data.source_train.images, config.train.seed,
                                     augment.strength, device, augment.policy)
    else:
        augmenter = Augmenter(augment.policy, channels, size, config.train.seed,
                              augment.strength, device)
    return DomainStreams(
        data, config.data.batch_size, config.train.seed, device,
        target=method.needs.target, labeled_target=method.needs.labeled_target,
        on_device=config.data.on_device, source=method.needs.source, augmenter=augmenter,
        source_view=augment.source, target_view=augment.target,
        strong_target=method.needs.strong_target, workers=config.data.workers,
        shots="batch" if method.needs.target_shots else "source" if method.needs.source else None,
    )


def fit(
    config: RunConfig | dict | str | Path | None = None,
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    data: DomainData | None = None,
) -> RunResult:
    """Train ``config`` (a RunConfig, a dict, or a TOML/JSON path) and return its result.

    An existing ``run_dir`` with a checkpoint resumes where it stopped, using the config saved
    there; the result equals that of an uninterrupted run with the same seed."""
    wall_start = time.perf_counter()
    group = distributed.current()  # under torchrun: this rank of a data-parallel run
    saved = RunDir(run_dir).config if run_dir is not None else None
    if config is None and saved is not None and saved.exists():
        config = load_config(saved, overrides)  # resume with the run's own config
    elif not isinstance(config, RunConfig):
        config = load_config(config, overrides)
    if run_dir is not None:
        check_same_run(run_dir, config)
    run_dir = Path(run_dir) if run_dir is not None else make_run_dir(config)
    if group is not None:
        run_dir = group.agree(run_dir)  # a folder named by the clock: rank 0's name
    method_class = METHODS[config.method.name]
    selection = method_class.selection or config.train.selection
    lineage = lineage_for(config.to_dict(), run_dir)  # its parent runs, before any data
    data, method, device = build_run(config, data)
    if selection == "target_oracle" and data.target_test is None:
        raise ConfigError("train.selection=target_oracle needs a labeled target test set; "
                          "this target has none (see data.target_test)")
    # one training process per run folder (in a data-parallel run: rank 0 holds it)
    with hold_run(run_dir) if distributed.is_writer() else contextlib.nullcontext():
        return _train(config, run_dir, data, method, device, selection, lineage, wall_start,
                      group)


def check_same_run(run_dir: str | Path, config: RunConfig) -> None:
    """Refuse to train ``config`` into a folder holding a run of another config."""
    folder = RunDir(run_dir)
    if folder.config.exists() and checkpoint.exists(folder.checkpoint):
        earlier = folder.read_config("delete the run folder to start it again")
        if run_identity(earlier) != run_identity(config.to_dict()):
            raise ValueError(
                f"{run_dir} holds a run with a different config; resume it without a config "
                "(tamebias fit --resume DIR) or choose a new run directory"
            )


def _train(config: RunConfig, run_dir: Path, data: DomainData, method: Method,
           device: torch.device, selection: str, lineage: dict[str, Any],
           wall_start: float, group: distributed.Distributed | None = None) -> RunResult:
    """The body of :func:`fit`, run while holding the run folder's lock (in a data-parallel
    ``group`` rank 0 writes every file; the others train, then return rank 0's result)."""
    folder = RunDir(run_dir)
    if group is None or group.writer:
        check_same_run(run_dir, config)  # again: no other process can write here now
        remove_leftovers(run_dir)  # temporary files of a killed writer
        config.save(folder.config)
        folder.write_json(RunDir.PROTOCOL, data.protocol)
        write_lineage(run_dir, lineage)
    if group is not None:
        if group.writer and checkpoint.exists(folder.checkpoint):  # damaged files set aside
            checkpoint.load_latest(folder.checkpoint, repair=True)  # before any rank reads
        group.barrier()  # the folder is ready: every rank reads the same checkpoint

    if config.init.weights and not checkpoint.exists(folder.checkpoint):
        initialize(method, config.init.weights)  # a new run: resume reads its checkpoint
    streams = build_streams(config, data, method, device)
    trainer = Trainer(method, data, streams, folder, device, config.train,
                      rejection=rejection_rule(config, method, data.protocol))
    if config.train.tensorboard:
        trainer.metrics_log = TensorBoardLines(trainer.metrics_log, folder.tensorboard)
    if group is not None:
        group.attach(trainer)
    report = trainer.run()
    if group is not None:
        group.detach(trainer, report)
        if not group.writer:
            return group.share(None)  # rank 0 evaluates and writes the run's result
    final_accuracy = report.history[-1]["target_accuracy"] if report.history else None
    if config.train.adabn:  # the `last` rule's model gets AdaBN too, like the selected one
        adapt_to_target(method, data.target_train.images, device)
        adapted = trainer.evaluate()[0]
        final_accuracy = adapted.accuracy if adapted is not None else None
    if selection != "last" and trainer.best_path.exists():
        method.load_state_dict(checkpoint.load(trainer.best_path, device)["method"])
    if config.train.adabn:
        adapt_to_target(method, data.target_train.images, device)
        checkpoint.save_atomic({"method": method.state_dict()}, folder.adabn)
    target, source = trainer.evaluate()
    method.eval()
    with use_domain(method, "target"):
        predictions = prediction_statistics(method.predict, data.target_train.images,
                                            data.classes, device)
    result = RunResult(
        run_dir=str(run_dir),
        method=config.method.name,
        task=task_name(config),
        selection=selection,
        analysis_only=lineage["analysis_only"],  # its own rule, or a parent's
        target=target.to_dict() if target is not None else {
            "accuracy": None, "mean_class_accuracy": None, "count": 0,
            "note": "no labeled target evaluation set: " + data.protocol.get(
                "target_evaluation", "none")},
        source_val=source.to_dict() if source else None,
        selected=report.selected,
        final_target_accuracy=final_accuracy,
        oracle_best_target_accuracy=max(
            (r["target_accuracy"] for r in report.history
             if r["target_accuracy"] is not None), default=None),
        history=report.history,
        protocol=data.protocol,
        steps=report.steps,
        wall_seconds=report.earlier_wall_seconds + time.perf_counter() - wall_start,
        train_seconds=report.train_seconds,
        train_images_per_second=report.train_images / max(report.train_seconds, 1e-9),
        machine=machine_info(device),
        config=config.to_dict(),
        stage_seconds=report.stage_seconds,
        lineage=lineage,
        target_predictions=predictions,
    )
    result.save()
    return group.share(result) if group is not None else result


def _float_batches(images: torch.Tensor, device: torch.device, batch_size: int = 500):
    for start in range(0, len(images), batch_size):
        yield as_float(images[start : start + batch_size].to(device))


def adapt_to_target(method: Method, images: torch.Tensor, device: torch.device) -> int:
    """AdaBN on ``method``'s model: batch-norm statistics recomputed over the uint8 target
    ``images``; returns the number of layers adapted."""
    with torch.no_grad():
        return adapt_batchnorm(method.classifier, _float_batches(images, device), "target")


def adabn(run_dir: str | Path, root: str | None = None, which: str = "selected",
          ) -> dict[str, Any]:
    """AdaBN as a post-hoc step for any trained run: recompute the model's batch-norm
    statistics on the run's target training images (no labels), evaluate on the target test
    split, and save the adapted weights as ``RUN/adabn.pt`` with ``RUN/adabn.json``.

    ``validators`` holds the label-free scores (entropy, IM, SND on the target training
    images) before and after: the way to decide whether AdaBN helped without target labels."""
    run = restore_run(run_dir, which, root)
    target_test = run.load_split(run.config.data.target, "test")
    images = run.load_split(run.config.data.target, "train").images
    probe = ValidationProbe.target_only(images, run.device)  # label-free: keep AdaBN or not
    before = evaluate(run.method.predict, target_test, run.device)
    scores_before = probe.scores(run.method)
    layers = adapt_to_target(run.method, images, run.device)
    run.method.eval()
    after = evaluate(run.method.predict, target_test, run.device)
    scores_after = probe.scores(run.method)
    folder = RunDir(run_dir)
    checkpoint.save_atomic({"method": run.method.state_dict()}, folder.adabn)
    summary = {"run_dir": str(folder), "which": which, "layers": layers,
               "target_images": len(images), "before": before.to_dict(),
               "after": after.to_dict(),
               "validators": {"before": scores_before, "after": scores_after}}
    folder.write_json(RunDir.ADABN_SUMMARY, summary)
    return summary


@dataclass
class TrainedRun:
    """A finished run's method restored from a checkpoint, with the run's config and protocol."""

    config: RunConfig
    method: Any
    protocol: dict[str, Any]
    device: torch.device

    def load_split(self, spec: str, split: str) -> Any:
        """A dataset split converted to the run's input geometry (classes checked)."""
        size, _, channels = (int(v) for v in self.protocol["input"].split("x"))
        hint = (size, size) if spec.startswith(("folder:", "list:", "images:")) else None
        dataset = load_dataset(spec, split, self.config.data.root, self.config.data.download,
                               hint)
        dataset = to_geometry(dataset, size, channels)
        expected = self.protocol["classes"]
        if "category_shift" in self.protocol:  # the run's class split, unknowns relabelled
            shift = CategoryShift.from_card(self.protocol["category_shift"])
            dataset, expected = shift.relabel_target(dataset), shift.target_classes
        if not dataset.is_labeled:
            raise DataError(f"{spec} ({split}) has no labels to evaluate against")
        if dataset.classes != expected and "category_shift" not in self.protocol:
            dataset = align_classes(expected, dataset, spec)[0]
        if dataset.classes != expected:
            raise DataError(f"{dataset.name} has classes {dataset.classes} but the run was "
                            f"trained on {expected}")
        return dataset


def restore_run(run_dir: str | Path, which: str = "selected", root: str | None = None,
                device: str | None = None) -> TrainedRun:
    """Restore a run's model: ``selected`` (best.pt when the rule kept one; adabn.pt for runs
    trained with ``train.adabn``), ``last`` (checkpoint.pt), ``adabn`` (adabn.pt, written by
    ``tamebias adabn``), or a stage snapshot ``stage:NAME`` (stage-NAME.pt)."""
    folder = RunDir(run_dir)
    if not folder.is_run():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {RunDir.CONFIG})")
    config = load_config(folder.config)
    if root is not None:
        config.data.root = root
    target_device = resolve_device(device or config.train.device)
    protocol = read_json(folder.protocol, "resume the run (tamebias fit --resume) "
                         "to write it again")
    size, _, channels = (int(v) for v in protocol["input"].split("x"))
    classifier = build_classifier(config.model.backbone, len(protocol["classes"]), channels,
                                  size, config.model.pretrained, config.model.channels_last,
                                  load_weights=False, norm=config.model.norm,
                                  pretrained_lr_scale=config.model.pretrained_lr_scale,
                                  mlp_widths=config.model.mlp_widths,
                                  mlp_dropout=config.model.mlp_dropout)
    method = build_method(config.method, classifier).to(target_device)
    if which.startswith("stage:"):
        path = folder.stage(which.split(":", 1)[1])
    elif which == "selected" and config.train.adabn and folder.adabn.exists():
        path = folder.adabn  # the run's result is the AdaBN-adapted model
    elif which == "selected" and folder.best.exists():
        path = folder.best
    elif which in ("selected", "last"):
        path = folder.checkpoint
    elif which == "previous":  # the generation before checkpoint.pt (rundir safety)
        path = checkpoint.previous(folder.checkpoint)
    elif which == "adabn":
        path = folder.adabn
    else:
        raise ValueError(f"which must be selected, last, previous, adabn or stage:NAME, "
                         f"got {which!r}")
    if not checkpoint.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    method.load_state_dict(checkpoint.load_latest(path, target_device)["method"])
    method.eval()
    return TrainedRun(config, method, protocol, target_device)


def evaluate_run(
    run_dir: str | Path, target: str | None = None, split: str = "test",
    root: str | None = None, which: str = "selected",
) -> Evaluation:
    """Evaluate a finished run's model (``selected`` or ``last``) on its target test split, or
    on another dataset converted to the run's input geometry."""
    run = restore_run(run_dir, which, root)
    test_spec = run.config.data.target_test  # the run's separate labeled test set, if any
    if target is None and split == "test" and test_spec not in (None, "none", "transductive"):
        target = test_spec
    dataset = run.load_split(target or run.config.data.target, split)
    return evaluate(run.method.predict, dataset, run.device,
                    rejection=rejection_rule(run.config, run.method, run.protocol))
