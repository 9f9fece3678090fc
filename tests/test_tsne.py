"""The alignment picture for a finished run."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

import tamebias
from tamebias.cli import app


def test_tsne_of_an_adda_run_shows_its_source_stage_beside_the_adapted_model(
        tiny_overrides, tmp_path):
    run = tmp_path / "adda"
    tamebias.fit(None, [*tiny_overrides, "method.name=adda", "method.source_steps=4",
                        "method.steps=4"], run_dir=run)
    assert (run / "stage-source.pt").exists()
    result = CliRunner().invoke(app, ["tsne", str(run), "--count", "30"])
    assert result.exit_code == 0, result.output
    assert (run / "tsne.png").stat().st_size > 10_000
    arrays = np.load(run / "tsne.npz")
    assert arrays["before_points"].shape == (60, 2) and arrays["after_points"].shape == (60, 2)
    assert not np.allclose(arrays["before_points"], arrays["after_points"])
    assert len(arrays["after_source_labels"]) == 30


def test_tsne_with_a_separate_source_only_run(tiny_overrides, tmp_path):
    tamebias.fit(None, tiny_overrides, run_dir=tmp_path / "source")
    tamebias.fit(None, [*tiny_overrides, "method.name=dann"], run_dir=tmp_path / "dann")
    output = tmp_path / "figure.png"
    result = CliRunner().invoke(app, ["tsne", str(tmp_path / "dann"), "--before",
                                      str(tmp_path / "source"), "--count", "20",
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.exists() and output.with_suffix(".npz").exists()
