"""Few-shot image translators: FUNIT (Liu et al., ICCV 2019, arXiv:1905.01723) and COCO-FUNIT
(Saito et al., ECCV 2020, arXiv:2007.07431), sized for 32 px digits on a CPU.

A content encoder (instance-normalized convolutions) maps an image to a spatial content code;
a style encoder maps each of K example images of a domain to a vector, and the K vectors are
averaged; an MLP turns the style code into AdaIN parameters for the decoder's residual blocks.
COCO-FUNIT's *content-conditioned* style code multiplies the (example-averaged) style term,
computed from ``[style vector, constant style bias]``, by a term computed from the content
image's pooled content code, so the style code depends on the content image; the constant
style bias is a learned, input-independent vector. The critic is FUNIT's multi-task one: one
output map per seen domain, the loss reading the output of the image's domain.

Images are floats in [0, 1] (internally [-1, 1], a tanh output)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEWSHOT_TRANSLATORS = ("funit", "coco_funit", "identity")
DECODER_NORMS = ("in", "ln")


@dataclass
class FewShotTranslatorConfig:
    """Network sizes and loss weights. FUNIT's own weights are GAN 1, reconstruction 0.1,
    feature matching 1, R1 penalty 10 on real images, and no content or semantic term
    (``reconstruction_weight=0.1 content_weight=0 semantic_weight=0``). The defaults add two
    content terms and raise the reconstruction to 1: MUNIT's content-code reconstruction (the
    translation's content code against its input's; Huang et al., ECCV 2018) and CyCADA's
    semantic consistency (a classifier of the seen-style source digits, trained alongside,
    must read the translation as its input's label; Hoffman et al., ICML 2018). At the
    budgets of a CPU (hundreds of steps, not FUNIT's 100,000) FUNIT's losses alone let the
    generator drop the digit: see ``docs/fewshot.md``. Two changes let the style act: MUNIT's
    layer norm in the decoder's upsampling layers (``decoder_norm="ln"``; FUNIT's instance norm
    there removes the channel statistics AdaIN sets) and AdaIN's style loss on the critic's
    maps (``deviation_weight=1``: their channel standard deviations, translation against
    example; FUNIT's feature matching compares only the means). ``decoder_norm="in"
    deviation_weight=0`` is FUNIT's generator. The networks are shrunk for 32 px
    on a CPU; FUNIT's own sizes (a GPU) are ``width=64, style_dim=64, mlp_width=256,
    content_blocks=2, style_downsamples=4, critic_width=64, critic_blocks=5, bias_dim=1024``
    (recipe ``fewshot_pixel+gpu``)."""

    width: int = 8  # content encoder's first layer; doubles at each downsample
    downsamples: int = 2  # content code at size / 2**downsamples
    content_blocks: int = 2  # residual blocks of the content encoder (and AdaIN ones after)
    style_downsamples: int = 3
    style_dim: int = 32
    mlp_width: int = 64
    bias_dim: int = 64  # COCO-FUNIT's constant style bias (1024 in the paper)
    critic_width: int = 8
    critic_blocks: int = 3  # each a 3x3 convolution and a 2x2 average pool
    gan_weight: float = 1.0
    reconstruction_weight: float = 1.0
    feature_matching_weight: float = 1.0
    content_weight: float = 1.0  # L1 between the content codes of a translation and its input
    semantic_weight: float = 1.0  # cross-entropy of the semantic classifier on translations
    r1_weight: float = 10.0
    # AdaIN's style loss (Huang & Belongie, arXiv:1703.06868) on the critic's trunk: the
    # channel standard deviations of a translation's maps against its example's (feature
    # matching already compares their means)
    deviation_weight: float = 1.0
    # normalization of the decoder's upsampling layers: "in" (FUNIT) or "ln" (MUNIT's layer
    # norm: instance norm there removes the channel statistics the AdaIN blocks just set)
    decoder_norm: str = "ln"


def adain(features: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-5) -> Tensor:
    """Adaptive instance normalization (Huang & Belongie, arXiv:1703.06868): each sample's
    channels normalized to zero mean and unit standard deviation over space, then scaled by
    ``scale`` and shifted by ``shift`` (both ``B x C``)."""
    mean = features.mean((2, 3), keepdim=True)
    std = (features.var((2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return (features - mean) / std * scale[:, :, None, None] + shift[:, :, None, None]


def _conv(inputs: int, outputs: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, kernel, stride, padding=(kernel - 1) // 2,
                     padding_mode="reflect")


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, 3), nn.InstanceNorm2d(channels),
                                  nn.ReLU(inplace=True), _conv(channels, channels, 3),
                                  nn.InstanceNorm2d(channels))

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs + self.body(inputs)


class _AdaINResidual(nn.Module):
    """A residual block whose two normalizations are AdaIN with the given parameters."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.first, self.second = _conv(channels, channels, 3), _conv(channels, channels, 3)

    def forward(self, inputs: Tensor, parameters: Tensor) -> Tensor:
        scale1, shift1, scale2, shift2 = parameters.chunk(4, dim=1)
        hidden = F.relu(adain(self.first(inputs), 1 + scale1, shift1))
        return inputs + adain(self.second(hidden), 1 + scale2, shift2)


def _mlp(inputs: int, hidden: int, outputs: int, layers: int = 2) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(layers - 1):
        modules += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    modules.append(nn.Linear(width, outputs))
    return nn.Sequential(*modules)


class FewShotTranslator(nn.Module):
    """FUNIT's generator (``conditioned=False``) or COCO-FUNIT's (``conditioned=True``).

    ``translate(images, examples)`` renders ``images`` in the style of ``examples``: a
    ``K x C x H x W`` tensor (the same K examples for every image) or ``B x K x C x H x W``
    (K examples per image)."""

    def __init__(self, channels: int, config: FewShotTranslatorConfig | None = None,
                 conditioned: bool = False) -> None:
        super().__init__()
        self.config = config = config or FewShotTranslatorConfig()
        self.conditioned = conditioned
        self.factor = 2 ** config.downsamples
        layers: list[nn.Module] = [_conv(channels, config.width, 7),
                                   nn.InstanceNorm2d(config.width), nn.ReLU(inplace=True)]
        filters = config.width
        for _ in range(config.downsamples):
            layers += [_conv(filters, filters * 2, 4, 2), nn.InstanceNorm2d(filters * 2),
                       nn.ReLU(inplace=True)]
            filters *= 2
        layers += [_Residual(filters) for _ in range(config.content_blocks)]
        self.content_encoder = nn.Sequential(*layers)
        self.content_dim = filters
        style: list[nn.Module] = [_conv(channels, config.width, 7), nn.ReLU(inplace=True)]
        width = config.width
        for index in range(config.style_downsamples):
            wider = width * 2 if index < 2 else width
            style += [_conv(width, wider, 4, 2), nn.ReLU(inplace=True)]
            width = wider
        style += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, config.style_dim)]
        self.style_encoder = nn.Sequential(*style)
        if conditioned:  # COCO-FUNIT: the content-conditioned style encoder's parts
            self.style_bias = nn.Parameter(torch.randn(1, config.bias_dim))
            self.style_mlp = _mlp(config.style_dim + config.bias_dim, config.mlp_width,
                                  config.style_dim)
            self.content_mlp = _mlp(filters, config.mlp_width, config.style_dim)
        self.blocks = nn.ModuleList(_AdaINResidual(filters) for _ in range(config.content_blocks))
        self.adain_mlp = _mlp(config.style_dim, config.mlp_width, 4 * filters * len(self.blocks),
                              3)
        if config.decoder_norm not in DECODER_NORMS:
            raise ValueError(f"method.network.decoder_norm must be one of "
                             f"{', '.join(DECODER_NORMS)}, got {config.decoder_norm!r}")
        decoder: list[nn.Module] = []
        for _ in range(config.downsamples):
            norm = (nn.InstanceNorm2d(filters // 2) if config.decoder_norm == "in"
                    else nn.GroupNorm(1, filters // 2))  # one group: layer norm over C, H, W
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"),
                        _conv(filters, filters // 2, 5), norm, nn.ReLU(inplace=True)]
            filters //= 2
        decoder += [_conv(filters, channels, 7), nn.Tanh()]
        self.decoder = nn.Sequential(*decoder)

    def content(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        if height % self.factor or width % self.factor:
            raise ValueError(f"the few-shot translator halves images {self.factor.bit_length() - 1}"
                             f" times: height and width must divide by {self.factor}, got "
                             f"{height}x{width} (set data.size, e.g. 32)")
        return self.content_encoder(images * 2 - 1)

    def example_style(self, examples: Tensor) -> Tensor:
        """The style term of ``examples`` (``K x C x H x W`` -> ``S``, or ``B x K x C x H x
        W`` -> ``B x S``), averaged over the K examples. For COCO-FUNIT the term is
        ``style_mlp([style vector, constant bias])``; it is linear in the average, so
        averaging before or after the content conditioning is the same."""
        shape = examples.shape
        flat = examples.reshape(-1, *shape[-3:])
        vectors = self.style_encoder(flat * 2 - 1)
        if self.conditioned:
            bias = self.style_bias.expand(len(vectors), -1)
            vectors = self.style_mlp(torch.cat([vectors, bias], 1))
        return vectors.reshape(*shape[:-3], -1).mean(-2)

    def style_code(self, content: Tensor, style: Tensor) -> Tensor:
        """The code that drives the decoder, ``B x S``: the example style itself (FUNIT), or
        it multiplied by a term of the pooled content code (COCO-FUNIT)."""
        style = style.expand(len(content), -1) if style.dim() == 1 else style
        if not self.conditioned:
            return style
        return style * self.content_mlp(content.mean((2, 3)))

    def decode(self, content: Tensor, code: Tensor) -> Tensor:
        parameters = self.adain_mlp(code).chunk(len(self.blocks), dim=1)
        hidden = content
        for block, block_parameters in zip(self.blocks, parameters, strict=True):
            hidden = block(hidden, block_parameters)
        return (self.decoder(hidden) + 1) / 2

    def translate(self, images: Tensor, examples: Tensor) -> Tensor:
        content = self.content(images)
        return self.decode(content, self.style_code(content, self.example_style(examples)))

    def forward(self, images: Tensor, examples: Tensor) -> Tensor:
        return self.translate(images, examples)


class IdentityTranslator(nn.Module):
    """Returns the images unchanged: the few-shot pipeline's source-only reference."""

    def translate(self, images: Tensor, examples: Tensor) -> Tensor:
        return images

    def forward(self, images: Tensor, examples: Tensor) -> Tensor:
        return images


class MultiDomainCritic(nn.Module):
    """FUNIT's multi-task critic: a shared convolutional trunk, then one output map per seen
    domain; ``forward(images, domains)`` returns the patch logits of each image's own domain
    (``B x h x w``), the trunk's features spatially averaged (``B x F``, FUNIT's feature
    matching) and their spatial standard deviations (``B x F``, AdaIN's style loss)."""

    def __init__(self, channels: int, domains: int, width: int = 16, blocks: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(channels, width, 3)]
        filters = width
        for _ in range(blocks):
            wider = min(filters * 2, 8 * width)
            layers += [nn.LeakyReLU(0.2), _conv(filters, wider, 3), nn.AvgPool2d(2)]
            filters = wider
        layers.append(nn.LeakyReLU(0.2))
        self.trunk = nn.Sequential(*layers)
        self.output = nn.Conv2d(filters, domains, 1)
        self.domains = domains

    def forward(self, images: Tensor, domains: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.trunk(images * 2 - 1)
        logits = self.output(features)
        chosen = logits[torch.arange(len(images), device=images.device), domains]
        if features.shape[-2:].numel() == 1:  # pooled to 1x1 (FUNIT's five blocks at 32 px):
            spread = torch.zeros_like(features[:, :, 0, 0])  # no spread, and no NaN from std
        else:
            spread = features.std((2, 3))
        return chosen, features.mean((2, 3)), spread


def hinge_critic_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge GAN loss of the critic: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
    return F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean()


def hinge_generator_loss(fake: Tensor) -> Tensor:
    """Hinge GAN loss of the generator: -mean D(fake)."""
    return -fake.float().mean()


def r1_penalty(logits: Tensor, images: Tensor) -> Tensor:
    """R1 (Mescheder et al., arXiv:1801.04406) as FUNIT's released code computes it
    (``calc_grad2``): the gradient of the *mean* critic output (over the batch and every
    patch) with respect to the real ``images``, squared, summed, and divided by the batch
    size. ``images`` must require gradients.

    The mean matters: for a patch critic the gradient of the *sum* of its ``B x h x w``
    outputs is ``B h w`` times larger, and the penalty ``(B h w)^2`` times. The form used
    before (half the squared norm of the sum's gradient, averaged over images) was
    ``(B h w)^2 / 2`` times FUNIT's: 32,768x at batch 16 with 4x4 patches, at the same weight
    (10). It held the small critic flat (hinge loss stuck at 2.0) in this project's first
    FUNIT runs."""
    (gradient,) = torch.autograd.grad(logits.float().mean(), images, create_graph=True)
    return gradient.pow(2).sum() / len(images)


def build_fewshot_translator(kind: str, channels: int,
                             config: FewShotTranslatorConfig | None = None) -> nn.Module:
    if kind == "funit":
        return FewShotTranslator(channels, config, conditioned=False)
    if kind == "coco_funit":
        return FewShotTranslator(channels, config, conditioned=True)
    if kind == "identity":
        return IdentityTranslator()
    raise ValueError(f"method.translator must be one of {', '.join(FEWSHOT_TRANSLATORS)}, "
                     f"got {kind!r}")
