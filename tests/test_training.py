"""The training loop: resume equals an uninterrupted run, divergence keeps the last good
checkpoint, selection rules, and target labels never reach unsupervised training."""

from __future__ import annotations

import json

import pytest
import torch

import tamebias
from tamebias.methods import common
from tamebias.training import checkpoint
from tamebias.training.log import read_json_lines
from tamebias.training.trainer import TrainingDiverged


def test_fit_writes_a_complete_run_directory(tiny_overrides, tmp_path):
    result = tamebias.fit(None, tiny_overrides, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "protocol.json", "metrics.jsonl", "checkpoint.pt", "best.pt",
                 "result.json"):
        assert (run / name).exists(), name
    saved = json.loads((run / "result.json").read_text())
    assert saved["selection"] == "source_val" and saved["steps"] == 6
    assert 0 <= saved["target"]["accuracy"] <= 1
    assert len(saved["target"]["confusion"]) == 3
    assert [r["step"] for r in result.history] == [3, 6]
    assert result.train_images_per_second > 0
    assert checkpoint.load(run / "checkpoint.pt")["stage"] == 1  # past the only stage


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tiny_overrides, tmp_path,
                                                            monkeypatch):
    overrides = [*tiny_overrides, "method.steps=8", "train.checkpoint_every=3"]
    full = tamebias.fit(None, overrides, run_dir=tmp_path / "full")

    original = common.classification_step
    calls = {"count": 0}

    def crash_after_five(*args):
        calls["count"] += 1
        if calls["count"] == 6:
            raise KeyboardInterrupt  # the process dies mid-run
        return original(*args)

    monkeypatch.setattr(common, "classification_step", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        tamebias.fit(None, overrides, run_dir=tmp_path / "killed")
    assert checkpoint.load(tmp_path / "killed" / "checkpoint.pt")["stage_step"] == 3
    monkeypatch.setattr(common, "classification_step", original)
    resumed = tamebias.fit(None, None, run_dir=tmp_path / "killed")

    assert resumed.target == full.target
    assert resumed.history == full.history
    # the lines the killed process logged past its checkpoint are not left twice in the log

    def logged(run):
        return [(r.get("event"), r["stage"], r["global_step"])
                for r in read_json_lines(tmp_path / run / "metrics.jsonl")]

    assert logged("killed") == logged("full")
    # the first process's training time is carried over with the rest of the record
    assert set(resumed.stage_seconds) == {"source"}
    assert resumed.stage_seconds["source"] == pytest.approx(resumed.train_seconds)
    final = checkpoint.load(tmp_path / "full" / "checkpoint.pt")["method"]
    again = checkpoint.load(tmp_path / "killed" / "checkpoint.pt")["method"]
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_a_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tiny_overrides, tmp_path,
                                                                    monkeypatch):
    original = common.classification_step
    calls = {"count": 0}

    def poison(classifier, batch, ctx, optimizer):
        calls["count"] += 1
        if calls["count"] >= 5:  # steps 5.. produce NaN images
            batch.images.fill_(float("nan"))
        return original(classifier, batch, ctx, optimizer)

    monkeypatch.setattr(common, "classification_step", poison)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        tamebias.fit(None, tiny_overrides, run_dir=tmp_path / "run")
    kept = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert kept["stage_step"] == 4  # written after step 4, never overwritten by NaN weights
    assert all(torch.isfinite(v).all() for v in kept["method"].values()
               if v.is_floating_point())


