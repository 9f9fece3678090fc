"""Using a trained run: tamebias.load_run's three lines, `tamebias predict` (folders, npz,
files, category-shift answers) and `tamebias export` (TorchScript and ONNX parity)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tamebias
from tamebias.api import evaluate_run, restore_run
from tamebias.cli import app
from tamebias.evaluation.metrics import predict as evaluation_logits

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("wide_plain_consoles")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train(domains, folder: Path, *extra: str) -> Path:
    """A tiny LeNet run (batch norm, 16 px gray) on the npz domains of conftest."""
    overrides = [
        f"data.source={domains['source']}", f"data.target={domains['target']}",
        "data.size=16", "data.channels=1", "data.batch_size=16", "model.norm=bn",
        "method.steps=8", "train.eval_every=4", "train.log_every=4", "train.progress=false",
        "train.threads=1", *extra,
    ]
    tamebias.fit(overrides=overrides, run_dir=folder)
    return folder


@pytest.fixture(scope="module")
def run(domains, tmp_path_factory) -> Path:
    return train(domains, tmp_path_factory.mktemp("predict") / "run")


def write_class_folder(npz: Path, folder: Path, size: int | None = None) -> Path:
    """The npz images as PNG files in one sub-folder per class (``size``: resized first)."""
    with np.load(npz) as contents:
        x, y = contents["x"], contents["y"]
    for index, (image, label) in enumerate(zip(x, y, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image)
        if size:
            picture = picture.resize((size, size), Image.Resampling.NEAREST)
        picture.save(folder / str(label) / f"{index:03d}.png")
    return folder


def test_load_run_three_lines_give_the_evaluated_model_s_answers(run, domains, tmp_path):
    folder = write_class_folder(Path(domains["target"][4:]) / "test.npz", tmp_path / "images")
    files = sorted(folder.rglob("*.png"))[:5]

    model, preprocess, classes = tamebias.load_run(run)
    logits = model(preprocess(files))
    answers = [classes[i] for i in logits.argmax(1)]

    assert not model.training and classes == ["0", "1", "2"]
    assert len(answers) == 5 and set(answers) <= set(classes)
    # the same logits as the run's own evaluation path on the decoded images
    restored = restore_run(run, root=None, device="cpu")
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(f)))[None] for f in files])
    expected = evaluation_logits(restored.method.predict, pixels, torch.device("cpu"))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # arrays take the run's array path: numpy N x H x W uint8 and channels-first tensors
    torch.testing.assert_close(model(preprocess(pixels[:, 0].numpy())), expected)
    torch.testing.assert_close(model(preprocess(pixels.float() / 255)), expected)


def test_preprocess_converts_size_and_channels(run):
    _, preprocess, _ = tamebias.load_run(run)
    rgb = np.full((2, 20, 24, 3), (255, 0, 0), dtype=np.uint8)  # N x H x W x C, red
    out = preprocess(rgb)
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, round(0.299 * 255) / 255))
    card = preprocess.card()
    assert card["input_size"] == [16, 16] and card["channels"] == 1
    assert card["normalization"]["mean"] == [0.5] and card["normalization"]["std"] == [0.5]
    with pytest.raises(ValueError, match="cannot read images"):
        preprocess(3.5)


def test_predict_on_a_labeled_folder_reproduces_eval(run, domains, tmp_path):
    # 20 px files: predict and eval both decode and resize them to the run's 16 px
    folder = write_class_folder(Path(domains["target"][4:]) / "test.npz", tmp_path / "target",
                                size=20)
    evaluated = invoke("eval", run, "--dataset", f"folder:{folder}")
    assert evaluated.exit_code == 0, evaluated.output
    eval_accuracy = re.search(r"accuracy ([\d.]+)%", evaluated.output).group(1)

    output = tmp_path / "preds.csv"
    predicted = invoke("predict", run, folder, "-o", output, "--batch-size", 7)
    assert predicted.exit_code == 0, predicted.output
    assert f"accuracy {eval_accuracy}% on the 48 labeled images" in predicted.output
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 48 and set(rows[0]) == {"path", "prediction", "confidence", "label"}
    assert all(0 < float(row["confidence"]) <= 1 for row in rows)
    accuracy = np.mean([row["prediction"] == row["label"] for row in rows])
    reference = evaluate_run(run, f"folder:{folder}")
    assert accuracy == pytest.approx(reference.accuracy)


def test_predict_npz_unlabeled_folder_and_files_as_json(run, domains, tmp_path):
    npz = Path(domains["target"][4:]) / "test.npz"
    loose = tmp_path / "loose"
    loose.mkdir()
    with np.load(npz) as contents:
        x = contents["x"]
    for index in range(3):
        Image.fromarray(x[index]).save(loose / f"{index}.png")
    output = tmp_path / "preds.json"
    result = invoke("predict", run, npz, loose, loose / "0.png", "-o", output)
    assert result.exit_code == 0, result.output
    record = json.loads(output.read_text())
    rows = record["predictions"]
    assert len(rows) == 48 + 3 + 1 and record["classes"] == ["0", "1", "2"]
    assert rows[0]["path"] == f"{npz}#0" and "label" in rows[0] and "label" not in rows[-1]
    # the npz labels give eval's accuracy on that file
    assert record["accuracy"] == pytest.approx(evaluate_run(run, f"npz:{npz}").accuracy)
    # a PNG of an npz image is answered like the image itself
    assert rows[48]["prediction"] == rows[0]["prediction"] == rows[-1]["prediction"]


def test_predict_on_an_image_list_reads_its_labels(run, domains, tmp_path):
    folder = write_class_folder(Path(domains["target"][4:]) / "test.npz", tmp_path / "target")
    files = sorted(folder.rglob("*.png"))
    listing = tmp_path / "test.txt"
    listing.write_text("".join(f"{file.relative_to(tmp_path)} {file.parent.name}\n"
                               for file in files))
    output = tmp_path / "preds.json"
    result = invoke("predict", run, listing, "-o", output)
    assert result.exit_code == 0, result.output
    record = json.loads(output.read_text())
    assert len(record["predictions"]) == len(files) == 48
    assert record["accuracy"] == pytest.approx(evaluate_run(run, f"folder:{folder}").accuracy)


def test_predict_errors_exit_2_with_one_line(run, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for inputs, message in (([tmp_path / "missing"], "does not exist"),
                            # any other file is read as an image list
                            ([tmp_path / "notes.txt"], "notes.txt"),
                            ([tmp_path], "no images found")):
        (tmp_path / "notes.txt").touch()
        result = invoke("predict", run, *inputs)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    result = invoke("predict", tmp_path, tmp_path / "notes.txt")
    assert result.exit_code == 2 and "not a run directory" in result.output


@pytest.mark.parametrize(("threshold", "unknown"), [(1.01, True), (0.0, False)])
def test_predict_answers_unknown_by_the_run_s_rejection_rule(domains, tmp_path, threshold,
                                                            unknown):
    run = train(domains, tmp_path / "open", "data.shared_classes=[0,1]",
                "data.target_private=[2]", "train.rejection=confidence",
                f"train.rejection_threshold={threshold}")
    result = tamebias.predict(run, [Path(domains["target"][4:]) / "test.npz"])
    assert result.rejection == {"kind": "confidence", "threshold": threshold,
                                "unknown_index": 2}
    answers = {row["prediction"] for row in result.rows}
    assert answers == {"unknown"} if unknown else "unknown" not in answers
    assert all(row["top_class"] in ("0", "1") for row in result.rows)


def test_export_torchscript_matches_pytorch(run, tmp_path):
    loaded = tamebias.load_run(run)
    result = invoke("export", run, "--format", "torchscript", "-o", tmp_path / "m.pt")
    assert result.exit_code == 0, result.output
    extra = {"tamebias.json": ""}
    scripted = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    metadata = json.loads(extra["tamebias.json"])
    assert metadata["classes"] == ["0", "1", "2"]
    assert metadata["preprocessing"]["input_size"] == [16, 16]
    assert json.loads((tmp_path / "m.pt.json").read_text()) == metadata
    images = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(scripted(images), loaded.model(images), atol=1e-4, rtol=0)


def test_export_onnx_matches_pytorch(run, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    loaded = tamebias.load_run(run)
    path = tamebias.export_run(run, "onnx", tmp_path / "model.onnx")
    model = onnx.load(str(path))
    metadata = json.loads({p.key: p.value for p in model.metadata_props}["tamebias"])
    assert metadata["preprocessing"]["channels"] == 1 and metadata["format"] == "onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(7, 1, 16, 16, generator=torch.Generator().manual_seed(2))  # any batch
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), loaded.model(images), atol=1e-4,
                               rtol=0)


def test_export_with_an_unknown_format_exits_2(run):
    result = invoke("export", run, "--format", "tflite")
    assert result.exit_code == 2 and "--format must be one of onnx, torchscript" in result.output


def test_tensorboard_logging_mirrors_the_metrics(domains, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(domains, tmp_path / "tb", "train.tensorboard=true")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/target_accuracy", "eval/validators/snd", "source/loss"} <= tags
    history = json.loads((run / "result.json").read_text())["history"]
    logged = [(e.step, e.value) for e in events.Scalars("eval/target_accuracy")]
    assert logged == [(r["global_step"], pytest.approx(r["target_accuracy"])) for r in history]


def test_the_readme_s_three_lines_run(run, domains, tmp_path, capsys, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (code,) = [block for block in blocks if "tamebias.load_run" in block]
    assert len(code.strip().splitlines()) == 3
    folder = write_class_folder(Path(domains["target"][4:]) / "test.npz", tmp_path / "images")
    files = sorted(folder.rglob("*.png"))[:2]
    monkeypatch.chdir(tmp_path)
    for name, file in zip(("digit.png", "other.png"), files, strict=True):
        (tmp_path / name).write_bytes(file.read_bytes())
    code = re.sub(r'load_run\("[^"]+"\)', f'load_run("{run}")', code)
    exec(compile(code, "README.md", "exec"), {})
    printed = eval(capsys.readouterr().out)  # the printed list of class names
    model, preprocess, classes = tamebias.load_run(run)
    expected = [classes[i] for i in model(preprocess(files)).argmax(1)]
    assert printed == expected and len(printed) == 2
