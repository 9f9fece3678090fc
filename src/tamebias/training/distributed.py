"""Data-parallel training of one run: ``torchrun --nproc_per_node=N -m tamebias fit ...``.

Every rank builds the same model from the same seed (rank 0's weights are broadcast anyway),
draws the same *global* batch of each domain stream (indices, then augmentation, both pure
functions of the step) and keeps its contiguous slice of ``data.batch_size / N`` rows, so the
global batch is the configured one. Methods are unchanged: ``ctx.update`` backpropagates the
rank's loss, then all-reduces the averaged gradients of that optimizer's parameters (one flat
buffer, with the step's "loss was finite" flag folded in) before clipping and stepping, so
every update is one step on the global batch. Batch norms become synchronized batch norms
(``torch.nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` on CPU/gloo): their batch
statistics are those of the global batch, as in a single process; domain-specific norms (DSBN)
keep one synchronized norm per domain. Evaluation splits every prediction batch across ranks
and gathers the outputs. Only rank 0 writes files (checkpoints, logs, run records); resume
reads rank 0's checkpoint on every rank and needs the same world size.

With losses that are means over the batch and no dropout, N ranks give a single process's
weights within float tolerance (tests/test_distributed.py). Terms that are not a mean over
images (MCC's class-confusion matrix, the diversity term of information maximization, MMD or
CORAL statistics) and memory banks are computed on each rank's slice, and dropout masks are
drawn per rank: that is the usual data-parallel approximation of those methods."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import DomainBatch, LabeledBatch, UnlabeledBatch

__all__ = ["Distributed", "GlobalBatchNorm", "current", "is_writer", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_writer() -> bool:
    """Whether this process writes run files: always, except on ranks other than 0."""
    return rank_and_world()[0] == 0


def launched() -> bool:
    """Whether this process was started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> Distributed | None:
    """The process group of a data-parallel run, or None for a single process. Under
    torchrun (``WORLD_SIZE`` > 1) the group is created here: NCCL for CUDA tensors and gloo
    for CPU ones; each rank's CUDA device is its ``LOCAL_RANK``."""
    if dist.is_available() and dist.is_initialized():
        return Distributed() if dist.get_world_size() > 1 else None
    if not launched():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return Distributed()


class SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks; its gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the batch of every rank (``SyncBatchNorm`` for CPU tensors, which
    torch's own does not take): two all-reduces with autograd, the mean then the centred
    squares, so statistics and gradients equal those of one batch norm over the whole batch.
    Same state-dict keys as ``BatchNorm1d/2d``."""

    def _check_input_dim(self, inputs: Tensor) -> None:
        if inputs.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {inputs.dim()}-d")

    def forward(self, inputs: Tensor) -> Tensor:
        if not self.training and self.running_mean is not None:
            return F.batch_norm(inputs, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        dims = [0, *range(2, inputs.dim())]
        shape = [1, inputs.shape[1]] + [1] * (inputs.dim() - 2)
        count = torch.tensor([inputs.numel() // inputs.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        total = float(count)
        mean = SumOverRanks.apply(inputs.sum(dims)) / total
        centred = inputs - mean.view(shape)
        variance = SumOverRanks.apply((centred * centred).sum(dims)) / total
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (self.momentum if self.momentum is not None
                            else 1.0 / float(self.num_batches_tracked))
                unbiased = variance * (total / max(total - 1, 1))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        outputs = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            outputs = outputs * self.weight.view(shape) + self.bias.view(shape)
        return outputs


def _swap_norms(module: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace children for which ``make`` returns a module (recursively); returns how many."""
    count = 0
    for name, child in module.named_children():
        replacement = make(child)
        if replacement is None:
            count += _swap_norms(child, make)
            continue
        setattr(module, name, replacement)
        count += 1
    return count


def _rebuilt(norm: nn.modules.batchnorm._BatchNorm, cls: type) -> nn.Module:
    """``norm`` as a ``cls`` sharing its parameters and buffers (the same tensors)."""
    layer = cls(norm.num_features, norm.eps, norm.momentum, norm.affine,
                norm.track_running_stats)
    layer.weight, layer.bias = norm.weight, norm.bias
    layer.running_mean, layer.running_var = norm.running_mean, norm.running_var
    layer.num_batches_tracked = norm.num_batches_tracked
    layer.train(norm.training)
    layer.plain_class = getattr(norm, "plain_class", type(norm))
    return layer


def synchronize_norms(module: nn.Module, cuda: bool) -> int:
    """Turn every batch norm of ``module`` into a synchronized one (in place)."""
    cls = nn.SyncBatchNorm if cuda else GlobalBatchNorm
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    return _swap_norms(module, lambda child: _rebuilt(child, cls)
                       if isinstance(child, plain) and not isinstance(child, cls) else None)


def plain_norms(module: nn.Module) -> int:
    """Undo :func:`synchronize_norms` (for work one rank does alone after training)."""
    return _swap_norms(module, lambda child: _rebuilt(child, child.plain_class)
                       if isinstance(child, (nn.SyncBatchNorm, GlobalBatchNorm)) else None)


class ShardedStreams:
    """The run's streams, each step's global batch cut to this rank's slice."""

    def __init__(self, streams: Any, group: Distributed) -> None:
        self.streams, self.group = streams, group

    def batch(self, step: int) -> DomainBatch:
        return self.group.shard(self.streams.batch(step))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.streams, name)


