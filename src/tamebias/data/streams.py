"""Infinite, independently shuffled index streams over in-memory tensors.

A stream is a pure function of (seed, step): batch ``k`` is positions ``k*B .. k*B+B-1`` of an
endless concatenation of seeded permutations. Resuming needs nothing but the step number."""

from __future__ import annotations

import torch
from torch import Tensor


class IndexStream:
    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("cannot stream an empty dataset")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.int64)

    def permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutation = torch.randperm(self.size, generator=generator)
            self._epoch = epoch
        return self._permutation

    def indices(self, step: int) -> Tensor:
        start = step * self.batch_size
        parts = []
        while start < (step + 1) * self.batch_size:
            epoch, offset = divmod(start, self.size)
            take = min(self.size - offset, (step + 1) * self.batch_size - start)
            parts.append(self.permutation(epoch)[offset : offset + take])
            start += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)
