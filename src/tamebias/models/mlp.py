"""The ``mlp`` backbone: a multilayer perceptron over feature vectors.

Inputs are standardized per dimension with the source training vectors' mean and standard
deviation (buffers saved with the model, set once by :meth:`MLP.fit_inputs`; no target data
is read), then pass ``Linear -> [BatchNorm] -> ReLU -> [Dropout]`` blocks; the last width is
the feature size. Batch norm (the default, ``model.norm=bn``) is what AdaBN and DSBN adapt.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    takes_vectors = True

    def __init__(self, in_features: int, widths: list[int] | tuple[int, ...],
                 batch_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if not widths:
            raise ValueError("the mlp backbone needs at least one hidden width")
        layers: list[nn.Module] = []
        previous = in_features
        for width in widths:
            layers.append(nn.Linear(previous, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            if dropout:
                layers.append(nn.Dropout(dropout))
            previous = width
        self.layers = nn.Sequential(*layers)
        self.register_buffer("input_mean", torch.zeros(in_features))
        self.register_buffer("input_std", torch.ones(in_features))
        self.in_features = in_features
        self.feature_dim = previous

    @torch.no_grad()
    def fit_inputs(self, vectors: Tensor) -> None:
        """Standardize inputs with these (source training) vectors' per-dimension statistics."""
        flat = vectors.flatten(1).double()
        if flat.shape[1] != self.in_features:
            raise ValueError(f"mlp expects {self.in_features} input dimensions, "
                             f"got {flat.shape[1]}")
        self.input_mean.copy_(flat.mean(0).float())
        if len(flat) > 1:
            self.input_std.copy_(flat.std(0).clamp_min(1e-6).float())

    def forward(self, inputs: Tensor) -> Tensor:
        flat = inputs.flatten(1)
        return self.layers((flat - self.input_mean) / self.input_std)
