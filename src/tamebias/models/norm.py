"""Normalization options for every backbone: batch norm, instance norm, IBN (half instance,
half batch), domain-specific batch norm (DSBN), and AdaBN (target statistics after training).

Backbones are built with batch norm and converted in place by ``convert_norm``, which copies
the affine weights and statistics, so ImageNet weights survive the conversion.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

NORMS = ("none", "bn", "in", "ibn", "dsbn")
DOMAINS = ("source", "target")


class DomainBatchNorm(nn.Module):
    """Domain-specific batch norm (Chang et al., CVPR 2019): one BatchNorm, statistics and
    affine, per domain. ``domain`` is ``"source"``, ``"target"`` or an int ``n``: the first
    ``n`` rows of the batch are source, the rest target. Inference defaults to the target
    branch; training code says which domain it feeds with ``use_domain``."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.norms = nn.ModuleList([norm, copy.deepcopy(norm)])
        self.domain: str | int = "target"

    def forward(self, inputs: Tensor) -> Tensor:
        domain = self.domain
        if domain == "source":
            return self.norms[0](inputs)
        if domain == "target":
            return self.norms[1](inputs)
        return torch.cat([self.norms[0](inputs[:domain]), self.norms[1](inputs[domain:])])


class IBN(nn.Module):
    """IBN-a (Pan et al., ECCV 2018): instance norm on the first half of the channels (style
    invariance), batch norm on the rest (content discrimination)."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__()
        channels = norm.num_features
        self.split = channels // 2
        self.instance = nn.InstanceNorm2d(self.split, affine=True)
        self.batch = nn.BatchNorm2d(channels - self.split)
        with torch.no_grad():
            self.instance.weight.copy_(norm.weight[: self.split])
            self.instance.bias.copy_(norm.bias[: self.split])
            self.batch.weight.copy_(norm.weight[self.split :])
            self.batch.bias.copy_(norm.bias[self.split :])
            self.batch.running_mean.copy_(norm.running_mean[self.split :])
            self.batch.running_var.copy_(norm.running_var[self.split :])

    def forward(self, inputs: Tensor) -> Tensor:
        first, rest = inputs[:, : self.split], inputs[:, self.split :]
        return torch.cat([self.instance(first.contiguous()), self.batch(rest.contiguous())], 1)


def _instance(norm: nn.BatchNorm2d) -> nn.InstanceNorm2d:
    layer = nn.InstanceNorm2d(norm.num_features, affine=True)
    with torch.no_grad():
        layer.weight.copy_(norm.weight)
        layer.bias.copy_(norm.bias)
    return layer


def _batch_norms(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module, bool]]:
    """(parent, attribute, layer, on_shortcut) for every BatchNorm1d/2d in module order;
    ``on_shortcut`` marks the ``downsample`` branches of residual blocks."""
    found = []
    for name, parent in module.named_modules():
        shortcut = "downsample" in name.split(".")
        for child_name, child in parent.named_children():
            if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
                found.append((parent, child_name, child, shortcut))
    return found


def convert_norm(module: nn.Module, kind: str) -> nn.Module:
    """Replace the batch norms of ``module`` in place: ``bn`` keeps them; ``none`` removes
    them; ``in`` turns 2-d ones into instance norm (feature-vector batch norms stay);
    ``ibn`` turns the first half of the main-branch 2-d ones into IBN-a; ``dsbn`` makes every
    one domain-specific."""
    if kind not in NORMS:
        raise ValueError(f"model.norm must be one of {', '.join(NORMS)}, got {kind!r}")
    layers = _batch_norms(module)
    main_2d = [entry for entry in layers
               if isinstance(entry[2], nn.BatchNorm2d) and not entry[3]]
    ibn_layers = {id(entry[2]) for entry in main_2d[: (len(main_2d) + 1) // 2]}
    for parent, name, layer, _ in layers:
        if kind == "none":
            setattr(parent, name, nn.Identity())
        elif kind == "dsbn":
            setattr(parent, name, DomainBatchNorm(layer))
        elif kind == "in" and isinstance(layer, nn.BatchNorm2d):
            setattr(parent, name, _instance(layer))
        elif kind == "ibn" and id(layer) in ibn_layers:
            setattr(parent, name, IBN(layer))
    return module


def domain_norms(module: nn.Module) -> list[DomainBatchNorm]:
    return [layer for layer in module.modules() if isinstance(layer, DomainBatchNorm)]


def has_domain_norm(module: nn.Module) -> bool:
    return bool(domain_norms(module))


@contextlib.contextmanager
def use_domain(module: nn.Module, domain: str | int) -> Iterator[None]:
    """Route the domain-specific norms of ``module`` to one domain (or split a concatenated
    source+target batch at row ``domain``) inside the block; a no-op without DSBN."""
    if isinstance(domain, str) and domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS} or a row count, got {domain!r}")
    layers = domain_norms(module)
    previous = [layer.domain for layer in layers]
    for layer in layers:
        layer.domain = domain
    try:
        yield
    finally:
        for layer, value in zip(layers, previous, strict=True):
            layer.domain = value


def batch_norms(module: nn.Module, domain: str = "target") -> list[nn.Module]:
    """The batch norms that serve ``domain`` (both branches' are left out for the other)."""
    skip: set[int] = set()
    for layer in domain_norms(module):
        other = layer.norms[0 if domain == "target" else 1]
        skip.update(id(m) for m in other.modules())
    return [layer for layer in module.modules()
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and id(layer) not in skip]


@torch.no_grad()
def adapt_batchnorm(module: nn.Module, batches: Iterator[Tensor],
                    domain: str = "target") -> int:
    """AdaBN (Li et al., arXiv:1603.04779): replace the running statistics of every batch norm
    serving ``domain`` with the exact average over ``batches``; nothing else changes (weights,
    affine parameters, other branches). Returns the number of layers adapted."""
    layers = batch_norms(module, domain)
    if not layers:
        raise ValueError(
            "AdaBN needs batch-norm layers, and this model has none (LeNet is built without "
            "them): train with model.norm=bn (or dsbn) to use AdaBN")
    was_training = module.training
    saved = [(layer, layer.momentum) for layer in layers]
    module.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: the exact mean over all batches
        layer.train()
    try:
        with use_domain(module, domain):
            for images in batches:
                module(images)
    finally:
        for layer, momentum in saved:
            layer.momentum = momentum
        module.train(was_training)
    return len(layers)
