"""A per-sample feature memory for neighborhood methods (DANCE's memory bank)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MemoryBank(nn.Module):
    """One feature per target training image, indexed by dataset index (L2-normalized unless
    ``normalize=False``, e.g. SHOT's bank of raw features for its head). ``update`` writes rows
    ``indices``: a row seen for the first time takes the new feature, later ones
    ``normalize(momentum * old + (1 - momentum) * new)``. The bank grows to the largest index
    seen; rows never written are left out of the similarities."""

    def __init__(self, feature_dim: int, momentum: float = 0.0, normalize: bool = True) -> None:
        super().__init__()
        self.momentum = momentum
        self.normalize = normalize
        self.register_buffer("features", torch.zeros(0, feature_dim))
        self.register_buffer("written", torch.zeros(0, dtype=torch.bool))

    def grow(self, size: int) -> None:
        extra = size - len(self.written)
        if extra > 0:
            self.features = torch.cat([self.features, self.features.new_zeros(
                extra, self.features.shape[1])])
            self.written = torch.cat([self.written, self.written.new_zeros(extra)])

    @torch.no_grad()
    def update(self, features: Tensor, indices: Tensor) -> None:
        self.grow(int(indices.max()) + 1)
        new = features.detach().to(self.features.dtype)
        if self.normalize:
            new = F.normalize(new, dim=1)
        mixed = self.momentum * self.features[indices] + (1 - self.momentum) * new
        if self.normalize:
            mixed = F.normalize(mixed, dim=1)
        rows = torch.where(self.written[indices].unsqueeze(1), mixed, new)
        self.features[indices] = rows
        self.written[indices] = True

    def similarities(self, features: Tensor, indices: Tensor, temperature: float) -> Tensor:
        """Cosine similarity / T of normalized ``features`` to every bank row; the batch's own
        rows and unwritten rows get -1/T (the authors' mask), contributing ~nothing."""
        self.grow(int(indices.max()) + 1)
        logits = features @ self.features.t().to(features.dtype) / temperature
        mask = ~self.written.unsqueeze(0).expand_as(logits).clone()
        mask[:, indices] = True
        return logits.masked_fill(mask, -1.0 / temperature)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        stored = state_dict.get(prefix + "features")
        if stored is not None:  # take the stored size before copying
            self.features = self.features.new_zeros(stored.shape)
            self.written = self.written.new_zeros(stored.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
