"""The strong simple baselines: augmentation views, normalization options (BN, IN, IBN, DSBN),
AdaBN, and self-training (pseudo-labels, FixMatch-style consistency, mean teacher)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tamebias import api
from tamebias.api import build_run, build_streams
from tamebias.compose import load_config
from tamebias.config import ConfigError
from tamebias.data.augment import POLICY_VIEWS, Augmenter, ViewSpec, apply_view
from tamebias.data.batch import UnlabeledBatch
from tamebias.methods.parts import SelfTraining, SelfTrainingConfig
from tamebias.models.backbones import build_backbone
from tamebias.models.norm import IBN, DomainBatchNorm, adapt_batchnorm, convert_norm, use_domain


def digits(count=32, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, size, size)
    images[:, :, 4:12, 6:10] = torch.rand(count, 1, 8, 4, generator=generator) * 0.5 + 0.5
    return images


# -- augmentation ---------------------------------------------------------------------------

def test_views_are_deterministic_per_step_and_differ_as_configured():
    augment = Augmenter("digits", 1, 16, seed=3)
    images = digits()
    weak, strong = augment(images, "weak", 0, 5), augment(images, "strong", 0, 5)
    assert torch.equal(weak, augment(images, "weak", 0, 5)), "same (stream, step): same view"
    assert not torch.equal(weak, augment(images, "weak", 0, 6)), "a new step draws anew"
    assert not torch.equal(weak, augment(images, "weak", 1, 5)), "streams are independent"
    assert torch.equal(augment(images, "none", 0, 5), images)
    for view in (weak, strong):
        assert view.shape == images.shape and view.min() >= 0 and view.max() <= 1
    # the strong view moves the images further than the weak one
    assert (strong - images).abs().mean() > 1.5 * (weak - images).abs().mean()
    assert augment.policy == "digits" and Augmenter("auto", 3, 64, 0).policy == "natural"


def test_zero_magnitudes_leave_images_unchanged_and_each_op_acts_alone():
    images = digits()
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(apply_view(images, POLICY_VIEWS["digits"]["strong"].scaled(0.0),
                                     generator), images, atol=1e-5)
    cut = apply_view(images, ViewSpec(cutout=0.5), generator)
    assert ((cut == 0) & (images > 0)).any() and ((cut == images) | (cut == 0)).all()
    flipped = apply_view(images, ViewSpec(flip=1.0), generator)
    assert torch.equal(flipped, images.flip(-1))
    shifted = apply_view(images, ViewSpec(translate=0.25), generator)
    assert not torch.allclose(shifted, images) and torch.allclose(
        shifted.sum((1, 2, 3)), images.sum((1, 2, 3)), rtol=0.35), "a shift moves, keeps ink"


def test_streams_serve_a_strong_target_view_only_to_methods_that_need_it(tiny_overrides):
    config = load_config(None, [*tiny_overrides, "method=self_training",
                                "method.self_training.mode=fixmatch"])
    data, method, device = build_run(config)
    batch = build_streams(config, data, method, device).batch(0)
    assert batch.target.strong is not None and batch.target.strong.shape == \
        batch.target.images.shape
    assert not torch.equal(batch.target.strong, batch.target.images)
    plain = load_config(None, [*tiny_overrides, "method=dann"])
    data, method, device = build_run(plain)
    assert build_streams(plain, data, method, device).batch(0).target.strong is None


def test_source_augmentation_changes_source_images_only(tiny_overrides):
    def first_batch(view):
        config = load_config(None, [*tiny_overrides, "method=dann",
                                    f"data.augment.source={view}"])
        data, method, device = build_run(config)
        return build_streams(config, data, method, device).batch(0)

    plain, augmented = first_batch("none"), first_batch("strong")
    assert not torch.equal(plain.source.images, augmented.source.images)
    assert torch.equal(plain.source.labels, augmented.source.labels)
    assert torch.equal(plain.target.images, augmented.target.images)


def test_bad_augmentation_settings_are_config_errors():
    with pytest.raises(ConfigError, match="data.augment.source"):
        load_config(None, ["data.augment.source=medium"])
    with pytest.raises(ConfigError, match="data.augment.policy"):
        load_config(None, ["data.augment.policy=faces"])


# -- normalization ---------------------------------------------------------------------------

def test_dsbn_keeps_domain_statistics_separate():
    layer = DomainBatchNorm(nn.BatchNorm2d(3))
    source, target = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4) * 3 + 5
    layer.train()
    with use_domain(layer, "source"):
        layer(source)
    assert torch.equal(layer.norms[1].running_mean, torch.zeros(3)), "target branch untouched"
    assert not torch.equal(layer.norms[0].running_mean, torch.zeros(3))
    source_mean = layer.norms[0].running_mean.clone()
    with use_domain(layer, 8):  # a concatenated batch splits at the seam
        mixed = layer(torch.cat([source, target]))
    assert layer.norms[1].running_mean.mean() > 0.3, "target statistics come from target rows"
    assert not torch.equal(layer.norms[0].running_mean, source_mean)
    reference = nn.BatchNorm2d(3).train()
    assert torch.allclose(mixed[8:], reference(target), atol=1e-5), \
        "target rows are normalized by target-batch statistics alone"
    assert layer.domain == "target", "the context restores the inference default"


def test_norm_conversions_keep_trained_affine_weights():
    network = build_backbone("dtn", 1, 32)
    first = network.conv[1]
    with torch.no_grad():
        first.weight.uniform_(0.5, 1.5)
        first.bias.uniform_(-1, 1)
    weights = first.weight.detach().clone()
    ibn = convert_norm(network, "ibn").conv[1]
    assert isinstance(ibn, IBN)
    assert torch.equal(torch.cat([ibn.instance.weight, ibn.batch.weight]), weights)
    lenet = build_backbone("lenet", 1, 28, norm="in")
    assert any(isinstance(m, nn.InstanceNorm2d) for m in lenet.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in lenet.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build_backbone("lenet", 1, 28).modules())
    with pytest.raises(ConfigError, match="model.norm"):
        load_config(None, ["model.norm=groupnorm"])


def test_dsbn_needs_a_method_that_routes_domains(tiny_overrides):
    config = load_config(None, [*tiny_overrides, "model.norm=dsbn"])  # source_only
    with pytest.raises(ConfigError, match="dsbn"):
        build_run(config)
    build_run(load_config(None, [*tiny_overrides, "model.norm=dsbn", "method=dann"]))


def test_adabn_changes_only_batchnorm_running_statistics():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                            nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    network.train()
    network(torch.rand(16, 1, 16, 16))  # some source statistics
    before = {k: v.clone() for k, v in network.state_dict().items()}
    target = torch.rand(40, 1, 16, 16) * 2 + 1
    adapted = adapt_batchnorm(network, iter(target.split(10)))
    assert adapted == 1 and network.training, "the train/eval mode is restored"
    after = network.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    expected = network[0](target).mean(dim=(0, 2, 3))  # equal batches: mean of batch means
    assert torch.allclose(after["1.running_mean"], expected, atol=1e-5)
    assert network[1].momentum == 0.1, "the layer's momentum is restored"
    with pytest.raises(ValueError, match="model.norm=bn"):
        adapt_batchnorm(nn.Sequential(nn.Linear(2, 2)), iter([torch.rand(2, 2)]))


def test_adabn_in_fit_and_as_a_post_hoc_command(tiny_overrides, tmp_path):
    result = api.fit(None, [*tiny_overrides, "model.norm=bn", "train.adabn=true"],
                     run_dir=tmp_path / "run")
    run_dir = tmp_path / "run"
    assert (run_dir / "adabn.pt").exists()
    restored = api.restore_run(run_dir)
    evaluation = api.evaluate(restored.method.predict, restored.load_split(
        restored.config.data.target, "test"), restored.device)
    assert evaluation.accuracy == pytest.approx(result.target["accuracy"])
    last = api.fit(None, [*tiny_overrides, "model.norm=bn", "train.adabn=true",
                          "train.selection=last"], run_dir=tmp_path / "last")
    assert last.final_target_accuracy == pytest.approx(last.target["accuracy"]), \
        "the last rule reports the AdaBN-adapted last model"
    summary = api.adabn(run_dir)
    assert summary["layers"] == 3 and json.loads((run_dir / "adabn.json").read_text())
    # label-free scores before and after; before is what training's probe read for this model
    plain = api.fit(None, [*tiny_overrides, "model.norm=bn", "train.selection=last"],
                    run_dir=tmp_path / "bn")
    summary = api.adabn(plain.run_dir, which="last")
    before, after = summary["validators"]["before"], summary["validators"]["after"]
    assert set(before) == set(after) == {"entropy", "im", "snd"}  # no source split is read
    assert before["im"] == pytest.approx(plain.history[-1]["validators"]["im"])
    assert after["im"] != pytest.approx(before["im"])
    from typer.testing import CliRunner

    from tamebias.cli import app

    outcome = CliRunner().invoke(app, ["adabn", plain.run_dir, "--which", "last"])
    assert outcome.exit_code == 0, outcome.output
    assert f"im {before['im']:.4f} -> {after['im']:.4f}" in " ".join(outcome.output.split())
    lenet_run = api.fit(None, tiny_overrides, run_dir=tmp_path / "plain")
    with pytest.raises(ValueError, match="model.norm=bn"):
        api.adabn(lenet_run.run_dir)


# -- self-training ------------------------------------------------------------------------------

class FixedLogits(nn.Module):
    """A 'classifier' whose logits are the first K pixels (scaled): outputs chosen by hand."""

    def __init__(self, classes=3, scale=1.0):
        super().__init__()
        self.classes, self.scale = classes, scale
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, images):
        return images.flatten(1)[:, : self.classes] * self.scale + self.bias


def context(step=0, progress=0.5):
    from contextlib import nullcontext
    return SimpleNamespace(step=step, progress=progress, autocast=nullcontext)


def test_pseudo_label_mask_respects_the_threshold():
    logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 0.9, 0.8], [0.0, 0.0, 6.0], [2.0, 2.0, 0.0]])
    images = torch.zeros(4, 1, 2, 2)
    images.view(4, -1)[:, :3] = logits
    model = FixedLogits()
    term = SelfTraining(SelfTrainingConfig(mode="pseudo_label", threshold=0.9), model)
    loss, metrics = term.loss(UnlabeledBatch(images, torch.arange(4)), context())
    confidence, labels = logits.softmax(1).max(1)
    mask = confidence >= 0.9
    assert mask.tolist() == [True, False, True, False]
    expected = (F.cross_entropy(logits, labels, reduction="none") * mask).mean()
    assert torch.allclose(loss, expected) and float(metrics["pseudo_mask"]) == 0.5
    warm = SelfTraining(SelfTrainingConfig(mode="pseudo_label", threshold=0.9, warmup=0.5),
                        model)
    assert torch.allclose(warm.loss(UnlabeledBatch(images, torch.arange(4)),
                                    context(progress=0.1))[0], 0.2 * expected)


def test_fixmatch_trains_the_strong_view_on_weak_view_labels():
    model = FixedLogits(scale=5.0)
    weak = torch.zeros(2, 1, 2, 2)
    weak.view(2, -1)[:, :3] = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    strong = torch.rand(2, 1, 2, 2)
    term = SelfTraining(SelfTrainingConfig(mode="fixmatch", threshold=0.9), model)
    loss, _ = term.loss(UnlabeledBatch(weak, torch.arange(2), strong), context())
    expected = F.cross_entropy(model(strong), torch.tensor([0, 2]))
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="strong"):
        term.loss(UnlabeledBatch(weak, torch.arange(2)), context())


def test_mean_teacher_follows_the_ema_rule_and_takes_no_gradients():
    model = FixedLogits()
    term = SelfTraining(SelfTrainingConfig(mode="mean_teacher", ema=0.9), model)
    assert not any(p.requires_grad for p in term.teacher.parameters())
    old = term.teacher.bias.detach().clone()
    with torch.no_grad():
        model.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    term.after_update(context())
    assert torch.allclose(term.teacher.bias, 0.9 * old + 0.1 * model.bias)
    images = torch.rand(4, 1, 2, 2)
    loss, _ = SelfTraining(SelfTrainingConfig(mode="mean_teacher", threshold=0.0), model).loss(
        UnlabeledBatch(images, torch.arange(4), images), context())
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-7), "identical teacher and view"


def test_rounds_label_with_a_snapshot_taken_every_round():
    model = FixedLogits(scale=10.0)
    term = SelfTraining(SelfTrainingConfig(mode="pseudo_label", rounds=3, threshold=0.5), model)
    images = torch.rand(4, 1, 2, 2)
    batch = UnlabeledBatch(images, torch.arange(4))
    assert float(term.loss(batch, context())[0]) == 0.0, "nothing to learn before round one"
    for step in range(3):
        term.after_update(context(step=step))
    assert float(term.loss(batch, context(step=3))[0].detach()) > 0
    with torch.no_grad():
        model.bias.fill_(5.0)
    term.after_update(context(step=3))
    assert torch.equal(term.teacher.bias, torch.zeros(3)), "the snapshot waits for its round"


def test_self_training_composes_with_dann_through_config(tiny_overrides):
    config = load_config(None, [*tiny_overrides, "method=dann",
                                "method.self_training.mode=fixmatch"])
    data, method, device = build_run(config)
    assert method.needs.strong_target and method.self_training.enabled
    result = api.fit(config, run_dir=None, data=data)
    assert result.steps == 6
    with pytest.raises(ValueError, match="self_training.mode"):
        build_run(load_config(None, [*tiny_overrides, "method=dann",
                                     "method.self_training.mode=magic"]))
