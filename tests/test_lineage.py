"""Run lineage: a run started from another run's weights records it, and a run built from an
analysis run (trained or selected with target labels) is analysis itself, in its result, its
files and the bench tables."""

from __future__ import annotations

import json

import pytest

import tamebias
from tamebias.bench import markdown_table, row_from_runs
from tamebias.lineage import LINEAGE_FILE, lineage_of, weight_sources
from tamebias.methods import METHODS


@pytest.fixture(scope="module")
def parents(domains, tmp_path_factory):
    """Three finished tiny runs: a source-only headline run, an oracle (target labels) and a
    source-only run selected with target labels."""
    root = tmp_path_factory.mktemp("parents")
    common = [f"data.source={domains['source']}", f"data.target={domains['target']}",
              "data.size=16", "data.channels=1", "data.batch_size=16",
              "data.source_val_fraction=0.2", "method.steps=2", "train.log_every=2",
              "train.eval_every=2", "train.checkpoint_every=2", "train.progress=false",
              "train.threads=1", f"output_dir={root}"]
    runs = {}
    for name, extra in (("headline", []), ("oracle", ["method.name=oracle"]),
                        ("peeked", ["train.selection=target_oracle"])):
        tamebias.fit(None, [*common, *extra], run_dir=root / name)
        runs[name] = root / name
    return runs, common


def adda_from(parent, common, tmp_path, name="child"):
    return tamebias.fit(None, [*common, "method.name=adda", f"init.weights={parent}",
                               "method.steps=2"],
                        run_dir=tmp_path / name)


@pytest.mark.parametrize("parent", ["oracle", "peeked"])
def test_a_run_built_from_an_analysis_run_is_analysis(parents, tmp_path, parent):
    runs, common = parents
    result = adda_from(runs[parent], common, tmp_path)
    assert result.analysis_only  # ADDA's own rule (source_val) would make it a headline
    saved = json.loads((tmp_path / "child" / "result.json").read_text())
    assert saved["analysis_only"]
    recorded = json.loads((tmp_path / "child" / LINEAGE_FILE).read_text())
    assert saved["lineage"] == recorded
    [record] = recorded["parents"]
    assert record["setting"] == "init.weights" and record["analysis_only"]
    assert record["modules"] == ["classifier"]  # a bare RUN loads the classifier
    assert record["path"] == str(runs[parent]) and record["run"] == str(runs[parent].resolve())
    assert record["selection"] == ("last" if parent == "oracle" else "target_oracle")
    assert any("built from the analysis run" in reason for reason in recorded["reasons"])

    # the bench labels the row analysis: it is never a headline
    row = row_from_runs("tiny", [result], "adda")
    assert row["analysis_only"] and row["built_from"] == [str(runs[parent].resolve())]
    assert "adda *(analysis)*" in markdown_table("tiny", [row])


def test_analysis_passes_down_a_chain_of_runs(parents, tmp_path):
    runs, common = parents
    adda_from(runs["oracle"], common, tmp_path, "middle")
    grandchild = adda_from(tmp_path / "middle", common, tmp_path, "grandchild")
    assert grandchild.analysis_only
    [middle] = grandchild.lineage["parents"]
    assert middle["method"] == "adda" and middle["analysis_only"]
    assert middle["parents"][0]["method"] == "oracle"


def test_a_run_built_from_a_headline_run_stays_a_headline(parents, tmp_path):
    runs, common = parents
    result = adda_from(runs["headline"], common, tmp_path)
    assert not result.analysis_only and result.lineage["reasons"] == []
    [record] = result.lineage["parents"]
    assert record == {**record, "analysis_only": False, "method": "source_only",
                      "selection": "source_val", "known": True, "parents": []}
    assert not row_from_runs("tiny", [result], "adda")["analysis_only"]

    # a resumed run keeps the lineage it started with, whatever became of the parent folder
    (tmp_path / "child" / "result.json").unlink()
    moved = runs["headline"].with_name("moved-away")
    runs["headline"].rename(moved)
    try:
        again = tamebias.fit(None, None, run_dir=tmp_path / "child")
    finally:
        moved.rename(runs["headline"])
    assert again.lineage == result.lineage and not again.analysis_only


def test_a_missing_parent_fails_before_any_data_is_read(parents, tmp_path):
    runs, common = parents
    with pytest.raises(FileNotFoundError, match="init.weights: no checkpoint at"):
        adda_from(tmp_path / "nowhere", common, tmp_path)
    assert not (tmp_path / "child").exists()


def test_weight_settings_old_and_new_are_in_the_lineage():
    """``init.weights`` is the one setting that names another run; the method settings of
    older versions (``method.*_run``) are read as it, so loading weights and recording lineage
    cannot drift apart."""
    assert not [(name, field) for name, kind in METHODS.items() for field in
                vars(kind.Config()) if field.endswith("_run")], "reuse is init.weights"
    assert weight_sources({"method": {}, "init": {"weights": "/runs/x:translator,teacher"}}) \
        == [("init.weights", "/runs/x")]
    for method, knob in (("adda", "source_run"), ("cycada", "translator_run"),
                         ("cycada_pixel", "pixel_run"), ("dance", "source_run")):
        assert weight_sources({"method": {"name": method, knob: "/runs/y"}}) == [
            ("init.weights", "/runs/y")]
    assert lineage_of({"method": {"name": "oracle"}})["analysis_only"]
    assert not lineage_of({"method": {"name": "dann"}, "train": {"selection": "last"}})[
        "analysis_only"]
