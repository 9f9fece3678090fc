"""Unpaired image-to-image translation (CycleGAN, Zhu et al., ICCV 2017, arXiv:1703.10593),
sized for small images: ResNet-style generators, PatchGAN critics, LSGAN losses,
cycle-consistency, optional identity loss and image pools.

Images are floats in [0, 1] everywhere (the project's convention); generators map [0, 1] to
[0, 1] (internally [-1, 1] with a tanh output, as in CycleGAN)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TranslatorConfig:
    """Network sizes and loss weights. The defaults are CycleGAN's losses (LSGAN, cycle weight
    10, pool of 50) with networks shrunk for 28-32 px digits on a CPU; for 64-256 px images use
    e.g. ``width=64, blocks=6`` (``blocks=9`` at 256 px) and ``critic_layers=3`` on a GPU."""

    width: int = 8  # filters of the generator's first layer (CycleGAN: 64)
    downsamples: int = 2  # stride-2 steps down (and back up); sizes must divide by 2**downsamples
    blocks: int = 3  # residual blocks at the lowest resolution (CycleGAN: 6 or 9)
    critic_width: int = 32  # PatchGAN's first layer (CycleGAN: 64)
    critic_layers: int = 2  # stride-2 layers of the PatchGAN (CycleGAN: 3, a 70x70 patch)
    norm: str = "instance"  # instance or batch
    pool_size: int = 50  # history of generated images shown to the critics (0: none)
    cycle_weight: float = 10.0
    identity_weight: float = 0.0  # CycleGAN uses 0.5 * cycle_weight for some tasks
    gan_weight: float = 1.0
    # the source->target GAN term's share relative to the target->source one (CyCADA's digits
    # release weights it 2, with cycle_weight 1)
    target_gan_weight: float = 1.0


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # no running statistics: train/eval alike
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"translator norm must be 'instance' or 'batch', got {kind!r}")


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm_layer(norm, channels),
        )

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs + self.body(inputs)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: 7x7 convolution, ``downsamples`` stride-2 convolutions,
    ``blocks`` residual blocks, as many transposed convolutions back up, 7x7 convolution to
    ``channels`` with a tanh. Maps [0, 1] images to [0, 1] images of the same shape."""

    def __init__(self, channels: int, width: int = 16, downsamples: int = 2, blocks: int = 3,
                 norm: str = "instance") -> None:
        super().__init__()
        self.factor = 2 ** downsamples
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7),
                                   norm_layer(norm, width), nn.ReLU(inplace=True)]
        filters = width
        for _ in range(downsamples):
            layers += [nn.Conv2d(filters, filters * 2, 3, stride=2, padding=1),
                       norm_layer(norm, filters * 2), nn.ReLU(inplace=True)]
            filters *= 2
        layers += [ResidualBlock(filters, norm) for _ in range(blocks)]
        for _ in range(downsamples):
            layers += [nn.ConvTranspose2d(filters, filters // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       norm_layer(norm, filters // 2), nn.ReLU(inplace=True)]
            filters //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(filters, channels, 7), nn.Tanh()]
        self.network = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        if height % self.factor or width % self.factor:
            raise ValueError(
                f"the translator's generator halves the image {self.factor.bit_length() - 1} "
                f"times, so height and width must divide by {self.factor}; got "
                f"{height}x{width}. Set data.size to a multiple of {self.factor} or "
                "method.translator.downsamples lower.")
        return (self.network(images * 2 - 1) + 1) / 2


class PatchCritic(nn.Module):
    """PatchGAN critic (Isola et al., arXiv:1611.07004): 4x4 convolutions, ``layers`` of them
    with stride 2, one more with stride 1, then one logit per overlapping patch
    (a ``B x 1 x h x w`` map). No normalization on the first layer, LeakyReLU 0.2."""

    def __init__(self, channels: int, width: int = 32, layers: int = 2,
                 norm: str = "instance") -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1),
                                    nn.LeakyReLU(0.2, inplace=True)]
        filters = width
        for index in range(1, layers + 1):
            stride = 2 if index < layers else 1
            modules += [nn.Conv2d(filters, filters * 2, 4, stride=stride, padding=1),
                        norm_layer(norm, filters * 2), nn.LeakyReLU(0.2, inplace=True)]
            filters *= 2
        modules.append(nn.Conv2d(filters, 1, 4, stride=1, padding=1))
        self.network = nn.Sequential(*modules)

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images * 2 - 1)


def lsgan_loss(logits: Tensor, real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al., arXiv:1611.04076): mean (D(x) - 1)^2 for real,
    mean D(x)^2 for generated."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.mse_loss(logits.float(), target.float())


def cycle_loss(images: Tensor, reconstructed: Tensor) -> Tensor:
    """Cycle-consistency: mean absolute difference between an image and its round trip."""
    return F.l1_loss(reconstructed.float(), images.float())


