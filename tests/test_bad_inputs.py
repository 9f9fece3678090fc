"""The bad-input table: each case drives the command line in-process with something a careful
user could hand it (bad files, bad settings, damaged run folders) and checks the exit code,
that the one-line message names the cause, and that no traceback is printed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import make_domain, write_npz_domain
from typer.testing import CliRunner

import tamebias
from tamebias.cli import app
from tamebias.rundir import hold_run

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("wide_plain_consoles")


@pytest.fixture(scope="module")
def finished(domains, tmp_path_factory) -> Path:
    """A finished tiny run to damage (copied per case)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    tamebias.fit(None, [
        f"data.source={domains['source']}", f"data.target={domains['target']}",
        "data.size=16", "data.channels=1", "data.batch_size=16", "method.steps=2",
        "train.log_every=1", "train.eval_every=2", "train.checkpoint_every=1",
        "train.progress=false", "train.threads=1"], run_dir=run)
    return run


def fit_args(domains: dict[str, str], tmp: Path, *extra: str, source: str | None = None,
             target: str | None = None) -> list[str]:
    settings = [f"data.source={source or domains['source']}",
                f"data.target={target or domains['target']}", "data.batch_size=16",
                "method.steps=2", "train.progress=false", "train.threads=1",
                f"output_dir={tmp / 'runs'}", *extra]
    return ["fit", *[part for s in settings for part in ("--set", s)]]


def npz_domain(tmp: Path, train_labels: Callable[[np.ndarray], np.ndarray] | None = None,
               test_count: int = 48) -> str:
    folder = write_npz_domain(tmp / "odd", 3, 0.5)
    if train_labels is not None:
        x, y = make_domain(96, 3, 0.5)
        np.savez(folder / "train.npz", x=x, y=train_labels(y))
    if test_count == 0:
        np.savez(folder / "test.npz", x=np.zeros((0, 16, 16), np.uint8), y=np.zeros(0, int))
    return f"npz:{folder}"


def one_class(tmp: Path) -> str:
    x, y = make_domain(64, 3, 0.5)
    np.savez(tmp / "one.npz", x=x, y=np.zeros_like(y))
    return f"npz:{tmp / 'one.npz'}"


def stray_label(y: np.ndarray) -> np.ndarray:
    y = y.copy()
    y[0] = 100000
    return y


def copy_run(finished: Path, tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(finished, run)
    (run / "result.json").unlink()
    return run


def random_npz(tmp: Path) -> str:
    folder = write_npz_domain(tmp / "random", 3, 0.5)
    (folder / "train.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    return f"npz:{folder}"


def torn_results(tmp: Path) -> list[str]:
    (tmp / "results").mkdir()
    (tmp / "results" / "digits.json").write_text('{"suite": "digits", "rows": [{"ta')
    return ["bench", "--tables-only", "--results-dir", str(tmp / "results")]


def damaged(file: str, content: bytes | None = None, cut: bool = False):
    def prepare(finished: Path, tmp: Path) -> list[str]:
        run = copy_run(finished, tmp)
        path = run / file
        if cut:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])
            for older in run.glob("checkpoint.previous.pt"):
                older.unlink()
        else:
            path.write_bytes(content or b"")
        return ["fit", "--resume", str(run)]
    return prepare


def busy(finished: Path, tmp: Path) -> list[str]:
    return ["fit", "--resume", str(copy_run(finished, tmp))]


