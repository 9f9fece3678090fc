"""Few-shot pixel alignment: generated styles, FUNIT / COCO-FUNIT translators, the method."""

from __future__ import annotations

import pytest
import torch

from tamebias.api import fit, restore_run
from tamebias.data.imageset import DataError, ImageSet
from tamebias.data.styles import SEEN_STYLES, STYLES, UNSEEN_STYLES, render, render_set
from tamebias.fewshot_translation import cycada_judges, fewshot_judges, style_distance
from tamebias.models.funit import FewShotTranslator, FewShotTranslatorConfig, adain

SMALL = FewShotTranslatorConfig(width=4, style_dim=8, mlp_width=16, bias_dim=8,
                                critic_width=4, critic_blocks=2)


def digits(count: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, 16, 16)
    for index in range(count):
        top = int(torch.randint(2, 8, (1,), generator=generator))
        images[index, 0, top:top + 6, 5:11] = 1.0
    return images


def test_adain_sets_the_channel_statistics_it_is_given():
    features = torch.randn(3, 5, 8, 8) * 4 + 2
    scale, shift = torch.rand(3, 5) + 0.5, torch.randn(3, 5)
    output = adain(features, scale, shift)
    assert torch.allclose(output.mean((2, 3)), shift, atol=1e-4)
    assert torch.allclose(output.var((2, 3), unbiased=False).sqrt(), scale, atol=1e-3)


@pytest.mark.parametrize("conditioned", [False, True])
def test_averaging_k_style_codes_equals_the_code_of_k_copies(conditioned):
    torch.manual_seed(0)
    translator = FewShotTranslator(3, SMALL, conditioned=conditioned).eval()
    examples = render(digits(4), "red-on-black", torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = translator.example_style(examples)
        one_by_one = torch.stack([translator.example_style(e[None]) for e in examples])
        assert torch.allclose(together, one_by_one.mean(0), atol=1e-6)
        copies = examples[:1].expand(5, -1, -1, -1)
        assert torch.allclose(translator.example_style(copies),
                              translator.example_style(examples[:1]), atol=1e-6)
        # per-image examples (B x K x C x H x W) average within each image's K
        batched = translator.example_style(examples.view(2, 2, *examples.shape[1:]))
        assert torch.allclose(batched[1], translator.example_style(examples[2:]), atol=1e-6)


def test_content_conditioned_code_changes_with_the_content_and_funit_s_does_not():
    torch.manual_seed(0)
    images = render(digits(2), "plain")
    style_images = render(digits(3, seed=5), "green-on-navy", torch.Generator().manual_seed(2))
    codes = {}
    for conditioned in (False, True):
        translator = FewShotTranslator(3, SMALL, conditioned=conditioned).eval()
        with torch.no_grad():
            style = translator.example_style(style_images)
            code = translator.style_code(translator.content(images), style)
        codes[conditioned] = code
    assert torch.equal(codes[False][0], codes[False][1])  # FUNIT: the examples' code alone
    assert not torch.allclose(codes[True][0], codes[True][1])  # COCO-FUNIT: depends on x


def test_r1_penalty_is_funit_s_mean_output_gradient_norm():
    """A linear patch critic, logits[b, i] = w_i . x_b (B = 2 images, 3 patches): the
    gradient of the mean output at each image is sum_i w_i / (B * 3), and the penalty is the
    squared gradient summed over the batch / B (FUNIT's calc_grad2); the sum-based form would
    be (B * 3)^2 = 36 times larger."""
    from tamebias.models.funit import r1_penalty

    weights = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 3.0, 1.0], [0.0, 1.0, 1.0, 2.0]])
    images = torch.rand(2, 4, requires_grad=True)
    logits = images @ weights.T  # B x 3 patch outputs
    per_image = (weights.sum(0) / 6).pow(2).sum()  # |d mean / d x_b|^2, the same for both
    assert torch.allclose(r1_penalty(logits, images), 2 * per_image / 2)


def test_styles_are_deterministic_from_recipe_and_seed():
    gray = (digits(8) * 255).to(torch.uint8)
    dataset = ImageSet(gray, torch.arange(8) % 3, ["0", "1", "2"], "tiny", {})
    for name in ("white-on-china", "flower-blend", "yellow-noisy-on-blue"):
        first, second = render_set(dataset, name, 11), render_set(dataset, name, 11)
        assert torch.equal(first.images, second.images)
        assert first.images.shape == (8, 3, 32, 32) and first.images.dtype == torch.uint8
        assert first.meta["style"] == STYLES[name].recipe() and first.meta["style_seed"] == 11
        assert torch.equal(first.labels, dataset.labels)
        assert not torch.equal(first.images, render_set(dataset, name, 12).images)
    assert not set(SEEN_STYLES) & set(UNSEEN_STYLES)
    with pytest.raises(DataError, match="no digit style"):
        render(digits(1), "no-such-style")


