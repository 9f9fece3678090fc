"""Unsupervised validators: scores of a model computed without target labels.

Each validator reads a model's outputs on *unlabeled* target training images and on the
*labeled* source validation split (``ValidatorInputs``) and returns one number, oriented so
that **higher is better** for every validator (entropy and the DEV risk are negated).
They let a model be chosen (checkpoint, hyperparameters) when no target label may be used.

``VALIDATORS`` maps a name to its function; ``train.selection=NAME`` selects checkpoints by it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ValidatorInputs:
    """What the validators read; target labels are not part of it by construction.

    ``target_logits``/``target_features``: unlabeled target training images (N_t x K / x D);
    ``source_logits``/``source_features``/``source_labels``: source validation images."""

    target_logits: Tensor
    target_features: Tensor
    source_logits: Tensor
    source_labels: Tensor
    source_features: Tensor


def _entropy(probabilities: Tensor) -> Tensor:
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1)


def source_val_accuracy(inputs: ValidatorInputs) -> float:
    """Accuracy on the labeled source validation split (in [0, 1])."""
    predictions = inputs.source_logits.argmax(1)
    return float((predictions == inputs.source_labels).double().mean())


def negative_entropy(inputs: ValidatorInputs) -> float:
    """Minus the mean prediction entropy on target (nats): confident models score higher.
    Range [-log K, 0]."""
    probabilities = inputs.target_logits.double().softmax(1)
    return float(-_entropy(probabilities).mean())


def information_maximization(inputs: ValidatorInputs) -> float:
    """Entropy of the mean target prediction minus the mean per-sample entropy (nats):
    confident *and* diverse predictions score higher (Gomes et al. 2010; Shi & Sha 2012).
    Range [0, log K] (concavity of entropy)."""
    probabilities = inputs.target_logits.double().softmax(1)
    return float(_entropy(probabilities.mean(0)) - _entropy(probabilities).mean())


def soft_neighborhood_density(inputs: ValidatorInputs, temperature: float = 0.05) -> float:
    """SND (Saito et al., ICCV 2021, arXiv:2108.10860): L2-normalized target softmax vectors,
    their cosine similarities to every *other* target sample, a softmax over those similarities
    at ``temperature``, and the mean entropy of those neighbor distributions. Dense, well
    clustered outputs give many similar neighbors and a high score."""
    probabilities = F.normalize(inputs.target_logits.double().softmax(1), dim=1)
    similarity = probabilities @ probabilities.T
    similarity.fill_diagonal_(-math.inf)  # a sample is not its own neighbor
    neighbors = (similarity / temperature).softmax(1)
    return float(_entropy(neighbors).mean())


def density_ratios(source_features: Tensor, target_features: Tensor,
                   seed: int = 0) -> np.ndarray:
    """w(x) = p_target(x) / p_source(x) at each source sample, from a logistic-regression domain
    classifier on standardized features: w = (n_s / n_t) * P(target|x) / P(source|x)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    source = source_features.double().cpu().numpy()
    target = target_features.double().cpu().numpy()
    features = np.concatenate([source, target])
    domains = np.r_[np.zeros(len(source)), np.ones(len(target))]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500,
                                                                    random_state=seed))
    classifier.fit(features, domains)
    probability = np.clip(classifier.predict_proba(source)[:, 1], 1e-3, 1 - 1e-3)
    return (len(source) / len(target)) * probability / (1 - probability)


def deep_embedded_validation(inputs: ValidatorInputs) -> float:
    """Minus the DEV risk (You et al., ICML 2019): the source-validation cross-entropy weighted
    by density ratios target/source (``density_ratios``), with the control variate
    ``eta = -Cov(L, w) / Var(w)``: risk = mean(w L) + eta * mean(w) - eta. Higher is better."""
    losses = F.cross_entropy(inputs.source_logits.double(), inputs.source_labels,
                             reduction="none").cpu().numpy()
    weights = density_ratios(inputs.source_features, inputs.target_features)
    weighted = weights * losses
    variance = weights.var(ddof=1) if len(weights) > 1 else 0.0
    eta = 0.0 if variance < 1e-12 else -np.cov(weighted, weights)[0, 1] / variance
    risk = weighted.mean() + eta * weights.mean() - eta
    return float(-risk)


Validator = Callable[[ValidatorInputs], float]

VALIDATORS: dict[str, Validator] = {
    "source_val": source_val_accuracy,
    "entropy": negative_entropy,
    "im": information_maximization,
    "snd": soft_neighborhood_density,
    "dev": deep_embedded_validation,
}