class NullLog:
    """The metrics log of ranks other than 0: writes nothing."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def keep_until(self, global_step: int) -> None:
        pass


class Distributed:
    """The hooks the loop calls in a data-parallel run (see the module docstring)."""

    def __init__(self) -> None:
        self.rank, self.world = rank_and_world()
        self.writer = self.rank == 0

    # -- agreement ---------------------------------------------------------------------
    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (e.g. a run folder named by the clock)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    # -- data ----------------------------------------------------------------------------
    def _slice(self, tensor: Tensor | None) -> Tensor | None:
        if tensor is None:
            return None
        size = len(tensor) // self.world
        return tensor[self.rank * size : (self.rank + 1) * size]

    def shard(self, batch: DomainBatch) -> DomainBatch:
        """This rank's contiguous slice of every part of a global batch."""
        def labeled(part: LabeledBatch | None) -> LabeledBatch | None:
            if part is None:
                return None
            self._check(len(part))
            return LabeledBatch(*(self._slice(t) for t in (part.images, part.labels,
                                                           part.indices)))

        target = batch.target
        if target is not None:
            self._check(len(target))
            target = UnlabeledBatch(self._slice(target.images), self._slice(target.indices),
                                    self._slice(target.strong))
        return DomainBatch(labeled(batch.source), target, labeled(batch.labeled_target))

    def _check(self, size: int) -> None:
        if size % self.world:
            raise ValueError(f"data.batch_size {size} is the global batch and must divide "
                             f"evenly among the {self.world} processes")

    # -- updates -------------------------------------------------------------------------
    def reduce_gradients(self, ctx: Any, optimizer: str) -> None:
        """Average the gradients of ``optimizer``'s parameters over the ranks (one all-reduce
        of a flat buffer per dtype); the step's finite flag travels in the first buffer, so
        every rank stops together when any rank's loss was not finite."""
        grads = [p.grad for p in ctx.parameters[optimizer] if p.grad is not None]
        groups: dict[torch.dtype, list[Tensor]] = {}
        for grad in grads:
            groups.setdefault(grad.dtype, []).append(grad)
        flag = (~ctx.finite).to(torch.float32).reshape(1)
        if not groups:
            groups[torch.float32] = []
        for index, (dtype, members) in enumerate(groups.items()):
            parts = [grad.reshape(-1) for grad in members]
            if index == 0:
                parts.append(flag.to(dtype=dtype, device=ctx.finite.device))
            flat = torch.cat(parts) if len(parts) > 1 else parts[0].clone()
            dist.all_reduce(flat)
            if index == 0:
                ctx.finite = flat[-1:].reshape(()) == 0
                flat = flat[:-1]
            flat /= self.world
            offset = 0
            for grad in members:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Logged averages over every rank's slice (the global batch's means)."""
        if not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[key] for key in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(keys, (values / self.world).tolist(), strict=True))

    # -- evaluation ----------------------------------------------------------------------
    def sharded(self, function: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """``function`` over a batch, each rank computing one slice, outputs gathered."""
        def run(images: Tensor) -> Tensor:
            chunks = images.tensor_split(self.world)
            sizes = [len(chunk) for chunk in chunks]
            mine = function(chunks[self.rank]).contiguous()
            padded = mine.new_zeros((max(sizes), *mine.shape[1:]))
            padded[: len(mine)] = mine
            gathered = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(gathered, padded)
            return torch.cat([part[:size] for part, size in zip(gathered, sizes, strict=True)])

        return run

    @contextlib.contextmanager
    def sharded_inference(self, method: nn.Module) -> Iterator[None]:
        """Inside the block ``method.predict`` and ``method.features`` are sharded (every
        rank must make the same calls on the same images: the loop's evaluations)."""
        names = [name for name in ("predict", "features") if hasattr(method, name)]
        for name in names:
            setattr(method, name, self.sharded(getattr(method, name)))
        try:
            yield
        finally:
            for name in names:
                method.__dict__.pop(name, None)

    # -- the run -------------------------------------------------------------------------
    def attach(self, trainer: Any) -> None:
        """Make ``trainer`` data-parallel: synchronized norms, rank 0's weights, sharded
        streams, and no files or progress bar on other ranks."""
        method = trainer.method
        synchronize_norms(method, trainer.device.type == "cuda")
        with torch.no_grad():
            for value in method.state_dict().values():
                dist.broadcast(value, src=0)
        trainer.streams = ShardedStreams(trainer.streams, self)
        trainer.distributed = self
        if not self.writer:
            trainer.metrics_log = NullLog()
            trainer.config = replace(trainer.config, progress=False)

    def detach(self, trainer: Any, report: Any) -> None:
        """Back to a plain model after training (rank 0 evaluates and writes alone); the
        report counts the images of every rank."""
        plain_norms(trainer.method)
        trainer.streams = trainer.streams.streams
        trainer.distributed = None
        report.train_images *= self.world

    def share(self, result: Any) -> Any:
        """Rank 0's result on every rank (the others wait for its final evaluation)."""
        return self.agree(result)


def launch(nproc: int, arguments: list[str]) -> int:
    """Run ``python -m tamebias ARGUMENTS`` on ``nproc`` local processes under torchrun
    (``torch.distributed.run --standalone``); returns its exit code."""
    import subprocess
    import sys

    gpus = torch.cuda.device_count()
    if 0 < gpus < nproc and "train.device=cpu" not in arguments:
        raise ValueError(f"--nproc {nproc} needs one GPU per process but {gpus} are visible; "
                         f"use --nproc {gpus} or --set train.device=cpu")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "tamebias", *arguments]
    return subprocess.call(command)
