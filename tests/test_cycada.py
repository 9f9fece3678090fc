"""CycleGAN translation and CyCADA: what makes them what they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tamebias.api import build_run, fit, restore_run
from tamebias.compose import load_config
from tamebias.data.domain import DomainStreams
from tamebias.lineage import initialize
from tamebias.methods import cycada as cycada_module
from tamebias.models.translator import CycleGAN, ImagePool, ResnetGenerator, TranslatorConfig
from tamebias.training.trainer import Context


def small(tiny_overrides, *extra):
    return [*tiny_overrides, "method.name=cycada", "method.translator.width=4",
            "method.translator.blocks=1", "method.translator.critic_width=8",
            "method.translate_batch=8", *extra]


def build(overrides):
    config = load_config(None, overrides)
    data, method, device = build_run(config)
    streams = DomainStreams(data, config.data.batch_size, 0, device, True, False)
    return method, streams, device


def stage(method, name):
    return next(s for s in method.stages() if s.name == name)


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.state_dict().items()}


def same(module, saved):
    return all(torch.equal(saved[n], p) for n, p in module.state_dict().items())


def test_identity_generators_give_zero_cycle_loss():
    torch.manual_seed(0)
    source, target = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    translator = CycleGAN(1, TranslatorConfig(width=4, blocks=1, critic_width=8))
    learned = translator.generator_losses(source, target)["cycle_loss"].detach()
    assert float(learned) > 0.01  # untrained generators do not reproduce their input
    translator.source_to_target = nn.Identity()
    translator.target_to_source = nn.Identity()
    losses = translator.generator_losses(source, target)
    assert float(losses["cycle_loss"]) == 0.0


def test_target_gan_weight_scales_only_the_source_to_target_term(tiny_overrides):
    torch.manual_seed(0)
    source, target = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    translator = CycleGAN(1, TranslatorConfig(width=4, blocks=1, critic_width=8))
    images = {k: v.detach() for k, v in translator.translate(source, target).items()}
    base = float(translator.generator_losses(source, target, images)["gan_loss"])
    to_target = float(nn.functional.mse_loss(translator.target_critic(images["fake_target"]),
                                             torch.ones(1)))
    translator.config.target_gan_weight = 3.0
    translator.config.cycle_weight = 1.0
    losses = translator.generator_losses(source, target, images)
    assert float(losses["gan_loss"]) == pytest.approx(base + 2 * to_target, rel=1e-5)
    # the digits-release variant's overrides reach the translator of a built method
    method, _, _ = build(small(tiny_overrides, "method.translator.cycle_weight=1",
                               "method.translator.target_gan_weight=2"))
    assert method.translator.config.cycle_weight == 1.0
    assert method.translator.config.target_gan_weight == 2.0


def test_generator_keeps_shape_and_range_for_gray_and_color():
    for channels, size in ((1, 28), (3, 32)):
        generator = ResnetGenerator(channels, width=4, blocks=1)
        images = torch.rand(3, channels, size, size)
        output = generator(images).detach()
        assert output.shape == images.shape
        assert float(output.min()) >= 0 and float(output.max()) <= 1
    with pytest.raises(ValueError, match="divide by 4"):
        ResnetGenerator(1, width=4, blocks=1)(torch.rand(1, 1, 30, 30))


def test_image_pool_fills_then_mixes_and_is_checkpointed():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.rand(4, 1, 2, 2)
    assert torch.equal(pool.query(first), first)  # filling: images pass through
    second = torch.rand(64, 1, 2, 2)
    output = pool.query(second)
    from_history = [not any(torch.equal(o, s) for s in second) for o in output]
    assert 0 < sum(from_history) < 64  # about half come from the history
    fresh = ImagePool(4)
    fresh.load_state_dict(pool.state_dict())
    assert torch.equal(fresh.images, pool.images) and int(fresh.count) == 4


def test_semantic_consistency_uses_the_frozen_teacher_and_never_updates_it(tiny_overrides):
    method, streams, _ = build(small(tiny_overrides))
    method.start_translation()
    method.train()  # as the loop does: the frozen teacher stays in eval mode (no dropout)
    assert not method.teacher.training
    teacher = snapshot(method.teacher)
    with torch.no_grad():  # the classifier now differs from the teacher
        for parameter in method.classifier.parameters():
            parameter.add_(torch.randn_like(parameter))
    batch = streams.batch(0)
    images = batch.source.images
    translated = method.translator.source_to_target(images)
    loss = method.semantic_loss(images, translated)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(method.teacher(translated),
                                               method.teacher(images).argmax(1))
        method.classifier.eval()
        with_classifier = nn.functional.cross_entropy(method.classifier(translated),
                                                      method.classifier(images).argmax(1))
        method.classifier.train()
    assert torch.allclose(loss, expected) and not torch.allclose(loss, with_classifier)
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in method.translator.source_to_target.parameters())
    context = Context.for_stage(stage(method, "translate"), torch.device("cpu"))
    for step in range(2):
        method.translate_step(streams.batch(step), context)
    assert same(method.teacher, teacher)


def test_teacher_target_stats_reads_target_style_with_target_batchnorm(tiny_overrides):
    import copy

    from tamebias.config import ConfigError

    with pytest.raises(ConfigError, match="set model.norm=bn"):
        build(small(tiny_overrides, "method.teacher_target_stats=true", "model.norm=none"))
    method, streams, _ = build(small(tiny_overrides, "method.teacher_target_stats=true",
                                     "model.norm=bn"))
    method.start_translation()
    method.train()
    assert not method.target_teacher.training and not method.teacher.training
    teacher = snapshot(method.teacher)
    context = Context.for_stage(stage(method, "translate"), torch.device("cpu"))
    cut = method.config.translate_batch
    batches = [streams.batch(step) for step in range(3)]
    # what AdaBN over the target images seen gives: a cumulative average of batch statistics
    reference = copy.deepcopy(method.teacher)
    for norm in cycada_module.batch_norms(reference):
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()  # only the batch norms: dropout stays off, as in AdaBN
    with torch.no_grad():
        for batch in batches:
            reference(batch.target.images[:cut])
    for batch in batches[:2]:
        method.translate_step(batch, context)
    before = copy.deepcopy(method)  # the third step's semantic loss, computed by hand
    before.gather_target_statistics(batches[2].target.images[:cut])
    source, target = batches[2].source.images[:cut], batches[2].target.images[:cut]
    with torch.no_grad():
        fake_target = before.translator.source_to_target(source)
        fake_source = before.translator.target_to_source(target)
        expected = (nn.functional.cross_entropy(before.target_teacher(fake_target),
                                                before.teacher(source).argmax(1))
                    + nn.functional.cross_entropy(before.teacher(fake_source),
                                                  before.target_teacher(target).argmax(1)))
    metrics = method.translate_step(batches[2], context)
    assert torch.allclose(metrics["semantic_loss"], expected, atol=1e-5)
    for ours, theirs in zip(cycada_module.batch_norms(method.target_teacher),
                            cycada_module.batch_norms(reference), strict=True):
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-5)
        assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-4)
    assert same(method.teacher, teacher)  # the source teacher keeps source statistics
    assert all(torch.equal(p, q) for p, q in zip(method.target_teacher.parameters(),
                                                 method.teacher.parameters(), strict=True))
    assert all(p.grad is None for p in method.target_teacher.parameters())


def test_translate_stage_updates_only_generators_and_critics_through_their_optimizers(
        tiny_overrides):
    method, streams, device = build(small(tiny_overrides))
    translate = stage(method, "translate")
    translate.on_start()
    context = Context.for_stage(translate, device)
    calls, update = [], context.update
    context.update = lambda name, loss: (calls.append(name), update(name, loss))[1]
    classifier, critic = snapshot(method.classifier), snapshot(method.critic)
    generator = snapshot(method.translator.source_to_target)
    critics = snapshot(method.translator.target_critic)
    method.train()
    metrics = method.translate_step(streams.batch(0), context)
    assert calls == ["generators", "critics"]
    assert {"gan_loss", "cycle_loss", "semantic_loss", "critic_loss"} <= set(metrics)
    assert same(method.classifier, classifier) and same(method.critic, critic)
    assert not same(method.translator.source_to_target, generator)
    assert not same(method.translator.target_critic, critics)
    owned = {id(p) for p in context.parameters["generators"]}
    assert owned == {id(p) for g in method.translator.generators for p in g.parameters()}
    owned = {id(p) for p in context.parameters["critics"]}
    assert owned == {id(p) for c in method.translator.critics for p in c.parameters()}


def test_task_stage_trains_on_translated_source_with_source_labels(tiny_overrides, monkeypatch):
    method, streams, device = build(small(tiny_overrides))
    seen = []
    real_step = cycada_module.classification_step
    monkeypatch.setattr(cycada_module, "classification_step",
                        lambda classifier, batch, ctx, name: (seen.append(batch),
                                                              real_step(classifier, batch, ctx,
                                                                        name))[1])
    generator = snapshot(method.translator)
    batch = streams.batch(0)
    method.train()
    method.task_step(batch, Context.for_stage(stage(method, "task"), device))
    translated = seen[0]
    assert translated.images.shape == batch.source.images.shape
    assert float(translated.images.min()) >= 0 and float(translated.images.max()) <= 1
    assert torch.equal(translated.labels, batch.source.labels)
    assert not torch.equal(translated.images, batch.source.images)
    assert torch.equal(translated.images, method.to_target(batch.source.images))
    assert same(method.translator, generator)


def test_pixel_only_is_a_configuration(tiny_overrides):
    method, _, _ = build(small(tiny_overrides, "method.feature_steps=0"))
    assert [s.name for s in method.stages()] == ["source", "translate", "task"]
    method, _, _ = build(small(tiny_overrides, "method.feature_steps=2"))
    assert [s.name for s in method.stages()] == ["source", "translate", "task", "feature"]
    assert [s.evaluate for s in method.stages()] == [True, False, True, True]
    # the former method name (a config of an older version) is cycada without the feature stage
    pixel_only = [o.replace("method.name=cycada", "method.name=cycada_pixel")
                  for o in small(tiny_overrides)]
    method, _, _ = build(pixel_only)
    assert method.config.name == "cycada" and method.config.feature_steps == 0
    assert [s.name for s in method.stages()] == ["source", "translate", "task"]


def test_end_to_end_fit_translate_export_and_reuse(tiny_overrides, tmp_path):
    from typer.testing import CliRunner

    from tamebias.cli import app

    overrides = small(tiny_overrides, "method.source_steps=4", "method.translate_steps=4",
                      "method.steps=4", "method.feature_steps=4")
    result = fit(None, overrides, run_dir=tmp_path / "run")
    assert [r["stage"] for r in result.history] == ["source", "source", "task", "task",
                                                    "feature", "feature"]
    assert (tmp_path / "run" / "stage-translate.pt").exists()
    export = tmp_path / "translated.npz"
    outcome = CliRunner().invoke(app, ["translate", str(tmp_path / "run"), "--count", "4",
                                       "--export", str(export)])
    assert outcome.exit_code == 0, outcome.output
    assert (tmp_path / "run" / "translation.png").stat().st_size > 0
    with np.load(export) as contents:
        x, y = contents["x"], contents["y"]
    assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape[1:] == (16, 16)
    assert len(x) == len(y) == result.protocol["source_train"] + result.protocol["source_val"]
    reused = [o for o in tiny_overrides if not o.startswith("data.source=")]
    again = fit(None, [*reused, f"data.source=npz:{export}", "method.steps=2"],
                run_dir=tmp_path / "reuse")
    assert again.protocol["source"] == f"npz:{export}" and again.steps == 2
    # pixel+feature reusing a finished run's translator, teacher and task classifier
    whole = f"init.weights={tmp_path / 'run'}:translator,teacher,classifier"
    feature = fit(None, [*overrides, whole, "method.feature_steps=2"],
                  run_dir=tmp_path / "feature")
    assert feature.steps == 2 and [r["stage"] for r in feature.history] == ["feature"]
    first, second = restore_run(tmp_path / "run", "last"), restore_run(tmp_path / "feature", "last")
    assert same(second.method.translator, snapshot(first.method.translator))
    assert same(second.method.teacher, snapshot(first.method.teacher))
    # the task stage again on that run's translator and teacher (source, translate skipped)
    translator = f"{tmp_path / 'run'}:translator,teacher"
    again = [*overrides, f"init.weights={translator}", "method.feature_steps=0",
             "method.steps=2"]
    method, _, _ = build(again)
    assert [s.name for s in method.stages()] == ["task"]
    initialize(method, translator)
    stage(method, "task").on_start()
    assert same(method.translator, snapshot(first.method.translator))
    assert same(method.teacher, snapshot(first.method.teacher))
    assert same(method.classifier, snapshot(first.method.teacher))  # starts from source model
    task = fit(None, again, run_dir=tmp_path / "task")
    assert task.steps == 2 and [r["stage"] for r in task.history] == ["task"]
    assert task.lineage["parents"][0]["modules"] == ["translator", "teacher"]
    with pytest.raises(ValueError, match="translator,teacher .a trained translator"):
        build([*again, f"init.weights={tmp_path / 'run'}:translator"])[0].stages()
    with pytest.raises(ValueError, match="set method.feature_steps above 0"):
        build([*again, f"{whole}"])[0].stages()


def test_judge_reads_source_images_before_and_after_translation(tiny_overrides, tmp_path,
                                                                 monkeypatch):
    from typer.testing import CliRunner

    from tamebias.cli import app
    from tamebias.evaluation.metrics import predict
    from tamebias.translation import judge_translation

    run = tmp_path / "run"
    fit(None, small(tiny_overrides, "method.source_steps=2", "method.translate_steps=2",
                    "method.steps=2", "method.feature_steps=0"), run_dir=run)
    fit(None, [*tiny_overrides, "method.steps=2"], run_dir=tmp_path / "judge")
    judge = restore_run(tmp_path / "judge")
    source = judge.load_split(judge.config.data.source, "test")
    reads = predict(judge.method.predict, source.images, judge.device).argmax(1)
    expected = float((reads == source.labels).float().mean())
    # an identity translator changes nothing the judge reads
    monkeypatch.setattr(ResnetGenerator, "forward", lambda self, images: images)
    same_images = judge_translation(run, tmp_path / "judge")
    assert same_images["images"] == len(source)
    assert same_images["source_accuracy"] == pytest.approx(expected)
    assert same_images["translated_accuracy"] == pytest.approx(expected)
    # a translator that blanks every image: the judge reads one class for all of them
    monkeypatch.setattr(ResnetGenerator, "forward", lambda self, images: images * 0)
    blank = judge_translation(run, tmp_path / "judge")
    read = int(judge.method.predict(torch.zeros(1, *source.images.shape[1:])).argmax())
    assert blank["translated_accuracy"] == pytest.approx(
        float((source.labels == read).float().mean()))
    assert {f["read_as"] for f in blank["flips"]} == {source.classes[read]}
    assert sum(f["count"] for f in blank["flips"]) == int((source.labels != read).sum())
    outcome = CliRunner().invoke(app, ["translate", str(run), "--count", "4",
                                       "--judge", str(tmp_path / "judge")])
    assert outcome.exit_code == 0, outcome.output
    assert "translated to the target style" in outcome.output
    # a judge of another input size is refused before reading anything
    fit(None, [*tiny_overrides, "data.size=20", "method.steps=2"], run_dir=tmp_path / "other")
    with pytest.raises(ValueError, match="reads 20x20x1 images"):
        judge_translation(run, tmp_path / "other")


def test_translate_refuses_a_run_without_a_translator(tiny_overrides, tmp_path):
    from typer.testing import CliRunner

    from tamebias.cli import app

    fit(None, [*tiny_overrides, "method.steps=2"], run_dir=tmp_path / "plain")
    outcome = CliRunner().invoke(app, ["translate", str(tmp_path / "plain")])
    assert outcome.exit_code == 2
    assert "no image translator" in outcome.output


def test_translation_grids_show_every_class_of_a_split_sorted_by_label():
    from tamebias.data.imageset import ImageSet
    from tamebias.translation import varied_sample

    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])  # as mnist5k's test split is stored
    split = ImageSet(torch.zeros(9, 1, 4, 4, dtype=torch.uint8), labels, ["0", "1", "2"])
    chosen = varied_sample(split, 5)
    assert labels[chosen].tolist() == [0, 1, 2, 0, 1]
    assert len(set(chosen.tolist())) == 5  # no image twice
