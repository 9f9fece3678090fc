"""DANCE's parts: the memory bank, entropy separation, neighborhood similarities, the
rejection threshold; and the open-set rejection rule and metrics it is judged by."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tamebias.evaluation.openset import (
    RejectionRule,
    entropy,
    evaluate_logits,
    make_rule,
    open_set_metrics,
)
from tamebias.lineage import initialize
from tamebias.methods.dance import DANCE, DANCEConfig, entropy_separation
from tamebias.models.classifier import build_classifier
from tamebias.models.memory import MemoryBank


def test_memory_bank_writes_only_the_indexed_rows_and_mixes_with_momentum():
    bank = MemoryBank(3, momentum=0.5)
    first = torch.tensor([[3.0, 0.0, 4.0], [0.0, 2.0, 0.0]])
    bank.update(first, torch.tensor([3, 1]))
    assert bank.features.shape == (4, 3)
    assert bank.written.tolist() == [False, True, False, True]
    # a first write stores the normalized feature, untouched rows stay empty
    assert torch.allclose(bank.features[3], torch.tensor([0.6, 0.0, 0.8]))
    assert torch.allclose(bank.features[1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(bank.features[0], torch.zeros(3)) and torch.equal(bank.features[2],
                                                                          torch.zeros(3))
    bank.update(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1]))
    expected = F.normalize(0.5 * torch.tensor([0.0, 1.0, 0.0]) + 0.5 * torch.tensor(
        [1.0, 0.0, 0.0]), dim=0)
    assert torch.allclose(bank.features[1], expected)
    assert torch.allclose(bank.features[3], torch.tensor([0.6, 0.0, 0.8]))  # unchanged


def test_memory_bank_with_zero_momentum_replaces_rows():
    bank = MemoryBank(2, momentum=0.0)
    bank.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    bank.update(torch.tensor([[0.0, -5.0]]), torch.tensor([0]))
    assert torch.allclose(bank.features[0], torch.tensor([0.0, -1.0]))


def test_memory_similarities_mask_the_batch_and_unwritten_rows():
    bank = MemoryBank(2)
    bank.update(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 3]))
    query = F.normalize(torch.tensor([[1.0, 0.0]]), dim=1)
    logits = bank.similarities(query, torch.tensor([1]), temperature=0.5)
    # row 0: cos 1 / T; row 1: own row, masked; row 2: never written, masked; row 3: cos 45
    assert logits.shape == (1, 4)
    assert torch.allclose(logits[0], torch.tensor([2.0, -2.0, -2.0, math.sqrt(0.5) / 0.5]))


def test_memory_bank_loads_a_checkpoint_of_another_size():
    bank = MemoryBank(2)
    bank.update(torch.randn(5, 2), torch.arange(5))
    fresh = MemoryBank(2)
    fresh.load_state_dict(bank.state_dict())
    assert torch.equal(fresh.features, bank.features) and torch.equal(fresh.written,
                                                                      bank.written)


@pytest.mark.parametrize("scale, direction", [(8.0, -1), (0.05, +1), (None, 0)])
def test_entropy_separation_pushes_entropy_away_from_rho(scale, direction):
    """A gradient step on the loss lowers a confident sample's entropy, raises an uncertain
    one's, and leaves one inside the margin alone."""
    rho, margin = math.log(4) / 2, 0.5
    if scale is None:  # entropy within rho +- margin
        logits = torch.tensor([[3.0, 0.0, 0.0, 0.0]])
        assert abs(float(entropy(logits)) - rho) < margin
    else:
        logits = torch.tensor([[1.0, 0.2, -0.3, 0.1]]) * scale
        assert abs(float(entropy(logits)) - rho) > margin
    logits.requires_grad_(True)
    entropy_separation(logits, rho, margin).backward()
    before = float(entropy(logits.detach()))
    after = float(entropy(logits.detach() - 0.5 * logits.grad))
    if direction == 0:
        assert torch.count_nonzero(logits.grad) == 0
    else:
        assert (after - before) * direction > 0, (before, after)
        assert (before - rho) * direction > 0  # moved further from rho


def _dance(num_classes=4, **settings):
    classifier = build_classifier("lenet", num_classes, 1, 16, channels_last=False)
    return DANCE(DANCEConfig(**settings), classifier)


