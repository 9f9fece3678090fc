"""Feature vectors: npz with float x, the mlp backbone, feature-space views, and the methods
that make sense on vectors (data/vectors.py, models/mlp.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tamebias.api import fit, restore_run
from tamebias.compose import load_config
from tamebias.config import ConfigError
from tamebias.data.datasets import load_dataset
from tamebias.data.domain import prepare_data
from tamebias.data.imageset import DataError
from tamebias.data.vectors import FeatureAugmenter
from tamebias.evaluation.metrics import evaluate

DIMENSIONS = 12


def clusters(count: int, seed: int, shift: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes in 12 dimensions; the target is shifted and rescaled."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(0, 3, (3, DIMENSIONS))
    labels = rng.integers(0, 3, count)
    x = centers[labels] + rng.normal(0, 1, (count, DIMENSIONS))
    return (x * scale + shift).astype(np.float32), labels.astype(np.int64)


@pytest.fixture(scope="module")
def vector_domains(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("vectors")
    source_x, source_y = clusters(120, 1, 0.0, 1.0)
    np.savez(root / "source.npz", x=source_x, y=source_y, classes=np.array(["a", "b", "c"]))
    target_x, _ = clusters(120, 2, 2.0, 1.5)
    np.savez(root / "target.npz", x=target_x)  # no y: unlabeled
    test_x, test_y = clusters(60, 3, 2.0, 1.5)
    np.savez(root / "target_test.npz", x=test_x, y=test_y)
    return {name: f"npz:{root / name}.npz" for name in ("source", "target", "target_test")}


def vector_overrides(domains: dict[str, str], tmp_path: Path, *extra: str) -> list[str]:
    return [f"data.source={domains['source']}", f"data.target={domains['target']}",
            f"data.target_test={domains['target_test']}", "model.backbone=mlp",
            "model.mlp_widths=[16,8]", "data.batch_size=16", "data.source_val_fraction=0.2",
            "method.steps=6", "train.log_every=3", "train.eval_every=3",
            "train.checkpoint_every=3", "train.progress=false", "train.threads=1",
            f"output_dir={tmp_path / 'runs'}", *extra]


def test_an_npz_of_float_vectors_is_read_as_vectors(vector_domains):
    source = load_dataset(vector_domains["source"])
    assert source.is_vectors and source.shape == (DIMENSIONS, 1, 1)
    assert source.classes == ["a", "b", "c"] and source.images.dtype == torch.float32
    target = load_dataset(vector_domains["target"])
    assert target.is_vectors and not target.is_labeled


def test_a_feature_vector_pair_runs_dann_end_to_end(vector_domains, tmp_path):
    result = fit(None, vector_overrides(vector_domains, tmp_path, "method.name=dann"))
    assert result.protocol["input_kind"] == "vectors" and result.protocol["input"] == "1x1x12"
    assert result.protocol["class_alignment"] == "by label number (one side has no class names)"
    assert result.target["count"] == 60 and 0 <= result.accuracy <= 1
    assert np.isfinite([record["validators"]["entropy"] for record in result.history]).all()
    run = restore_run(result.run_dir)  # the standardization travels with the weights
    mlp = run.method.classifier.backbone
    source = load_dataset(vector_domains["source"]).images.flatten(1)
    train_part = prepare_data(load_config(None, vector_overrides(
        vector_domains, tmp_path)).data).source_train.images.flatten(1)
    assert torch.allclose(mlp.input_mean, train_part.mean(0), atol=1e-5)
    assert not torch.allclose(mlp.input_mean, source.mean(0) * 0)
    data = prepare_data(run.config.data)
    assert evaluate(run.method.predict, data.target_test, run.device).accuracy == \
        pytest.approx(result.accuracy)


@pytest.mark.parametrize("extra", [
    ["method.name=source_only"],
    ["method.name=source_only", "train.adabn=true"],
    ["method.name=dann", "model.norm=dsbn"],
    ["method.name=adda", "method.source_steps=3"],
    ["method.name=self_training"],
    # two views: feature-space noise and dropout
    ["method.name=self_training", "method.self_training.mode=fixmatch"],
    ["method.name=self_training", "method.self_training.mode=mean_teacher"],
    ["method.name=dance"],
])
def test_methods_that_make_sense_on_vectors_run_unchanged(vector_domains, tmp_path, extra):
    result = fit(None, vector_overrides(vector_domains, tmp_path, *extra))
    assert result.protocol["input_kind"] == "vectors"
    assert result.accuracy is not None and np.isfinite(result.accuracy)


@pytest.mark.parametrize("extra, message", [
    (["method.name=cycada"], "cycada translates images pixel by pixel"),
    (["data.augment.policy=digits", "data.augment.source=weak"], "feature vectors have no "
     "pixels"),
    (["model.backbone=lenet"], "feature vectors .* use model.backbone=mlp"),
    (["data.size=28"], "leave data.size and data.channels unset"),
    (["method.name=dance", "method.rotation_steps=2"], "rotation prediction turns images"),
])
def test_image_only_parts_refuse_vectors_clearly(vector_domains, tmp_path, extra, message):
    with pytest.raises((ConfigError, DataError, ValueError), match=message):
        fit(None, vector_overrides(vector_domains, tmp_path, *extra))


def test_domains_of_different_kinds_or_lengths_are_refused(vector_domains, domains, tmp_path):
    other = tmp_path / "short.npz"
    np.savez(other, x=np.zeros((10, 5), np.float32), y=np.zeros(10, np.int64))
    config = load_config(None, vector_overrides(vector_domains, tmp_path,
                                                f"data.target=npz:{other}"))
    with pytest.raises(DataError, match="source .* has 12 dimensions, target .* has 5"):
        prepare_data(config.data)
    config = load_config(None, vector_overrides(vector_domains, tmp_path,
                                                f"data.target={domains['target']}",
                                                "data.target_test=none"))
    with pytest.raises(DataError, match="is feature vectors but target .* is images"):
        prepare_data(config.data)


def test_feature_views_are_deterministic_and_scaled_to_the_source(vector_domains):
    source = load_dataset(vector_domains["source"]).images
    augmenter = FeatureAugmenter(source, seed=3)
    batch = source[:8]
    weak, strong = augmenter(batch, "weak", 1, 5), augmenter(batch, "strong", 1, 5)
    assert torch.equal(weak, augmenter(batch, "weak", 1, 5))  # a pure function of the step
    assert not torch.equal(weak, augmenter(batch, "weak", 1, 6))
    assert weak.shape == batch.shape and torch.equal(augmenter(batch, "none", 1, 5), batch)
    scale = source.flatten(1).std(0)
    assert ((weak - batch).flatten(1) / scale).std() == pytest.approx(0.1, rel=0.3)
    dropped = (strong.flatten(1) == augmenter.mean).float().mean()
    assert dropped == pytest.approx(0.2, abs=0.1)  # feature dropout sets dims to their mean
    with pytest.raises(DataError, match="no pixels"):
        FeatureAugmenter(source, seed=0, policy="natural")


def test_the_synthetic_vector_shift_is_fixed_and_registered():
    from tamebias.tasks import SUITES, TASKS

    source, target = load_dataset("digits-vectors"), load_dataset("digits-vectors-shifted")
    source_test = load_dataset("digits-vectors", "test")
    assert source.shape == target.shape == (48, 1, 1) and source.classes == target.classes
    assert len(source) + len(source_test) == 898  # the first half of the 1,797 digits
    assert torch.equal(source.images, load_dataset("digits-vectors").images)  # deterministic
    # the target is moved: its per-dimension means sit away from the source's
    gap = (target.images.flatten(1).mean(0) - source.images.flatten(1).mean(0)).abs()
    assert gap.mean() > 0.5 * source.images.flatten(1).std(0).mean()
    assert TASKS["digits-vectors"].backbone == "mlp" and SUITES["vectors"] == ["digits-vectors"]
