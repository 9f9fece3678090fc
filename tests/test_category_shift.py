"""Category-shift protocols: filtering and relabelling, presets, prepare_data on folder
fixtures, and an open-set run recorded end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tamebias.api import evaluate_run, fit
from tamebias.bench import category_shift_fields, markdown_table, row_from_runs
from tamebias.compose import load_config
from tamebias.data.domain import prepare_data
from tamebias.data.imageset import DataError, ImageSet
from tamebias.data.shift import OFFICE_CALTECH, CategoryShift, resolve_category_shift

DIGITS = [str(d) for d in range(10)]


def labelled_set(classes: list[str], per_class: int = 2) -> ImageSet:
    """Every image's pixels hold its original label, so relabelling can be traced."""
    labels = np.repeat(np.arange(len(classes)), per_class)
    images = np.broadcast_to(labels[:, None, None], (len(labels), 4, 4)).astype(np.uint8)
    return ImageSet.from_numpy(images, labels, list(classes), "synthetic")


def test_relabelling_keeps_the_protocol_classes_and_merges_unknowns():
    shift = CategoryShift(("a", "b"), ("c",), ("d", "e"))
    assert shift.setting == "open-partial"
    names = ["a", "b", "c", "d", "e", "f"]
    source = shift.relabel_source(labelled_set(names))
    assert source.classes == ["a", "b", "c"]
    assert source.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert source.images[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]  # images follow labels
    target = shift.relabel_target(labelled_set(names))
    assert target.classes == ["a", "b", "c", "unknown"]
    # c (source-private) and f (in no list) are dropped; d and e become unknown = K = 3
    assert target.images[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 3, 3, 4, 4]
    assert target.labels.tolist() == [0, 0, 1, 1, 3, 3, 3, 3]


def test_relabelling_follows_names_not_positions():
    shift = CategoryShift(("b", "a"), (), ("c",))
    target = shift.relabel_target(labelled_set(["c", "a", "b"]))
    assert target.images[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]  # original c, a, b
    assert target.labels.tolist() == [2, 2, 1, 1, 0, 0]


@pytest.mark.parametrize("preset, setting, shared, source_private, target_private", [
    ("digits-closed", "closed", DIGITS, [], []),
    ("digits-partial", "partial", DIGITS[:6], DIGITS[6:], []),
    ("digits-open-set", "open-set", DIGITS[:6], [], DIGITS[6:]),
    ("digits-open-partial", "open-partial", DIGITS[:6], DIGITS[6:8], DIGITS[8:]),
])
def test_digits_presets(preset, setting, shared, source_private, target_private):
    shift = resolve_category_shift(SimpleNamespace(category_shift=preset), DIGITS, DIGITS)
    assert shift.setting == setting
    assert list(shift.shared) == shared
    assert list(shift.source_private) == source_private
    assert list(shift.target_private) == target_private


OFFICE31 = sorted([
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair",
    "desk_lamp", "desktop_computer", "file_cabinet", "headphones", "keyboard",
    "laptop_computer", "letter_tray", "mobile_phone", "monitor", "mouse", "mug",
    "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
    "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can"])


def test_office31_presets_follow_the_published_splits():
    assert len(OFFICE31) == 31
    config = SimpleNamespace(category_shift="office31-open-partial")
    shift = resolve_category_shift(config, OFFICE31, OFFICE31)
    assert shift.shared == OFFICE_CALTECH
    assert list(shift.source_private) == [
        "bike_helmet", "bookcase", "bottle", "desk_chair", "desk_lamp", "desktop_computer",
        "file_cabinet", "letter_tray", "mobile_phone", "paper_notebook"]
    assert len(shift.target_private) == 11 and shift.target_private[0] == "pen"
    open_set = resolve_category_shift(SimpleNamespace(category_shift="office31-open-set"),
                                      OFFICE31, OFFICE31)
    assert open_set.target_private == shift.target_private and not open_set.source_private
    partial = resolve_category_shift(SimpleNamespace(category_shift="office31-partial"),
                                     OFFICE31, OFFICE31)
    assert len(partial.source_classes) == 31 and len(partial.shared) == 10


def test_officehome_and_visda_presets_count_classes_alphabetically():
    names = [f"class{i:02d}" for i in range(65)]
    shift = resolve_category_shift(SimpleNamespace(category_shift="officehome-open-partial"),
                                   names, names)
    assert (len(shift.shared), len(shift.source_private), len(shift.target_private)) == (
        10, 5, 50)
    assert shift.shared == tuple(names[:10]) and shift.source_private == tuple(names[10:15])
    visda = ["aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person",
             "plant", "skateboard", "train", "truck"]
    shift = resolve_category_shift(SimpleNamespace(category_shift="visda-open-partial"),
                                   visda, visda)
    assert shift.source_private == ("motorcycle", "person", "plant")
    assert shift.target_private == ("skateboard", "train", "truck")
    shift = resolve_category_shift(SimpleNamespace(category_shift="visda-open-set"), visda,
                                   visda)
    assert shift.target_private == ("aeroplane", "horse", "knife", "person", "plant",
                                    "skateboard")


