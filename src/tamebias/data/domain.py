"""Build a task's data from its config (source/target splits, subsets, one geometry) and
serve typed batches from step-indexed streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import DataConfig
from . import checks
from .augment import Augmenter
from .batch import DomainBatch, LabeledBatch, UnlabeledBatch
from .datasets import load_dataset
from .imageset import DataError, ImageSet, as_float
from .shift import resolve_category_shift
from .shots import pick_shots
from .stream import STREAMABLE, Prefetcher, choose_cache, is_lazy, lazy_dataset
from .streams import IndexStream
from .target import align_classes, check_kinds, load_target
from .transforms import to_geometry

SOURCE_FREE = "none"  # data.source of a source-free run: the source model, never its images


@dataclass(frozen=True)
class SourceCard:
    """What a source-free run knows of its source: the source model's classes and input
    geometry (``C x H x W``), read from the finished run whose weights it adapts."""

    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    origin: str

    def as_set(self) -> ImageSet:
        """An empty labeled set with the source model's classes and geometry."""
        return ImageSet(torch.zeros((0, *self.shape), dtype=torch.uint8),
                        torch.zeros(0, dtype=torch.long), list(self.classes),
                        name=f"the source model of {self.origin}",
                        meta={"format": "none (source-free)"})


class SourceClasses:
    """The class names and their count, as the labeled source training set has them (shared
    by the classification and the dense data of a run)."""

    source_train: Any

    @property
    def classes(self) -> list[str]:
        return self.source_train.classes

    @property
    def num_classes(self) -> int:
        return self.source_train.num_classes


@dataclass
class DomainData(SourceClasses):
    """The sets a run uses. ``target_train`` keeps its labels only for the oracle and for
    analysis; unsupervised methods receive it through ``UnlabeledBatch`` alone. Under the
    k-shot protocol (``data.target_shots``) ``target_shots`` holds the labeled target images,
    ``target_val`` the labeled target validation images, and ``target_train`` the rest."""

    source_train: ImageSet
    source_val: ImageSet | None
    target_train: ImageSet
    target_test: ImageSet | None  # None: no labeled target evaluation (an unlabeled target)
    protocol: dict[str, Any] = field(default_factory=dict)
    target_shots: ImageSet | None = None
    target_val: ImageSet | None = None


    @property
    def geometry(self) -> tuple[int, int, int]:
        return self.source_train.shape


def _split_indices(
    total: int, subset: int | None, val_fraction: float, seed: int, name: str
) -> tuple[Tensor, Tensor]:
    """Fixed random train / validation indices; validation comes from images not trained on."""
    used = subset if subset is not None else total
    val_size = round(val_fraction * used)
    if subset is None:
        used = total - val_size
    if subset is not None and subset + val_size > total:
        extra = (f" plus {val_size} validation images (data.source_val_fraction)"
                 if val_size else "")
        raise DataError(
            f"{name}: a subset of {subset}{extra} asked for but only {total} images exist; "
            "ask for a smaller subset"
            + (", or set data.source_val_fraction=0 with train.selection=last" if val_size
               else "")
        )
    if used < 1:
        raise DataError(f"{name}: no training images left after the validation split")
    permutation = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    validation = permutation[used : used + val_size]
    return permutation[:used], validation


def _per_class(images: ImageSet, num_classes: int) -> int | str:
    """Images per class of a given labeled set: one number when every class has the same
    count (MME's k-shot files), else the range."""
    counts = torch.bincount(images.labels, minlength=num_classes).tolist()
    return counts[0] if len(set(counts)) == 1 else f"{min(counts)}-{max(counts)}"


def _native_geometry(images: ImageSet) -> str:
    channels, height, width = images.shape
    return f"{height}x{width}x{channels}"


