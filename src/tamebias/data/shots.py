"""The k-shot target protocol of semi-supervised domain adaptation: a few labeled target images
per class (and optionally a labeled target validation set), the rest an unlabeled pool.

The choice is a pure function of the labels, the counts and a seed, so every run with one
seed trains on the same shots; ``protocol.json`` records them by index."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .imageset import DataError


@dataclass(frozen=True)
class ShotSplit:
    """Indices into the target training set: labeled shots, labeled validation, unlabeled."""

    labeled: Tensor
    validation: Tensor
    unlabeled: Tensor


def pick_shots(labels: Tensor, num_classes: int, shots: int, validation_shots: int,
               seed: int, name: str = "target") -> ShotSplit:
    """``shots`` + ``validation_shots`` images of every class, drawn by a seeded permutation
    (disjoint); every image left over is unlabeled. A class with too few images is an error
    that names it."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    ordered = labels[order]
    labeled, validation = [], []
    for label in range(num_classes):
        members = order[ordered == label]
        if len(members) < shots + validation_shots:
            raise DataError(
                f"{name}: class {label} has {len(members)} training images, fewer than the "
                f"{shots} shots + {validation_shots} validation images per class asked for "
                "(data.target_shots, data.target_val_shots)")
        labeled.append(members[:shots])
        validation.append(members[shots : shots + validation_shots])
    taken = torch.zeros(len(labels), dtype=torch.bool)
    labeled_index = torch.cat(labeled).sort().values
    validation_index = torch.cat(validation).sort().values
    taken[labeled_index] = True
    taken[validation_index] = True
    return ShotSplit(labeled_index, validation_index, torch.nonzero(~taken).flatten())