def test_style_distance_is_zero_on_target_and_one_on_source():
    source = render(digits(16), "plain")
    target = render(digits(16, seed=3), "flower-blend", torch.Generator().manual_seed(0))
    assert style_distance(source, source, target) == pytest.approx(1.0)
    assert style_distance(target, source, target) == pytest.approx(0.0, abs=1e-6)


def fewshot(tiny_overrides, *more):
    return [*tiny_overrides, "method.name=fewshot_pixel", "data.target_subset=3",
            "train.selection=last", "method.network.width=4", "method.network.critic_width=4",
            "method.network.critic_blocks=2", *more]


@pytest.mark.parametrize("task_setting", ["method.source_share=0.5", "method.style_mix=random"])
def test_identity_translator_leaves_the_result_equal_to_source_only(tiny_overrides, tmp_path,
                                                                    task_setting):
    plain = fit(None, [*tiny_overrides, "method.name=source_only", "train.selection=last"],
                run_dir=tmp_path / "source_only")
    identity = fit(None, fewshot(tiny_overrides, "method.translator=identity",
                                 "method.source_steps=0", task_setting),
                   run_dir=tmp_path / "identity")
    assert [r["stage"] for r in identity.history] == ["task", "task"]
    assert identity.final_target_accuracy == plain.final_target_accuracy
    first = restore_run(tmp_path / "source_only", "last").method.classifier.state_dict()
    second = restore_run(tmp_path / "identity", "last").method.classifier.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_translator_trains_on_seen_styles_then_the_task_uses_the_k_examples(
        tiny_overrides, tmp_path):
    from typer.testing import CliRunner

    from tamebias.cli import app

    overrides = fewshot(tiny_overrides, "method.translator=coco_funit", "method.source_steps=2",
                        "method.translate_steps=2", "method.steps=2")
    result = fit(None, overrides, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "stage-translate.pt").exists()
    run = restore_run(tmp_path / "run", "last")
    assert run.method.examples.shape == (3, 1, 16, 16)  # the K = 3 target images
    assert result.steps == 6
    # the task stage again on the trained translator: only `task` runs, from its source model
    again = fit(None, [*overrides, f"init.weights={tmp_path / 'run'}:translator,teacher,judge"],
                run_dir=tmp_path / "task")
    assert [r["stage"] for r in again.history] == ["task"]
    outcome = CliRunner().invoke(app, ["translate", "--few-shot", str(tmp_path / "run"),
                                       "--few-shot", str(tmp_path / "task"), "--count", "3",
                                       "--output", str(tmp_path / "grid.png")])
    assert outcome.exit_code == 0, outcome.output
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert "content preservation" in outcome.output and "style distance" in outcome.output
    missing = CliRunner().invoke(app, ["translate", "--few-shot", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    # the many-shot reference (CyCADA) read by the same judges, its content by this judge
    fit(None, [*tiny_overrides, "method.name=cycada", "method.source_steps=2",
               "method.translate_steps=2", "method.steps=2", "method.feature_steps=0"],
        run_dir=tmp_path / "cycada")
    verdict = cycada_judges(tmp_path / "cycada", tmp_path / "run")
    own = fewshot_judges(tmp_path / "run")
    assert verdict["judge_source_accuracy"] == own["judge_source_accuracy"]  # the same judge
    assert 0 <= verdict["content_preservation"] <= 1 and verdict["style_distance"] >= 0
    with pytest.raises(ValueError, match="not a cycada run"):
        cycada_judges(tmp_path / "run", tmp_path / "run")


class RecordingContext:
    """A step context that keeps each optimizer's loss instead of stepping anything."""

    step = global_step = 0
    progress = 0.0

    def __init__(self) -> None:
        self.losses: dict[str, torch.Tensor] = {}

    def update(self, optimizer: str, loss: torch.Tensor) -> None:
        self.losses[optimizer] = loss.detach()

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()


def test_generator_loss_adds_the_content_semantic_and_deviation_terms_with_their_weights():
    from dataclasses import replace

    from tamebias.data.batch import DomainBatch, LabeledBatch
    from tamebias.methods.fewshot import FewShotPixel, FewShotPixelConfig
    from tamebias.models.classifier import build_classifier

    batch = LabeledBatch(torch.zeros(4, 3, 16, 16), torch.tensor([0, 1, 2, 1]), torch.arange(4))
    batch.images[:, :, 4:12, 6:10] = 1.0

    def generator_loss(content: float, semantic: float,
                       deviation: float) -> tuple[torch.Tensor, dict]:
        torch.manual_seed(0)  # the same networks, styles and dropout draws in every call
        classifier = build_classifier("lenet", 3, 3, 16, channels_last=False)
        config = FewShotPixelConfig(translator="funit", translate_batch=4, network=replace(
            SMALL, content_weight=content, semantic_weight=semantic,
            deviation_weight=deviation))
        method = FewShotPixel(config, classifier)
        ctx = RecordingContext()
        metrics = method.translate_step(DomainBatch(source=batch, target=None), ctx)
        # the judge that measures content is not the classifier the translator must satisfy
        assert not torch.equal(next(method.judge.parameters()),
                               next(method.semantic.parameters()))
        assert ("semantic" in ctx.losses) == (semantic > 0)
        return ctx.losses["generator"], metrics

    plain, _ = generator_loss(0.0, 0.0, 0.0)
    both, metrics = generator_loss(2.0, 3.0, 0.5)
    assert min(metrics[key] for key in ("content_loss", "semantic_loss", "deviation_loss")) > 0
    expected = (plain + 2.0 * metrics["content_loss"] + 3.0 * metrics["semantic_loss"]
                + 0.5 * metrics["deviation_loss"])
    assert both == pytest.approx(float(expected), rel=1e-5)


def test_a_run_saved_before_the_semantic_classifier_still_loads():
    from tamebias.methods.fewshot import FewShotPixel, FewShotPixelConfig
    from tamebias.models.classifier import build_classifier

    method = FewShotPixel(FewShotPixelConfig(translator="funit", network=SMALL),
                          build_classifier("lenet", 3, 3, 16, channels_last=False))
    old = {key: value for key, value in method.state_dict().items()
           if not key.startswith("semantic.")}
    fresh = FewShotPixel(FewShotPixelConfig(translator="funit", network=SMALL),
                         build_classifier("lenet", 3, 3, 16, channels_last=False))
    fresh.load_state_dict(old)  # strict: the missing semantic weights are filled in
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in old.items())


def test_a_config_saved_before_the_content_terms_restores_with_the_losses_it_trained_with(
        tiny_overrides, tmp_path):
    import json

    run = tmp_path / "run"
    fit(None, fewshot(tiny_overrides, "method.translator=funit", "method.source_steps=1",
                      "method.translate_steps=1", "method.steps=1",
                      "method.network.decoder_norm=in"), run_dir=run)  # an older network
    assert restore_run(run, "last").method.config.network.semantic_weight == 1.0  # today's
    saved = json.loads((run / "config.json").read_text())
    for key in ("content_weight", "semantic_weight", "deviation_weight", "decoder_norm"):
        del saved["method"]["network"][key]  # the shape of an older version's file
    saved["method"]["network"]["reconstruction_weight"] = 0.1
    (run / "config.json").write_text(json.dumps(saved))
    network = restore_run(run, "last").method.config.network
    assert (network.content_weight, network.semantic_weight, network.deviation_weight,
            network.decoder_norm) == (0.0, 0.0, 0.0, "in")
    assert network.reconstruction_weight == 0.1


def test_instance_norm_decoder_discards_the_channel_offsets_adain_sets_and_layer_norm_keeps():
    """MUNIT's reason for layer norm in the decoder: a per-channel offset of the AdaIN blocks'
    output (what a style's shift sets) is removed by the upsampling layers' instance norm."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 16, 8, 8)
    offset = torch.randn(1, 16, 1, 1)
    outputs = {}
    for norm in ("in", "ln"):
        translator = FewShotTranslator(3, FewShotTranslatorConfig(width=4, decoder_norm=norm))
        with torch.no_grad():
            outputs[norm] = (translator.decoder(hidden), translator.decoder(hidden + offset))
    assert torch.allclose(*outputs["in"], atol=1e-5)
    assert (outputs["ln"][0] - outputs["ln"][1]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="decoder_norm"):
        FewShotTranslator(3, FewShotTranslatorConfig(decoder_norm="batch"))


def _task_method(**settings):
    from tamebias.methods.fewshot import FewShotPixel, FewShotPixelConfig
    from tamebias.models.classifier import build_classifier

    torch.manual_seed(0)
    method = FewShotPixel(FewShotPixelConfig(translator="funit", network=SMALL, **settings),
                          build_classifier("lenet", 3, 3, 16, channels_last=False))
    method.examples = render(digits(4, seed=3), "green-on-navy",
                             torch.Generator().manual_seed(2))
    return method


@pytest.mark.parametrize("share, kept", [(0.0, 0), (0.5, 4), (0.25, 2), (1.0, 8)])
def test_the_task_batch_keeps_its_source_share_untranslated(share, kept):
    from tamebias.data.batch import DomainBatch, LabeledBatch, UnlabeledBatch

    method = _task_method(source_share=share)
    images = render(digits(8), "plain")
    seen: list[torch.Tensor] = []
    method.classifier.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    batch = DomainBatch(source=LabeledBatch(images, torch.arange(8) % 3, torch.arange(8)),
                        target=UnlabeledBatch(images[:4], torch.arange(4)))
    method.task_step(batch, RecordingContext())
    trained = seen[0]
    assert torch.equal(trained[:kept], images[:kept])  # the first share: the source itself
    if kept < 8:
        assert torch.allclose(trained[kept:], method.to_target(images[kept:]))
        assert not torch.allclose(trained[kept:], images[kept:], atol=0.05)


def test_random_style_mix_draws_a_convex_combination_of_the_k_codes_per_image():
    method = _task_method()
    images = render(digits(6), "plain")
    mean = method.to_target(images)
    torch.manual_seed(4)
    mixed = method.to_target(images, mix="random")
    assert not torch.allclose(mixed, mean, atol=1e-4)  # each image its own code
    # K copies of one example: every convex combination is that example's code
    copies = method.examples[:1].expand(4, -1, -1, -1)
    assert torch.allclose(method.to_target(images, copies, mix="random"),
                          method.to_target(images, copies), atol=1e-5)
    # the mix reaches each example's own code at the Dirichlet's corners
    translator = method.translator.eval()
    with torch.no_grad():
        codes = translator.example_style(method.examples[:, None])
        assert torch.allclose(codes.mean(0), translator.example_style(method.examples),
                              atol=1e-6)


@pytest.mark.parametrize("setting", ["method.source_share=1.5", "method.style_mix=blend"])
def test_bad_task_stage_settings_are_refused_before_training(tiny_overrides, tmp_path, setting):
    from tamebias.config import ConfigError

    with pytest.raises(ConfigError, match=setting.split("=")[0]):
        fit(None, fewshot(tiny_overrides, setting), run_dir=tmp_path / "run")


def test_the_fewshot_bench_reuses_a_run_folder_only_for_the_config_it_was_made_with(
        tiny_overrides, tmp_path):
    """A finished folder made with other settings is refused (naming them), not returned as
    the row asked for; runtime settings (threads) and the caller's free settings may differ."""
    import importlib.util
    import json
    from pathlib import Path

    from tamebias.compose import load_config

    script = Path(__file__).parents[1] / "benchmarks" / "fewshot.py"
    spec = importlib.util.spec_from_file_location("fewshot_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = tmp_path / "run"
    folder.mkdir()
    made = [*tiny_overrides, "method.steps=6"]
    (folder / "config.json").write_text(json.dumps(load_config(None, made).to_dict()))
    (folder / "result.json").write_text("{}")  # finished: nothing is trained again
    assert bench.run(folder, [*made, "train.threads=2"]) == folder
    with pytest.raises(SystemExit, match=r"another config \(method\.steps 6 -> 7\)"):
        bench.run(folder, [*tiny_overrides, "method.steps=7"])
    assert bench.run(folder, [*tiny_overrides, "method.steps=7"], ("method.steps",)) == folder
    assert (folder / "config.json").exists()  # nothing deleted


def test_funit_s_five_block_critic_pools_32_px_to_one_cell_and_stays_finite():
    """The +gpu recipes' critic (five blocks) pools 32 px images to 1x1, where a spatial std
    is NaN: the spread is zero there, and the losses and gradients stay finite."""
    from tamebias.models.funit import MultiDomainCritic, hinge_critic_loss, r1_penalty

    torch.manual_seed(0)
    critic = MultiDomainCritic(3, domains=4, width=4, blocks=5)
    images = torch.rand(6, 3, 32, 32, requires_grad=True)
    logits, mean, spread = critic(images, torch.tensor([0, 1, 2, 3, 0, 1]))
    assert logits.shape == (6, 1, 1) and torch.equal(spread, torch.zeros_like(mean))
    loss = hinge_critic_loss(logits, -logits) + r1_penalty(logits, images) + mean.sum()
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all()
                                        for p in critic.parameters() if p.grad is not None)
    _, _, spread = MultiDomainCritic(3, domains=4, width=4, blocks=3)(
        images, torch.zeros(6, dtype=torch.long))
    assert (spread > 0).all()  # three blocks keep a 4x4 map: its real spread
