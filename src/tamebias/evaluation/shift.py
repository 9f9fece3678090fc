"""How far apart two domains are: proxy A-distance, MMD, a label-shift estimate (BBSE) and
per-domain image statistics. Pure functions of arrays; ``tamebias.diagnose`` puts them together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _array(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)


def proxy_a_distance(source: Tensor | np.ndarray, target: Tensor | np.ndarray,
                     seed: int = 0) -> dict[str, float]:
    """Proxy A-distance (Ben-David et al. 2007; Ganin et al. 2016): a linear domain classifier
    (logistic regression on standardized inputs) is trained on half of each domain and tested
    on the other half; with held-out error ``err``, PAD = 2 (1 - 2 err), clipped to [0, 2].
    0: the domains cannot be told apart; 2: perfectly separable. Equal sample counts are drawn
    from both domains so chance is 50 %."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    source, target = _array(source), _array(target)
    count = min(len(source), len(target))
    if count < 4:
        raise ValueError(f"proxy A-distance needs at least 4 samples per domain, got {count}")
    rng = np.random.default_rng(seed)
    source = source[rng.permutation(len(source))[:count]]
    target = target[rng.permutation(len(target))[:count]]
    half = count // 2
    train = np.concatenate([source[:half], target[:half]])
    test = np.concatenate([source[half:], target[half:]])
    train_domains = np.r_[np.zeros(half), np.ones(half)]
    test_domains = np.r_[np.zeros(count - half), np.ones(count - half)]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000,
                                                                    random_state=seed))
    classifier.fit(train, train_domains)
    error = float((classifier.predict(test) != test_domains).mean())
    return {"proxy_a_distance": float(np.clip(2 * (1 - 2 * error), 0, 2)),
            "domain_classifier_error": error, "samples_per_domain": count}


def mmd(source: Tensor | np.ndarray, target: Tensor | np.ndarray,
        bandwidth: float | None = None) -> dict[str, float]:
    """Unbiased squared maximum mean discrepancy with an RBF kernel
    k(x, y) = exp(-|x - y|^2 / (2 s^2)); s from the median heuristic (the median pairwise
    distance of the pooled samples) unless given. About 0 when both samples come from one
    distribution (it can be slightly negative), up to 2 for disjoint ones."""
    source = torch.as_tensor(_array(source))
    target = torch.as_tensor(_array(target))
    if len(source) < 2 or len(target) < 2:
        raise ValueError("MMD needs at least 2 samples per domain")
    pooled = torch.cat([source, target])
    distances = torch.cdist(pooled, pooled).square()
    if bandwidth is None:
        upper = distances[torch.triu_indices(len(pooled), len(pooled), 1).unbind()]
        bandwidth = float(upper.sqrt().median()) or 1.0
    kernel = torch.exp(-distances / (2 * bandwidth**2))
    n, m = len(source), len(target)
    source_kernel, target_kernel = kernel[:n, :n], kernel[n:, n:]
    cross = kernel[:n, n:]
    within_source = (source_kernel.sum() - source_kernel.diagonal().sum()) / (n * (n - 1))
    within_target = (target_kernel.sum() - target_kernel.diagonal().sum()) / (m * (m - 1))
    value = within_source + within_target - 2 * cross.mean()
    return {"mmd2": float(value), "bandwidth": float(bandwidth)}


def bbse(source_predictions: Tensor | np.ndarray, source_labels: Tensor | np.ndarray,
         target_predictions: Tensor | np.ndarray, num_classes: int) -> dict[str, Any]:
    """Black-box shift estimation (Lipton et al., ICML 2018, arXiv:1802.03916) of the target
    class proportions under label shift, from hard predictions of a source-trained model.

    C[i, j] = P_source(prediction i, label j) on held-out labeled source data and
    mu[i] = P_target(prediction i) on unlabeled target data; the importance weights
    w = q(y) / p(y) solve C w = mu (least squares, clipped at 0), and the target proportions
    are q = w * p, renormalized. Needs a confusion matrix that is far from singular."""
    source_predictions = np.asarray(source_predictions).astype(np.int64).ravel()
    source_labels = np.asarray(source_labels).astype(np.int64).ravel()
    target_predictions = np.asarray(target_predictions).astype(np.int64).ravel()
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (source_predictions, source_labels), 1)
    joint /= max(len(source_labels), 1)
    predicted = np.bincount(target_predictions, minlength=num_classes) / max(
        len(target_predictions), 1)
    source_prior = joint.sum(0)
    weights = np.clip(np.linalg.lstsq(joint, predicted, rcond=None)[0], 0, None)
    proportions = weights * source_prior
    proportions = proportions / proportions.sum() if proportions.sum() > 0 else source_prior
    return {
        "target_class_proportions": proportions.tolist(),
        "importance_weights": weights.tolist(),
        "source_class_proportions": source_prior.tolist(),
        "target_predicted_proportions": predicted.tolist(),
        "confusion_condition_number": float(np.linalg.cond(joint)),
    }


def image_statistics(images: Tensor) -> dict[str, Any]:
    """Per-channel mean and standard deviation of pixel values in [0, 1], mean per-image
    contrast (std within an image) and the fraction of near-black pixels."""
    values = images.float().div(255)
    per_channel = values.transpose(0, 1).flatten(1)
    return {
        "count": int(images.shape[0]),
        "shape": list(images.shape[1:]),
        "mean": per_channel.mean(1).tolist(),
        "std": per_channel.std(1).tolist(),
        "mean_image_contrast": float(values.flatten(1).std(1).mean()),
        "dark_fraction": float((values < 0.1).float().mean()),
    }
