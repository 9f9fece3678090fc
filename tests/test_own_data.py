"""Bring-your-own data: unlabeled target folders, image lists, and the labeled target test
set given separately (data/folder.py, data/lists.py, data/target.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from tamebias import cli
from tamebias.api import evaluate_run, fit
from tamebias.cli import app
from tamebias.compose import load_config
from tamebias.data.datasets import load_dataset
from tamebias.data.domain import prepare_data
from tamebias.data.imageset import UNLABELED, DataError, DatasetNotFoundError
from tamebias.data.inputs import read_inputs
from tamebias.data.lists import parse_image_list

CLASSES = ["bottom", "top"]  # sorted, as folder classes are


def bar_image(label: int, seed: int, background: int) -> np.ndarray:
    """A 16x16 gray image: a bright bar in the top (label 1) or bottom (label 0) half."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(background, 12, (16, 16))
    rows = slice(2, 6) if label == 1 else slice(10, 14)
    pixels[rows, 2:-2] += 150
    return np.clip(pixels, 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def own_data(tmp_path: Path) -> dict[str, Path]:
    """A labeled source folder, a flat unlabeled target folder (brighter background) and a
    labeled list over held-out target images whose labels number the classes in the
    *opposite* order to the source's (top=0, bottom=1), named by their parent folders."""
    for index in range(24):
        label = index % 2
        save(tmp_path / "source" / CLASSES[label] / f"{index}.png", bar_image(label, index, 30))
        save(tmp_path / "target" / f"frame_{index:03d}.png", bar_image(label, 100 + index, 90))
    lines = []
    for index in range(10):
        label = index % 2
        path = save(tmp_path / "held_out" / CLASSES[label] / f"{index}.png",
                    bar_image(label, 200 + index, 90))
        lines.append(f"{path.relative_to(tmp_path)} {1 - label}")
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    return {"root": tmp_path, "source": tmp_path / "source", "target": tmp_path / "target",
            "list": tmp_path / "test.txt"}


def overrides(data: dict[str, Path], *extra: str) -> list[str]:
    return [f"data.source=folder:{data['source']}", f"data.target=folder:{data['target']}",
            "data.size=16", "data.channels=1", "data.batch_size=8",
            "data.source_val_fraction=0.25", "method.steps=4", "train.eval_every=2",
            "train.log_every=2", "train.checkpoint_every=2", "train.progress=false",
            "train.threads=1", f"output_dir={data['root'] / 'runs'}", *extra]


def test_a_flat_folder_without_class_folders_is_an_unlabeled_set(own_data):
    target = load_dataset(f"folder:{own_data['target']}", "train", size=(16, 16))
    assert not target.is_labeled and target.classes == []
    assert (target.labels == UNLABELED).all() and len(target) == 24
    assert target.meta["files"][0].endswith("frame_000.png")
    nested = own_data["root"] / "nested"  # images below sub-folders, read with images:
    save(nested / "day1" / "a.png", bar_image(0, 1, 50))
    save(nested / "day2" / "deeper" / "b.png", bar_image(1, 2, 50))
    images = load_dataset(f"images:{nested}", "train")
    assert not images.is_labeled and len(images) == 2
    save(nested / "c.png", bar_image(1, 3, 50))  # top-level images: unlabeled, recursively
    assert len(load_dataset(f"folder:{nested}", "train")) == 3


def test_unlabeled_train_folder_next_to_a_labeled_test_folder(own_data, tmp_path):
    for index in range(4):
        save(tmp_path / "both" / "train" / f"{index}.png", bar_image(index % 2, index, 90))
        save(tmp_path / "both" / "test" / CLASSES[index % 2] / f"{index}.png",
             bar_image(index % 2, index, 90))
    train = load_dataset(f"folder:{tmp_path / 'both'}", "train")
    test = load_dataset(f"folder:{tmp_path / 'both'}", "test")
    assert not train.is_labeled and test.is_labeled and test.classes == CLASSES
    config = load_config(None, overrides(own_data, f"data.target=folder:{tmp_path / 'both'}"))
    data = prepare_data(config.data)
    assert data.target_test is not None and len(data.target_test) == 4
    assert data.protocol["target_evaluation"] == "the target's own test split"


def test_the_list_test_set_is_aligned_to_the_source_classes_by_name(own_data):
    parsed = parse_image_list(own_data["list"])
    assert parsed.classes == ["top", "bottom"]  # from the parent folders of each label
    config = load_config(None, overrides(own_data, f"data.target_test=list:{own_data['list']}"))
    data = prepare_data(config.data)
    assert data.protocol["class_alignment"] == "by class name"
    assert data.target_test.classes == CLASSES
    files = data.target_test.meta["files"]
    expected = [CLASSES.index(Path(file).parent.name) for file in files]
    assert data.target_test.labels.tolist() == expected  # top is label 1 again, as in source
    assert not data.target_train.is_labeled and data.protocol["target_labeled"] is False
    assert data.protocol["target_test_shared_files"] == 0
    assert data.protocol["target_test_transductive"] is False


def test_an_unlabeled_target_with_a_list_test_set_trains_end_to_end(own_data):
    result = fit(None, overrides(own_data, "method.name=dann",
                                 f"data.target_test=list:{own_data['list']}"))
    assert result.target["count"] == 10 and 0 <= result.accuracy <= 1
    assert result.protocol["target_train"] == 24 and result.protocol["target_labeled"] is False
    assert result.target_predictions["count"] == 24
    assert all(record["target_accuracy"] is not None for record in result.history)
    again = evaluate_run(result.run_dir)  # the run's own list test set, classes by name
    assert again.count == 10 and again.accuracy == pytest.approx(result.accuracy)


def test_without_a_test_set_the_run_reports_label_free_measures_only(own_data, monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=300, color_system=None))
    runs = own_data["root"] / "runs"
    outcome = CliRunner().invoke(app, ["fit", "--run-dir", str(runs / "plain"),
                                       *sum((["--set", o] for o in overrides(own_data)), [])])
    assert outcome.exit_code == 0, outcome.output
    assert "no target accuracy" in outcome.output and "n/a (no labels)" in outcome.output
    result = json.loads((runs / "plain" / "result.json").read_text())
    assert result["target"]["accuracy"] is None and result["final_target_accuracy"] is None
    assert result["selected"]["validators"]  # label-free validators were recorded
    shares = result["target_predictions"]["predicted_class_share"]
    assert set(shares) == set(CLASSES) and sum(shares.values()) == pytest.approx(1.0)
    summary = (runs / "plain" / "summary.md").read_text()
    assert "no target accuracy" in summary and "mean confidence" in summary
    from tamebias.report.html import write_report

    page = write_report([runs / "plain"], runs / "report.html").read_text()
    assert "No target accuracy" in page and "mean confidence" in page


