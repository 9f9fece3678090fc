"""CyCADA: pixel-level (CycleGAN + semantic consistency) and feature-level adaptation."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, MethodConfig, OptimConfig
from ..data.batch import DomainBatch, LabeledBatch
from ..models.classifier import Classifier
from ..models.critics import DomainCritic
from ..models.norm import batch_norms
from ..models.translator import CycleGAN, TranslatorConfig
from .base import Method, Stage, StepContext
from .common import classification_step, source_stage
from .parts import adversarial_feature_step, evaluating, input_channels


def _gan_optim() -> OptimConfig:
    return OptimConfig("adam", lr=2e-4, betas=(0.5, 0.999))


@dataclass
class CyCADAConfig(MethodConfig):
    """Paper-like defaults (CycleGAN's LSGAN + cycle weight 10 + Adam 2e-4/0.5; semantic
    weight 1; ADDA's feature stage), with networks and step counts sized so a digits run
    fits in about 30 minutes on 2 CPU cores. ``feature_steps=0`` is pixel-only CyCADA."""

    name: str = "cycada"
    source_steps: int = 2000
    translate_steps: int = 2000
    steps: int = 2000  # task stage: the classifier on translated source images
    feature_steps: int = 2000  # 0: pixel-only
    translate_batch: int = 32  # images per domain per translator step, cut from each batch
    semantic_weight: float = 1.0
    # the semantic teacher reads target-style images (source->target translations, and the
    # target originals) with batch-norm statistics gathered on the target batches of the
    # translate stage (AdaBN), source-style ones with the source model's own (needs batch norm)
    teacher_target_stats: bool = False
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)
    source_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    translator_optim: OptimConfig = field(default_factory=_gan_optim)
    task_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    feature_optim: OptimConfig = field(default_factory=_gan_optim)
    critic_hidden: tuple[int, ...] = (500, 500)  # the feature stage's critic (ADDA's)


class CyCADA(Method):
    """Cycle-consistent adversarial domain adaptation (Hoffman et al., ICML 2018,
    arXiv:1711.03213).

    Stage ``source`` trains the classifier on labeled source; a frozen copy becomes the
    semantic teacher. Stage ``translate`` (not evaluated) trains a CycleGAN with its own
    optimizers: LSGAN + cycle (+ identity) losses, plus semantic consistency, cross-entropy
    between the frozen teacher on a translated image and the teacher's own class for the
    original (both directions). Stage ``task`` trains the classifier (warm-started from the
    source model) on source images translated on the fly by the fixed source->target
    generator, with the source labels. Optional stage ``feature`` is ADDA's adaptation step
    with translated source images as the source domain.

    Finished stages can be reused (``init.weights=RUN:modules``): ``classifier`` (a source
    model; ``source`` is skipped), ``translator,teacher`` (a trained translator and its
    teacher; ``task`` starts again from that teacher, and only ``task`` and ``feature`` run) or
    ``translator,teacher,classifier`` (a whole pixel-only run; only ``feature`` runs)."""

    Config = CyCADAConfig
    description = "CyCADA: CycleGAN pixel alignment + semantic consistency (+ ADDA features, 2018)"
    images_only = True  # translates pixels: refused on feature vectors
    frozen_modules = ("teacher", "source_encoder")

    def __init__(self, config: CyCADAConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        self.translator = CycleGAN(input_channels(classifier), config.translator)
        self.teacher = copy.deepcopy(classifier)  # filled when translation starts
        self.source_encoder = copy.deepcopy(classifier)  # filled when feature alignment starts
        self.critic = DomainCritic(classifier.feature_dim, config.critic_hidden)
        if config.teacher_target_stats:
            self.target_teacher = copy.deepcopy(classifier)  # filled when translation starts
            norms = batch_norms(self.target_teacher)
            if not norms:
                raise ConfigError("method.teacher_target_stats gives the semantic teacher target "
                                  "batch-norm statistics; the classifier has no batch norm "
                                  "(set model.norm=bn)")
            for norm in norms:
                norm.momentum = None  # a cumulative average over all target batches seen
            self.frozen_modules = (*self.frozen_modules, "target_teacher")

    def stages(self) -> list[Stage]:
        config, loaded = self.config, set(self.initialized)
        if not loaded <= {"classifier", "translator", "teacher"} or (
                ("translator" in loaded) != ("teacher" in loaded)):
            raise ValueError("init.weights: cycada starts from classifier (a source model), "
                             "translator,teacher (a trained translator) or translator,teacher,"
                             f"classifier (a pixel-only run), not {','.join(self.initialized)}")
        translated = "translator" in loaded
        feature = Stage(
            "feature", self.feature_step,
            {"critic": [self.critic], "target_encoder": [self.classifier.backbone]},
            config.feature_optim, config.feature_steps, on_start=self.start_features)
        if translated and "classifier" in loaded:
            if config.feature_steps <= 0:
                raise ValueError("init.weights brings a whole pixel-only run (translator, "
                                 "teacher, classifier): only the feature stage is left; set "
                                 "method.feature_steps above 0")
            return [feature]
        stages = []
        if not translated:
            if "classifier" not in loaded:
                stages.append(source_stage(self.classifier, config.source_steps,
                                           config.source_optim))
            stages.append(
                Stage("translate", self.translate_step,
                      {"generators": self.translator.generators,
                       "critics": self.translator.critics},
                      config.translator_optim, config.translate_steps,
                      on_start=self.start_translation, evaluate=False))
        stages.append(
            Stage("task", self.task_step, {"classifier": [self.classifier]}, config.task_optim,
                  config.steps, on_start=self.start_from_teacher if translated else None))
        if config.feature_steps > 0:
            stages.append(feature)
        return stages

    def start_translation(self) -> None:
        self.teacher.load_state_dict(self.classifier.state_dict())
        if self.config.teacher_target_stats:
            self.target_teacher.load_state_dict(self.classifier.state_dict())
            for norm in batch_norms(self.target_teacher):
                norm.reset_running_stats()

    def start_from_teacher(self) -> None:
        """A reused translator's teacher is its run's source model: the task stage starts
        from it."""
        self.classifier.load_state_dict(self.teacher.state_dict())

    def start_features(self) -> None:
        self.source_encoder.load_state_dict(self.classifier.state_dict())

    def semantic_loss(self, originals: Tensor, translated: Tensor,
                      original_reader: nn.Module | None = None,
                      translated_reader: nn.Module | None = None) -> Tensor:
        """Cross-entropy of the frozen teacher on translated images against the teacher's
        class for the originals; the gradient reaches the generator, never the teacher.
        The readers are the teacher unless given (its copy with target statistics)."""
        with torch.no_grad():
            classes = (original_reader or self.teacher)(originals).argmax(1)
        return F.cross_entropy((translated_reader or self.teacher)(translated).float(), classes)

    @torch.no_grad()
    def gather_target_statistics(self, target: Tensor) -> None:
        """Add a target batch to the target teacher's batch-norm statistics (AdaBN: only the
        batch norms run in training mode; dropout stays off)."""
        norms = batch_norms(self.target_teacher)
        for norm in norms:
            norm.train()
        self.target_teacher(target)
        for norm in norms:
            norm.eval()

    def translate_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.source is not None and batch.target is not None
        source = batch.source.images[: self.config.translate_batch]
        target = batch.target.images[: self.config.translate_batch]
        translator = self.translator
        target_reader = None
        if self.config.teacher_target_stats:
            self.gather_target_statistics(target)
            target_reader = self.target_teacher
        with ctx.autocast():
            images = translator.translate(source, target)
            losses = translator.generator_losses(source, target, images)
            semantic = self.config.semantic_weight * (
                self.semantic_loss(source, images["fake_target"], None, target_reader)
                + self.semantic_loss(target, images["fake_source"], target_reader, None))
        ctx.update("generators", losses["total"] + semantic)  # critics' gradients discarded
        with ctx.autocast():
            critic_loss = translator.critic_loss(source, target, images["fake_source"].detach(),
                                                 images["fake_target"].detach())
        ctx.update("critics", critic_loss)
        metrics = {key: value.detach() for key, value in losses.items() if key != "total"}
        return {**metrics, "semantic_loss": semantic.detach(),
                "critic_loss": critic_loss.detach()}

    @torch.no_grad()
    def to_target(self, images: Tensor) -> Tensor:
        """Source images as the trained translator renders them in the target style."""
        with evaluating(self.translator):
            return self.translator.source_to_target(images)

    def task_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source = batch.source
        assert source is not None
        translated = LabeledBatch(self.to_target(source.images), source.labels, source.indices)
        return classification_step(self.classifier, translated, ctx, "classifier")

    def feature_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.source is not None and batch.target is not None
        return adversarial_feature_step(self.source_encoder, self.classifier, self.critic,
                                        self.to_target(batch.source.images),
                                        batch.target.images, ctx)

