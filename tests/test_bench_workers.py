"""tamebias bench --workers N: rows trained in worker processes give the serial rows."""

from __future__ import annotations

import tamebias.recipes
from tamebias.bench import run_bench
from tamebias.recipes import Recipe, declare

SETTINGS = ["method.steps=4", "train.eval_every=2", "train.log_every=2", "data.batch_size=16",
            "train.threads=1", "data.target_subset=300"]


def test_two_bench_workers_give_the_serial_rows(tmp_path, monkeypatch):
    # a registered task (worker processes import the registry afresh): the embedded pair;
    # a recipe read from a file (--recipe-file) reaches the workers too
    monkeypatch.setattr(tamebias.recipes, "FILE_RECIPES", {})
    declare({"bn-file": Recipe("bn-file", "source_only", ("model.norm=bn",))})
    common = ("serial", ["mnist5k-ucidigits"], ["source_only", "oracle", "bn-file"], [0],
              SETTINGS)
    serial = run_bench(*common, tmp_path / "serial-results", tmp_path / "serial-runs")
    seen = []
    parallel = run_bench(*common, tmp_path / "parallel-results", tmp_path / "parallel-runs",
                         on_row=seen.append, workers=2)
    assert sorted(row["method"] for row in seen) == ["bn-file", "oracle", "source_only"]
    assert {row["method"]: row["norm"] for row in parallel}["bn-file"] == "bn"
    by_method = {row["method"]: row for row in parallel}
    for row in serial:
        other = by_method[row["method"]]
        assert other["per_seed"] == row["per_seed"] and other["steps"] == row["steps"] == 4
        assert other["rule_accuracy_mean"] == row["rule_accuracy_mean"]
        assert other["last_per_seed"] == row["last_per_seed"]
    assert (tmp_path / "parallel-results" / "serial.json").exists()
