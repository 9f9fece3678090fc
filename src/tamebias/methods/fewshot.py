"""Few-shot pixel alignment: a FUNIT / COCO-FUNIT translator trained on generated seen styles,
then the classifier trained on source images rendered in the style of K target examples."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError, MethodConfig, OptimConfig
from ..data.batch import DomainBatch, LabeledBatch, UnlabeledBatch
from ..data.styles import SEEN_STYLES, get_style, render
from ..models.classifier import Classifier
from ..models.funit import (
    FEWSHOT_TRANSLATORS,
    FewShotTranslator,
    FewShotTranslatorConfig,
    MultiDomainCritic,
    build_fewshot_translator,
    hinge_critic_loss,
    hinge_generator_loss,
    r1_penalty,
)
from .base import DataNeeds, Method, Stage, StepContext
from .common import classification_step, source_stage
from .parts import evaluating, input_channels

SEMANTIC_INIT_SEED = 1


@dataclass
class FewShotPixelConfig(MethodConfig):
    """FUNIT's losses and Adam (2e-4, betas 0.5 / 0.999, as CycleGAN's here), networks and step
    counts sized for 32 px digits on 2 CPU cores. The K target examples are the unlabeled
    target training set: draw them with ``data.target_subset=K`` (recorded by
    ``data.subset_seed``); at most ``shots`` distinct ones are used."""

    name: str = "fewshot_pixel"
    translator: str = "coco_funit"  # funit, coco_funit, or identity (the source-only reference)
    network: FewShotTranslatorConfig = field(default_factory=FewShotTranslatorConfig)
    seen_styles: tuple[str, ...] = tuple(SEEN_STYLES)
    source_steps: int = 1000
    translate_steps: int = 2000
    steps: int = 1000  # task stage: the classifier on source rendered like the K examples
    translate_batch: int = 16  # content images per translator step, cut from the source batch
    shots: int = 5
    # share of each task batch kept untranslated: the task stage trains on source and its
    # translations together (PixelDA's task loss), so translation errors cannot erase what
    # the source model knew; 0 is CyCADA's task stage (translations only)
    source_share: float = 0.5
    # the style code of each translation: "mean" (FUNIT: the K examples' codes averaged) or
    # "random" (a flat-Dirichlet convex combination of the K codes, drawn per image)
    style_mix: str = "mean"
    source_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))
    translator_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig("adam", lr=2e-4, betas=(0.5, 0.999)))
    task_optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


class FewShotPixel(Method):
    """Few-shot pixel alignment with FUNIT (Liu et al., ICCV 2019, arXiv:1905.01723) or
    COCO-FUNIT (Saito et al., ECCV 2020, arXiv:2007.07431) as the translator.

    Stage ``source`` trains the classifier on labeled source (skipped when a classifier or
    teacher is loaded). Stage ``translate`` (not evaluated) trains the translator on the
    *seen* generated styles (``data/styles.py``) of the source digits, with no target image:
    each content image is rendered in one seen style and translated with the style code of
    another digit in another seen style; hinge GAN with the multi-task critic (one output per
    seen style), reconstruction (the content image with its own style code) and feature
    matching (critic features of translations against those of the style examples), R1 on
    real images. The same stage trains the *content judge*, a classifier of the seen-style
    source digits (source labels only), which later reads translations (content preservation).
    Stage ``task`` is CyCADA's task stage: the classifier, warm-started from the source model,
    on source images translated on the fly with the style code of the K unlabeled target
    examples (stored in the ``examples`` buffer at the stage's first step). The ``identity``
    translator skips ``translate``: with ``source_steps=0`` the run is source-only training.

    ``init.weights=RUN:translator,teacher,judge`` reuses a trained translator (only ``task``
    runs, from that run's source model)."""

    Config = FewShotPixelConfig
    description = "few-shot pixel alignment: FUNIT / COCO-FUNIT from K target examples (2019/20)"
    images_only = True
    frozen_modules = ("teacher",)

    def __init__(self, config: FewShotPixelConfig, classifier: Classifier) -> None:
        super().__init__(config, classifier)
        if config.translator not in FEWSHOT_TRANSLATORS:
            raise ConfigError(f"method.translator must be one of {', '.join(FEWSHOT_TRANSLATORS)}"
                              f", got {config.translator!r}")
        if not 0.0 <= config.source_share <= 1.0:
            raise ConfigError("method.source_share is the untranslated share of a task batch: "
                              f"between 0 and 1, got {config.source_share}")
        if config.style_mix not in ("mean", "random"):
            raise ConfigError("method.style_mix must be mean or random, got "
                              f"{config.style_mix!r}")
        if not config.seen_styles:
            raise ConfigError("method.seen_styles is empty: the translator needs seen styles")
        self.styles = [get_style(name) for name in config.seen_styles]
        self.channels = input_channels(classifier)
        # drawn from the global generator, then restored: the classifier's training draws
        # (dropout) do not depend on the translator (identity = source-only, bit for bit)
        with torch.random.fork_rng(devices=[]):
            self.translator = build_fewshot_translator(config.translator, self.channels,
                                                       config.network)
            self.critic = MultiDomainCritic(self.channels, len(self.styles),
                                            config.network.critic_width,
                                            config.network.critic_blocks)
        self.teacher = copy.deepcopy(classifier)  # the source model, filled by translate
        self.judge = copy.deepcopy(classifier)  # the content judge, trained by translate
        # the semantic-consistency classifier: trained like the judge but initialized apart,
        # so the judge that *measures* content preservation is not the one the translator
        # was trained to satisfy
        self.semantic = copy.deepcopy(classifier)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEMANTIC_INIT_SEED)
            for module in self.semantic.modules():
                if module is not self.semantic and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        self.register_buffer("examples", torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + "examples")
        if saved is not None and saved.shape != self.examples.shape:
            self.examples = torch.zeros_like(saved, device=self.examples.device)
        if not any(key.startswith(prefix + "semantic.") for key in state_dict):
            # a run saved before the semantic classifier existed: it only serves translate
            for key, value in self.semantic.state_dict().items():
                state_dict[f"{prefix}semantic.{key}"] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def trains_translator(self) -> bool:
        return self.config.translator != "identity" and "translator" not in self.initialized

    def stages(self) -> list[Stage]:
        config, loaded = self.config, set(self.initialized)
        if not loaded <= {"classifier", "translator", "teacher", "judge"}:
            raise ValueError("init.weights: fewshot_pixel loads classifier (a source model) "
                             "or translator,teacher,judge (a trained translator), not "
                             f"{','.join(self.initialized)}")
        stages = []
        if not loaded & {"classifier", "teacher"} and config.source_steps > 0:
            stages.append(source_stage(self.classifier, config.source_steps,
                                       config.source_optim))
        if self.trains_translator:
            stages.append(Stage(
                "translate", self.translate_step,
                {"generator": [self.translator], "critic": [self.critic],
                 "judge": [self.judge], "semantic": [self.semantic]},
                {"generator": config.translator_optim, "critic": config.translator_optim,
                 "judge": config.source_optim, "semantic": config.source_optim},
                config.translate_steps,
                on_start=self.start_translation, evaluate=False,
                needs=DataNeeds(target=False)))
        stages.append(Stage("task", self.task_step, {"classifier": [self.classifier]},
                            config.task_optim, config.steps,
                            on_start=self.start_task))
        return stages

    def start_translation(self) -> None:
        if "teacher" not in self.initialized:  # a loaded source model stays the teacher
            self.teacher.load_state_dict(self.classifier.state_dict())

    def start_task(self) -> None:
        if "teacher" in self.initialized and "classifier" not in self.initialized:
            self.classifier.load_state_dict(self.teacher.state_dict())

    def render_styles(self, digits: Tensor, styles: Tensor) -> Tensor:
        """``digits`` each in the seen style of its index in ``styles``, at the run's channels
        (gray runs read the rendered colours as luma)."""
        output = torch.empty((len(digits), 3, *digits.shape[-2:]), device=digits.device)
        for index in torch.unique(styles).tolist():
            chosen = torch.nonzero(styles == index).flatten()
            output[chosen] = render(digits[chosen], self.styles[index])
        if self.channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], device=digits.device)
            output = (output * weights[:, None, None]).sum(1, keepdim=True)
        return output

    def translate_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        assert batch.source is not None
        digits = batch.source.images[: self.config.translate_batch]
        labels = batch.source.labels[: self.config.translate_batch]
        count, domains = len(digits), len(self.styles)
        content_domain = torch.randint(domains, (count,)).to(digits.device)
        style_domain = torch.randint(domains, (count,)).to(digits.device)
        content = self.render_styles(digits, content_domain)
        # the style example is another digit of the batch (FUNIT trains with K = 1)
        examples = self.render_styles(digits.roll(1, 0), style_domain)
        translator, critic, weights = self.translator, self.critic, self.config.network
        with ctx.autocast():
            code = translator.content(content)
            translated = translator.decode(code, translator.style_code(
                code, translator.example_style(examples[:, None])))
            reconstructed = translator.decode(code, translator.style_code(
                code, translator.example_style(content[:, None])))
            fake_logits, fake_features, fake_deviations = critic(translated, style_domain)
            recon_logits, recon_features, _ = critic(reconstructed, content_domain)
            with torch.no_grad():
                example_features, example_deviations = critic(examples, style_domain)[1:]
                content_features = critic(content, content_domain)[1]
            gan = 0.5 * (hinge_generator_loss(fake_logits) + hinge_generator_loss(recon_logits))
            reconstruction = F.l1_loss(reconstructed.float(), content.float())
            matching = (F.l1_loss(fake_features.float(), example_features.float())
                        + F.l1_loss(recon_features.float(), content_features.float()))
            generator_loss = (weights.gan_weight * gan
                              + weights.reconstruction_weight * reconstruction
                              + weights.feature_matching_weight * matching)
            if weights.content_weight > 0:
                kept = F.l1_loss(translator.content(translated).float(), code.float())
                generator_loss = generator_loss + weights.content_weight * kept
            else:
                kept = gan.new_zeros(())
            if weights.deviation_weight > 0:  # AdaIN's style loss: the maps' deviations
                deviation = F.l1_loss(fake_deviations.float(), example_deviations.float())
                generator_loss = generator_loss + weights.deviation_weight * deviation
            else:
                deviation = gan.new_zeros(())
            if weights.semantic_weight > 0:  # CyCADA's semantic consistency, source labels
                semantic = F.cross_entropy(self.semantic(translated).float(), labels)
                generator_loss = generator_loss + weights.semantic_weight * semantic
            else:
                semantic = gan.new_zeros(())
        ctx.update("generator", generator_loss)  # the critic's gradients are discarded
        real = content.detach().requires_grad_(weights.r1_weight > 0)
        with ctx.autocast():
            real_logits = critic(real, content_domain)[0]
            critic_loss = hinge_critic_loss(real_logits,
                                            critic(translated.detach(), style_domain)[0])
            penalty = r1_penalty(real_logits, real) if weights.r1_weight > 0 \
                else real_logits.new_zeros(())
        ctx.update("critic", critic_loss + weights.r1_weight * penalty)
        indices = batch.source.indices[: self.config.translate_batch]
        real_batch = LabeledBatch(content.detach(), labels, indices)
        judged = classification_step(self.judge, real_batch, ctx, "judge")
        if weights.semantic_weight > 0:
            classification_step(self.semantic, real_batch, ctx, "semantic")
        return {"gan_loss": gan.detach(), "reconstruction_loss": reconstruction.detach(),
                "feature_matching_loss": matching.detach(), "content_loss": kept.detach(),
                "semantic_loss": semantic.detach(), "deviation_loss": deviation.detach(),
                "critic_loss": critic_loss.detach(),
                "r1_penalty": penalty.detach(), "judge_accuracy": judged["source_accuracy"]}

    def pick_examples(self, target: UnlabeledBatch) -> Tensor:
        """The distinct target images of a batch (by dataset index, ascending), at most
        ``shots``: with ``data.target_subset=K`` and a batch of at least 2K - 1 images, all K."""
        indices, first = torch.unique(target.indices, return_inverse=True)
        positions = torch.full((len(indices),), len(first), device=first.device)
        positions = positions.scatter_reduce(
            0, first, torch.arange(len(first), device=first.device), "amin")
        return target.images[positions[: self.config.shots]]

    @torch.no_grad()
    def to_target(self, images: Tensor, examples: Tensor | None = None,
                  mix: str = "mean") -> Tensor:
        """Source images rendered in the style of ``examples`` (default: the stored K): with
        the K codes' average (``mix="mean"``), or with a random convex combination of them per
        image (``"random"``, weights from a flat Dirichlet)."""
        examples = self.examples if examples is None else examples
        translator = self.translator
        if mix == "mean" or not isinstance(translator, FewShotTranslator) or len(examples) < 2:
            with evaluating(translator):
                return translator.translate(images, examples).clamp(0, 1)
        with evaluating(translator):
            codes = translator.example_style(examples[:, None])  # K x S, one per example
            weights = torch.distributions.Dirichlet(codes.new_ones(len(examples))).sample(
                (len(images),))
            content = translator.content(images)
            style = translator.style_code(content, weights @ codes)
            return translator.decode(content, style).clamp(0, 1)

    def task_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source = batch.source
        assert source is not None and batch.target is not None
        if self.examples.numel() == 0:
            self.examples = self.pick_examples(batch.target).clone()
        keep = round(self.config.source_share * len(source))
        if keep >= len(source):
            images = source.images
        else:
            translated = self.to_target(source.images[keep:], mix=self.config.style_mix)
            images = torch.cat([source.images[:keep], translated]) if keep else translated
        metrics = classification_step(self.classifier,
                                      LabeledBatch(images, source.labels, source.indices),
                                      ctx, "classifier")
        return {**metrics, "examples": torch.tensor(float(len(self.examples)))}
