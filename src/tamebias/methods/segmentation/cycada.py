"""CyCADA for segmentation: pixel-level alignment with semantic consistency on label maps,
then output-space alignment."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ...config import MethodConfig, OptimConfig
from ...data.batch import DomainBatch, SegmentedBatch
from ...models.critics import PixelCritic
from ...models.segmenters import Segmenter
from ...models.translator import CycleGAN, TranslatorConfig
from ..base import Method, Stage, StepContext
from .common import output_adversarial_step, softmax_map, source_stage, supervised_loss


def _gan_optim() -> OptimConfig:
    return OptimConfig("adam", lr=2e-4, betas=(0.5, 0.999))


@dataclass
class SegCyCADAConfig(MethodConfig):
    name: str = "cycada"
    source_steps: int = 2000  # skipped when the segmenter comes from a source-only run
    translate_steps: int = 2000
    steps: int = 1000  # task stage: the segmenter on translated source scenes
    output_steps: int = 0  # > 0: then AdaptSegNet's step with translated source as source
    translate_batch: int = 8
    semantic_weight: float = 1.0
    adversarial_weight: float = 0.001
    critic_width: int = 64
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    translator_optim: OptimConfig = field(default_factory=_gan_optim)
    critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig("adam", lr=1e-4, betas=(0.9, 0.99)))


class SegCyCADA(Method):
    """CyCADA (Hoffman et al., ICML 2018, arXiv:1711.03213) on segmentation. Stage ``source``
    (or a source-only run via ``init``) gives the segmenter; a frozen copy is the semantic
    teacher. Stage ``translate`` (not evaluated) trains the project's CycleGAN with semantic
    consistency per pixel: the teacher's pixel cross-entropy on a translated scene against its
    own labels for the original (both directions). Stage ``task`` trains the segmenter on
    source scenes translated on the fly, with the source label maps. Optional stage ``output``
    aligns outputs (AdaptSegNet's step) between translated source and target."""

    Config = SegCyCADAConfig
    description = "CyCADA: CycleGAN on scenes + per-pixel semantic consistency (+ output space)"
    frozen_modules = ("teacher",)

    def __init__(self, config: SegCyCADAConfig, classifier: Segmenter) -> None:
        super().__init__(config, classifier)
        channels = next(m for m in classifier.modules()
                        if isinstance(m, torch.nn.Conv2d)).in_channels
        self.translator = CycleGAN(channels, config.translator)
        self.teacher = copy.deepcopy(classifier)
        self.critic = PixelCritic(classifier.num_classes, config.critic_width)

    def stages(self) -> list[Stage]:
        config = self.config
        stages = []
        if "classifier" not in self.initialized:
            stages.append(source_stage(self.classifier, config.source_steps, config.optim))
        stages.append(Stage("translate", self.translate_step,
                            {"generators": self.translator.generators,
                             "critics": self.translator.critics},
                            config.translator_optim, config.translate_steps,
                            on_start=self.start_translation, evaluate=False))
        stages.append(Stage("task", self.task_step, {"segmenter": [self.classifier]},
                            config.optim, config.steps))
        if config.output_steps > 0:
            stages.append(Stage("output", self.output_step,
                                {"segmenter": [self.classifier], "critic": [self.critic]},
                                {"segmenter": config.optim, "critic": config.critic_optim},
                                config.output_steps))
        return stages

    def start_translation(self) -> None:
        self.teacher.load_state_dict(self.classifier.state_dict())

    def semantic_loss(self, originals: Tensor, translated: Tensor) -> Tensor:
        """Teacher pixel cross-entropy on ``translated`` against its labels for
        ``originals``; the gradient reaches the generator, never the teacher."""
        with torch.no_grad():
            labels = self.teacher(originals).argmax(1)
        return F.cross_entropy(self.teacher(translated).float(), labels)

    def translate_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.source is not None and batch.target is not None
        source = batch.source.images[: self.config.translate_batch]
        target = batch.target.images[: self.config.translate_batch]
        with ctx.autocast():
            images = self.translator.translate(source, target)
            losses = self.translator.generator_losses(source, target, images)
            semantic = self.config.semantic_weight * (
                self.semantic_loss(source, images["fake_target"])
                + self.semantic_loss(target, images["fake_source"]))
        ctx.update("generators", losses["total"] + semantic)
        with ctx.autocast():
            critic_loss = self.translator.critic_loss(
                source, target, images["fake_source"].detach(), images["fake_target"].detach())
        ctx.update("critics", critic_loss)
        return {**{k: v.detach() for k, v in losses.items() if k != "total"},
                "semantic_loss": semantic.detach(), "critic_loss": critic_loss.detach()}

    @torch.no_grad()
    def to_target(self, images: Tensor) -> Tensor:
        generator = self.translator.source_to_target
        mode = generator.training
        generator.eval()
        try:
            return generator(images)
        finally:
            generator.train(mode)

    def translated(self, source: SegmentedBatch) -> SegmentedBatch:
        return SegmentedBatch(self.to_target(source.images), source.masks, source.indices)

    def task_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert isinstance(batch.source, SegmentedBatch)
        loss, _ = supervised_loss(self.classifier, self.translated(batch.source), ctx)
        ctx.update("segmenter", loss)
        return {"loss": loss.detach()}

    def output_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert isinstance(batch.source, SegmentedBatch)
        moved = DomainBatch(self.translated(batch.source), batch.target)
        return output_adversarial_step(self.classifier, self.critic, moved, ctx, softmax_map,
                                       self.config.adversarial_weight)
