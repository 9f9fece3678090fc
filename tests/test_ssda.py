"""Semi-supervised DA: the k-shot target protocol, the labeled-target batch, S+T, ENT, MME,
PAC and target_val selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tamebias.api import build_run, build_streams, fit
from tamebias.compose import load_config
from tamebias.config import ConfigError
from tamebias.data.domain import prepare_data
from tamebias.data.imageset import DataError
from tamebias.data.shots import pick_shots
from tamebias.methods import METHODS
from tamebias.methods.common import prediction_entropy


def shot_overrides(tiny_overrides, shots=2, val=1):
    return [*tiny_overrides, f"data.target_shots={shots}", f"data.target_val_shots={val}"]


def test_shots_are_k_per_class_disjoint_and_fixed_by_the_seed() -> None:
    labels = torch.arange(60) % 3
    split = pick_shots(labels, 3, 2, 3, seed=5)
    assert torch.bincount(labels[split.labeled], minlength=3).tolist() == [2, 2, 2]
    assert torch.bincount(labels[split.validation], minlength=3).tolist() == [3, 3, 3]
    parts = [set(split.labeled.tolist()), set(split.validation.tolist()),
             set(split.unlabeled.tolist())]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert len(parts[0] | parts[1] | parts[2]) == 60
    again = pick_shots(labels, 3, 2, 3, seed=5)
    assert torch.equal(again.labeled, split.labeled) and torch.equal(again.unlabeled,
                                                                      split.unlabeled)
    assert not torch.equal(pick_shots(labels, 3, 2, 3, seed=6).labeled, split.labeled)
    with pytest.raises(DataError, match="class 2 has 1 training images"):
        pick_shots(torch.tensor([0, 0, 1, 1, 2]), 3, 1, 1, seed=0)


def test_prepare_data_splits_the_target_and_records_the_shots(tiny_overrides) -> None:
    config = load_config(None, shot_overrides(tiny_overrides))
    data = prepare_data(config.data)
    full = prepare_data(load_config(None, tiny_overrides).data).target_train
    assert len(data.target_shots) == 6 and len(data.target_val) == 3
    assert len(data.target_train) == len(full) - 9
    ssda = data.protocol["ssda"]
    assert data.protocol["setting"] == "ssda" and ssda["shots"] == 2
    # the recorded indices point at the images the run trains on
    assert torch.equal(full.images[ssda["labeled_indices"]], data.target_shots.images)
    assert torch.equal(full.labels[ssda["validation_indices"]], data.target_val.labels)
    again = prepare_data(config.data)
    assert torch.equal(again.target_shots.images, data.target_shots.images)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_labeled_target_batch_reaches_only_methods_that_declare_it(name, tiny_overrides):
    config = load_config(None, [f"method.name={name}", *shot_overrides(tiny_overrides),
                                "data.augment.source=none", "data.augment.target=none"])
    data, method, device = build_run(config)  # no views: the images compare byte for byte
    batch = build_streams(config, data, method, device).batch(0)
    shot_images = {bytes(image.numpy()) for image in data.target_shots.images}
    if method.needs.target_shots:
        assert batch.labeled_target is not None and len(batch.labeled_target) == 16
        assert {bytes((image * 255).round().byte().numpy())
                for image in batch.labeled_target.images} <= shot_images
    elif not method.needs.labeled_target:  # the oracle reads all target labels by design
        assert batch.labeled_target is None
        if method.needs.source:  # S+T: the shots join the labeled source batch
            assert len(batch.source) == 32
            assert {bytes((image * 255).round().byte().numpy())
                    for image in batch.source.images[16:]} <= shot_images


def test_unlabeled_target_never_carries_labels_under_shots(tiny_overrides) -> None:
    config = load_config(None, ["method.name=mme", *shot_overrides(tiny_overrides)])
    data, method, device = build_run(config)
    target = build_streams(config, data, method, device).batch(0).target
    assert not hasattr(target, "labels")


def test_mme_head_and_encoder_get_opposite_entropy_gradients(tiny_overrides) -> None:
    config = load_config(None, ["method.name=mme", *tiny_overrides])
    _, method, _ = build_run(config)
    images = torch.rand(8, 1, 16, 16)
    classifier = method.classifier
    method.eval()  # no dropout: both passes see one network

    def gradients(loss):
        classifier.zero_grad()
        loss.backward()
        return {name: p.grad.clone() for name, p in classifier.named_parameters()}

    loss, entropy = method.minimax_entropy(images)
    torch.testing.assert_close(loss, -0.1 * entropy)
    minimax = gradients(loss)
    # by hand: the same -λH without the reversal layer
    plain = gradients(-0.1 * prediction_entropy(classifier(images)))
    for name, gradient in minimax.items():
        expected = plain[name] if name.startswith("classifier_head.") else -plain[name]
        torch.testing.assert_close(gradient, expected)
    # a small step of the head alone raises the entropy; of the encoder alone lowers it
    with torch.no_grad():
        before = float(prediction_entropy(classifier(images)))
        head = classifier.classifier_head.weight
        head -= 1e-3 * minimax["classifier_head.weight"]
        raised = float(prediction_entropy(classifier(images)))
        head += 1e-3 * minimax["classifier_head.weight"]
        for name, parameter in classifier.backbone.named_parameters():
            parameter -= 1e-3 * minimax[f"backbone.{name}"]
        lowered = float(prediction_entropy(classifier(images)))
    assert raised > before > lowered


def test_pac_stages_and_consistency_mask(tiny_overrides) -> None:
    config = load_config(None, ["method.name=pac", "method.rotation_steps=2",
                                *shot_overrides(tiny_overrides)])
    _, method, _ = build_run(config)
    assert [stage.name for stage in method.stages()] == ["rotation", "train"]
    assert method.consistency.config.threshold == 0.9

    class Fixed(torch.nn.Module):  # teacher confidences 0.95, 0.89, 0.91, 0.5
        def forward(self, images):
            confidence = torch.tensor([0.95, 0.89, 0.91, 0.5])
            rest = (1 - confidence) / (method.num_classes - 1)
            probabilities = rest[:, None].expand(4, method.num_classes).clone()
            probabilities[:, 0] = confidence
            return probabilities.log()

    from tamebias.data.batch import UnlabeledBatch

    method.consistency.student = [Fixed()]
    target = UnlabeledBatch(torch.rand(4, 1, 16, 16), torch.arange(4), torch.rand(4, 1, 16, 16))

    class Ctx:
        step, progress = 0, 0.5

        @staticmethod
        def autocast():
            import contextlib

            return contextlib.nullcontext()

    _, extra = method.consistency.loss(target, Ctx())
    assert float(extra["pseudo_mask"]) == pytest.approx(0.5)  # 0.95 and 0.91 pass 0.9


def test_target_val_selection_records_and_picks(tiny_overrides) -> None:
    with pytest.raises(ConfigError, match="target_val_shots"):
        load_config(None, [*tiny_overrides, "train.selection=target_val"])
    result = fit(overrides=["method.name=s+t", "train.selection=target_val",
                            *shot_overrides(tiny_overrides)])
    evaluations = result.history
    assert len(evaluations) == 2
    assert all(0 <= r["target_val_accuracy"] <= 1 for r in evaluations)
    assert result.selection == "target_val" and not result.analysis_only
    # ties go to the later evaluation, as with every rule
    best = max(r["target_val_accuracy"] for r in evaluations)
    chosen = [r for r in evaluations if r["target_val_accuracy"] == best][-1]
    assert result.accuracy == chosen["target_accuracy"]
    protocol = json.loads(Path(result.run_dir, "protocol.json").read_text())
    assert protocol["ssda"]["validation_shots"] == 1


def test_ssda_suite_tasks_and_bench_rows(tiny_overrides, tmp_path) -> None:
    from tamebias.bench import markdown_table, run_bench
    from tamebias.tasks import SUITES, TASKS

    assert len(SUITES["digits-ssda"]) == 6
    for name in SUITES["digits-ssda"]:
        config = load_config(None, TASKS[name].overrides())
        assert config.data.target_shots in (1, 3) and config.data.target_val_shots == 3
        assert config.train.selection == "target_val"
    TASKS["tiny-ssda"] = TASKS["mnist5k-ucidigits-ssda1"].__class__(
        "tiny", {}, steps=4, extra={"train.selection": "target_val"})
    try:
        rows = run_bench("tiny-ssda", ["tiny-ssda"], ["mme"], [0],
                         overrides=[*shot_overrides(tiny_overrides), "method.steps=4"],
                         results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    finally:
        del TASKS["tiny-ssda"]
    row = rows[0]
    assert (row["setting"], row["shots"], row["validation_shots"]) == ("ssda", 2, 1)
    assert row["selection"] == "target_val"
    table = markdown_table("tiny-ssda", rows)
    assert "2 labeled target image(s) per class" in table and "| mme |" in table


def write_mme_layout(root: Path, shots: int = 1) -> Path:
    """MME's release in miniature: data/multi/<domain>/<class>/*.png and its split files in
    data/txt/multi/ (``path label`` lines, paths relative to data/multi)."""
    import numpy as np
    from PIL import Image

    images, lists = root / "data" / "multi", root / "data" / "txt" / "multi"
    lists.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries: dict[str, list[str]] = {}
    for domain, brightness in (("real", 60), ("clipart", 180)):
        for label, name in enumerate(("ant", "bee", "cat")):
            folder = images / domain / name
            folder.mkdir(parents=True)
            for index in range(8):
                pixels = rng.normal(brightness, 10, (12, 12, 3))
                pixels[label * 4 : label * 4 + 3] = 250
                file = folder / f"{index}.png"
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(file)
                entries.setdefault(domain, []).append(f"{domain}/{name}/{index}.png {label}")
    (lists / "labeled_source_images_real.txt").write_text("\n".join(entries["real"]) + "\n")
    target = entries["clipart"]
    labeled = [line for line in target if int(line.split("/")[2].split(".")[0]) < shots]
    validation = [line for line in target
                  if shots <= int(line.split("/")[2].split(".")[0]) < shots + 3]
    unlabeled = [line for line in target if line not in labeled and line not in validation]
    for name, lines in ((f"labeled_target_images_clipart_{shots}", labeled),
                        ("validation_target_images_clipart_3", validation),
                        (f"unlabeled_target_images_clipart_{shots}", unlabeled)):
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return images


def test_mme_split_files_give_shots_validation_and_the_unlabeled_pool(tmp_path) -> None:
    from tamebias.tasks import SUITES, TASKS

    assert len(SUITES["domainnet-ssda"]) == 14 and len(SUITES["officehome-ssda"]) == 12
    root = write_mme_layout(tmp_path, shots=1)
    config = load_config(None, [*TASKS["domainnet-ssda-rc-1shot"].overrides(),
                                f"data.root={root}", "data.size=16", "model.pretrained=null"])
    data = prepare_data(config.data)
    assert data.classes == ["ant", "bee", "cat"]
    assert torch.bincount(data.target_shots.labels).tolist() == [1, 1, 1]
    assert torch.bincount(data.target_val.labels).tolist() == [3, 3, 3]
    assert len(data.target_train) == 12 and len(data.target_test) == 12  # MME tests on it
    assert data.protocol["ssda"]["shots"] == 1 and data.protocol["ssda"]["validation_shots"] == 3
    assert data.target_shots.images.shape[1:] == (3, 16, 16)
    with pytest.raises(ConfigError, match="either by count"):
        load_config(None, [*TASKS["domainnet-ssda-rc-1shot"].overrides(), "data.target_shots=1"])
