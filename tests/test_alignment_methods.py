"""CDAN, MCC, MDD, MCD, DAN, CORAL and SHOT: each loss against a value worked out by hand on
a tiny batch, each update moving only the modules it names, and SHOT's adaptation never
seeing a source batch."""

from __future__ import annotations

import math

import pytest
import torch

import tamebias
from tamebias.api import build_run, build_streams
from tamebias.compose import load_config
from tamebias.methods.cdan import RandomizedMultilinear, entropy_weights, multilinear_map
from tamebias.methods.common import diversity, information_maximization
from tamebias.methods.coral import coral_loss
from tamebias.methods.dan import multi_kernel_mmd
from tamebias.methods.mcc import class_confusion, class_confusion_loss
from tamebias.methods.mcd import discrepancy
from tamebias.methods.mdd import margin_disparity
from tamebias.methods.shot import SHOT, cluster_labels
from tamebias.models.layers import dropout_off
from tamebias.training.trainer import Context

LN3 = math.log(3.0)  # logits (ln 3, 0) -> probabilities (0.75, 0.25)
NEW_METHODS = ("cdan", "mcc", "mdd", "mcd", "dan", "coral", "shot")


# -- losses against hand-computed values ----------------------------------------------------
def test_cdan_multilinear_map_is_the_flattened_outer_product():
    features = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]])
    probabilities = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    expected = torch.tensor([[0.25, 0.5, 0.75, 0.75, 1.5, 2.25],
                             [0.0, 1.0, -1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(multilinear_map(features, probabilities), expected)


def test_cdan_randomized_map_is_the_scaled_product_of_two_projections():
    randomized = RandomizedMultilinear(feature_dim=2, num_classes=2, output_dim=4)
    randomized.feature_map.copy_(torch.tensor([[1.0, 0, 0, 2], [0, 1.0, 0, 0]]))
    randomized.class_map.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 2, 0]]))
    out = randomized(torch.tensor([[3.0, 5.0]]), torch.tensor([[0.5, 0.5]]))
    # R_f f = (3, 5, 0, 6); R_g g = (0.5, 0.5, 1.5, 0.5); product / sqrt(4)
    assert torch.allclose(out, torch.tensor([[0.75, 1.25, 0.0, 1.5]]))


def test_cdan_entropy_weights_favour_confident_samples_and_weigh_domains_equally():
    probabilities = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])  # 1 source, 2 target
    # source: 1 + e^0 = 2 -> 1 after its domain's sum; target: 1 + e^-ln2 = 1.5 each -> 0.5;
    # then scaled to average one over the 3 samples: (1, .5, .5) * 3 / 2
    assert torch.allclose(entropy_weights(probabilities, 1), torch.tensor([1.5, 0.75, 0.75]),
                          atol=1e-4)


def test_mcc_class_confusion_matrix_and_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0]])  # p = (.5, .5) and (.75, .25); T = 1
    entropies = [math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    raw = [1 + math.exp(-h) for h in entropies]
    weights = [2 * w / sum(raw) for w in raw]  # rescaled to sum to the batch size
    probabilities = [(0.5, 0.5), (0.75, 0.25)]
    confusion = [[sum(w * p[j] * p[k] for w, p in zip(weights, probabilities, strict=True))
                  for k in range(2)] for j in range(2)]
    columns = [confusion[0][k] + confusion[1][k] for k in range(2)]
    normalized = [[confusion[j][k] / columns[k] for k in range(2)] for j in range(2)]
    got = class_confusion(logits, temperature=1.0)
    assert torch.allclose(got, torch.tensor(normalized), atol=1e-4)
    expected = (normalized[0][1] + normalized[1][0]) / 2
    assert expected == pytest.approx(0.4666, abs=1e-3)
    assert float(class_confusion_loss(logits, 1.0)) == pytest.approx(expected, abs=1e-4)
    # confident, distinct predictions: no confusion between classes
    assert float(class_confusion_loss(torch.tensor([[20.0, 0.0], [0.0, 20.0]]), 1.0)) < 1e-6


def test_mdd_margin_disparity_by_hand():
    # source: f' gives (.75, .25), h says 0 -> CE = -ln .75; target: f' gives (.5, .5), h says
    # 1 -> -ln(1 - .5) = ln 2; margin 4
    loss = margin_disparity(torch.tensor([[LN3, 0.0]]), torch.tensor([0]),
                            torch.tensor([[0.0, 0.0]]), torch.tensor([1]), margin=4.0)
    assert float(loss) == pytest.approx(4 * -math.log(0.75) + math.log(2), abs=1e-5)
    assert float(loss) == pytest.approx(1.8439, abs=1e-4)


def test_mcd_discrepancy_is_the_mean_absolute_probability_difference():
    value = discrepancy(torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, 0.0]]))
    assert float(value) == pytest.approx(0.25, abs=1e-6)  # |.75 - .5| and |.25 - .5|