def prepare_data(config: DataConfig, source_card: SourceCard | None = None) -> DomainData:
    """Load, subset and convert source and target; every check happens here, before training.

    ``data.source=none`` is a source-free run: no source image is read; ``source_card`` (the
    source model's classes and input geometry) stands in for the source set, so the target is
    checked against the classes and converted to the geometry the model was trained on."""
    load = dict(root=config.root, download=config.download)
    def hint(spec: str) -> tuple[int, int] | None:  # folders of mixed sizes resize on decode
        decoded = spec.startswith(("folder:", "list:", "images:"))
        return (config.size, config.size) if config.size and decoded else None

    cache, estimate = choose_cache(config)

    def read(spec: str, split: str) -> ImageSet:
        if cache == "stream" and spec.startswith(STREAMABLE):
            return lazy_dataset(spec, split, config.size, config.root)
        return load_dataset(spec, split, size=hint(spec), **load)

    source_free = config.source == SOURCE_FREE
    if source_free:
        if source_card is None:
            raise DataError("data.source=none is a source-free run: it adapts the model of a "
                            "finished source run, given as init.weights=RUN (the run's "
                            "classes and input size come from there)")
        source = source_card.as_set()
        channels, height, _ = source_card.shape
        for name, asked, trained in (("data.size", config.size, height),
                                     ("data.channels", config.channels, channels)):
            if asked is not None and asked != trained:
                raise DataError(f"{name}={asked}, but the source model of {source_card.origin} "
                                f"was trained at {trained}; a source-free run keeps its input")
    else:
        source = read(config.source, "train")
    if not source.is_labeled:
        raise DataError(f"source {config.source} has no labels; the source must be labeled "
                        "(one sub-folder per class, a list with labels, or an npz with y)")
    sets = load_target(config.target, config.target_test, read)
    target, target_test = sets.train, sets.test
    check_kinds(source, target, config.source, config.target)
    if target_test is not None:
        check_kinds(source, target_test, config.source, config.target_test or config.target)
    checks.check_not_empty([*([] if source_free else [(f"{config.source} train", source)]),
                            (f"{config.target} train", target),
                            *([(f"{config.target_test or config.target} test", target_test)]
                              if target_test is not None else [])])
    if not source_free:
        checks.check_labels(config.source, [source])
    if target.is_labeled:  # a separate test set may hold a subset of the classes
        checks.check_labels(config.target, [part for part in (target, target_test)
                                             if part is not None and part.is_labeled])

    names = target.classes if target.is_labeled else (
        target_test.classes if target_test is not None else None)
    shift = None
    if names is not None or (config.category_shift or config.shared_classes
                             or config.source_private or config.target_private):
        if names is None:
            raise DataError("a category shift needs the target's class names, but the target "
                            "is unlabeled and no labeled data.target_test is given")
        shift = resolve_category_shift(config, source.classes, names)
    if shift is not None:  # keep the protocol's classes; target-private ones become "unknown"
        source = shift.relabel_source(source)
        if target.is_labeled:
            target = shift.relabel_target(target)
        if target_test is not None:
            target_test = shift.relabel_target(target_test)
    elif target.is_labeled and source.classes != target.classes:
        raise DataError(
            f"class mismatch: source {config.source} has {source.num_classes} classes "
            f"({', '.join(source.classes[:12])}{', ...' if source.num_classes > 12 else ''}) "
            f"but target {config.target} has {target.num_classes} "
            f"({', '.join(target.classes[:12])}{', ...' if target.num_classes > 12 else ''}); "
            "closed-set adaptation needs the same classes in the same order (for a "
            "category shift set data.category_shift or data.shared_classes)"
        )
    elif target_test is not None and target_test.classes != source.classes:
        target_test, sets.protocol["class_alignment"] = align_classes(
            source.classes, target_test, config.target_test or config.target)
    native = {"source": _native_geometry(source), "target": _native_geometry(target)}
    if (config.size is None or config.channels is None) and not source_free:
        if source.shape != target.shape:
            raise DataError(
                f"image geometry differs: source {config.source} is {native['source']}, target "
                f"{config.target} is {native['target']} (HxWxC). Choose one input geometry for "
                "the task, e.g. data.size=28 data.channels=1 (or 32 / 3 for SVHN and ResNets)."
            )
    size = config.size or source.shape[1]
    channels = config.channels or source.shape[0]
    if cache == "memory":
        checks.check_decoded_size([part for part in (source, target, target_test)
                                   if part is not None], size, channels)
    if not source_free:
        source = to_geometry(source, size, channels)
    target = to_geometry(target, size, channels)
    if target_test is not None:
        target_test = to_geometry(target_test, size, channels)

    if source_free:  # nothing to split: no source image, so no source validation either
        source_train, source_val = source, None
    else:
        train_index, val_index = _split_indices(
            len(source), config.source_subset, config.source_val_fraction, config.subset_seed,
            config.source,
        )
        source_val = source.subset(val_index, f"{config.source}/val") if len(val_index) \
            else None
        source_train = source.subset(train_index, f"{config.source}/train")
    if config.target_subset is not None:
        target_index, _ = _split_indices(
            len(target), config.target_subset, 0.0, config.subset_seed + 1, config.target
        )
        target = target.subset(target_index, f"{config.target}/train")

    target_shots = target_val = None
    ssda: dict[str, Any] | None = None
    if config.target_shots or config.target_val_shots:
        if shift is not None:
            raise DataError("data.target_shots with a category shift is not supported: the "
                            "k-shot protocol needs the same classes in both domains")
        if not target.is_labeled:
            raise DataError(f"data.target_shots picks labeled target images, but the target "
                            f"{config.target} is unlabeled")
        if is_lazy(target.images):
            raise DataError("data.target_shots needs the target decoded in memory: set "
                            "data.cache=memory")
        split = pick_shots(target.labels, target.num_classes, config.target_shots,
                           config.target_val_shots, config.subset_seed + 2, config.target)
        if len(split.labeled):
            target_shots = target.subset(split.labeled, f"{config.target}/shots")
        if len(split.validation):
            target_val = target.subset(split.validation, f"{config.target}/val")
        if not len(split.unlabeled):
            raise DataError(f"{config.target}: no unlabeled target images left after the "
                            "shots and validation images")
        if target_test is not None and target_test.meta.get("transductive"):
            if len(target_test) != len(target):
                raise DataError("with data.target_shots the target test set must be held out "
                                "or the target training images themselves; give a held-out "
                                "data.target_test")
            # evaluate on the unlabeled pool alone, never on the shots
            target_test = target_test.subset(split.unlabeled, f"{config.target}/test")
        target = target.subset(split.unlabeled, f"{config.target}/unlabeled")
        ssda = {"shots": config.target_shots, "validation_shots": config.target_val_shots,
                "seed": config.subset_seed + 2,
                # indices into the target training split (after data.target_subset)
                "labeled_indices": split.labeled.tolist(),
                "validation_indices": split.validation.tolist()}
    elif config.target_labeled or config.target_validation:  # given sets (MME's split files)
        given = {}
        for key, spec in (("labeled", config.target_labeled),
                          ("validation", config.target_validation)):
            if spec is None:
                continue
            images = read(spec, "train")
            if not images.is_labeled:
                raise DataError(f"data.target_{key}={spec} has no labels")
            images, _ = align_classes(source.classes, images, spec, f"data.target_{key}")
            given[key] = to_geometry(images, size, channels)
        target_shots, target_val = given.get("labeled"), given.get("validation")
        ssda = {key: _per_class(given[key], source.num_classes) if key in given else 0
                for key in ("labeled", "validation")}
        ssda = {"shots": ssda["labeled"], "validation_shots": ssda["validation"],
                "labeled_set": config.target_labeled, "validation_set": config.target_validation}

    protocol = {
        "source": (f"none (source-free: the model of {source_card.origin})"
                   if source_free and source_card is not None else config.source),
        "target": config.target,
        "input": f"{size}x{size}x{channels}",
        "classes": list(source.classes),
        "native_geometry": native,
        "source_train": len(source_train),
        "source_val": len(source_val) if source_val is not None else 0,
        "target_train": len(target),
        "target_test": len(target_test) if target_test is not None else 0,
        "subset": (
            f"source {config.source_subset or 'all'}, target {config.target_subset or 'all'}, "
            f"subset_seed {config.subset_seed}"
        ),
        "source_format": source.meta.get("format"),
        "target_format": target.meta.get("format"),
        "target_test_transductive": bool(
            target_test is not None and target_test.meta.get("transductive", False)),
        "input_kind": "vectors" if source.is_vectors else "images",
        "cache": cache, "cache_estimate_gb": estimate, "cache_budget_gb": config.cache_budget_gb,
        **sets.protocol,
    }
    if shift is not None:
        protocol["setting"] = shift.setting
        protocol["category_shift"] = shift.card()
    if ssda is not None:
        protocol["setting"] = "ssda"
        protocol["ssda"] = ssda
    return DomainData(source_train, source_val, target, target_test, protocol, target_shots,
                      target_val)