def test_class_lists_by_index_and_their_errors():
    config = SimpleNamespace(category_shift=None, shared_classes=None, source_private=[6, 7],
                             target_private=["8", "9"])
    shift = resolve_category_shift(config, DIGITS, DIGITS)
    assert list(shift.shared) == DIGITS[:6] and shift.setting == "open-partial"
    assert resolve_category_shift(SimpleNamespace(), DIGITS, DIGITS) is None
    with pytest.raises(DataError, match="cannot be in two"):
        resolve_category_shift(SimpleNamespace(shared_classes=[0, 1], target_private=[1]),
                               DIGITS, DIGITS)
    with pytest.raises(DataError, match="out of range"):
        resolve_category_shift(SimpleNamespace(target_private=[12]), DIGITS, DIGITS)
    with pytest.raises(DataError, match="no preset 'digits-nope'.*digits-open-set"):
        resolve_category_shift(SimpleNamespace(category_shift="digits-nope"), DIGITS, DIGITS)
    with pytest.raises(DataError, match="not both"):
        resolve_category_shift(SimpleNamespace(category_shift="digits-closed",
                                               shared_classes=[0]), DIGITS, DIGITS)
    with pytest.raises(DataError, match="source dataset has no class x"):
        resolve_category_shift(SimpleNamespace(shared_classes=["x"]), ["a"], ["a", "x"])