def test_dance_uses_a_cosine_classifier_and_rejects_at_log_k_over_two():
    method = _dance(num_classes=4)
    method.eval()
    logits = method.predict(torch.rand(5, 1, 16, 16))
    assert logits.abs().max() <= 1 / 0.05 + 1e-4  # cosine / temperature
    assert method.rejection_threshold == pytest.approx(math.log(4) / 2)
    assert _dance(rho=0.3).rejection_threshold == 0.3


def test_neighborhood_logits_cover_prototypes_memory_and_other_batch_samples():
    method = _dance(num_classes=3)
    method.memory.update(torch.randn(6, 500), torch.arange(6))
    features = torch.randn(2, 500)
    logits = method.neighborhood_logits(features, torch.zeros(2, 3), torch.tensor([0, 4]))
    assert logits.shape == (2, 3 + 6 + 2)
    masked = -1 / 0.05
    assert logits[0, 3 + 0] == masked and logits[0, 3 + 4] == masked  # own memory rows
    assert logits[0, 9] == masked and logits[1, 10] == masked  # itself in the batch
    expected = F.cosine_similarity(features[0], features[1], dim=0) / 0.05
    assert torch.isclose(logits[0, 10], expected, atol=1e-4)


def test_entropy_rejection_marks_exactly_the_samples_above_the_threshold():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.2, 0.1, 0.0]])
    values = entropy(logits)
    threshold = float(values[2])  # equal to the threshold: kept (strictly above rejects)
    rule = RejectionRule("entropy", threshold)
    assert rule.reject(logits).tolist() == (values > threshold).tolist()
    assert rule.reject(logits).tolist() == [False, True, False, True]
    assert rule.predict(logits).tolist() == [0, 3, 0, 3]  # 3 = unknown = K


def test_confidence_rejection_and_default_thresholds():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    assert RejectionRule("confidence", 0.5).reject(logits).tolist() == [False, True]
    assert make_rule("entropy", 10).threshold == pytest.approx(math.log(10) / 2)
    assert make_rule("confidence", 10).threshold == 0.5
    with pytest.raises(ValueError, match="entropy, confidence"):
        RejectionRule("margin", 0.1)


def test_open_set_metrics_match_a_hand_computed_confusion_matrix():
    # two known classes and unknown (last row / column)
    confusion = torch.tensor([[8, 1, 1], [2, 5, 3], [1, 1, 3]])
    result = open_set_metrics(confusion)
    known = (0.8 + 0.5) / 2
    assert result.known_accuracy == pytest.approx(known)
    assert result.unknown_recall == pytest.approx(0.6)
    assert result.h_score == pytest.approx(2 * known * 0.6 / (known + 0.6))  # 0.624
    assert result.h_score == pytest.approx(0.624)
    assert result.per_class_mean == pytest.approx((0.8 + 0.5 + 0.6) / 3)
    assert result.accuracy == pytest.approx(16 / 25)
    assert result.rejected_fraction == pytest.approx(7 / 25)


def test_open_set_metrics_without_unknown_samples_and_absent_classes():
    confusion = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]])  # partial: class 1 absent
    result = open_set_metrics(confusion)
    assert result.unknown_recall is None and result.h_score is None
    assert result.known_accuracy == pytest.approx(0.75)
    assert result.per_class_mean == pytest.approx(0.75)
    assert result.per_class_accuracy == [0.75, None, None]


def test_evaluate_logits_applies_the_rule_before_counting():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.0, 4.0], [0.1, 0.0]])
    labels = torch.tensor([0, 2, 1, 2])
    result = evaluate_logits(logits, labels, make_rule("entropy", 2))
    # samples 2 and 4 are near-uniform: rejected, both truly unknown
    assert result.unknown_recall == 1.0 and result.known_accuracy == 1.0
    assert result.h_score == 1.0