class DomainStreams:
    """Typed batches for step ``k``: images are indexed out of uint8 tensors kept on the
    training device, turned into floats in [0, 1] there and augmented there (``augmenter``
    with the view named for each stream; ``strong_target`` adds a strong target view).

    ``shots`` serves the k-shot labeled target images (``data.target_shots``): ``"batch"``
    as the batch's ``labeled_target`` (methods that declare ``DataNeeds(target_shots=True)``),
    ``"source"`` appended to the labeled source batch (every other method that trains on
    labeled source: the S+T baseline), ``None`` not at all."""

    def __init__(
        self, data: DomainData, batch_size: int, seed: int, device: torch.device,
        target: bool, labeled_target: bool, on_device: bool = True, source: bool = True,
        augmenter: Augmenter | None = None, source_view: str = "none",
        target_view: str = "none", strong_target: bool = False, workers: int = 0,
        shots: str | None = None,
    ) -> None:
        self.device = device
        if augmenter is None and (strong_target or source_view != "none"
                                  or target_view != "none"):
            raise ValueError("augmented views need an augmenter")
        self.augmenter = augmenter
        self.source_view, self.target_view = source_view, target_view
        self.strong_target = strong_target
        storage = device if on_device else torch.device("cpu")
        self.source = None  # the oracle reads no source batch: none is drawn
        if source:
            self.source_images = data.source_train.images.to(storage)
            self.source_labels = data.source_train.labels.to(storage)
            self.source = IndexStream(len(data.source_train), batch_size, seed * 3 + 0)
        self.target = self.labeled_target = None
        if target or labeled_target:
            self.target_images = data.target_train.images.to(storage)
        if target:
            self.target = IndexStream(len(data.target_train), batch_size, seed * 3 + 1)
        if labeled_target:
            if not data.target_train.is_labeled:
                raise DataError("this method trains on target labels (the oracle), but the "
                                "target training set is unlabeled")
            self.target_labels = data.target_train.labels.to(storage)
            self.labeled_target = IndexStream(len(data.target_train), batch_size, seed * 3 + 2)
        streamed = {name: (getattr(self, images), stream) for name, images, stream in (
            ("source", "source_images", self.source), ("target", "target_images", self.target),
            ("labeled_target", "target_images", self.labeled_target))
            if stream is not None and is_lazy(getattr(self, images))}
        self.prefetcher = Prefetcher(streamed, workers, device.type == "cuda") if streamed \
            else None  # streamed sets: batches decoded by workers, a step ahead
        self._decoded: dict[str, Tensor] = {}
        self.shots, self.shot_stream = None, None
        if shots is not None and data.target_shots is not None:
            if shots not in ("batch", "source"):
                raise ValueError(f"shots must be batch, source or None, got {shots!r}")
            self.shots = shots
            self.shot_images = data.target_shots.images.to(storage)
            self.shot_labels = data.target_shots.labels.to(storage)
            self.shot_stream = IndexStream(len(data.target_shots), batch_size, seed * 3 + 4)

    def _images(self, storage: Tensor, indices: Tensor, name: str = "") -> Tensor:
        if name in self._decoded:  # decoded by the prefetcher for this step
            return as_float(self._decoded[name].to(self.device, non_blocking=True))
        images = storage[indices.to(storage.device)].to(self.device, non_blocking=True)
        return as_float(images)

    def _view(self, images: Tensor, view: str, stream: int, step: int) -> Tensor:
        if view == "none" or self.augmenter is None:
            return images
        return self.augmenter(images, view, stream, step)

    def _labeled(self, images: Tensor, labels: Tensor, indices: Tensor, view: str,
                 stream: int, step: int, name: str = "") -> LabeledBatch:
        return LabeledBatch(self._view(self._images(images, indices, name), view, stream, step),
                            labels[indices.to(labels.device)].to(self.device), indices)

    def batch(self, step: int) -> DomainBatch:
        self._decoded = self.prefetcher.get(step) if self.prefetcher is not None else {}
        source = None
        if self.source is not None:
            source = self._labeled(self.source_images, self.source_labels,
                                   self.source.indices(step), self.source_view, 0, step,
                                   "source")
        target = labeled_target = None
        if self.target is not None:
            target_indices = self.target.indices(step)
            clean = self._images(self.target_images, target_indices, "target")
            strong = self._view(clean, "strong", 3, step) if self.strong_target else None
            target = UnlabeledBatch(self._view(clean, self.target_view, 1, step),
                                    target_indices, strong)
        if self.labeled_target is not None:
            labeled_target = self._labeled(self.target_images, self.target_labels,
                                           self.labeled_target.indices(step),
                                           self.target_view, 2, step, "labeled_target")
        if self.shot_stream is not None:
            shots = self._labeled(self.shot_images, self.shot_labels,
                                  self.shot_stream.indices(step), self.source_view, 4, step)
            if self.shots == "batch":
                labeled_target = shots
            elif source is not None:  # S+T: the shots train as more labeled images
                source = LabeledBatch(torch.cat([source.images, shots.images]),
                                      torch.cat([source.labels, shots.labels]),
                                      torch.cat([source.indices, shots.indices]))
        return DomainBatch(source, target, labeled_target)