def write_folder(root: Path, classes: list[str], per_class: int = 3) -> str:
    from PIL import Image

    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = np.full((16, 16), (7 * label + index) % 256, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return f"folder:{root}"


def test_folder_domains_with_different_classes(tmp_path):
    source = write_folder(tmp_path / "source", ["a", "b", "c", "d"])
    target = write_folder(tmp_path / "target", ["a", "b", "e"])
    base = [f"data.source={source}", f"data.target={target}", "data.size=16",
            "data.channels=1", "data.source_val_fraction=0", "train.selection=last"]
    with pytest.raises(DataError, match="closed-set adaptation needs the same classes"):
        prepare_data(load_config(None, base).data)
    config = load_config(None, [*base, 'data.shared_classes=["a","b"]',
                                'data.source_private=["c","d"]', 'data.target_private=["e"]'])
    data = prepare_data(config.data)
    assert data.classes == ["a", "b", "c", "d"]
    assert data.protocol["setting"] == "open-partial"
    assert data.protocol["category_shift"]["unknown_label"] == 4
    assert sorted(data.target_train.labels.tolist()) == [0, 0, 0, 1, 1, 1, 4, 4, 4]
    assert data.target_test.classes == ["a", "b", "c", "d", "unknown"]


def test_office31_preset_on_a_tiny_folder_fixture(tmp_path):
    source = write_folder(tmp_path / "amazon", OFFICE31, per_class=1)
    target = write_folder(tmp_path / "webcam", OFFICE31, per_class=1)
    config = load_config(None, [f"data.source={source}", f"data.target={target}",
                                "data.size=16", "data.channels=1",
                                "data.source_val_fraction=0", "train.selection=last",
                                "data.category_shift=office31-open-partial"])
    data = prepare_data(config.data)
    assert data.num_classes == 20 and data.classes[:10] == list(OFFICE_CALTECH)
    assert len(data.source_train) == 20 and len(data.target_train) == 21
    assert int((data.target_train.labels == 20).sum()) == 11  # the unknowns


def test_office31_bench_tasks_read_the_archive_layout_under_the_data_root(tmp_path):
    from tamebias.tasks import SUITES, TASKS

    suite = SUITES["office31-categoryshift"]
    assert len(suite) == 18  # 6 ordered pairs x open-set, partial, open-partial
    config = load_config(None, TASKS["office31-aw-open-partial"].overrides())
    assert (config.model.backbone, config.model.pretrained) == ("resnet50", "imagenet")
    assert (config.data.size, config.data.batch_size, config.method.steps) == (224, 36, 10000)
    assert config.data.category_shift == "office31-open-partial"
    # the task's data specs resolve under the data root, in the official archive's layout
    for domain in ("amazon", "webcam"):
        write_folder(tmp_path / "office31" / domain / "images", OFFICE31, per_class=1)
    small = load_config(None, [*TASKS["office31-aw-open-partial"].overrides(),
                               f"data.root={tmp_path}", "data.size=16",
                               "data.source_val_fraction=0", "train.selection=last"])
    data = prepare_data(small.data)
    assert data.num_classes == 20 and len(data.target_train) == 21
    # OfficeHome: 4 domains (12 ordered pairs), a folder name with a space
    assert len(SUITES["officehome-categoryshift"]) == 36
    names = [f"class{i:02d}" for i in range(65)]
    for domain in ("Real World", "Clipart"):
        write_folder(tmp_path / "officehome" / domain, names, per_class=1)
    home = load_config(None, [*TASKS["officehome-rc-open-partial"].overrides(),
                              f"data.root={tmp_path}", "data.size=16",
                              "data.source_val_fraction=0", "train.selection=last"])
    data = prepare_data(home.data)
    assert data.num_classes == 15 and len(data.target_train) == 60  # 10 shared + 50 unknown


def test_a_target_without_a_test_split_is_decoded_once(tmp_path, monkeypatch):
    from tamebias.data import datasets

    calls = []

    def counting(folder, *args, **kwargs):
        calls.append(Path(folder).name)
        return read(folder, *args, **kwargs)

    read = datasets.read_image_folder
    monkeypatch.setattr(datasets, "read_image_folder", counting)
    source = write_folder(tmp_path / "amazon", ["a", "b"], per_class=2)
    target = write_folder(tmp_path / "webcam", ["a", "b"], per_class=2)
    config = load_config(None, [f"data.source={source}", f"data.target={target}",
                                "data.size=8", "data.channels=1",
                                "data.source_val_fraction=0", "train.selection=last"])
    data = prepare_data(config.data)
    assert calls == ["amazon", "webcam"]  # the target folder is read once, for both roles
    assert data.protocol["target_test_transductive"] is True
    assert torch.equal(data.target_test.images, data.target_train.images)


def test_an_open_set_run_records_the_rule_and_the_metrics(tiny_overrides):
    # the tiny domains have classes 0, 1, 2: class 2 is target-private
    overrides = [*tiny_overrides, "data.target_private=[2]", "method.name=dann"]
    result = fit(None, overrides)
    open_set = result.target["open_set"]
    assert open_set["rejection"] == {"kind": "entropy", "threshold": pytest.approx(
        np.log(2) / 2)}
    assert set(open_set) >= {"h_score", "per_class_mean", "known_accuracy", "unknown_recall",
                             "auroc"}
    assert 0 <= open_set["auroc"] <= 1
    assert all("target_h_score" in record for record in result.history)
    protocol = json.loads((Path(result.run_dir) / "protocol.json").read_text())
    assert protocol["setting"] == "open-set" and protocol["classes"] == ["0", "1"]
    again = evaluate_run(result.run_dir, which="last")
    assert again.open_set["h_score"] == pytest.approx(result.history[-1]["target_h_score"])

    row = row_from_runs("tiny-open-set", [result])
    assert row["setting"] == "open-set" and row["classes"]["target_private"] == ["2"]
    for key in ("h_score_mean", "per_class_mean_mean", "known_accuracy_mean",
                "unknown_recall_mean"):
        assert row[key] == pytest.approx(100 * open_set[key.removesuffix("_mean")])
    assert row["auroc_mean"] == pytest.approx(open_set["auroc"])  # a fraction, not %
    assert "| tiny-open-set | open-set | dann |" in markdown_table("shift", [row])


def test_confidence_rule_from_the_config(tiny_overrides):
    overrides = [*tiny_overrides, "data.target_private=[2]", "train.rejection=confidence",
                 "train.rejection_threshold=0.9", "method.steps=2"]
    result = fit(None, overrides)
    assert result.target["open_set"]["rejection"] == {"kind": "confidence", "threshold": 0.9}
    assert category_shift_fields([result])["rejection"]["kind"] == "confidence"


def test_closed_runs_have_no_open_set_fields(tiny_overrides):
    result = fit(None, [*tiny_overrides, "method.steps=2"])
    assert result.target["open_set"] is None and "setting" not in result.protocol
    assert category_shift_fields([result]) == {}


def test_runs_saved_before_the_new_settings_keep_their_identity():
    """Bench and resume compare saved configs; settings added later take their defaults."""
    from tamebias.api import run_identity

    config = load_config(None, ["method.name=dann"]).to_dict()
    old = json.loads(json.dumps(config))
    for key in ("category_shift", "shared_classes", "source_private", "target_private"):
        del old["data"][key]
    del old["train"]["rejection"], old["train"]["rejection_threshold"]
    assert run_identity(old) == run_identity(config)
    changed = json.loads(json.dumps(config))
    changed["data"]["category_shift"] = "digits-partial"
    assert run_identity(changed) != run_identity(config)


def test_open_set_metrics_are_added_to_older_records_only_when_they_reproduce(tiny_overrides):
    import importlib.util

    script = Path(__file__).parents[1] / "benchmarks" / "add_open_set_metrics.py"
    spec = importlib.util.spec_from_file_location("add_open_set_metrics", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    result = fit(None, [*tiny_overrides, "data.target_private=[2]", "method.steps=3"])
    record_path = Path(result.run_dir) / "result.json"
    record = json.loads(record_path.read_text())
    auroc = record["target"]["open_set"].pop("auroc")  # as a record from before AUROC
    record_path.write_text(json.dumps(record))
    assert module.update(Path(result.run_dir)).startswith("added auroc")
    restored = json.loads(record_path.read_text())["target"]["open_set"]
    assert restored["auroc"] == pytest.approx(auroc)
    assert module.update(Path(result.run_dir)) == "complete"

    # a record its checkpoint does not reproduce is left alone
    restored.pop("auroc")
    restored["h_score"] += 0.1
    record["target"]["open_set"] = restored
    record_path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="h_score"):
        module.update(Path(result.run_dir))
    assert "auroc" not in json.loads(record_path.read_text())["target"]["open_set"]
