"""Segmentation as a task type: dense metrics, joint augmentation, typed dense batches, the
GTA5 / Cityscapes id tables, synthetic scenes, and every segmentation method end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tamebias.data.batch import SegmentedBatch, UnlabeledBatch
from tamebias.data.dense import IGNORE_INDEX, DenseData, DenseSet, DenseStreams, JointAugmenter
from tamebias.evaluation.dense import dense_confusion, pixel_validators, scores_from_confusion

# -- metrics -----------------------------------------------------------------------------------


def test_iou_miou_pixel_accuracy_match_hand_computed_values():
    # 3 classes; class 2 never occurs in the ground truth but is predicted once on a labelled
    # pixel (and once on an ignored pixel, which must not count at all)
    masks = torch.tensor([[0, 0, 1, 1, 1, IGNORE_INDEX, 0]])
    predictions = torch.tensor([[0, 1, 1, 1, 2, 2, 0]])
    confusion = dense_confusion(predictions, masks, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 2, 1], [0, 0, 0]]
    scores = scores_from_confusion(confusion, ["a", "b", "c"])
    # class 0: TP 2, FP 0, FN 1 -> 2/3; class 1: TP 2, FP 1, FN 1 -> 2/4; class 2 absent
    assert scores.per_class_iou[0] == pytest.approx(2 / 3)
    assert scores.per_class_iou[1] == pytest.approx(2 / 4)
    assert scores.per_class_iou[2] is None  # absent from the ground truth: excluded
    assert scores.miou == pytest.approx((2 / 3 + 2 / 4) / 2)
    assert scores.pixel_accuracy == pytest.approx(4 / 6)  # the ignored pixel is not counted
    assert scores.pixels == 6


def test_pixel_validators_prefer_confident_diverse_maps():
    confident = torch.zeros(2, 3, 4, 4)
    confident[:, 0, :, :2] = 20
    confident[:, 1, :, 2:] = 20
    flat = torch.zeros(2, 3, 4, 4)
    good, bad = pixel_validators(confident), pixel_validators(flat)
    assert good["entropy"] > bad["entropy"]
    assert good["im"] == pytest.approx(np.log(2), abs=1e-3)  # two classes, half the pixels each
    assert bad["im"] == pytest.approx(0.0, abs=1e-9)


# -- joint augmentation and typed batches ------------------------------------------------------


def _ramp_batch(count: int = 16, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    columns = torch.arange(size, dtype=torch.float32)
    images = (columns / size).expand(count, 3, size, size).clone()
    masks = torch.arange(size).expand(count, size, size).clone()
    return images, masks


def test_a_flip_moves_image_and_mask_identically():
    images, masks = _ramp_batch()
    out_images, out_masks = JointAugmenter("flip", seed=0)(images, masks, stream=0, step=3)
    flipped = 0
    for index in range(len(images)):
        if torch.equal(out_masks[index], masks[index].flip(-1)):
            assert torch.equal(out_images[index], images[index].flip(-1))
            flipped += 1
        else:
            assert torch.equal(out_masks[index], masks[index])
            assert torch.equal(out_images[index], images[index])
    assert 0 < flipped < len(images)  # per-sample decisions
    # a pure function of (seed, stream, step), the global RNG untouched
    state = torch.get_rng_state()
    again = JointAugmenter("flip", seed=0)(images, masks, stream=0, step=3)
    assert torch.equal(again[1], out_masks) and torch.equal(torch.get_rng_state(), state)


def test_affine_warp_keeps_masks_integral_and_fills_ignore():
    images, masks = _ramp_batch(8, 16)
    _, warped = JointAugmenter("affine", seed=1)(images, masks, stream=0, step=0)
    values = set(warped.unique().tolist())
    assert values <= set(range(16)) | {IGNORE_INDEX}  # nearest: no blended labels


def _tiny_dense(count: int = 6, size: int = 16, classes: int = 3) -> DenseSet:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8,
                           generator=generator)
    masks = torch.randint(0, classes, (count, size, size), dtype=torch.uint8,
                          generator=generator)
    return DenseSet(images, masks, [f"c{i}" for i in range(classes)], "tiny")


def test_dense_unlabeled_target_batch_has_no_mask_field():
    source, target = _tiny_dense(), _tiny_dense()
    data = DenseData(source, None, target.unlabeled(), target, target.masks)
    batch = DenseStreams(data, 4, 0, torch.device("cpu"), augment="flip").batch(0)
    assert isinstance(batch.source, SegmentedBatch)
    assert batch.source.masks.shape == (4, 16, 16) and batch.source.masks.dtype == torch.int64
    assert isinstance(batch.target, UnlabeledBatch)
    assert "masks" not in {f.name for f in dataclasses.fields(UnlabeledBatch)}
    assert not hasattr(batch.target, "masks") and not hasattr(batch.target, "labels")
    assert batch.labeled_target is None  # only the oracle asks for target labels
    assert data.target_train.masks is None


def test_dense_set_refuses_label_ids_beyond_the_classes():
    broken = _tiny_dense()
    masks = broken.masks.clone()
    masks[0, 0, 0] = 7
    with pytest.raises(ValueError, match="ids >= 3"):
        DenseSet(broken.images, masks, broken.classes, "broken")


# -- GTA5 / Cityscapes id tables ---------------------------------------------------------------

# the 19 evaluated classes of cityscapesscripts/helpers/labels.py: label id -> train id
PUBLISHED = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
         "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
         "bus", "train", "motorcycle", "bicycle"]


def _label_png(path, ids: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def _image_png(path, height: int, width: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


ALL_IDS = np.arange(36).reshape(4, 9)  # every Cityscapes label id 0..33, plus 34, 35


def _expected(ids: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda i: PUBLISHED.get(int(i), IGNORE_INDEX))(ids)


def test_gta5_reader_maps_ids_to_the_19_train_classes(tmp_path):
    from tamebias.data.cityscapes import read_gta5

    root = tmp_path / "gta5"
    for name in ("00001.png", "00002.png"):
        _image_png(root / "images" / name, 4, 9)
        _label_png(root / "labels" / name, ALL_IDS)
    data = read_gta5(root, "train")
    assert data.classes == NAMES
    assert data.images.shape == (2, 3, 4, 9)
    assert np.array_equal(data.masks[0].numpy(), _expected(ALL_IDS))


def test_cityscapes_reader_pairs_labelids_and_maps_them(tmp_path):
    from tamebias.data.cityscapes import read_cityscapes

    root = tmp_path / "cityscapes"
    stem = "aachen_000000_000019"
    _image_png(root / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png", 4, 9)
    _label_png(root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png", ALL_IDS)
    data = read_cityscapes(root, "val", size=8)  # resized: short side 4 -> 8, nearest labels
    assert data.images.shape == (1, 3, 8, 18)
    expected = np.repeat(np.repeat(_expected(ALL_IDS), 2, 0), 2, 1)
    assert np.array_equal(data.masks[0].numpy(), expected)
    with pytest.raises(FileNotFoundError, match="leftImg8bit/train"):
        read_cityscapes(root, "train")


# -- synthetic scenes --------------------------------------------------------------------------


def _fake_digits(count: int = 20, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    digits = np.zeros((count, size, size), dtype=np.uint8)
    digits[:, 8:20, 10:18] = 255  # a solid bar: stroke everywhere inside
    return digits, rng.integers(0, 10, count)


@pytest.mark.parametrize("style", ["mnist", "usps", "photo", "bold"])
def test_scenes_are_deterministic_and_labelled_on_strokes(style):
    from tamebias.data.scenes import make_scenes

    digits = _fake_digits()
    first = make_scenes(style, "train", 4, seed=3, digits=digits)
    again = make_scenes(style, "train", 4, seed=3, digits=digits)
    other = make_scenes(style, "train", 4, seed=4, digits=digits)
    assert torch.equal(first.images, again.images) and torch.equal(first.masks, again.masks)
    assert not torch.equal(first.images, other.images)
    labels = set(first.masks.unique().tolist())
    assert 0 in labels and labels - {0, IGNORE_INDEX} <= {d + 1 for d in range(10)}
    assert labels - {0, IGNORE_INDEX}  # some stroke pixels carry a digit class
    assert first.images.shape == (4, 3, 64, 64)


# -- every method end to end -------------------------------------------------------------------


@pytest.fixture
def fake_scenes(monkeypatch, tmp_path):
    import tamebias.data.scenes as scenes

    monkeypatch.setattr(scenes, "_digits", lambda style, split, root: _fake_digits())
    monkeypatch.setenv("TAMEBIAS_CACHE", str(tmp_path / "cache"))
    return ["data.train_count=8", "data.val_count=4", "data.test_count=4",
            "data.batch_size=4", "data.size=32", "train.eval_every=2", "train.log_every=1",
            "train.progress=false", "train.threads=1"]


@pytest.mark.parametrize("method", ["source_only", "adabn", "adaptseg", "minent", "advent",
                                    "cbst", "dacs", "cycada", "oracle"])
def test_every_segmentation_method_trains_and_reports(method, fake_scenes, tmp_path):
    from tamebias.training.segmentation import fit_segmentation, load_seg_config

    steps = {"adabn": ["method.source_steps=2", "method.target_batches=2"],
             "cycada": ["method.source_steps=2", "method.translate_steps=2", "method.steps=2",
                        "method.output_steps=2", "method.translate_batch=2"],
             "source_only": ["method.steps=2"], "oracle": ["method.steps=2"]}
    config = load_seg_config([f"method={method}", *fake_scenes, "train.selection=im",
                              *steps.get(method, ["method.source_steps=2", "method.steps=2"])])
    result = fit_segmentation(config, tmp_path / method)
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["pixel_accuracy"] <= 1.0
    assert len(result["target"]["per_class_iou"]) == 11
    assert result["analysis_only"] == (method == "oracle")
    assert np.isfinite(result["history"][-1]["validators"]["im"])
    stored = json.loads((tmp_path / method / "result.json").read_text())
    assert stored["miou"] == result["miou"]
    if method == "cycada":  # the semantic teacher is the source model, never trained after
        source = torch.load(tmp_path / method / "stage-source.pt", weights_only=True)["method"]
        final = torch.load(tmp_path / method / "checkpoint.pt", weights_only=True)["method"]
        teacher = {k: v for k, v in final.items() if k.startswith("teacher.")}
        assert teacher and all(torch.equal(v, source["classifier." + k[len("teacher."):]])
                               for k, v in teacher.items())
        assert not torch.equal(final["classifier.classifier_head.weight"],
                               source["classifier.classifier_head.weight"])


def test_adaptation_from_a_source_run_skips_the_source_stage(fake_scenes, tmp_path):
    from tamebias.training.segmentation import fit_segmentation, load_seg_config

    fit_segmentation(load_seg_config(["method=source_only", "method.steps=2", *fake_scenes]),
                     tmp_path / "source")
    config = load_seg_config(["method=adaptseg", "method.source_steps=5", "method.steps=2",
                              f"init={tmp_path / 'source'}", *fake_scenes])
    result = fit_segmentation(config, tmp_path / "adapt")
    assert {record["stage"] for record in result["history"]} == {"adapt"}
    assert result["steps"] == 2


def test_a_sweep_listener_sees_every_dense_evaluation_and_selection_keeps_the_best(
        fake_scenes, tmp_path):
    """The dense loop shares the classification loop's selection and listener (a sweep's
    pruner): only the record differs."""
    from tamebias.training.segmentation import fit_segmentation, load_seg_config
    from tamebias.training.trainer import ON_EVALUATION

    seen: list[dict] = []
    token = ON_EVALUATION.set(seen.append)
    try:
        result = fit_segmentation(load_seg_config(["method=source_only", "method.steps=6",
                                                   "train.selection=im", *fake_scenes]),
                                  tmp_path / "run")
    finally:
        ON_EVALUATION.reset(token)
    assert [record["step"] for record in seen] == [2, 4, 6]
    assert all("target_miou" in record and "im" in record["validators"] for record in seen)
    best = max(seen, key=lambda record: record["validators"]["im"])
    assert result["miou"] == best["target_miou"]
    assert (tmp_path / "run" / "best.pt").exists()


def test_a_bench_reuses_a_finished_run_only_for_the_config_it_was_made_with(
        fake_scenes, tmp_path):
    from tamebias.config import ConfigError
    from tamebias.segbench import check_reuse
    from tamebias.training.segmentation import fit_segmentation, load_seg_config

    made = load_seg_config(["method=source_only", "method.steps=2", *fake_scenes])
    fit_segmentation(made, tmp_path / "run")
    check_reuse(tmp_path / "run", made)
    check_reuse(tmp_path / "run", load_seg_config(  # threads and progress are not identity
        ["method=source_only", "method.steps=2", *fake_scenes, "train.threads=2"]))
    longer = load_seg_config(["method=source_only", "method.steps=3", *fake_scenes])
    with pytest.raises(ConfigError, match="method.steps 2 -> 3"):
        check_reuse(tmp_path / "run", longer)


def test_adabn_changes_batch_norm_statistics_only(fake_scenes, tmp_path):
    from tamebias.training.segmentation import fit_segmentation, load_seg_config

    fit_segmentation(load_seg_config(["method=source_only", "method.steps=2", *fake_scenes]),
                     tmp_path / "source")
    fit_segmentation(load_seg_config(["method=adabn", "method.target_batches=2",
                                      f"init={tmp_path / 'source'}", *fake_scenes]),
                     tmp_path / "adabn")
    before = torch.load(tmp_path / "source" / "checkpoint.pt", weights_only=True)["method"]
    after = torch.load(tmp_path / "adabn" / "checkpoint.pt", weights_only=True)["method"]
    moved = {key for key in before if not torch.equal(before[key], after[key])}
    assert moved and all(key.endswith(("running_mean", "running_var", "num_batches_tracked"))
                         for key in moved)


def test_class_balanced_pseudo_labels_keep_rare_classes():
    from tamebias.methods.segmentation.cbst import class_balanced_labels

    probabilities = torch.full((1, 2, 1, 10), 0.0)
    probabilities[0, 0, 0, :8] = torch.linspace(0.95, 0.99, 8)  # confident majority class
    probabilities[0, 1, 0, 8:] = torch.tensor([0.6, 0.7])  # rare, less confident class
    probabilities[0, 1, 0, :8] = 1 - probabilities[0, 0, 0, :8]
    probabilities[0, 0, 0, 8:] = 1 - probabilities[0, 1, 0, 8:]
    labels = class_balanced_labels(probabilities, 0.5)[0, 0]
    # a global threshold at 0.9 would drop class 1; per class, the top half of each survives
    assert labels[8:].tolist() == [IGNORE_INDEX, 1]
    assert (labels[:8] == 0).sum() == 4 and (labels[:8] == IGNORE_INDEX).sum() == 4


def test_class_mix_pastes_half_the_source_classes_with_their_labels():
    from tamebias.methods.segmentation.dacs import class_mix

    torch.manual_seed(0)
    source_masks = torch.zeros(2, 6, 6, dtype=torch.int64)
    source_masks[:, 0:2, 0:2], source_masks[:, 3:5, 3:5] = 3, 7
    source_masks[:, 5, 5] = IGNORE_INDEX  # never a class, never pasted
    source_images, target_images = torch.ones(2, 3, 6, 6), torch.zeros(2, 3, 6, 6)
    target_labels = torch.full((2, 6, 6), 9)
    images, labels, pasted = class_mix(source_images, source_masks, target_images,
                                       target_labels)
    for index in range(2):
        chosen = source_masks[index][pasted[index]].unique()
        assert len(chosen) == 2  # ceil(3 classes / 2), whole classes only
        assert torch.equal(pasted[index], torch.isin(source_masks[index], chosen))
    assert not pasted[:, 5, 5].any()
    assert torch.equal(images, pasted[:, None].expand_as(images).float())
    assert torch.equal(labels, torch.where(pasted, source_masks, target_labels))


def test_strong_photometric_draws_per_image_and_is_identity_at_zero_strength():
    from tamebias.methods.segmentation.dacs import strong_photometric

    torch.manual_seed(0)
    images = torch.rand(6, 3, 12, 12)
    assert torch.allclose(strong_photometric(images, 0.0, blur_p=0.0), images, atol=1e-5)
    out = strong_photometric(images, 0.5, jitter_p=1.0, blur_p=1.0)
    assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    ratio = out.mean((1, 2, 3)) / images.mean((1, 2, 3))
    assert ratio.std() > 0.01  # each image its own factors, not one draw for the batch
    untouched = strong_photometric(images[:2], 0.5, jitter_p=0.0, blur_p=0.0)
    assert torch.allclose(untouched, images[:2], atol=1e-5)
    gray = torch.rand(3, 1, 12, 12)  # one channel: no saturation or hue, still jittered
    assert strong_photometric(gray, 0.5, jitter_p=1.0).shape == gray.shape


def test_dacs_teacher_follows_the_segmenter_by_ema():
    from tamebias.methods.segmentation.dacs import DACS, DACSConfig
    from tamebias.models.segmenters import build_segmenter

    torch.manual_seed(0)
    method = DACS(DACSConfig(ema=0.75), build_segmenter("unet_small", 3, 3))
    method.refresh_teacher()
    before = [p.detach().clone() for p in method.teacher.parameters()]
    with torch.no_grad():
        for parameter in method.classifier.parameters():
            parameter.add_(1.0)
    method.update_teacher()
    for old, new in zip(before, method.teacher.parameters(), strict=True):
        assert torch.allclose(new, old + 0.25)  # 0.75 old + 0.25 (old + 1)


def test_output_space_critic_gradient_reaches_the_segmenter():
    from tamebias.data.batch import DomainBatch
    from tamebias.methods.segmentation.common import output_adversarial_step, softmax_map
    from tamebias.models.critics import PixelCritic
    from tamebias.models.segmenters import build_segmenter

    class Recorder:
        progress, step, global_step = 0.0, 0, 0

        def __init__(self):
            self.grads = {}

        def autocast(self):
            import contextlib
            return contextlib.nullcontext()

        def update(self, name, loss):
            module = segmenter if name == "segmenter" else critic
            module.zero_grad()
            loss.backward()
            self.grads[name] = torch.cat([p.grad.flatten() for p in module.parameters()
                                          if p.grad is not None]).clone()

    torch.manual_seed(0)
    segmenter, critic = build_segmenter("fcn_small", 3, 3), PixelCritic(3, 8, 2)
    images = torch.rand(2, 3, 16, 16)
    batch = DomainBatch(SegmentedBatch(images, torch.full((2, 16, 16), IGNORE_INDEX),
                                       torch.arange(2)),
                        UnlabeledBatch(torch.rand(2, 3, 16, 16), torch.arange(2)))
    ctx = Recorder()
    output_adversarial_step(segmenter, critic, batch, ctx, softmax_map, 1.0)
    # every source pixel is ignored: the segmenter's whole gradient is the adversarial term
    assert ctx.grads["segmenter"].abs().sum() > 0 and "critic" in ctx.grads


def test_unet_small_resolves_one_pixel_strokes_that_fcn_small_blurs():
    """The reason unet_small is the scene default: its features are at the input's resolution,
    so a 1-pixel stroke is labelled pixel-exactly; fcn_small's logits are a quarter-resolution
    map upsampled, and the same budget leaves it far from the stroke."""
    from tamebias.models.segmenters import build_segmenter

    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(16, 1, 24, 24)
    masks = torch.zeros(16, 24, 24, dtype=torch.int64)
    for index in range(16):  # one bright 1-pixel vertical stroke at a random column
        column = int(torch.randint(2, 22, (1,), generator=generator))
        images[index, 0, 4:20, column] = 1.0
        masks[index, 4:20, column] = 1
    ious = {}
    for name in ("unet_small", "fcn_small"):
        torch.manual_seed(0)
        model = build_segmenter(name, 2, 1)
        assert model.features(images).shape[-2:] == ((24, 24) if name == "unet_small"
                                                      else (6, 6))
        optimizer = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(40):
            loss = F.cross_entropy(model(images), masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            predictions = model(images).argmax(1)
        ious[name] = scores_from_confusion(dense_confusion(predictions, masks, 2),
                                           ["background", "stroke"]).per_class_iou[1]
    assert ious["unet_small"] > 0.9 and ious["unet_small"] > ious["fcn_small"] + 0.2, ious


def test_gta5_to_cityscapes_runs_end_to_end_on_fixtures(tmp_path):
    from tamebias.training.segmentation import fit_segmentation, load_seg_config

    for index in range(3):
        name = f"{index:05d}.png"
        _image_png(tmp_path / "gta5" / "images" / name, 8, 12)
        _label_png(tmp_path / "gta5" / "labels" / name, np.full((8, 12), 7 + index))
    for split in ("train", "val"):
        for index in range(2):
            stem = f"aachen_{index:06d}_000019"
            _image_png(tmp_path / "cityscapes" / "leftImg8bit" / split / "aachen" /
                       f"{stem}_leftImg8bit.png", 8, 16)
            _label_png(tmp_path / "cityscapes" / "gtFine" / split / "aachen" /
                       f"{stem}_gtFine_labelIds.png", np.full((8, 16), 26))
    config = load_seg_config([
        "method=source_only", "method.steps=2", "data.source=gta5:gta5",
        "data.target=cityscapes:cityscapes", f"data.root={tmp_path}", "data.size=16",
        "data.train_count=0", "data.test_count=0", "data.batch_size=2",
        "train.eval_every=2", "train.progress=false", "train.selection=last"])
    result = fit_segmentation(config, tmp_path / "run")
    assert result["protocol"]["source_train"] == 3 and result["protocol"]["target_test"] == 2
    # each set at a 16 px short side, its aspect ratio kept
    assert result["protocol"]["size"] == [16, 24]
    assert result["protocol"]["target_size"] == [16, 32]
    ious = result["target"]["per_class_iou"]
    assert len(ious) == 19 and [i for i, v in enumerate(ious) if v is not None] == [13]  # car


def _fake_result(seed: int, miou: float, classes: int = 3) -> dict:
    return {"miou": miou, "pixel_accuracy": miou + 0.1, "selection": "last",
            "analysis_only": False, "steps": 10, "train_seconds": 1.0, "machine": {},
            "target": {"classes": [f"c{i}" for i in range(classes)],
                       "per_class_iou": [miou, None, 1.0]},
            "rule_picks": {"last": {"miou": miou}}, "protocol": {"init": "x", "seed": seed},
            "config": {"train": {"seed": seed}, "method": {"name": "adaptseg"}}}


def test_bench_rows_average_seeds_and_merge_by_task_and_method(tmp_path):
    from tamebias.segbench import merge_rows, row

    built = row("scenes-mnist-photo", "adaptseg", [_fake_result(0, 0.2), _fake_result(1, 0.4)])
    assert built["miou_mean"] == pytest.approx(30.0) and built["miou_std"] > 0
    assert built["pixel_accuracy_mean"] == pytest.approx(40.0)
    assert built["per_class_iou_mean"] == {"c0": 30.0, "c1": None, "c2": 100.0}
    assert built["seeds"] == [0, 1] and built["starts_from"]
    path = tmp_path / "segmentation.json"
    merge_rows(path, [built])
    merged = merge_rows(path, [{**built, "miou_mean": 1.0}])
    assert len(merged) == 1 and merged[0]["miou_mean"] == 1.0
    assert "| scenes-mnist-photo | adaptseg | 1.00 ±" in path.with_suffix(".md").read_text()


def test_segment_command_names_an_unknown_method(tmp_path):
    from typer.testing import CliRunner

    from tamebias.cli import app

    outcome = CliRunner().invoke(app, ["segment", "--methods", "source_only,bogus",
                                       "--output", str(tmp_path)])
    assert outcome.exit_code == 2 and "bogus" in outcome.output


def test_fit_trains_a_segmentation_task_and_resumes_it(fake_scenes, tmp_path):
    """`tamebias fit --task <segmentation task>` runs the task's protocol with the chosen
    segmentation method (its source stage included); --resume finds the run's kind."""
    from typer.testing import CliRunner

    from tamebias.cli import app

    small = [item for value in fake_scenes for item in ("--set", value)]
    folder = tmp_path / "dacs-run"
    outcome = CliRunner().invoke(app, [
        "fit", "--task", "scenes-mnist-usps", "--recipe", "dacs", "--run-dir", str(folder),
        *small, "--set", "method.source_steps=2", "--set", "method.steps=2"])
    assert outcome.exit_code == 0, outcome.output
    assert "scenes-mnist-usps dacs: target mIoU" in outcome.output
    stored = json.loads((folder / "config.json").read_text())
    assert stored["kind"] == "segmentation" and stored["model"]["name"] == "unet_small"
    assert stored["method"]["name"] == "dacs" and stored["data"]["target"] == "scenes:usps"
    stages = {json.loads(line).get("stage") for line in
              (folder / "metrics.jsonl").read_text().splitlines()}
    assert {"source", "mix"} <= stages
    again = CliRunner().invoke(app, ["fit", "--resume", str(folder)])
    assert again.exit_code == 0, again.output
    assert again.output.split("target mIoU")[1].split("%")[0] == \
        outcome.output.split("target mIoU")[1].split("%")[0]


def test_unknown_selection_rule_is_a_config_error():
    from tamebias.config import ConfigError
    from tamebias.training.segmentation import load_seg_config

    with pytest.raises(ConfigError, match="segmentation rule"):
        load_seg_config(["train.selection=dev"])


def test_figure_shows_input_truth_and_each_run(fake_scenes, tmp_path):
    from tamebias.report.segmentation_figures import segmentation_figure
    from tamebias.training.segmentation import fit_segmentation, load_seg_config

    fit_segmentation(load_seg_config(["method=source_only", "method.steps=1", *fake_scenes]),
                     tmp_path / "source")
    fit_segmentation(load_seg_config(["method=minent", "method.steps=1",
                                      f"init={tmp_path / 'source'}", *fake_scenes]),
                     tmp_path / "minent")
    path = segmentation_figure({"source only": tmp_path / "source",
                                "minent": tmp_path / "minent"}, tmp_path / "figure.png", 2)
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] > image.size[1]  # 4 columns, 2 rows
