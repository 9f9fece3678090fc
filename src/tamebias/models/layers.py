"""Small layers shared by methods."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = coefficient
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, gradient: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * gradient, None


def reverse_gradient(inputs: Tensor, coefficient: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-coefficient`` backward (Ganin &
    Lempitsky, arXiv:1409.7495)."""
    return _GradientReversal.apply(inputs, coefficient)


@contextmanager
def dropout_off(module: nn.Module) -> Iterator[None]:
    """Run ``module`` with its dropout layers in eval mode (BatchNorm stays as it is), so its
    features are comparable with those of a frozen copy in eval mode."""
    dropouts = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in dropouts]
    for layer in dropouts:
        layer.eval()
    try:
        yield
    finally:
        for layer, mode in zip(dropouts, modes, strict=True):
            layer.train(mode)
