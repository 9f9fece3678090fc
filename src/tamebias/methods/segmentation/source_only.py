"""Source only for segmentation: per-pixel cross-entropy on labelled source scenes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import MethodConfig, OptimConfig
from ..base import DataNeeds, Method, Stage
from .common import source_stage


@dataclass
class SegSourceOnlyConfig(MethodConfig):
    name: str = "source_only"
    steps: int = 2000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


class SegSourceOnly(Method):
    """Source only (no adaptation): pixel cross-entropy (ignore index left out) on the
    labelled source batch; the baseline every adaptation method must beat. One stage,
    ``source``."""

    Config = SegSourceOnlyConfig
    description = "no adaptation: pixel cross-entropy on labelled source scenes"
    needs = DataNeeds(target=False)

    def stages(self) -> list[Stage]:
        return [source_stage(self.classifier, self.config.steps, self.config.optim)]
