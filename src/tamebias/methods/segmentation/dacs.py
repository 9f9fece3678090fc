"""DACS: cross-domain mixed sampling for segmentation (Tranheden et al., WACV 2021,
arXiv:2007.08702)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ...config import MethodConfig, OptimConfig
from ...data.batch import DomainBatch, SegmentedBatch
from ...data.dense import IGNORE_INDEX
from ...models.segmenters import Segmenter
from ..base import Method, Stage, StepContext
from ..parts import ema_update
from .common import after_source, pixel_accuracy, pixel_cross_entropy


@dataclass
class DACSConfig(MethodConfig):
    name: str = "dacs"
    source_steps: int = 2000
    steps: int = 2000
    ema: float = 0.99  # the mean teacher's decay
    threshold: float = 0.968  # a target image's pseudo-label weight: its share above this
    jitter: float = 0.2  # colour jitter strength (brightness, contrast, saturation, hue)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", lr=1e-3))


def class_mix(source_images: Tensor, source_masks: Tensor, target_images: Tensor,
              target_labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ClassMix across domains: for each pair, the pixels of half (rounded up) of the classes
    in the source label map, chosen at random, are pasted onto the target image; the mixed
    label map is the source label there and the target's pseudo-label elsewhere. Returns the
    mixed images, mixed labels and the pasted-pixel mask (``B x H x W`` bool)."""
    pasted = torch.zeros_like(source_masks, dtype=torch.bool)
    for index, mask in enumerate(source_masks):
        classes = mask.unique()
        classes = classes[classes != IGNORE_INDEX]
        chosen = classes[torch.randperm(len(classes))[:(len(classes) + 1) // 2]
                         .to(classes.device)]
        pasted[index] = torch.isin(mask, chosen)
    images = torch.where(pasted[:, None], source_images, target_images)
    labels = torch.where(pasted, source_masks, target_labels)
    return images, labels, pasted


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (other + factor[:, None, None, None] * (images - other)).clamp(0, 1)


def strong_photometric(images: Tensor, strength: float, jitter_p: float = 0.8,
                       blur_p: float = 0.5) -> Tensor:
    """DACS's strong augmentation of the mixed images, drawn per image and applied to the whole
    batch at once: colour jitter (probability ``jitter_p``): brightness, contrast and
    saturation factors in ``[1 - strength, 1 + strength]`` and a hue rotation of up to
    ``strength / 4`` of a turn (about the gray axis, in YIQ space); then a 3x3 Gaussian blur
    (probability ``blur_p``, sigma 0.15-1.15). Draws from the global generator (checkpointed by
    the loop, so resume stays exact)."""
    count, channels = images.shape[:2]
    device = images.device

    def factors() -> Tensor:  # 1 where the jitter is not applied
        drawn = 1 + strength * (2 * torch.rand(count, device=device) - 1)
        return torch.where(jitter, drawn, torch.ones_like(drawn))

    jitter = torch.rand(count, device=device) < jitter_p
    out = (images * factors()[:, None, None, None]).clamp(0, 1)  # brightness
    weights = torch.tensor([0.299, 0.587, 0.114], device=device)
    gray = ((out * weights[:, None, None]).sum(1, keepdim=True) if channels == 3
            else out.mean(1, keepdim=True))
    out = _blend(out, gray.mean((2, 3), keepdim=True).expand_as(out), factors())  # contrast
    if channels == 3:
        gray = (out * weights[:, None, None]).sum(1, keepdim=True)
        out = _blend(out, gray.expand_as(out), factors())  # saturation
        angle = 2 * torch.pi * (strength / 4) * (2 * torch.rand(count, device=device) - 1)
        angle = torch.where(jitter, angle, torch.zeros_like(angle))
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                               [0.211, -0.523, 0.312]], device=device)
        yiq = torch.einsum("ij,bjhw->bihw", to_yiq, out)
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
        out = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)
    sigma = 0.15 + torch.rand(count, device=device)
    blurred = torch.rand(count, device=device) < blur_p
    taps = torch.exp(-torch.tensor([-1.0, 0.0, 1.0], device=device) ** 2
                     / (2 * sigma[:, None] ** 2))
    taps = taps / taps.sum(1, keepdim=True)
    identity = torch.tensor([0.0, 1.0, 0.0], device=device).expand_as(taps)
    taps = torch.where(blurred[:, None], taps, identity)
    kernel = (taps[:, :, None] * taps[:, None, :]).repeat_interleave(channels, 0)[:, None]
    padded = F.pad(out.reshape(1, count * channels, *out.shape[2:]), (1, 1, 1, 1),
                   mode="reflect")
    return F.conv2d(padded, kernel, groups=count * channels).reshape_as(out).clamp(0, 1)


