"""Speed switches of the training loop, each a setting of the run's ``train`` section:

- ``amp``: bfloat16 autocast. On CUDA always; on a CPU only where it computes bfloat16
  natively (AVX512-BF16 or AMX, read from the CPU flags), else the run trains in float32 and
  says so once (``cpu_bf16=force`` uses it anyway: emulated bfloat16 on an AVX2 CPU measured
  about 7x slower than float32, benchmarks/results/speed.md).
- ``compile``: ``torch.compile`` of each network the method trains, in place (state-dict keys
  are unchanged, so checkpoints and resume are unaffected).
- ``optimizer_impl``: ``auto`` (torch's choice: foreach on CUDA, a loop on CPU), ``fused``
  (where torch has a fused kernel for the optimizer and device), ``foreach`` or ``loop``.
- ``threads``: unset, torch's count capped by the CPUs this process may run on
  (:func:`default_threads`), so a container with a CPU quota is not oversubscribed.

The CUDA levers besides bf16 are already on: ``cudnn.benchmark`` (api.build_run) and
channels-last (``model.channels_last``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import torch
from torch import nn

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
OPTIMIZER_IMPLEMENTATIONS = ("auto", "fused", "foreach", "loop")
CPU_BF16_MODES = ("auto", "force", "never")


@functools.lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU feature flags of the first processor (Linux), None where they cannot be read."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_bf16_support(flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and why (one line)."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return False, "the CPU flags could not be read (/proc/cpuinfo)"
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, f"the CPU has none of {', '.join(CPU_BF16_FLAGS)} (/proc/cpuinfo)"


def autocast_dtype(amp: bool, device: torch.device, cpu_bf16: str = "auto",
                   flags: frozenset[str] | None = None) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype a run uses (None: float32) and, when ``amp`` was asked for but is
    not used, the one-line reason."""
    if cpu_bf16 not in CPU_BF16_MODES:
        raise ValueError(f"train.cpu_bf16 must be one of {', '.join(CPU_BF16_MODES)}, "
                         f"got {cpu_bf16!r}")
    if not amp:
        return None, None
    if device.type == "cuda":
        return torch.bfloat16, None
    if device.type != "cpu":
        return None, f"train.amp: no bfloat16 autocast on {device.type}; training in float32"
    if cpu_bf16 == "force":
        return torch.bfloat16, None
    supported, reason = cpu_bf16_support(flags)
    if supported and cpu_bf16 == "auto":
        return torch.bfloat16, None
    why = reason if cpu_bf16 == "auto" else "train.cpu_bf16=never"
    return None, (f"train.amp: {why}; training in float32 (emulated bfloat16 is several times "
                  "slower; train.cpu_bf16=force uses it anyway)")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def note(message: str | None) -> None:
    """One line on stderr (a switch that falls back)."""
    if message:
        print(f"tamebias: {message}", file=sys.stderr)


def optimizer_options(name: str, implementation: str, parameters: list[nn.Parameter]
                      ) -> dict[str, bool]:
    """Keyword arguments selecting the optimizer's kernel. ``fused`` falls back to foreach
    (then to the loop) where torch has no fused kernel for this optimizer and device."""
    if implementation not in OPTIMIZER_IMPLEMENTATIONS:
        raise ValueError(f"train.optimizer_impl must be one of "
                         f"{', '.join(OPTIMIZER_IMPLEMENTATIONS)}, got {implementation!r}")
    if implementation == "auto":
        return {}
    if implementation == "loop":
        return {"foreach": False}
    if implementation == "fused" and fused_available(name, parameters):
        return {"fused": True}
    return {"foreach": True}


def fused_available(name: str, parameters: list[nn.Parameter]) -> bool:
    """torch has a fused kernel for optimizer ``name`` on every parameter's device."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    if name not in ("adam", "adamw", "sgd"):
        return False
    devices = set(_get_fused_kernels_supported_devices())
    return all(p.is_floating_point() and p.device.type in devices for p in parameters)


def compile_networks(method: nn.Module) -> list[str]:
    """``torch.compile`` (in place) every network the method runs: a classifier's backbone and
    head (methods call ``features`` and ``head``, not ``forward``) and every other direct
    child. Returns the compiled modules' names."""
    compiled = []
    for name, child in method.named_children():
        parts = ([(f"{name}.backbone", child.backbone), (f"{name}.classifier_head",
                                                           child.classifier_head)]
                 if hasattr(child, "backbone") and hasattr(child, "classifier_head")
                 else [(name, child)])
        for part_name, part in parts:
            if any(True for _ in part.parameters()):
                part.compile()
                compiled.append(part_name)
    return compiled


def default_threads() -> int:
    """torch's thread count capped by the CPUs this process may use (affinity, cgroup quota)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:  # cgroup v2 quota: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            available = min(available, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(torch.get_num_threads(), available))