def test_auroc_ranks_the_rejection_score_of_unknown_against_known_samples():
    # two classes + unknown; confidence = sigmoid(a) for logits [a, 0]
    logits = torch.tensor([[5.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 2])  # known, known, unknown, unknown
    # unknown scores (-confidence) beat known ones in 3 of the 4 pairs: (3,5), (0,5), (0,1)
    result = evaluate_logits(logits, labels, make_rule("confidence", 2, 0.5))
    assert result.auroc == pytest.approx(0.75)
    # the same ranking by entropy; the threshold plays no part in it
    for threshold in (0.01, 0.6, 5.0):
        assert evaluate_logits(logits, labels, make_rule("entropy", 2, threshold)).auroc == \
            pytest.approx(0.75)
    # the two most confident samples unknown: every unknown ranks below every known; 0
    assert evaluate_logits(logits, torch.tensor([2, 1, 2, 0]),
                           make_rule("entropy", 2)).auroc == pytest.approx(0.0)
    # without unknown samples there is nothing to rank: None
    assert evaluate_logits(logits, torch.tensor([0, 1, 0, 1]),
                           make_rule("entropy", 2)).auroc is None


def test_dance_resumes_exactly_with_its_memory_bank(tiny_overrides, tmp_path, monkeypatch):
    from tamebias import api
    from tamebias.training import checkpoint

    overrides = [*tiny_overrides, "method.name=dance", "data.target_private=[2]",
                 "method.steps=8", "train.checkpoint_every=3"]
    full = api.fit(None, overrides, run_dir=tmp_path / "full")
    original, calls = DANCE.adapt_step, {"count": 0}

    def crash_after_five(self, *args):
        calls["count"] += 1
        if calls["count"] == 6:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(DANCE, "adapt_step", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        api.fit(None, overrides, run_dir=tmp_path / "killed")
    monkeypatch.setattr(DANCE, "adapt_step", original)
    resumed = api.fit(None, None, run_dir=tmp_path / "killed")
    assert resumed.history == full.history and resumed.target == full.target
    final = checkpoint.load(tmp_path / "full" / "checkpoint.pt")["method"]
    assert final["memory.written"].any()
    again = checkpoint.load(tmp_path / "killed" / "checkpoint.pt")["method"]
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_dance_can_start_from_a_source_only_run(tiny_overrides, tmp_path):
    from tamebias import api
    from tamebias.api import build_run
    from tamebias.compose import load_config

    source = api.fit(None, tiny_overrides, run_dir=tmp_path / "source")
    config = load_config(None, [*tiny_overrides, "method=dance",
                                f"init.weights={source.run_dir}:classifier"])
    _, method, _ = build_run(config)
    initialize(method, config.init.weights)
    trained = api.restore_run(source.run_dir).method.classifier.state_dict()
    assert torch.equal(method.classifier.backbone.state_dict()["fc.1.weight"],
                       trained["backbone.fc.1.weight"])
    prototypes = F.normalize(trained["classifier_head.weight"], dim=1)
    assert torch.allclose(method.classifier.classifier_head.weight, prototypes,
                          atol=1e-6), "unit prototypes from the linear head"

    # the backbone alone: under the fresh head the method was built with
    config = load_config(None, [*tiny_overrides, "method=dance",
                                f"init.weights={source.run_dir}:classifier.backbone"])
    _, method, _ = build_run(config)
    fresh = method.classifier.classifier_head.weight.detach().clone()
    initialize(method, config.init.weights)
    assert torch.equal(method.classifier.backbone.state_dict()["fc.1.weight"],
                       trained["backbone.fc.1.weight"])
    assert torch.equal(method.classifier.classifier_head.weight, fresh)
    assert not torch.allclose(fresh, prototypes, atol=1e-3)


class _NoStep:
    """A step context that only backpropagates (no optimizer): the model stays as it is."""

    def update(self, optimizer, loss):
        loss.backward()

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()


def _batch(seed=0, size=6):
    from tamebias.data.batch import DomainBatch, LabeledBatch, UnlabeledBatch

    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(2 * size, 1, 16, 16, generator=generator)
    return DomainBatch(
        LabeledBatch(images[:size], torch.arange(size) % 4, torch.arange(size)),
        UnlabeledBatch(images[size:], torch.arange(size)))


@pytest.mark.parametrize("target_dropout", [False, True])
def test_target_features_skip_dropout_unless_asked(target_dropout):
    """The paper's backbone has no dropout: the memory bank (and NC / ES) must see the
    deterministic target features evaluation sees, while the source batch keeps dropout."""
    torch.manual_seed(0)
    method = _dance(target_dropout=target_dropout)
    method.train()
    batch, written = _batch(), []
    original = method.memory.update
    method.memory.update = lambda features, indices: (written.append(features.clone()),
                                                      original(features, indices))
    method.adapt_step(batch, _NoStep())
    method.adapt_step(batch, _NoStep())
    with torch.no_grad():
        method.eval()
        deterministic = method.classifier.features(batch.target.images)
        method.train()
    same = torch.allclose(written[0], written[1]) and torch.allclose(written[0], deterministic)
    assert same != target_dropout
    assert all(m.training for m in method.classifier.modules()), "dropout back on afterwards"


def test_cosine_head_keeps_unit_prototypes_like_the_authors_weight_norm():
    method = _dance(num_classes=4)
    head = method.classifier.classifier_head
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(4))
    with torch.no_grad():
        head.weight.mul_(torch.tensor([[3.0], [0.2], [1.0], [0.5]]))  # e.g. after an SGD step
    direction = F.normalize(head.weight.detach(), dim=1)
    method.train()
    method.adapt_step(_batch(), _NoStep())  # renormalizes before the step's forward
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(4))
    assert torch.allclose(head.weight, direction, atol=1e-6)


