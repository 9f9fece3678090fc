"""AdaptSegNet: output-space adversarial alignment of segmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import MethodConfig, OptimConfig
from .common import OutputAlignment, softmax_map


@dataclass
class AdaptSegConfig(MethodConfig):
    name: str = "adaptseg"
    source_steps: int = 0  # optional source-only warm-up stage (the paper trains jointly)
    steps: int = 2000
    adversarial_weight: float = 0.001  # the paper's single-level lambda_adv
    critic_width: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig("adam", lr=1e-4, betas=(0.9, 0.99)))


class AdaptSeg(OutputAlignment):
    """AdaptSegNet (Tsai et al., CVPR 2018, arXiv:1802.10349), single level: a fully
    convolutional critic (``PixelCritic``) learns to tell the segmenter's softmax maps on
    source scenes from those on target scenes; the segmenter minimizes source pixel
    cross-entropy plus ``adversarial_weight`` x the critic's loss on target maps labelled as
    source. Stages: optional ``source`` warm-up, then ``adapt`` (two updates per step:
    ``segmenter``, ``critic``)."""

    Config = AdaptSegConfig
    description = "output-space adversarial alignment of softmax maps (AdaptSegNet)"
    output_map = staticmethod(softmax_map)
