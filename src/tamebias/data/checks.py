"""Sanity checks on loaded data, made before anything large is allocated or trained: labels
that name real classes, a sane class count, non-empty splits, and a decoded size that fits in
memory."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .imageset import DataError, ImageSet

#: Environment variable that sets the memory budget for decoded images, in GB.
BUDGET_VARIABLE = "TAMEBIAS_MEMORY_BUDGET_GB"


def _ranges(values: Sequence[int], limit: int = 6) -> str:
    """``[0, 1, 2, 5, 9]`` -> ``0-2, 5, 9``."""
    parts: list[str] = []
    start = previous = None
    for value in [*values, None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = value
    shown = ", ".join(parts[:limit])
    return shown + (f", ... ({len(parts) - limit} more runs)" if len(parts) > limit else "")


def check_labels(spec: str, splits: Sequence[ImageSet]) -> None:
    """The splits of one domain: at least two classes, and when the class list was inferred
    from the labels (names "0".."K-1", as npz files give) every label 0..K-1 occurs, so a
    stray label (100000) or labels from 1 cannot invent empty classes."""
    classes = splits[0].classes
    if len(classes) < 2 and sum(len(s) for s in splits):
        raise DataError(f"{spec}: {len(classes)} class found; classification needs at "
                        "least 2 (check the labels 'y')")
    if classes != [str(index) for index in range(len(classes))]:
        return  # named classes (folders, registered datasets): the names say what exists
    present = torch.cat([s.labels for s in splits]).unique().tolist()
    if len(present) == len(classes):
        return
    missing = sorted(set(range(len(classes))) - set(present))
    raise DataError(
        f"{spec}: labels must run 0..K-1 without gaps, but the labels present are "
        f"{_ranges(present)}, which would make {len(classes)} classes, {len(missing)} of "
        f"them ({_ranges(missing)}) without any image; relabel the data to 0..K-1 (a stray "
        "label is usually a data error)")


def check_not_empty(named: Sequence[tuple[str, ImageSet]]) -> None:
    for what, images in named:
        if len(images) == 0:
            raise DataError(f"{what}: holds no images ({images.name}); every split a run "
                            "uses must have at least one")


def memory_budget() -> tuple[int, str]:
    """Bytes decoded images may take, and how that budget was chosen."""
    given = os.environ.get(BUDGET_VARIABLE)
    if given:
        try:
            return int(float(given) * 1e9), f"{BUDGET_VARIABLE}={given}"
        except ValueError:
            raise DataError(f"{BUDGET_VARIABLE}={given!r} must be a number of GB") from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        return 1 << 62, "no limit known"
    return int(0.8 * total), f"80% of this machine's {total / 1e9:.1f} GB memory"


def check_decoded_size(sets: Sequence[ImageSet], size: int, channels: int) -> None:
    """Refuse a geometry whose uint8 copies of ``sets`` would not fit the memory budget."""
    images = sum(len(s) for s in sets)
    needed = images * channels * size * size
    budget, how = memory_budget()
    if needed > budget:
        raise DataError(
            f"{images} images at {size}x{size}x{channels} need {needed / 1e9:.1f} GB once "
            f"decoded, more than the memory budget of {budget / 1e9:.1f} GB ({how}); "
            f"choose a smaller data.size or subset, or set {BUDGET_VARIABLE}")


_noted: set[tuple[str, str]] = set()


def note_outside_root(spec: str, path: Path, data_root: Path) -> None:
    """Say where a ``folder:`` dataset was read from when that is outside the data root
    (allowed: a path given on purpose; said once, so a wrong working directory shows)."""
    resolved, root = path.resolve(), data_root.expanduser().resolve()
    if resolved == root or root in resolved.parents or (spec, str(resolved)) in _noted:
        return
    _noted.add((spec, str(resolved)))
    print(f"note: {spec} is read from {resolved}, outside the data root {root}",
          file=sys.stderr, flush=True)