def test_transductive_use_is_explicit_and_reported(own_data, tmp_path):
    with pytest.raises(DataError, match="unlabeled"):
        prepare_data(load_config(None, overrides(own_data, "data.target_test=transductive")).data)
    labeled = own_data["source"]  # a labeled target without a test split
    config = load_config(None, overrides(own_data, f"data.target=folder:{labeled}"))
    data = prepare_data(config.data)
    assert data.protocol["target_test_transductive"] is True
    assert data.protocol["target_evaluation"].startswith("transductive")
    # a list test set naming the unlabeled training files themselves is counted as shared
    names = sorted(own_data["target"].iterdir())[:4]
    (tmp_path / "same.txt").write_text("".join(f"{file} {i % 2}\n"
                                               for i, file in enumerate(names)))
    config = load_config(None, overrides(own_data, f"data.target_test=list:{tmp_path}/same.txt"))
    data = prepare_data(config.data)
    assert data.protocol["target_test_shared_files"] == 4
    assert data.protocol["target_test_transductive"] is True
    assert data.protocol["class_alignment"].startswith("by label number")


def test_test_classes_the_source_lacks_are_refused(own_data, tmp_path):
    save(tmp_path / "other" / "left" / "0.png", bar_image(0, 0, 90))
    config = load_config(None, overrides(own_data, f"data.target_test=folder:{tmp_path}/other"))
    with pytest.raises(DataError, match="classes the source lacks: left"):
        prepare_data(config.data)


