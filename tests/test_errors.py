"""Unusable data fails early and clearly: through ``tamebias.fit`` and ``prepare_data``, with a
message that names what is wrong, and before any training step writes a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_npz_domain

import tamebias
from tamebias.compose import load_config
from tamebias.data.domain import prepare_data
from tamebias.data.imageset import DataError, DatasetNotFoundError


def without_geometry(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith(("data.size=", "data.channels="))]


def fails_before_training(overrides: list[str], tmp_path: Path, error: type[Exception],
                          run_dir: bool = True) -> str:
    """Run ``fit`` and ``prepare_data`` on ``overrides``; both raise ``error`` and no run
    directory or checkpoint appears. Returns the message."""
    target = tmp_path / "the-run" if run_dir else None
    with pytest.raises(error) as through_fit:
        tamebias.fit(None, overrides, run_dir=target)
    if target is not None:
        assert not target.exists()
    assert not list(tmp_path.rglob("checkpoint.pt")) and not list(tmp_path.rglob("best.pt"))
    assert not list(tmp_path.rglob("metrics.jsonl"))
    with pytest.raises(error) as through_prepare:
        prepare_data(load_config(None, overrides).data)
    assert str(through_prepare.value) == str(through_fit.value)
    return str(through_fit.value)


def test_missing_named_dataset_names_the_files_and_the_root(tiny_overrides, tmp_path):
    empty = tmp_path / "empty-root"
    empty.mkdir()
    message = fails_before_training(
        [*tiny_overrides, "data.source=mnist", f"data.root={empty}"], tmp_path,
        DatasetNotFoundError)
    assert "mnist (train split) was not found" in message
    assert "train-images-idx3-ubyte" in message and "train.npz" in message
    assert str(empty) in message and "data.download=true" in message


def test_missing_target_dataset_fails_the_same_way(tiny_overrides, tmp_path):
    empty = tmp_path / "empty-root"
    empty.mkdir()
    message = fails_before_training(
        [*tiny_overrides, "data.target=usps", f"data.root={empty}"], tmp_path,
        DatasetNotFoundError, run_dir=False)
    assert str(empty / "usps" / "usps.bz2") in message and "usps (train split)" in message


def test_missing_npz_paths(tiny_overrides, tmp_path):
    nowhere = tmp_path / "nowhere"
    message = fails_before_training(
        [*tiny_overrides, f"data.source=npz:{nowhere}"], tmp_path, DatasetNotFoundError)
    assert str(nowhere) in message and "does not exist" in message

    half = tmp_path / "half"  # a target folder without its test split
    write_npz_domain(half, 3, 1.0)
    (half / "test.npz").unlink()
    message = fails_before_training(
        [*tiny_overrides, f"data.target=npz:{half}"], tmp_path, DatasetNotFoundError)
    assert str(half / "test.npz") in message


@pytest.mark.parametrize("role, split", [("source", "train"), ("target", "test")])
def test_corrupt_npz_is_a_data_error_naming_the_file(tiny_overrides, tmp_path, role, split):
    folder = tmp_path / "corrupt"
    write_npz_domain(folder, 5, 0.5)
    (folder / f"{split}.npz").write_bytes(b"this is not a zip archive\x00\x01\x02" * 10)
    message = fails_before_training(
        [*tiny_overrides, f"data.{role}=npz:{folder}"], tmp_path, DataError)
    assert str(folder / f"{split}.npz") in message and "not a readable .npz" in message


def test_class_count_mismatch_names_both_counts(tiny_overrides, tmp_path):
    four = write_npz_domain(tmp_path / "four-classes", 7, 1.0, classes=4)
    message = fails_before_training(
        [*tiny_overrides, f"data.target=npz:{four}"], tmp_path, DataError)
    assert "class mismatch" in message
    assert "has 3 classes" in message and "has 4" in message
    assert f"npz:{four}" in message


def test_geometry_mismatch_names_both_geometries_and_suggests_a_size(
        domains, tiny_overrides, tmp_path):
    large = write_npz_domain(tmp_path / "twenty", 7, 1.0, size=20)
    overrides = [*without_geometry(tiny_overrides), f"data.target=npz:{large}"]
    message = fails_before_training(overrides, tmp_path, DataError)
    assert "16x16x1" in message and "20x20x1" in message
    assert "data.size" in message and "data.channels" in message

    # the same pair is fine once the task has one geometry
    data = prepare_data(load_config(None, [*overrides, "data.size=16", "data.channels=1"]).data)
    assert data.geometry == (1, 16, 16) and data.target_test.shape == (1, 16, 16)
    assert data.protocol["input"] == "16x16x1"


def test_protocol_records_the_native_geometry_before_conversion(tiny_overrides, tmp_path):
    large = write_npz_domain(tmp_path / "twenty", 7, 1.0, size=20)
    data = prepare_data(load_config(None, [*tiny_overrides, f"data.target=npz:{large}"]).data)
    assert data.protocol["native_geometry"] == {"source": "16x16x1", "target": "20x20x1"}


@pytest.mark.parametrize("key, name", [("source_subset", "source"),
                                       ("target_subset", "target")])
def test_subset_larger_than_the_dataset(domains, tiny_overrides, tmp_path, key, name):
    message = fails_before_training(
        [*tiny_overrides, f"data.{key}=1000"], tmp_path, DataError)
    assert "subset of 1000" in message and "only 96 images" in message
    assert domains[name] in message


def test_subsets_that_fit_are_drawn_as_asked(tiny_overrides):
    config = load_config(None, [*tiny_overrides, "data.source_subset=50",
                                "data.target_subset=40", "data.source_val_fraction=0.2"])
    data = prepare_data(config.data)
    assert len(data.source_train) == 50 and len(data.source_val) == 10
    assert len(data.target_train) == 40 and len(data.target_test) == 48


def test_subset_that_leaves_no_room_for_validation_fails_early(tiny_overrides):
    config = load_config(None, [*tiny_overrides, "data.source_subset=90",
                                "data.source_val_fraction=0.2"])
    with pytest.raises(DataError, match="subset"):  # 90 + 18 validation images > 96
        prepare_data(config.data)


def test_bad_model_settings_fail_before_training(tiny_overrides, tmp_path):
    missing = tmp_path / "weights" / "resnet18.pth"
    with pytest.raises(FileNotFoundError, match="resnet18.pth does not exist"):
        tamebias.fit(None, [*tiny_overrides, "model.backbone=resnet18",
                            f"model.pretrained={missing}"], run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="'lenet' has no pretrained weights"):
        tamebias.fit(None, [*tiny_overrides, f"model.pretrained={missing}"],
                     run_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