def test_shot_diversity_is_the_entropy_of_the_mean_prediction():
    assert float(diversity(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))) == pytest.approx(
        math.log(2), abs=1e-4)
    # mean (.8, .2): -(.8 ln .8 + .2 ln .2)
    assert float(diversity(torch.tensor([[0.9, 0.1], [0.7, 0.3]]))) == pytest.approx(
        0.5004, abs=1e-4)


def test_shot_clustering_relabels_a_sample_its_prediction_gets_wrong():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    probabilities = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8]])
    assert probabilities.argmax(1).tolist() == [0, 1, 1, 1]
    assert cluster_labels(features, probabilities).tolist() == [0, 0, 1, 1]


def test_dan_multi_kernel_mmd_by_hand():
    # points 0 and 1: mean squared distance over the 2x2 pairs is .5, so with one scale the
    # kernel is exp(-d^2): MMD^2 = 1 + 1 - 2 e^-1
    value = multi_kernel_mmd(torch.tensor([[0.0]]), torch.tensor([[1.0]]), (1.0,))
    assert float(value) == pytest.approx(2 - 2 * math.exp(-1), abs=1e-5)
    same = torch.randn(6, 3)
    assert float(multi_kernel_mmd(same, same.clone())) == pytest.approx(0.0, abs=1e-5)
    collapsed = torch.zeros(4, 3, requires_grad=True)  # dead features: finite, zero
    value = multi_kernel_mmd(collapsed[:2], collapsed[2:])
    value.backward()
    assert float(value.detach()) == 0.0 and torch.isfinite(collapsed.grad).all()


def test_coral_loss_by_hand():
    # covariances diag(2, 0) and diag(0, 2): |diff|_F^2 = 8, over 4 d^2 = 16
    source = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    target = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    assert float(coral_loss(source, target)) == pytest.approx(0.5, abs=1e-6)


# -- each update moves only what it names -----------------------------------------------------
class RecordingContext(Context):
    """The loop's context, noting which parameters each named update changed."""

    def record_for(self, method) -> RecordingContext:
        self.method, self.log = method, []
        return self

    def update(self, optimizer, loss):
        before = {n: p.detach().clone() for n, p in self.method.named_parameters()}
        super().update(optimizer, loss)
        self.log.append((optimizer, {n for n, p in self.method.named_parameters()
                                     if not torch.equal(before[n], p)}))


def build(name, overrides):
    config = load_config(None, [f"method.name={name}", *overrides])
    data, method, device = build_run(config)
    return method, build_streams(config, data, method, device), device


def run_stage(method, streams, device, stage_name):
    stage = next(stage for stage in method.stages() if stage.name == stage_name)
    if stage.on_start:
        stage.on_start()
    context = RecordingContext.for_stage(stage, device).record_for(method)
    method.train()
    batch = streams.batch(0)
    stage.step(stage.needs.restrict(batch) if stage.needs else batch, context)
    owned = {name: {n for n, p in method.named_parameters()
                    if any(p is q for q in context.parameters[name])}
             for name in context.parameters}
    return context.log, owned


@pytest.mark.parametrize("name", NEW_METHODS)
def test_each_update_changes_only_the_parameters_of_the_optimizer_it_names(name, tiny_overrides):
    method, streams, device = build(name, tiny_overrides)
    for stage in method.stages():
        log, owned = run_stage(method, streams, device, stage.name)
        assert log, f"{name}/{stage.name} made no update"
        for optimizer, changed in log:
            assert changed and changed <= owned[optimizer], (name, stage.name, optimizer)


def test_mcd_three_steps_move_heads_and_encoder_in_turn(tiny_overrides):
    method, streams, device = build("mcd", tiny_overrides)
    log, _ = run_stage(method, streams, device, "adapt")
    assert [name for name, _ in log] == ["source", "heads", *["generator"] * 4]
    (_, source), (_, heads), *generator = log
    assert any(n.startswith("second_head.") for n in source)
    assert any(n.startswith("classifier.backbone.") for n in source)
    # step B: both heads move, the encoder is fixed
    assert all(n.startswith(("classifier.classifier_head.", "second_head.")) for n in heads)
    assert any(n.startswith("second_head.") for n in heads)
    assert any(n.startswith("classifier.classifier_head.") for n in heads)
    # step C: the encoder alone
    for _, changed in generator:
        assert changed and all(n.startswith("classifier.backbone.") for n in changed)


def test_shot_adaptation_moves_the_encoder_and_keeps_the_source_head(tiny_overrides):
    method, streams, device = build("shot", tiny_overrides)
    head = {n: p.detach().clone() for n, p in method.classifier.classifier_head.named_parameters()}
    log, _ = run_stage(method, streams, device, "adapt")
    assert [name for name, _ in log] == ["encoder"]
    assert all(n.startswith("classifier.backbone.") for n in log[0][1])
    for n, p in method.classifier.classifier_head.named_parameters():
        assert torch.equal(head[n], p)


@pytest.mark.parametrize(("name", "module"), [("cdan", "critic."), ("mdd", "adversarial_head.")])
def test_the_adversary_trains_in_the_one_model_update(name, module, tiny_overrides):
    method, streams, device = build(name, tiny_overrides)
    log, _ = run_stage(method, streams, device, "adapt")
    assert [optimizer for optimizer, _ in log] == ["model"]
    assert any(n.startswith(module) for n in log[0][1])
    assert any(n.startswith("classifier.backbone.") for n in log[0][1])


