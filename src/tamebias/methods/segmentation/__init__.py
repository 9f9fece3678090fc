"""Segmentation methods (dense prediction under domain shift): the same ``Method`` contract,
stages and ``ctx.update`` as the classification methods, on a ``Segmenter`` and typed batches
whose source part carries label maps (``SegmentedBatch``). Their own registry, because every
one of them reads label maps and none of the classification methods does."""

from __future__ import annotations

from ...config import MethodConfig
from ...models.segmenters import Segmenter
from ...registry import lookup
from ..base import Method
from .adabn import SegAdaBN
from .adaptseg import AdaptSeg
from .advent import Advent, MinEnt
from .cbst import CBST
from .cycada import SegCyCADA
from .dacs import DACS
from .oracle import SegOracle
from .source_only import SegSourceOnly

SEGMENTATION_METHODS: dict[str, type[Method]] = {
    "source_only": SegSourceOnly,
    "adabn": SegAdaBN,
    "adaptseg": AdaptSeg,
    "minent": MinEnt,
    "advent": Advent,
    "cbst": CBST,
    "cycada": SegCyCADA,
    "dacs": DACS,
    "oracle": SegOracle,
}


def build_segmentation_method(config: MethodConfig, segmenter: Segmenter) -> Method:
    """The segmentation method of ``config`` around ``segmenter``."""
    method = lookup(SEGMENTATION_METHODS, config.name, "segmentation method")(config,
                                                                               segmenter)
    method.freeze()
    return method


__all__ = ["SEGMENTATION_METHODS", "build_segmentation_method"]
