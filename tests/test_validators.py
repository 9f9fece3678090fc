"""Unsupervised validators on hand-made outputs whose value is known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tamebias.evaluation.validators import (
    VALIDATORS,
    ValidatorInputs,
    deep_embedded_validation,
    information_maximization,
    negative_entropy,
    soft_neighborhood_density,
    source_val_accuracy,
)

BIG = 50.0  # logits this far apart give one-hot softmax outputs (to double precision)


def inputs(target_logits, source_logits=None, source_labels=None, target_features=None,
           source_features=None) -> ValidatorInputs:
    target_logits = torch.as_tensor(target_logits, dtype=torch.float64)
    source_logits = torch.as_tensor(source_logits if source_logits is not None
                                    else target_logits, dtype=torch.float64)
    labels = torch.as_tensor(source_labels if source_labels is not None
                             else source_logits.argmax(1))
    return ValidatorInputs(
        target_logits, target_logits if target_features is None else target_features,
        source_logits, labels, source_logits if source_features is None else source_features)


def one_hot_logits(classes: list[int], num_classes: int) -> torch.Tensor:
    return BIG * F.one_hot(torch.tensor(classes), num_classes).double()


def test_source_val_accuracy_counts_correct_source_predictions():
    logits = one_hot_logits([0, 1, 2, 2], 3)
    assert source_val_accuracy(inputs(logits, logits, [0, 1, 2, 0])) == 0.75


def test_entropy_is_zero_for_one_hot_and_minus_log_k_for_uniform_outputs():
    assert negative_entropy(inputs(one_hot_logits([0, 1, 2], 3))) == pytest.approx(0, abs=1e-9)
    assert negative_entropy(inputs(torch.zeros(5, 4))) == pytest.approx(-math.log(4))
    half = torch.tensor([[0.0, 0.0, -BIG]])  # p = (1/2, 1/2, 0): entropy log 2
    assert negative_entropy(inputs(half)) == pytest.approx(-math.log(2))


def test_information_maximization_rewards_confident_and_diverse_predictions():
    balanced = one_hot_logits([0, 1, 2, 3], 4)
    collapsed = one_hot_logits([0, 0, 0, 0], 4)
    assert information_maximization(inputs(balanced)) == pytest.approx(math.log(4))
    assert information_maximization(inputs(collapsed)) == pytest.approx(0, abs=1e-9)
    assert information_maximization(inputs(torch.zeros(4, 4))) == pytest.approx(0, abs=1e-9)
    # half the samples one-hot on class 0, half on class 1 of three: H(mean) = log 2
    assert information_maximization(inputs(one_hot_logits([0, 0, 1, 1], 3))) == \
        pytest.approx(math.log(2))


def test_snd_of_two_tight_clusters_equals_the_entropy_over_a_sample_s_cluster_mates():
    # four samples, two per class: each sample's only similar neighbor (cosine 1) is its
    # cluster mate; the two others have cosine 0. With temperature t the neighbor softmax is
    # (e^{1/t}, 1, 1) / Z, and SND is that distribution's entropy.
    logits = one_hot_logits([0, 0, 1, 1], 2)
    t = 0.5
    weights = torch.tensor([math.exp(1 / t), 1.0, 1.0], dtype=torch.float64)
    p = weights / weights.sum()
    expected = float(-(p * p.log()).sum())
    assert soft_neighborhood_density(inputs(logits), temperature=t) == pytest.approx(expected)
    # identical outputs everywhere: the neighbor distribution is uniform over N - 1 others
    assert soft_neighborhood_density(inputs(one_hot_logits([0] * 5, 3))) == \
        pytest.approx(math.log(4))


def test_dev_equals_minus_the_mean_source_loss_when_domains_match():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    logits = torch.randn(200, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (200,), generator=generator)
    value = deep_embedded_validation(inputs(logits, logits, labels, features, features))
    # identical feature sets: P(target|x) = 1/2, every weight 1, the risk is the plain mean
    assert value == pytest.approx(-float(F.cross_entropy(logits, labels)), rel=1e-3)


def test_dev_weights_source_samples_that_look_like_the_target():
    # source samples at x<0 are misclassified (high loss), the ones at x>0 are right; the
    # target lives at x>0, so DEV's risk must be lower than the unweighted source loss
    generator = torch.Generator().manual_seed(1)
    source_x = torch.randn(400, 1, generator=generator, dtype=torch.float64)
    target_x = torch.randn(400, 1, generator=generator, dtype=torch.float64).abs() + 1
    labels = torch.zeros(400, dtype=torch.int64)
    logits = torch.cat([torch.zeros(400, 1, dtype=torch.float64),
                        4 * torch.sign(-source_x)], 1)  # x<0: predicts class 1 (wrong)
    value = deep_embedded_validation(inputs(logits, logits, labels, target_x, source_x))
    plain = float(F.cross_entropy(logits, labels))
    assert -value < 0.5 * plain


def test_the_registry_holds_every_validator_and_each_returns_a_finite_number():
    assert set(VALIDATORS) == {"source_val", "entropy", "im", "snd", "dev"}
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    features = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    example = inputs(logits, logits, logits.argmax(1), features, features + 1)
    for validator in VALIDATORS.values():
        assert math.isfinite(validator(example))