# -- SHOT is source-free at adaptation --------------------------------------------------------
def test_shot_adaptation_stage_never_receives_a_source_batch(tiny_overrides, tmp_path,
                                                           monkeypatch):
    seen = []
    original = SHOT.adapt_step

    def spy(self, batch, ctx):
        seen.append(batch.source)
        return original(self, batch, ctx)

    monkeypatch.setattr(SHOT, "adapt_step", spy)
    result = tamebias.fit(None, [*tiny_overrides, "method.name=shot", "method.source_steps=4",
                                 "method.steps=4"], run_dir=tmp_path / "run")
    assert len(seen) == 4 and all(source is None for source in seen)
    assert result.selected is not None


def test_shot_without_its_source_stage_draws_no_source_data(tiny_overrides):
    method, streams, _ = build("shot", [*tiny_overrides, "method.source_steps=0"])
    assert not method.needs.source
    assert [stage.name for stage in method.stages() if stage.steps] == ["adapt"]
    assert streams.batch(0).source is None and streams.batch(0).target is not None


def test_shot_started_from_a_source_run_adapts_without_its_source_stage(tiny_overrides,
                                                                        tmp_path):
    source = tamebias.api.fit(None, [*tiny_overrides, "method.name=source_only"],
                              run_dir=tmp_path / "source")
    method, _, _ = build("shot", [*tiny_overrides, f"init.weights={source.run_dir}"])
    assert method.initialized == ("classifier",)
    assert [stage.name for stage in method.stages()] == ["adapt"]


def test_mcc_composes_into_dann_as_a_config_part(tiny_overrides):
    method, streams, device = build("dann", [*tiny_overrides, "method.mcc.weight=1"])
    stage = method.stages()[0]
    metrics = stage.step(streams.batch(0), Context.for_stage(stage, device))
    assert "mcc_loss" in metrics and float(metrics["mcc_loss"]) > 0
    plain, streams, device = build("dann", tiny_overrides)
    stage = plain.stages()[0]
    assert "mcc_loss" not in stage.step(streams.batch(0), Context.for_stage(stage, device))


# -- SHOT's information maximization as a term of ADDA's target-encoder update ---------------
def test_information_maximization_by_hand():
    # p = (.75, .25) and (.25, .75): each entropy h = -(.75 ln .75 + .25 ln .25), mean
    # prediction (.5, .5) has entropy ln 2 (SHOT's 1e-5 inside the log aside)
    logits = torch.tensor([[LN3, 0.0], [0.0, LN3]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    loss, parts = information_maximization(logits)
    assert float(loss) == pytest.approx(h - math.log(2), abs=1e-4)
    assert float(parts["entropy"]) == pytest.approx(h, abs=1e-5)
    assert float(parts["diversity"]) == pytest.approx(math.log(2), abs=1e-4)
    confident_only, parts = information_maximization(logits, diverse=False)
    assert float(confident_only) == pytest.approx(h, abs=1e-5) and float(parts["diversity"]) == 0


class LossContext(Context):
    """The loop's context, keeping the loss each named update was given."""

    def update(self, optimizer, loss):
        self.losses = {**getattr(self, "losses", {}), optimizer: loss.detach().clone()}
        super().update(optimizer, loss)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_adda_target_encoder_loss_adds_the_weighted_im_term(weight, tiny_overrides):
    method, streams, device = build("adda", [*tiny_overrides, "method.source_steps=0",
                                             f"method.im_weight={weight}"])
    stage = next(stage for stage in method.stages() if stage.name == "adapt")
    stage.on_start()
    batch = streams.batch(0)
    method.train()
    with torch.no_grad(), dropout_off(method.classifier):  # the encoder the update starts at
        im = float(information_maximization(method.classifier(batch.target.images))[0])
    context = LossContext.for_stage(stage, device)
    metrics = method.adapt_step(batch, context)
    # the GAN loss (inverted labels, through the critic just updated) plus the weighted term
    expected = float(metrics["encoder_loss"]) + weight * im
    assert float(context.losses["target_encoder"]) == pytest.approx(expected, abs=1e-5)
    assert ("entropy" in metrics) == (weight > 0)


def test_optimizer_defaults_are_the_ones_the_im_rule_chose():
    """docs/methods-new.md: over {paper SGD, Adam 1e-3} the label-free ``im`` validator chose
    Adam for MCC, DAN, CORAL and SHOT (both stages) and SGD for MDD, whose adversarial head
    collapses under Adam."""
    from tamebias.config import OptimConfig
    from tamebias.methods import METHODS

    for name in ("mcc", "dan", "coral", "shot"):
        config = METHODS[name].Config()
        assert config.optim == OptimConfig(), name
    assert METHODS["shot"].Config().source_optim == OptimConfig()
    mdd = METHODS["mdd"].Config().optim
    assert mdd.name == "sgd" and mdd.schedule == "inverse"
