"""CyCADA: pixel-level (CycleGAN + semantic consistency) and feature-level adaptation."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
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
from .adda import adversarial_feature_step, load_method_state, load_source_classifier
from .base import Method, Stage, StepContext
from .common import classification_step, source_stage


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
    source_run: str | None = None  # reuse a trained source model: a run dir or checkpoint file
    # reuse a finished cycada_pixel run (translator, teacher, task classifier): only the
    # feature stage runs, so pixel-only and pixel+feature rows share their first stages
    pixel_run: str | None = None
    # reuse a finished cycada / cycada_pixel run's translator and semantic teacher: the source
    # and translate stages are skipped and the task stage starts again from that run's source
    # model (its teacher), e.g. to retrain the task classifier in another setting
    translator_run: str | None = None


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (a fixed translator: BatchNorm statistics do not move)."""
    mode = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(mode)


def input_channels(classifier: Classifier) -> int:
    """The image channels the classifier reads (those of its first convolution)."""
    for module in classifier.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError("cycada needs a convolutional backbone to know the image channels")


class CyCADA(Method):
    """Cycle-consistent adversarial domain adaptation (Hoffman et al., ICML 2018,
    arXiv:1711.03213).

    Stage ``source`` trains the classifier on labeled source (skipped with ``source_run``); a
    frozen copy becomes the semantic teacher. Stage ``translate`` (not evaluated) trains a
    CycleGAN with its own optimizers: LSGAN + cycle (+ identity) losses, plus semantic
    consistency, cross-entropy between the frozen teacher on a translated image and the
    teacher's own class for the original (both directions). Stage ``task`` trains the
    classifier (warm-started from the source model) on source images translated on the fly by
    the fixed source->target generator, with the source labels. Optional stage ``feature`` is
    ADDA's adaptation step with translated source images as the source domain.

    Finished stages can be reused: ``source_run`` (a source model), ``translator_run`` (a
    trained translator and teacher; only ``task`` and ``feature`` run) and ``pixel_run`` (a
    whole pixel-only run; only ``feature`` runs)."""

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
        config = self.config
        feature = Stage(
            "feature", self.feature_step,
            {"critic": [self.critic], "target_encoder": [self.classifier.backbone]},
            config.feature_optim, config.feature_steps, on_start=self.start_features)
        if config.pixel_run is not None:
            if config.feature_steps <= 0:
                raise ValueError("method.pixel_run reuses a pixel-only run for the feature "
                                 "stage; set method.feature_steps above 0")
            if config.translator_run is not None:
                raise ValueError("method.pixel_run already brings a translator; drop "
                                 "method.translator_run")
            return [feature]
        stages = []
        if config.translator_run is not None:
            if config.source_run is not None:
                raise ValueError("method.translator_run brings its own source model (the "
                                 "semantic teacher); drop method.source_run")
        else:
            if config.source_run is None:
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
                  config.steps,
                  on_start=None if config.translator_run is None else self.reuse_translator))
        if config.feature_steps > 0:
            stages.append(feature)
        return stages

    def start_translation(self) -> None:
        if self.config.source_run is not None:
            self.classifier.load_state_dict(load_source_classifier(self.config.source_run))
        self.teacher.load_state_dict(self.classifier.state_dict())
        if self.config.teacher_target_stats:
            self.target_teacher.load_state_dict(self.classifier.state_dict())
            for norm in batch_norms(self.target_teacher):
                norm.reset_running_stats()

    def load_parts(self, run: str, setting: str, names: tuple[str, ...]) -> None:
        """Load the ``names`` modules (e.g. translator, teacher) from another run's weights."""
        state = load_method_state(run, setting=setting)
        for name in names:
            part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            if not part:
                raise ValueError(f"{setting}={run} holds no {name} weights; give a "
                                 "cycada or cycada_pixel run")
            getattr(self, name).load_state_dict(part)

    def reuse_translator(self) -> None:
        self.load_parts(self.config.translator_run, "method.translator_run",
                        ("translator", "teacher"))
        self.classifier.load_state_dict(self.teacher.state_dict())  # that run's source model

    def start_features(self) -> None:
        if self.config.pixel_run is not None:
            self.load_parts(self.config.pixel_run, "method.pixel_run",
                            ("translator", "teacher", "classifier"))
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


@dataclass
class CyCADAPixelConfig(CyCADAConfig):
    name: str = "cycada_pixel"
    feature_steps: int = 0


class CyCADAPixel(CyCADA):
    """Pixel-only CyCADA: ``cycada`` with ``feature_steps=0`` under its own name, so a results
    table tells the two configurations apart."""

    Config = CyCADAPixelConfig
    description = "CyCADA pixel-only: CycleGAN + semantic consistency, no feature stage (2018)"
