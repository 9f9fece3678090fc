"""tamebias diagnose: a quick source-only model or a trained run's features, JSON and PNGs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import tamebias
from tamebias.cli import app


def test_diagnose_cli_trains_a_quick_model_and_writes_json_and_figures(domains, tmp_path):
    output = tmp_path / "diag"
    result = CliRunner().invoke(app, [
        "diagnose", "--source", domains["source"], "--target", domains["target"],
        "--output", str(output), "--steps", "4", "--samples", "40",
        "--set", "data.size=16", "--set", "data.channels=1", "--set", "data.batch_size=16",
        "--set", "train.threads=1"])
    assert result.exit_code == 0, result.output
    report = json.loads((output / "diagnose.json").read_text())
    # the tiny target is the source with a brighter background: pixels tell them apart
    assert report["pixels"]["proxy_a_distance"] > 1.5
    assert report["images"]["target"]["mean"][0] > report["images"]["source"]["mean"][0]
    assert abs(sum(report["label_shift"]["target_class_proportions"]) - 1) < 1e-6
    for name in ("samples.png", "proportions.png", "tsne.png"):
        assert (output / name).stat().st_size > 5_000, name
    assert "proxy A-distance" in result.output


def test_diagnose_api_with_a_trained_run_and_clear_errors(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    tamebias.fit(None, tiny_overrides, run_dir=run)
    report = tamebias.diagnose(run=run, output=tmp_path / "d", samples=30, tsne=False)
    assert report["model"] == f"run {run}" and report["figures"] == ["samples.png",
                                                                     "proportions.png"]
    assert 0 <= report["features"]["proxy_a_distance"] <= 2
    with pytest.raises(ValueError, match="--source and --target"):
        tamebias.diagnose(output=tmp_path / "e")
    with pytest.raises(ValueError, match="not both"):
        tamebias.diagnose("mnist", "usps", run=run, output=tmp_path / "e")
