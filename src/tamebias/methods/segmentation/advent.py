"""ADVENT: entropy minimization and adversarial entropy alignment for segmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import MethodConfig, OptimConfig
from .common import OutputAlignment, self_information


@dataclass
class AdventConfig(MethodConfig):
    name: str = "advent"
    source_steps: int = 0  # optional source-only warm-up stage (the paper trains jointly)
    steps: int = 2000
    adversarial_weight: float = 0.001  # AdvEnt's lambda_adv
    entropy_weight: float = 0.0  # > 0: AdvEnt + MinEnt
    critic_width: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig("adam", lr=1e-4, betas=(0.9, 0.99)))


@dataclass
class MinEntConfig(AdventConfig):
    name: str = "minent"
    adversarial_weight: float = 0.0
    entropy_weight: float = 0.001  # MinEnt's lambda_ent


class Advent(OutputAlignment):
    """ADVENT (Vu et al., CVPR 2019, arXiv:1811.12833). AdvEnt: a fully convolutional critic
    on the weighted self-information maps ``-p log p`` (per class, normalized by log K) tells
    source from target; the segmenter minimizes source pixel cross-entropy plus
    ``adversarial_weight`` x the critic's loss on target maps labelled as source, plus
    ``entropy_weight`` x the mean normalized target pixel entropy (MinEnt; ``minent`` is this
    method with the critic off). Stages: optional ``source`` warm-up, then ``adapt``."""

    Config = AdventConfig
    description = "adversarial alignment of entropy maps (AdvEnt), plus optional MinEnt"

    output_map = staticmethod(self_information)

    @property
    def entropy_weight(self) -> float:  # type: ignore[override]
        return self.config.entropy_weight

class MinEnt(Advent):
    """MinEnt (Vu et al., CVPR 2019, arXiv:1811.12833): source pixel cross-entropy plus
    ``entropy_weight`` x the mean normalized pixel entropy on target; ADVENT without critic."""

    Config = MinEntConfig
    description = "entropy minimization over target pixels (ADVENT's MinEnt)"
