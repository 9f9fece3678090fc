"""Source only: train on labeled source data, apply to the target unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MethodConfig, OptimConfig
from .base import DataNeeds, Method, Stage
from .common import source_stage


@dataclass
class SourceOnlyConfig(MethodConfig):
    name: str = "source_only"
    steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


class SourceOnly(Method):
    """Source only (no adaptation): cross-entropy on the labeled source batch; the baseline
    every adaptation method must beat. One stage, ``source``."""

    Config = SourceOnlyConfig
    description = "no adaptation: cross-entropy on labeled source; the baseline to beat"
    needs = DataNeeds(target=False)

    def stages(self) -> list[Stage]:
        return [source_stage(self.classifier, self.config.steps, self.config.optim)]