def test_target_labels_never_reach_unsupervised_training(domains, tiny_overrides, tmp_path):
    """Scrambling the target *training* labels changes nothing for a method that does not
    declare it uses them."""
    import numpy as np

    folder = tmp_path / "scrambled"
    folder.mkdir()
    target_folder = domains["target"].split(":", 1)[1]
    for split in ("train", "test"):
        arrays = dict(np.load(f"{target_folder}/{split}.npz"))
        if split == "train":
            arrays["y"] = (arrays["y"] + 1) % 3
        np.savez(folder / f"{split}.npz", **arrays)
    first = tamebias.fit(None, tiny_overrides, run_dir=tmp_path / "a")
    second = tamebias.fit(None, [*tiny_overrides, f"data.target=npz:{folder}"],
                          run_dir=tmp_path / "b")
    assert first.history == second.history
    a = checkpoint.load(tmp_path / "a" / "checkpoint.pt")["method"]
    b = checkpoint.load(tmp_path / "b" / "checkpoint.pt")["method"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_selection_rules_pick_the_right_evaluation(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "method.steps=9"]
    last = tamebias.fit(None, [*overrides, "train.selection=last"], run_dir=tmp_path / "l")
    assert last.selected["step"] == 9 and not (tmp_path / "l" / "best.pt").exists()
    oracle = tamebias.fit(None, [*overrides, "train.selection=target_oracle"],
                          run_dir=tmp_path / "o")
    assert oracle.analysis_only
    assert oracle.accuracy == pytest.approx(max(r["target_accuracy"] for r in oracle.history))
    source_val = tamebias.fit(None, overrides, run_dir=tmp_path / "s")
    best = max(r["source_val_accuracy"] for r in source_val.history)
    assert source_val.selected["source_val_accuracy"] == best
    assert source_val.source_val["accuracy"] == pytest.approx(best)


def test_oracle_trains_on_target_labels_and_is_marked_analysis(tiny_overrides, tmp_path):
    result = tamebias.fit(None, [*tiny_overrides, "method.name=oracle", "method.steps=30"],
                          run_dir=tmp_path / "oracle")
    assert result.analysis_only and result.selection == "last"
    assert result.accuracy > 0.9  # the tiny target is easy when its labels are used


def test_a_different_config_refuses_to_resume_into_an_existing_run(tiny_overrides, tmp_path):
    tamebias.fit(None, tiny_overrides, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="different config"):
        tamebias.fit(None, [*tiny_overrides, "method.steps=7"], run_dir=tmp_path / "run")


def test_throughput_counts_only_the_images_a_method_reads(tiny_overrides, tmp_path):
    """The oracle reads one labeled target batch per step, DANN a source and a target batch."""
    oracle = tamebias.fit(None, [*tiny_overrides, "method.name=oracle"], run_dir=tmp_path / "o")
    dann = tamebias.fit(None, [*tiny_overrides, "method.name=dann"], run_dir=tmp_path / "d")
    for result, per_step in ((oracle, 16), (dann, 32)):
        assert result.train_images_per_second * result.train_seconds == pytest.approx(
            per_step * result.steps)


def test_the_oracle_draws_no_source_batch(tiny_overrides):
    from tamebias.api import build_run
    from tamebias.compose import load_config
    from tamebias.data.domain import DomainStreams

    config = load_config(None, [*tiny_overrides, "method.name=oracle"])
    data, method, device = build_run(config)
    needs = method.needs
    streams = DomainStreams(data, 16, 0, device, needs.target, needs.labeled_target,
                            source=needs.source)
    batch = streams.batch(0)
    assert batch.source is None and batch.target is None
    assert batch.labeled_target is not None and len(batch.labeled_target) == 16


def test_training_time_is_recorded_per_stage(tiny_overrides, tmp_path):
    from tamebias.bench import row_from_runs

    overrides = [*tiny_overrides, "method.name=adda", "method.source_steps=4", "method.steps=4"]
    result = tamebias.fit(None, overrides, run_dir=tmp_path / "run")
    assert set(result.stage_seconds) == {"source", "adapt"}
    assert all(seconds > 0 for seconds in result.stage_seconds.values())
    assert sum(result.stage_seconds.values()) == pytest.approx(result.train_seconds)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["stage_seconds"] == result.stage_seconds
    row = row_from_runs("tiny", [result])
    assert row["stage_seconds_mean"] == pytest.approx(result.stage_seconds)