def test_list_paths_resolve_next_to_the_list_then_under_the_data_root(tmp_path):
    save(tmp_path / "root" / "office" / "amazon" / "mug" / "1.png", bar_image(0, 0, 10))
    listing = tmp_path / "lists" / "amazon.txt"
    listing.parent.mkdir()
    listing.write_text("# comment\n\noffice/amazon/mug/1.png 3\n")
    parsed = parse_image_list(listing, root=tmp_path / "root")
    assert parsed.labels == [3] and parsed.classes == ["0", "1", "2", "mug"]
    unlabeled = tmp_path / "lists" / "unlabeled.txt"
    unlabeled.write_text("../root/office/amazon/mug/1.png\n")
    images = load_dataset(f"list:{unlabeled}")
    assert not images.is_labeled and images.shape == (3, 16, 16)


@pytest.mark.parametrize("text, message", [
    ("a.png 0\nb.png\n", r"list.txt, line 2: 'b.png' has no label but line 1 has one"),
    ("a.png 0\nmissing.png 1\n", r"list.txt, line 2: image 'missing.png' not found"),
    ("a.png -1\n", r"list.txt, line 1: negative label -1"),
    ("\n# only a comment\n", r"list.txt: the list names no images"),
])
def test_list_errors_name_the_file_and_line(tmp_path, text, message):
    save(tmp_path / "a.png", bar_image(0, 0, 10))
    save(tmp_path / "b.png", bar_image(0, 0, 10))
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DataError, match=message):
        parse_image_list(tmp_path / "list.txt")


def test_list_errors_reach_the_command_line_as_one_line(tmp_path, own_data, monkeypatch):
    monkeypatch.setattr(cli, "errors", Console(stderr=True, width=300, color_system=None))
    (tmp_path / "bad.txt").write_text("nothing_here.png 0\n")
    outcome = CliRunner().invoke(app, ["fit", *sum((["--set", o] for o in overrides(
        own_data, f"data.target_test=list:{tmp_path}/bad.txt")), [])])
    assert outcome.exit_code == 2
    assert "bad.txt, line 1: image 'nothing_here.png' not found" in outcome.output
    assert "Traceback" not in outcome.output


def test_read_inputs_reads_any_input_a_user_points_at(own_data, tmp_path):
    folder = read_inputs(own_data["source"])
    assert folder.is_labeled and folder.classes == CLASSES
    flat = read_inputs(own_data["target"], size=8)
    assert not flat.is_labeled and flat.shape == (3, 8, 8)
    listed = read_inputs(own_data["list"])
    assert listed.is_labeled and len(listed) == 10
    files = sorted(own_data["target"].iterdir())[:3]
    assert len(read_inputs(files)) == 3 and len(read_inputs(files[0])) == 1
    np.savez(tmp_path / "features.npz", x=np.ones((5, 7), np.float32))
    vectors = read_inputs(tmp_path / "features.npz")
    assert vectors.is_vectors and vectors.shape == (7, 1, 1) and not vectors.is_labeled
    with pytest.raises(DatasetNotFoundError):
        read_inputs(tmp_path / "nothing")
    assert torch.equal(read_inputs(f"folder:{own_data['source']}").labels, folder.labels)


# -- source-free adaptation: a source model and an unlabeled target folder, no source image --
def source_free(data: dict[str, Path], source_run: Path, *extra: str) -> list[str]:
    settings = [item for item in overrides(data) if not item.startswith(
        ("data.source=", "data.source_val_fraction="))]
    return [*settings, "data.source=none", "method.name=shot", f"init.weights={source_run}",
            "train.selection=im", *extra]


def test_shot_adapts_a_source_model_to_a_target_folder_without_any_source_image(
        own_data, monkeypatch, wide_plain_consoles):
    from tamebias.data import domain

    source_run = fit(None, overrides(own_data, "method.name=source_only"),
                     run_dir=own_data["root"] / "runs" / "source").run_dir
    reads: list[str] = []
    original = domain.load_dataset
    monkeypatch.setattr(domain, "load_dataset",
                        lambda spec, *a, **k: reads.append(spec) or original(spec, *a, **k))
    runs = own_data["root"] / "runs"
    outcome = CliRunner().invoke(app, ["fit", "--run-dir", str(runs / "free"), *sum(
        (["--set", o] for o in source_free(own_data, source_run,
                                           f"data.target_test=list:{own_data['list']}")), [])])
    assert outcome.exit_code == 0, outcome.output
    assert not any(str(own_data["source"]) in spec for spec in reads)  # never opened
    result = json.loads((runs / "free" / "result.json").read_text())
    protocol = result["protocol"]
    assert protocol["source"].startswith("none (source-free") and protocol["source_train"] == 0
    assert protocol["classes"] == CLASSES and result["source_val"] is None
    assert result["target"]["count"] == 10 and result["selection"] == "im"
    assert [record["stage"] for record in result["history"]] == ["adapt", "adapt"]
    # the source hypothesis (head) is kept, the encoder adapted
    from tamebias.api import restore_run

    before = restore_run(source_run, "last").method.classifier.state_dict()
    after = restore_run(runs / "free", "last").method.classifier.state_dict()
    heads = [key for key in before if key.startswith("classifier_head.")]
    assert heads and all(torch.equal(before[key], after[key]) for key in heads)
    assert any(not torch.equal(before[key], after[key]) for key in before
               if key.startswith("backbone.") and after[key].is_floating_point())


