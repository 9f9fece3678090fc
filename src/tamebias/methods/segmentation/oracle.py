"""The segmentation oracle: trained on the target's own label maps (analysis only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import MethodConfig, OptimConfig
from ..base import DataNeeds, Method, Stage
from .common import source_stage


@dataclass
class SegOracleConfig(MethodConfig):
    name: str = "oracle"
    steps: int = 2000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


class SegOracle(Method):
    """Target-trained oracle: pixel cross-entropy on the labelled target training scenes,
    no source; the ceiling of adaptation, never a headline (``analysis_only``)."""

    Config = SegOracleConfig
    description = "the ceiling: trained on target label maps (analysis only)"
    needs = DataNeeds(source=False, target=False, labeled_target=True)
    analysis_only = True
    selection = "last"

    def stages(self) -> list[Stage]:
        return [source_stage(self.classifier, self.config.steps, self.config.optim,
                             name="target", labeled_target=True)]