class DACS(Method):
    """DACS (Tranheden et al., WACV 2021, arXiv:2007.08702): stage ``source`` trains on
    labelled source scenes (skipped when started from a source-only run); stage ``mix``
    trains on source pixel cross-entropy plus cross-entropy on mixed images: source classes
    pasted onto target scenes (:func:`class_mix`), labelled by the source map where pasted
    and by a mean teacher's (EMA of the segmenter, decay ``ema``) argmax elsewhere, strongly
    augmented (:func:`strong_photometric`). Pseudo-labelled pixels are weighted by the share
    of their image's pixels the teacher predicts with confidence above ``threshold`` (DACS's
    weighting), pasted source pixels by 1. The teacher runs its batch norms on the target
    batch's own statistics (the "+bn" of the classification recipes: its pseudo-labels are
    not made with source statistics); its stored statistics follow the segmenter's."""

    Config = DACSConfig
    description = "cross-domain ClassMix with mean-teacher pseudo-labels (DACS)"
    frozen_modules = ("teacher",)

    def __init__(self, config: DACSConfig, classifier: Segmenter) -> None:
        super().__init__(config, classifier)
        if not 0 <= config.ema < 1:
            raise ValueError("method.ema must be in [0, 1)")
        self.teacher = copy.deepcopy(classifier)

    def stages(self) -> list[Stage]:
        return after_source(self, Stage("mix", self.mix_step, {"segmenter": [self.classifier]},
                                        self.config.optim, self.config.steps,
                                        on_start=self.refresh_teacher))

    def refresh_teacher(self) -> None:
        self.teacher.load_state_dict(self.classifier.state_dict())

    @torch.no_grad()
    def pseudo_labels(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher's argmax and per-image confident share on target ``images``."""
        self.teacher.train()  # batch statistics of the target batch
        probabilities = self.teacher(images).float().softmax(1)
        confidence, labels = probabilities.max(1)
        return labels, (confidence >= self.config.threshold).float().mean((1, 2))

    def mix_step(self, batch: DomainBatch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = batch.source, batch.target
        assert isinstance(source, SegmentedBatch) and target is not None
        labels, quality = self.pseudo_labels(target.images)
        images, mixed_labels, pasted = class_mix(source.images, source.masks, target.images,
                                                 labels)
        images = strong_photometric(images, self.config.jitter)
        weights = torch.where(pasted, torch.ones_like(quality)[:, None, None],
                              quality[:, None, None])
        with ctx.autocast():
            source_logits = self.classifier(source.images)
            mixed_logits = self.classifier(images)
        class_loss = pixel_cross_entropy(source_logits, source.masks)
        labelled = mixed_labels != IGNORE_INDEX
        per_pixel = F.cross_entropy(mixed_logits.float(), mixed_labels,
                                    ignore_index=IGNORE_INDEX, reduction="none")
        mix_loss = (per_pixel * weights).sum() / labelled.sum().clamp_min(1)
        ctx.update("segmenter", class_loss + mix_loss)
        self.update_teacher()
        return {"class_loss": class_loss.detach(), "mix_loss": mix_loss.detach(),
                "pseudo_quality": quality.mean(), "pasted_share": pasted.float().mean(),
                "pixel_accuracy": pixel_accuracy(source_logits, source.masks)}

    def update_teacher(self) -> None:
        ema_update(self.teacher, self.classifier, self.config.ema)
