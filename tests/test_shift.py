"""Shift measures: proxy A-distance, MMD, BBSE label-shift estimate, image statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tamebias.evaluation.shift import bbse, image_statistics, mmd, proxy_a_distance


def test_proxy_a_distance_is_near_zero_for_one_domain_and_two_for_separable_ones():
    rng = np.random.default_rng(0)
    same_a, same_b = rng.normal(size=(400, 10)), rng.normal(size=(400, 10))
    assert proxy_a_distance(same_a, same_b)["proxy_a_distance"] < 0.3
    far = rng.normal(size=(400, 10)) + 5.0
    result = proxy_a_distance(same_a, far)
    assert result["proxy_a_distance"] == pytest.approx(2.0)
    assert result["domain_classifier_error"] == 0.0


def test_mmd_is_near_zero_for_one_distribution_and_large_for_shifted_ones():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=generator)
    b = torch.randn(300, 5, generator=generator)
    assert abs(mmd(a, b)["mmd2"]) < 0.01
    assert mmd(a, b + 3)["mmd2"] > 0.5
    # a known value: disjoint single points with a tiny bandwidth give k = 0 across, 1 within
    x = torch.zeros(3, 2)
    assert mmd(x, x + 100, bandwidth=1.0)["mmd2"] == pytest.approx(2.0)


def test_bbse_recovers_known_target_class_proportions_under_label_shift():
    rng = np.random.default_rng(1)
    conditional = np.array([[0.8, 0.15, 0.05],  # P(prediction | label), rows: label
                            [0.1, 0.7, 0.2],
                            [0.05, 0.15, 0.8]])

    def predictions(labels):
        return np.array([rng.choice(3, p=conditional[y]) for y in labels])

    source_labels = rng.integers(0, 3, 6000)
    truth = np.array([0.6, 0.3, 0.1])
    target_labels = rng.choice(3, 6000, p=truth)
    estimate = bbse(predictions(source_labels), source_labels, predictions(target_labels), 3)
    assert np.allclose(estimate["target_class_proportions"], truth, atol=0.03)
    # the naive estimate (predicted proportions) is biased by the classifier's errors
    assert not np.allclose(estimate["target_predicted_proportions"], truth, atol=0.03)


def test_image_statistics_of_known_images():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    images[:2] = 255
    stats = image_statistics(images)
    assert stats["count"] == 4 and stats["mean"] == [0.5]
    assert stats["dark_fraction"] == 0.5 and stats["mean_image_contrast"] == 0.0