@pytest.mark.parametrize("extra, error, message", [
    ((), None, "init.weights=RUN"),
    (("method.name=source_only",), "config", "trains on labeled source"),
    (("train.selection=source_val",), "config", "train.selection=im"),
    (("data.size=20",), None, "trained at 16"),
])
def test_a_source_free_run_refuses_what_it_cannot_do_before_training(
        own_data, extra, error, message):
    from tamebias.config import ConfigError

    source_run = fit(None, overrides(own_data, "method.name=source_only", "method.steps=2"),
                     run_dir=own_data["root"] / "runs" / "source").run_dir
    settings = source_free(own_data, source_run, *extra)
    if not extra:  # no model named: nothing tells the run its classes and input
        settings = [item for item in settings if not item.startswith("init.weights=")]
    with pytest.raises(ConfigError if error else DataError, match=message):
        fit(None, settings, run_dir=own_data["root"] / "runs" / "refused")
    assert not (own_data["root"] / "runs" / "refused" / "checkpoint.pt").exists()


def test_a_source_free_target_with_other_classes_is_refused(own_data, tmp_path):
    source_run = fit(None, overrides(own_data, "method.name=source_only", "method.steps=2"),
                     run_dir=own_data["root"] / "runs" / "source").run_dir
    for index, name in enumerate(("cat", "dog", "cat", "dog")):
        save(tmp_path / "other" / name / f"{index}.png", bar_image(index % 2, index, 90))
    settings = [item if not item.startswith("data.target=") else
                f"data.target=folder:{tmp_path / 'other'}"
                for item in source_free(own_data, source_run)]
    with pytest.raises(DataError, match="class mismatch"):
        fit(None, settings, run_dir=own_data["root"] / "runs" / "refused")


def test_the_source_free_benchmark_adapts_each_source_run_and_reads_no_source_image(
        own_data, monkeypatch, tmp_path):
    import runpy
    import sys

    for seed in (0, 1):
        fit(None, overrides(own_data, "method.name=source_only", "model.norm=bn",
                            f"train.seed={seed}", f"data.target_test=list:{own_data['list']}"),
            run_dir=tmp_path / "bench" / "bars" / "source_only+bn+aug" / f"seed{seed}")
    output = tmp_path / "sourcefree.json"
    script = Path(__file__).parents[1] / "benchmarks" / "sourcefree.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--source-runs", str(tmp_path / "bench"),
                                      "--tasks", "bars", "--seeds", "0,1", "--runs-dir",
                                      str(tmp_path / "free"), "--output", str(output)])
    runpy.run_path(str(script), run_name="__main__")
    (row,) = json.loads(output.read_text())["rows"]
    assert row["task"] == "bars" and row["seeds"] == [0, 1] and row["source_images_read"] == 0
    assert row["gain"] == pytest.approx([a - b for a, b in zip(
        row["accuracy"], row["source_model_accuracy"], strict=True)])
    saved = json.loads((tmp_path / "free" / "bars" / "shot-sourcefree" / "seed1" /
                        "config.json").read_text())
    assert saved["data"]["source"] == "none" and saved["train"]["seed"] == 1
    assert saved["data"]["target_test"] == f"list:{own_data['list']}"
    assert saved["init"]["weights"].endswith("seed1") and saved["model"]["norm"] == "bn"
    assert "| bars |" in output.with_suffix(".md").read_text()