class ImagePool(nn.Module):
    """CycleGAN's history of generated images (Shrivastava et al., arXiv:1612.07828): the
    critic sees, for each new image, with probability 1/2 an older generated image (which the
    new one replaces) once the pool is full. The pool is a buffer, so it is checkpointed; it
    takes its image shape from the first batch (and from a loaded checkpoint)."""

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(0))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._filled = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + "images")
        if saved is not None and saved.shape != self.images.shape:  # allocate, then copy
            self.images = torch.zeros_like(saved, device=self.images.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._filled = int(self.count)  # a host-side mirror: no device sync per query

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        if self.images.shape[1:] != images.shape[1:] or self.images.dim() == 1:
            self.images = torch.zeros((self.size, *images.shape[1:]), dtype=images.dtype,
                                      device=images.device)
            self.count.zero_()
            self._filled = 0
        count = len(images)
        free = max(0, min(self.size - self._filled, count))
        output = images.clone()
        if free:  # fill the pool first; these images are returned as they are
            self.images[self._filled : self._filled + free] = images[:free]
            self._filled += free
            self.count.fill_(self._filled)
        rest = count - free
        if rest:
            swap = torch.rand(rest, device=images.device) < 0.5
            slots = torch.randint(0, self.size, (rest,), device=images.device)
            new = images[free:]
            old = self.images[slots]
            swap = swap.view(-1, *[1] * (new.dim() - 1))
            output[free:] = torch.where(swap, old, new)
            # swapped slots take the new image, the others keep theirs (no boolean indexing,
            # so no device sync); a slot drawn twice keeps one writer, as in CycleGAN's loop
            self.images[slots] = torch.where(swap, new, old)
        return output


class CycleGAN(nn.Module):
    """Two generators (source->target, target->source), two PatchGAN critics (is this a real
    target image? a real source image?) and two image pools. ``generator_losses`` and
    ``critic_loss`` give the terms of one alternating CycleGAN update; the caller applies them
    with its own optimizers (and may add terms, e.g. CyCADA's semantic consistency)."""

    def __init__(self, channels: int, config: TranslatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TranslatorConfig()

        def generator() -> ResnetGenerator:
            return ResnetGenerator(channels, config.width, config.downsamples, config.blocks,
                                   config.norm)

        def critic() -> PatchCritic:
            return PatchCritic(channels, config.critic_width, config.critic_layers, config.norm)

        self.source_to_target, self.target_to_source = generator(), generator()
        self.target_critic, self.source_critic = critic(), critic()
        self.fake_target_pool = ImagePool(config.pool_size)
        self.fake_source_pool = ImagePool(config.pool_size)

    @property
    def generators(self) -> list[nn.Module]:
        return [self.source_to_target, self.target_to_source]

    @property
    def critics(self) -> list[nn.Module]:
        return [self.target_critic, self.source_critic]

    def translate(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Both directions and both round trips."""
        fake_target = self.source_to_target(source)
        fake_source = self.target_to_source(target)
        return {"fake_target": fake_target, "fake_source": fake_source,
                "cycle_source": self.target_to_source(fake_target),
                "cycle_target": self.source_to_target(fake_source)}

    def generator_losses(self, source: Tensor, target: Tensor,
                         images: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """GAN (generated images should pass as real), cycle and identity terms, weighted,
        plus their weighted sum ``total``; ``images`` reuses a ``translate`` result."""
        config = self.config
        images = images if images is not None else self.translate(source, target)
        gan = (config.target_gan_weight
               * lsgan_loss(self.target_critic(images["fake_target"]), True)
               + lsgan_loss(self.source_critic(images["fake_source"]), True))
        cycle = (cycle_loss(source, images["cycle_source"])
                 + cycle_loss(target, images["cycle_target"]))
        losses = {"gan_loss": config.gan_weight * gan, "cycle_loss": config.cycle_weight * cycle}
        if config.identity_weight:
            identity = (cycle_loss(target, self.source_to_target(target))
                        + cycle_loss(source, self.target_to_source(source)))
            losses["identity_loss"] = config.identity_weight * identity
        losses["total"] = sum(losses.values())
        return losses

    def critic_loss(self, source: Tensor, target: Tensor, fake_source: Tensor,
                    fake_target: Tensor) -> Tensor:
        """LSGAN critic loss of both critics, generated images drawn through the pools
        (detached: this loss reaches the critics only), halved as in CycleGAN."""
        fake_target = self.fake_target_pool.query(fake_target)
        fake_source = self.fake_source_pool.query(fake_source)
        target_term = (lsgan_loss(self.target_critic(target), True)
                       + lsgan_loss(self.target_critic(fake_target), False))
        source_term = (lsgan_loss(self.source_critic(source), True)
                       + lsgan_loss(self.source_critic(fake_source), False))
        return 0.5 * (target_term + source_term)
