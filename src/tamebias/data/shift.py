"""Category shift: which classes the source and the target hold.

A category-shift protocol splits the classes into *shared* ones (in both domains),
*source-private* ones (labeled source only) and *target-private* ones (target only, never seen
with a label). The source keeps shared + source-private classes, labeled ``0..K-1`` in that
order; the target keeps shared + target-private classes, and every target-private class becomes
the one label ``K`` = "unknown". The setting follows from which lists are empty:

==============  ===============  ===============
setting         source-private   target-private
==============  ===============  ===============
closed          no               no
partial         yes              no
open-set        no               yes
open-partial    yes              yes
==============  ===============  ===============

Named presets (``data.category_shift``) hold the digits splits of this project and the published
Office-31 / OfficeHome / VisDA splits of the DANCE paper (Saito et al., arXiv:2002.07953), which
follow UAN (You et al., 2019) for open-partial and OSBP (Saito et al., 2018) for open-set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .imageset import DataError, ImageSet

UNKNOWN = "unknown"
SETTINGS = ("closed", "partial", "open-set", "open-partial")

#: The ten Office-31 classes shared with Caltech-256 (the shared classes of UAN / OSBP / DANCE).
OFFICE_CALTECH = ("back_pack", "bike", "calculator", "headphones", "keyboard",
                  "laptop_computer", "monitor", "mouse", "mug", "projector")
#: OSBP's known classes on VisDA-2017 (the other six are unknown).
VISDA_OSBP_KNOWN = ("bicycle", "bus", "car", "motorcycle", "train", "truck")
DIGITS_SHARED = tuple(str(d) for d in range(6))


@dataclass(frozen=True)
class ShiftPreset:
    """``shared`` is a tuple of class names, or ``n`` for the first n names of the sorted union
    of both domains' classes (the authors sort folder names). The private classes are slices
    ``(start, stop)`` of the *remaining* sorted names; ``None`` means none."""

    description: str
    shared: tuple[str, ...] | int
    source_private: tuple[int, int | None] | None = None
    target_private: tuple[int, int | None] | None = None


def _digits(description: str, source_private, target_private) -> ShiftPreset:
    return ShiftPreset(description, DIGITS_SHARED, source_private, target_private)


PRESETS: dict[str, ShiftPreset] = {
    "digits-closed": ShiftPreset("digits: all 10 classes shared", 10),
    "digits-partial": _digits("digits: shared 0-5, source-private 6-9", (0, 4), None),
    "digits-open-set": _digits("digits: known 0-5, target-private (unknown) 6-9", None, (0, 4)),
    "digits-open-partial": _digits(
        "digits: shared 0-5, source-private 6-7, target-private (unknown) 8-9", (0, 2), (2, 4)),
    "office31-partial": ShiftPreset(
        "Office-31 (PADA/DANCE): source all 31, target the 10 Office-Caltech classes",
        OFFICE_CALTECH, (0, None), None),
    "office31-open-set": ShiftPreset(
        "Office-31 (OSBP/DANCE): known the 10 Office-Caltech classes, unknown the last 11 of "
        "the other 21 (alphabetical)", OFFICE_CALTECH, None, (10, None)),
    "office31-open-partial": ShiftPreset(
        "Office-31 (UAN/DANCE): shared 10 Office-Caltech, source-private the next 10 "
        "(alphabetical), target-private the last 11", OFFICE_CALTECH, (0, 10), (10, None)),
    "officehome-partial": ShiftPreset(
        "OfficeHome (DANCE): source all 65, target the first 25 (alphabetical)", 25,
        (0, None), None),
    "officehome-open-set": ShiftPreset(
        "OfficeHome (DANCE): known the first 15 (alphabetical), unknown the other 50", 15,
        None, (0, None)),
    "officehome-open-partial": ShiftPreset(
        "OfficeHome (UAN/DANCE): shared the first 10, source-private the next 5, "
        "target-private the last 50 (alphabetical)", 10, (0, 5), (5, None)),
    "visda-partial": ShiftPreset(
        "VisDA-2017 (DANCE): source all 12, target the first 6 (alphabetical)", 6,
        (0, None), None),
    "visda-open-set": ShiftPreset(
        "VisDA-2017 (OSBP/DANCE): known bicycle, bus, car, motorcycle, train, truck; "
        "the other 6 unknown", VISDA_OSBP_KNOWN, None, (0, None)),
    "visda-open-partial": ShiftPreset(
        "VisDA-2017 (UAN/DANCE): shared the first 6, source-private the next 3, "
        "target-private the last 3 (alphabetical)", 6, (0, 3), (3, None)),
}


@dataclass(frozen=True)
class CategoryShift:
    """A resolved split into class names; relabels image sets to the protocol."""

    shared: tuple[str, ...]
    source_private: tuple[str, ...] = ()
    target_private: tuple[str, ...] = ()
    preset: str | None = None

    @property
    def setting(self) -> str:
        return SETTINGS[bool(self.source_private) + 2 * bool(self.target_private)]

    @property
    def source_classes(self) -> list[str]:
        """The K classes the model predicts: shared first, then source-private."""
        return [*self.shared, *self.source_private]

    @property
    def target_classes(self) -> list[str]:
        """Target label names: the source classes, plus "unknown" (label K) when open."""
        return self.source_classes + ([UNKNOWN] if self.target_private else [])

    def card(self) -> dict[str, Any]:
        return {"setting": self.setting, "preset": self.preset, "shared": list(self.shared),
                "source_private": list(self.source_private),
                "target_private": list(self.target_private),
                "unknown_label": len(self.source_classes) if self.target_private else None}

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> CategoryShift:
        return cls(tuple(card["shared"]), tuple(card["source_private"]),
                   tuple(card["target_private"]), card.get("preset"))

    def _relabel(self, images: ImageSet, mapping: dict[str, int], classes: list[str],
                 side: str) -> ImageSet:
        missing = sorted(set(mapping) - set(images.classes) - {UNKNOWN})
        if missing:
            raise DataError(f"{images.name}: the {side} split names classes it does not have: "
                            f"{', '.join(missing)} (its classes: {', '.join(images.classes)})")
        lookup = torch.full((max(images.num_classes, 1),), -1, dtype=torch.int64)
        for index, name in enumerate(images.classes):
            lookup[index] = mapping.get(name, -1)
        new_labels = lookup[images.labels] if len(images) else images.labels
        keep = torch.nonzero(new_labels >= 0).flatten()
        return ImageSet(images.images[keep], new_labels[keep], classes, images.name,
                        dict(images.meta))

    def relabel_source(self, images: ImageSet) -> ImageSet:
        """Keep shared + source-private images, labeled by their index in ``source_classes``."""
        mapping = {name: i for i, name in enumerate(self.source_classes)}
        return self._relabel(images, mapping, self.source_classes, "source")

    def relabel_target(self, images: ImageSet) -> ImageSet:
        """Keep shared + target-private images; every target-private class becomes label K."""
        unknown = len(self.source_classes)
        mapping = {name: i for i, name in enumerate(self.shared)}
        mapping.update({name: unknown for name in self.target_private})
        return self._relabel(images, mapping, self.target_classes, "target")


def _names(values: list[str | int] | None, universe: list[str], field: str) -> tuple[str, ...]:
    """Class names from names or integer positions in ``universe``."""
    names = []
    for value in values or []:
        if isinstance(value, int):
            if not 0 <= value < len(universe):
                raise DataError(f"data.{field}: class index {value} is out of range; the classes "
                                f"are 0..{len(universe) - 1}: {', '.join(universe)}")
            value = universe[value]
        if value not in universe:
            raise DataError(f"data.{field}: no class named {value!r}; the classes are "
                            f"{', '.join(universe)}")
        names.append(value)
    if len(set(names)) != len(names):
        raise DataError(f"data.{field} lists a class twice: {names}")
    return tuple(names)


def _from_preset(name: str, source_classes: list[str], target_classes: list[str]) -> tuple:
    if name not in PRESETS:
        raise DataError(f"data.category_shift: no preset {name!r}; presets: "
                        f"{', '.join(PRESETS)}")
    preset = PRESETS[name]
    universe = sorted(set(source_classes) | set(target_classes))
    if isinstance(preset.shared, int):
        if preset.shared > len(universe):
            raise DataError(f"data.category_shift={name} needs at least {preset.shared} classes, "
                            f"the data has {len(universe)}")
        shared = tuple(universe[: preset.shared])
    else:
        shared = preset.shared
    rest = [c for c in universe if c not in shared]

    def cut(part):
        return tuple(rest[part[0] : part[1]]) if part else ()

    return shared, cut(preset.source_private), cut(preset.target_private)


def resolve_category_shift(config: Any, source_classes: list[str],
                           target_classes: list[str]) -> CategoryShift | None:
    """The split that ``config`` (a DataConfig) asks for, checked against both class lists;
    ``None`` when no category shift is configured (closed set on identical classes).

    ``data.shared_classes`` left unset means every class both domains have that is not listed
    as private; unset private lists mean none. Integers name classes by position in the source
    classes followed by the target's extra classes (for digits: the digit itself)."""
    preset = getattr(config, "category_shift", None)
    lists = (getattr(config, "shared_classes", None), getattr(config, "source_private", None),
             getattr(config, "target_private", None))
    if preset is None and all(value is None for value in lists):
        return None
    if preset is not None:
        if any(value is not None for value in lists):
            raise DataError("set either data.category_shift (a preset) or the class lists "
                            "data.shared_classes / source_private / target_private, not both")
        shared, source_private, target_private = _from_preset(preset, source_classes,
                                                              target_classes)
    else:
        universe = list(source_classes) + [c for c in target_classes if c not in source_classes]
        source_private = _names(lists[1], universe, "source_private")
        target_private = _names(lists[2], universe, "target_private")
        if lists[0] is None:
            shared = tuple(c for c in source_classes if c in target_classes
                           and c not in source_private and c not in target_private)
        else:
            shared = _names(lists[0], universe, "shared_classes")
    overlap = (set(shared) & set(source_private)) | (set(shared) & set(target_private)) | (
        set(source_private) & set(target_private))
    if overlap:
        raise DataError(f"a class cannot be in two of shared / source-private / target-private: "
                        f"{', '.join(sorted(overlap))}")
    if not shared:
        raise DataError("a category shift needs at least one shared class")
    for side, classes, names in (("source", source_classes, (*shared, *source_private)),
                                 ("target", target_classes, (*shared, *target_private))):
        absent = [c for c in names if c not in classes]
        if absent:
            raise DataError(f"the {side} dataset has no class {', '.join(absent)} "
                            f"(its classes: {', '.join(classes)}); fix the category-shift split")
    return CategoryShift(shared, source_private, target_private, preset)
