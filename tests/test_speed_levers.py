"""The speed switches (training/speed.py): bf16 detection and its clean fallback, the autocast
dtype actually used by a step, the optimizer kernel chosen, torch.compile's targets, and no
host synchronization per training step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tamebias
from tamebias.config import ConfigError, OptimConfig
from tamebias.training import speed
from tamebias.training.optim import build_optimizer

CPU = torch.device("cpu")
NO_BF16 = frozenset({"fpu", "avx", "avx2", "fma"})
BF16 = NO_BF16 | {"avx512f", "avx512_bf16"}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\nflags\t: other\n")
    speed.cpu_flags.cache_clear()
    try:
        assert speed.cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
        assert speed.cpu_flags(str(tmp_path / "missing")) is None
    finally:
        speed.cpu_flags.cache_clear()
    assert speed.cpu_bf16_support(frozenset({"amx_bf16"}))[0]
    supported, reason = speed.cpu_bf16_support(NO_BF16)
    assert not supported and "avx512_bf16" in reason


@pytest.mark.parametrize(("amp", "device", "mode", "flags", "expected"), [
    (False, "cpu", "force", BF16, None),
    (True, "cpu", "auto", BF16, torch.bfloat16),
    (True, "cpu", "auto", NO_BF16, None),
    (True, "cpu", "force", NO_BF16, torch.bfloat16),
    (True, "cpu", "never", BF16, None),
    (True, "cuda", "never", NO_BF16, torch.bfloat16),
    (True, "mps", "force", BF16, None),
])
def test_autocast_dtype(amp, device, mode, flags, expected):
    dtype, message = speed.autocast_dtype(amp, torch.device(device), mode, flags)
    assert dtype == expected
    # a message exactly when amp was asked for and is not used
    assert (message is not None) == (amp and expected is None)
    if message:
        assert message.startswith("train.amp:") and "float32" in message and "\n" not in message


def test_unknown_switch_values_fail_with_the_valid_ones(tiny_overrides):
    with pytest.raises(ConfigError, match="train.cpu_bf16 must be one of auto, force, never"):
        tamebias.load_config(None, [*tiny_overrides, "train.cpu_bf16=always"])
    with pytest.raises(ConfigError, match="train.optimizer_impl must be one of"):
        tamebias.load_config(None, [*tiny_overrides, "train.optimizer_impl=fastest"])


def head_dtypes(monkeypatch) -> list[torch.dtype]:
    """Record the dtype of every classifier-head output during training steps."""
    seen: list[torch.dtype] = []
    original = nn.Linear.forward

    def forward(self, inputs):
        output = original(self, inputs)
        if torch.is_grad_enabled():  # training steps, not evaluation
            seen.append(output.dtype)
        return output

    monkeypatch.setattr(nn.Linear, "forward", forward)
    return seen


def test_amp_on_a_bf16_cpu_trains_in_bfloat16(tiny_overrides, monkeypatch):
    monkeypatch.setattr(speed, "cpu_flags", lambda: BF16)
    seen = head_dtypes(monkeypatch)
    tamebias.fit(None, [*tiny_overrides, "method.name=source_only", "train.amp=true",
                        "method.steps=2", "train.eval_every=2"])
    assert seen and set(seen) == {torch.bfloat16}


def test_amp_without_bf16_falls_back_to_float32_with_one_line(tiny_overrides, monkeypatch,
                                                             capsys):
    monkeypatch.setattr(speed, "cpu_flags", lambda: NO_BF16)
    seen = head_dtypes(monkeypatch)
    result = tamebias.fit(None, [*tiny_overrides, "method.name=source_only", "train.amp=true",
                                 "method.steps=2", "train.eval_every=2"])
    assert seen and set(seen) == {torch.float32}
    notes = [line for line in capsys.readouterr().err.splitlines() if "train.amp" in line]
    assert len(notes) == 1 and "avx512_bf16" in notes[0] and "float32" in notes[0]
    assert result.accuracy is not None


def test_optimizer_kernel_is_the_one_asked_for(monkeypatch):
    parameters = list(nn.Linear(4, 3).parameters())
    for name in ("sgd", "adam", "adamw"):
        config = OptimConfig(name=name)
        fused = build_optimizer(parameters, config, implementation="fused")
        assert fused.defaults["fused"] is True  # torch has fused CPU kernels for all three
        assert build_optimizer(parameters, config, implementation="foreach").defaults["foreach"]
        assert build_optimizer(parameters, config, implementation="loop").defaults[
            "foreach"] is False
        auto = build_optimizer(parameters, config)
        assert not auto.defaults.get("fused") and auto.defaults.get("foreach") is None
    # no fused kernel for the device: foreach instead, never an error
    monkeypatch.setattr(speed, "fused_available", lambda name, parameters: False)
    fallback = build_optimizer(parameters, OptimConfig(name="sgd"), implementation="fused")
    assert not fallback.defaults.get("fused") and fallback.defaults["foreach"] is True


def test_compile_targets_every_network_a_step_runs(tiny_overrides, monkeypatch):
    from tamebias.api import build_run

    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    _, method, _ = build_run(tamebias.load_config(None, [*tiny_overrides, "method.name=dann"]))
    names = speed.compile_networks(method)
    assert names == ["classifier.backbone", "classifier.classifier_head", "critic"]
    assert compiled == [method.classifier.backbone, method.classifier.classifier_head,
                        method.critic]
    assert "_orig_mod" not in "".join(method.state_dict())  # checkpoints keep their keys


def test_compile_switch_compiles_before_training(tiny_overrides, monkeypatch):
    from tamebias.training import trainer

    called = []
    monkeypatch.setattr(trainer, "compile_networks", lambda method: called.append(method) or [])
    tamebias.fit(None, [*tiny_overrides, "method.name=source_only", "method.steps=2",
                        "train.eval_every=2"])
    assert called == []
    result = tamebias.fit(None, [*tiny_overrides, "method.name=source_only", "method.steps=2",
                                 "train.eval_every=2", "train.compile=true"])
    assert len(called) == 1 and result.steps == 2


HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__")


def count_host_reads(monkeypatch) -> dict[str, int]:
    """Calls that read a tensor's value into Python, outside torch.optim (whose per-parameter
    step counters are host tensors by design, on CUDA too: reading them syncs nothing)."""
    import sys

    counts = dict.fromkeys(HOST_READS, 0)
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if "torch/optim/" not in caller:
                counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("method", ["dann", "source_only"])
def test_no_host_sync_per_training_step(tiny_overrides, monkeypatch, tmp_path, method):
    """Twice the steps with the same log, evaluation and checkpoint cadence read the same
    number of values back to the host: nothing in a step or its bookkeeping syncs."""
    totals = []
    for steps in (4, 8, 16):  # the first run only warms up one-time work
        counts = count_host_reads(monkeypatch)
        tamebias.fit(None, [*tiny_overrides, f"method.name={method}", f"method.steps={steps}",
                            "train.log_every=1000", "train.eval_every=1000",
                            "train.checkpoint_every=1000", f"output_dir={tmp_path / str(steps)}"])
        totals.append(dict(counts))
        monkeypatch.undo()
    assert totals[1] == totals[2]
    assert sum(totals[2].values()) > 0  # the counting works: evaluation reads values back


def test_default_threads_never_exceeds_the_usable_cpus():
    import os

    threads = speed.default_threads()
    assert 1 <= threads <= torch.get_num_threads()
    if hasattr(os, "sched_getaffinity"):
        assert threads <= len(os.sched_getaffinity(0))
