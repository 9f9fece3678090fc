"""The target's two roles: unlabeled training images and the labeled evaluation set.

``data.target`` gives the target training images, labeled or not. ``data.target_test`` says
what the model is evaluated on:

- unset: the target's own test split (``train/`` + ``test/`` folders, ``train.npz`` +
  ``test.npz``); a target without one is evaluated on its own training images when they are
  labeled (transductive, recorded and reported as such) and not at all when unlabeled;
- a spec (``folder:``, ``list:``, ``npz:``, a registered name): a separate labeled set whose
  classes are matched to the source's by name (by label number where one side has no names);
- ``transductive``: the target training images with their labels, asked for explicitly;
- ``none``: no labeled evaluation (label-free validators and prediction statistics only).

Whenever the evaluation set shares image files with the unlabeled training set the protocol
says how many, so transductive use is never silent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .imageset import DataError, ImageSet

Loader = Callable[[str, str], ImageSet]


@dataclass
class TargetSets:
    train: ImageSet
    test: ImageSet | None
    protocol: dict[str, Any]


def _overlap(train: ImageSet, test: ImageSet) -> int | None:
    """How many test images are files of the training set (None when files are unknown)."""
    train_files, test_files = train.meta.get("files"), test.meta.get("files")
    if not train_files or not test_files or train.meta.get("format") in ("npz", "npz-vectors"):
        return None
    resolved = {str(Path(file).resolve()) for file in train_files}
    return sum(str(Path(file).resolve()) in resolved for file in test_files)


def load_target(spec: str, test_spec: str | None, load: Loader) -> TargetSets:
    """Load the target training set and its evaluation set; ``load(spec, split)`` reads one."""
    train = load(spec, "train")
    info: dict[str, Any] = {"target_labeled": train.is_labeled,
                            "target_test_spec": test_spec}
    same = False  # evaluated on the training images themselves
    if test_spec == "none":
        test, how = None, "none asked (data.target_test=none)"
    elif test_spec == "transductive":
        if not train.is_labeled:
            raise DataError(
                f"data.target_test=transductive evaluates on the target training images with "
                f"their labels, but {spec} is unlabeled; give a labeled set "
                "(data.target_test=folder:PATH, list:FILE or npz:PATH)")
        test, same = train, True
        how = "transductive: the target training images, asked for explicitly"
    elif test_spec:
        test = load(test_spec, "test")
        if not test.is_labeled:
            raise DataError(f"data.target_test={test_spec} has no labels, so it cannot measure "
                            "accuracy; give a labeled folder (one sub-folder per class), a list "
                            "with labels, or an npz with y")
        how = f"separate labeled set {test_spec}"
    elif train.meta.get("transductive"):  # no test split of its own
        if train.is_labeled:
            test, same = train, True
            how = ("transductive: the target has no test split, so the target training "
                   "images are evaluated with their labels (set data.target_test to a "
                   "held-out set, or =transductive to say so)")
        else:
            test, how = None, "none: the target is unlabeled and no data.target_test is given"
    else:
        test = load(spec, "test")
        how = "the target's own test split"
        if not test.is_labeled:
            test, how = None, "none: the target's test split is unlabeled"
    info["target_evaluation"] = how
    if test is not None:
        shared = len(test) if same else _overlap(train, test)
        if shared is not None:
            info["target_test_shared_files"] = shared
        test = replace(test, meta={**test.meta, "split": "test",
                                   "transductive": same or bool(shared)})
    return TargetSets(train, test, info)


def _numbered(classes: list[str]) -> bool:
    return classes == [str(index) for index in range(len(classes))]


def align_classes(source_classes: list[str], test: ImageSet, spec: str,
                  setting: str = "data.target_test") -> tuple[ImageSet, str]:
    """``test`` relabelled to the source's class order: by name, or by label number when
    either side only has numbers for names. Raises naming the classes that do not match."""
    if test.classes == source_classes:
        return test, "identical class lists"
    present = sorted(set(test.labels.tolist()))
    names = [test.classes[label] for label in present]
    index = {name: position for position, name in enumerate(source_classes)}
    if all(name in index for name in names):
        mapping = torch.full((len(test.classes),), -1, dtype=torch.int64)
        for label, name in zip(present, names, strict=True):
            mapping[label] = index[name]
        relabeled = ImageSet(test.images, mapping[test.labels], list(source_classes),
                             test.name, dict(test.meta))
        return relabeled, "by class name"
    if _numbered(test.classes) or _numbered(source_classes):
        if max(present, default=-1) < len(source_classes):
            return (ImageSet(test.images, test.labels, list(source_classes), test.name,
                             dict(test.meta)),
                    "by label number (one side has no class names)")
        raise DataError(f"{setting}={spec} has labels up to {max(present)} but the "
                        f"source has {len(source_classes)} classes")
    missing = [name for name in names if name not in index]
    raise DataError(
        f"{setting}={spec} has classes the source lacks: {', '.join(missing[:12])}"
        f"{', ...' if len(missing) > 12 else ''} (source classes: "
        f"{', '.join(source_classes[:12])}{', ...' if len(source_classes) > 12 else ''}); "
        "closed-set evaluation needs the test classes among the source's (for a category "
        "shift set data.category_shift or data.shared_classes)")


def check_kinds(source: ImageSet, target: ImageSet, source_spec: str, target_spec: str
                ) -> None:
    """Images against feature vectors, and vector dimensions, must agree."""
    if source.is_vectors != target.is_vectors:
        kinds = {True: "feature vectors", False: "images"}
        raise DataError(f"source {source_spec} is {kinds[source.is_vectors]} but target "
                        f"{target_spec} is {kinds[target.is_vectors]}; both domains must be "
                        "the same kind of data")
    if source.is_vectors and source.shape[0] != target.shape[0]:
        raise DataError(f"feature vectors differ in length: source {source_spec} has "
                        f"{source.shape[0]} dimensions, target {target_spec} has "
                        f"{target.shape[0]}")
