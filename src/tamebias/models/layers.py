"""Small layers shared by methods."""

from __future__ import annotations

import torch
from torch import Tensor


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