# id -> (how to build the command line, words the message must hold)
CASES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    # labels and geometry (issue 17, defect 5)
    "stray-label": (lambda d, t, f: fit_args(d, t, source=npz_domain(t, stray_label)),
                    ("odd", "0..K-1", "without any image")),
    "labels-from-1": (lambda d, t, f: fit_args(d, t, source=npz_domain(t, lambda y: y + 1)),
                      ("odd", "0..K-1", "(0) without any image")),
    "one-class": (lambda d, t, f: fit_args(d, t, source=one_class(t), target=one_class(t)),
                  ("one.npz", "1 class", "at least 2")),
    "huge-size": (lambda d, t, f: fit_args(d, t, "data.size=10000", "data.channels=1"),
                  ("GB once decoded", "memory budget", "data.size")),
    "empty-test-split": (lambda d, t, f: fit_args(d, t, target=npz_domain(t, test_count=0)),
                         ("test", "holds no images")),
    "nan-lr": (lambda d, t, f: fit_args(d, t, "method.optim.lr=1e400"),
               ("method.optim.lr", "finite positive")),
    "zero-lr": (lambda d, t, f: fit_args(d, t, "method.optim.lr=0"),
                ("method.optim.lr", "finite positive")),
    # smaller holes (defect 6)
    "name-escapes": (lambda d, t, f: fit_args(d, t, "name=../.."),
                     ("name='../..'", "inside the output folder")),
    "random-bytes-npz": (lambda d, t, f: fit_args(d, t, source=random_npz(t)),
                         ("train.npz", "not a valid .npz")),
    # damaged run files (defect 4)
    "empty-config-json": (lambda d, t, f: damaged("config.json")(f, t),
                          ("config.json is empty",)),
    "torn-checkpoint": (lambda d, t, f: damaged("checkpoint.pt", cut=True)(f, t),
                        ("checkpoint.pt is unreadable", "delete checkpoint.pt")),
    "damaged-metrics-line": (lambda d, t, f: damaged(
        "metrics.jsonl", b'{"a": 1}\nnot json\n{"b": 2}\n')(f, t),
        ("metrics.jsonl: line 2 is not valid JSON",)),
    "torn-results-json": (lambda d, t, f: torn_results(t),
                          ("digits.json is not valid JSON", "delete it")),
    # already handled before issue 17: they stay handled
    "missing-source-run": (lambda d, t, f: fit_args(
        d, t, "method.name=adda", f"init.weights={t / 'nowhere'}:classifier"),
        ("init.weights", "no checkpoint at")),
    "unknown-method": (lambda d, t, f: fit_args(d, t, "method.name=magic"),
                       ("magic", "method")),
    "unknown-dataset": (lambda d, t, f: fit_args(d, t, source="nosuchset"),
                        ("unknown dataset 'nosuchset'",)),
    "missing-npz": (lambda d, t, f: fit_args(d, t, source=f"npz:{t / 'absent.npz'}"),
                    ("absent.npz", "does not exist")),
    "bad-override": (lambda d, t, f: ["fit", "--set", "data.size"],
                     ("section.key=value",)),
    "class-mismatch": (lambda d, t, f: fit_args(
        d, t, target=f"npz:{write_npz_domain(t / 'four', 5, 1.0, classes=4)}"),
        ("class mismatch",)),
    "resume-not-a-run": (lambda d, t, f: ["fit", "--resume", str(t)],
                         ("is not a run directory",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_naming_the_cause(case, domains, finished, tmp_path, monkeypatch):
    # a 1 GB budget: the 10000 px case must be refused on a machine of any size
    monkeypatch.setenv("TAMEBIAS_MEMORY_BUDGET_GB", "1")
    build, words = CASES[case]
    args = [str(a) for a in build(domains, tmp_path, finished)]
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.pt")}
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (case, result.output)
    message = " ".join(result.stderr.split())
    assert all(word in message for word in words), (case, message)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    # refused before training: no checkpoint written or changed
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.pt")} == before


def test_a_busy_run_folder_exits_2_naming_the_lock(domains, finished, tmp_path):
    args = busy(finished, tmp_path)
    with hold_run(tmp_path / "run"):
        result = runner.invoke(app, args)
    assert result.exit_code == 2 and "is in use" in result.stderr
    assert "Traceback" not in result.output


def test_a_folder_outside_the_data_root_says_where_it_was_read(tmp_path, monkeypatch, capfd):
    from tamebias.data.datasets import load_dataset

    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        from PIL import Image

        Image.new("L", (8, 8), 40 if label == "a" else 200).save(folder / label / "0.png")
    load_dataset(f"folder:{folder}", "train", root=tmp_path / "data-root")
    err = capfd.readouterr().err
    assert f"is read from {folder.resolve()}, outside the data root" in err


def test_eval_of_a_category_shift_run_names_the_unknown_class(domains, tmp_path):
    run = tmp_path / "shift"
    tamebias.fit(None, [
        f"data.source={domains['source']}", f"data.target={domains['target']}",
        "data.size=16", "data.channels=1", "data.batch_size=16", "method.steps=2",
        "data.shared_classes=[0,1]", "data.target_private=[2]", "train.eval_every=2",
        "train.progress=false", "train.threads=1"], run_dir=run)
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    names = [row[1] for row in rows if len(row) >= 4 and row[0] == "│"]
    assert names[-1] == "unknown" and "2" not in names, result.output
    assert json.loads((run / "protocol.json").read_text())["setting"] == "open-set"