def test_rotate_batch_turns_each_image_by_its_label():
    from tamebias.methods.common import rotate_batch

    torch.manual_seed(0)
    images = torch.rand(64, 1, 5, 5)
    rotated, turns = rotate_batch(images)
    assert rotated.shape == images.shape and set(turns.tolist()) == {0, 1, 2, 3}
    for image, turned, k in zip(images, rotated, turns.tolist(), strict=True):
        assert torch.equal(torch.rot90(turned, -k, dims=(1, 2)), image)
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.rand(2, 1, 4, 6))


def test_dance_rotation_stage_pretrains_the_backbone_without_labels(tiny_overrides):
    from tamebias import api
    from tamebias.api import build_run
    from tamebias.compose import load_config

    config = load_config(None, [*tiny_overrides, "method=dance", "method.rotation_steps=4"])
    _, method, _ = build_run(config)
    stages = method.stages()
    assert [s.name for s in stages] == ["rotation", "adapt"] and not stages[0].evaluate
    result = api.fit(None, [*tiny_overrides, "method=dance", "method.rotation_steps=4",
                            "data.target_private=[2]"])
    trained = api.restore_run(result.run_dir, "last").method
    assert trained.rotation_head.weight.shape == (4, trained.classifier.feature_dim)
    # the history's evaluations are the adapt stage's alone
    assert {record["stage"] for record in result.history} == {"adapt"}
    with pytest.raises(ValueError, match="set one"):
        build_run(load_config(None, [*tiny_overrides, "method=dance", "method.rotation_steps=4",
                                     "init.weights=elsewhere"]))[1].stages()


def test_rotation_stage_updates_backbone_and_rotation_head_only():
    from tamebias.data.batch import DomainBatch, LabeledBatch, UnlabeledBatch
    from tamebias.methods.common import rotation_stage

    torch.manual_seed(0)
    classifier = build_classifier("lenet", 3, 1, 16)
    head = torch.nn.Linear(classifier.feature_dim, 4)
    stage = rotation_stage(classifier, head, 1, DANCEConfig().rotation_optim)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    head_before = head.weight.detach().clone()
    parameters = [p for module in stage.optimizers["rotation"] for p in module.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.1)

    class Step:
        progress = 0.0

        def update(self, name, loss):
            assert name == "rotation"
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def autocast(self):
            import contextlib

            return contextlib.nullcontext()

    batch = DomainBatch(source=LabeledBatch(torch.rand(8, 1, 16, 16), torch.zeros(8).long(),
                                            torch.arange(8)),
                        target=UnlabeledBatch(torch.rand(8, 1, 16, 16), torch.arange(8)))
    logs = stage.step(batch, Step())
    assert 0 <= float(logs["rotation_accuracy"]) <= 1
    after = classifier.state_dict()
    assert not torch.equal(after["backbone.fc.1.weight"], before["backbone.fc.1.weight"])
    assert torch.equal(after["classifier_head.weight"], before["classifier_head.weight"])
    assert not torch.equal(head.weight, head_before)
