"""Contract tests over every registered method: a new method gets these for free."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tamebias.api import build_run, build_streams
from tamebias.compose import load_config
from tamebias.data.batch import DomainBatch
from tamebias.data.domain import DomainStreams
from tamebias.methods import METHODS
from tamebias.methods.base import trainable_parameters
from tamebias.training import checkpoint
from tamebias.training.trainer import Context


def build(name, overrides):
    config = load_config(None, [f"method.name={name}", *overrides])
    data, method, device = build_run(config)
    streams = build_streams(config, data, method, device)
    return config, data, method, streams, device


def parameter_owners(method, modules):
    owned = {id(p) for p in trainable_parameters(modules)}
    return {name: p for name, p in method.named_parameters() if id(p) in owned}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_stage_runs_and_each_optimizer_changes_only_its_modules(name, tiny_overrides):
    _, _, method, streams, device = build(name, tiny_overrides)
    for stage in method.stages():
        if stage.on_start:
            stage.on_start()
        context = Context.for_stage(stage, device)
        method.train()
        for step in range(2):
            before = {n: p.detach().clone() for n, p in method.named_parameters()}
            batch = streams.batch(step)
            if stage.needs is not None:  # as the loop: the stage reads only what it declares
                batch = stage.needs.restrict(batch)
            metrics = stage.step(batch, context)
            assert metrics and all(math.isfinite(float(v)) for v in metrics.values())
            assert all(v.dim() == 0 for v in metrics.values()), "metrics are scalar tensors"
            changed = {n for n, p in method.named_parameters() if not torch.equal(before[n], p)}
            allowed = set()
            for modules in stage.optimizers.values():
                allowed |= set(parameter_owners(method, modules))
            # copies moved by an explicit rule (an EMA teacher), never by gradients
            allowed |= {n for n in changed
                        if n.startswith(method.rule_updated()) and not
                        dict(method.named_parameters())[n].requires_grad}
            assert changed, f"{name}/{stage.name}: no parameter moved"
            assert changed <= allowed, f"{name}/{stage.name} changed {changed - allowed}"
        assert bool(context.finite)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_checkpoint_round_trip_gives_identical_predictions(name, tiny_overrides, tmp_path):
    config, data, method, streams, _ = build(name, tiny_overrides)
    images = data.target_test.images[:8].float() / 255
    method.eval()
    expected = method.predict(images)
    checkpoint.save_atomic({"method": method.state_dict()}, tmp_path / "c.pt")
    torch.manual_seed(123)  # a different initialization, then the loaded weights
    _, fresh, _ = build_run(copy.deepcopy(config), data)
    fresh.load_state_dict(checkpoint.load(tmp_path / "c.pt")["method"])
    fresh.eval()
    assert torch.equal(fresh.predict(images), expected)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_declares_a_typed_config_and_a_description(name):
    method = METHODS[name]
    assert method.description
    config = method.Config()
    assert config.name == name


def test_unlabeled_target_batch_has_no_labels(tiny_overrides):
    _, _, _, streams, _ = build("source_only", tiny_overrides)
    streams_with_target = DomainStreams(streams_data := build("source_only", tiny_overrides)[1],
                                        16, 0, torch.device("cpu"), True, False)
    batch: DomainBatch = streams_with_target.batch(0)
    assert batch.target is not None and batch.labeled_target is None
    assert not hasattr(batch.target, "labels")
    assert len(batch.target) == 16 and streams_data.target_train.images.shape[0] > 0
