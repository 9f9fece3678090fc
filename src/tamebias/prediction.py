"""``tamebias predict``: a trained run's answers for new images.

Inputs are folders (one sub-folder per class: labeled; or images directly inside: unlabeled),
``.npz`` files (``x`` uint8, optional ``y``), image lists (``path [label]`` lines) or image
files. Folders and files are listed first and decoded one batch at a time, so a large folder
streams through bounded memory.
Each answer is the class name (or ``unknown`` when a category-shift run's rejection rule
rejects the image) and the softmax confidence of the top class.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .data.folder import list_images
from .data.imageset import DataError
from .data.lists import parse_image_list
from .data.readers import IMAGE_EXTENSIONS, is_class_folder, list_image_folder
from .data.vectors import read_array_npz
from .inference import UNKNOWN, LoadedRun, decode_image, load_run


@dataclass
class Inputs:
    """Images to predict: ``files`` decoded lazily, or ``images`` already in memory (uint8
    ``N x C x H x W``); ``names`` identify each image in the output, ``labels`` are class names
    where the input says them (None otherwise)."""

    names: list[str]
    labels: list[str | None]
    files: list[Path] | None = None
    images: Tensor | None = None

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class Predictions:
    rows: list[dict[str, Any]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    rejection: dict[str, Any] | None = None

    @property
    def counts(self) -> Counter:
        return Counter(row["prediction"] for row in self.rows)

    @property
    def labeled(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("label") is not None]

    @property
    def accuracy(self) -> float | None:
        """The fraction of labeled images answered with their label (a label the run does not
        know counts as ``unknown``); None without labels."""
        labeled = self.labeled
        if not labeled:
            return None
        known = set(self.classes)
        correct = sum(row["prediction"] == (row["label"] if row["label"] in known else UNKNOWN)
                      for row in labeled)
        return correct / len(labeled)


def _read_npz(path: Path) -> Inputs:
    """An ``.npz`` of uint8 images, labeled (``y``) or not, read by the data layer's reader."""
    images = read_array_npz(path, path.stem)
    if images.is_vectors:
        raise DataError(f"{path}: feature vectors; tamebias predict reads images (use "
                        "tamebias.load_run and the model on the vectors)")
    labels = ([images.classes[label] for label in images.labels.tolist()]
              if images.is_labeled else [None] * len(images))
    return Inputs([f"{path}#{index}" for index in range(len(images))], labels,
                  images=images.images)


def collect_inputs(inputs: Sequence[str | Path]) -> list[Inputs]:
    """Every INPUT of ``tamebias predict`` as :class:`Inputs`, in order: a labeled folder (one
    sub-folder per class), a folder of images, an ``.npz`` file, an image list
    (``data/lists.py``: ``path [label]`` lines) or image files. Files are listed, not decoded
    (``data/inputs.read_inputs`` is the in-memory reader of the same inputs)."""
    read: list[Inputs] = []
    loose: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            if is_class_folder(path):
                classes, samples = list_image_folder(path)
                read.append(Inputs([str(file) for file, _ in samples],
                                   [classes[label] for _, label in samples],
                                   files=[file for file, _ in samples]))
            else:
                files = list_images(path)
                read.append(Inputs([str(file) for file in files], [None] * len(files),
                                   files=files))
        elif path.suffix.lower() == ".npz" and path.is_file():
            read.append(_read_npz(path))
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            loose.append(path)
        elif path.is_file():  # any other file is an image list
            listed = parse_image_list(path)
            labels = ([None] * len(listed.files) if listed.labels is None
                      else [listed.classes[label] for label in listed.labels])
            read.append(Inputs([str(file) for file in listed.files], labels,
                               files=listed.files))
        else:
            raise DataError(f"{path} does not exist")
    if loose:
        read.append(Inputs([str(file) for file in loose], [None] * len(loose), files=loose))
    return read


def _batches(inputs: Inputs, loaded: LoadedRun, batch_size: int) -> Iterator[tuple[int, Tensor]]:
    """(start, preprocessed batch) pairs; files are decoded one batch at a time."""
    preprocess = loaded.preprocess
    for start in range(0, len(inputs), batch_size):
        if inputs.files is not None:
            chunk = torch.stack([decode_image(file, preprocess.size)
                                 for file in inputs.files[start : start + batch_size]])
        else:
            chunk = inputs.images[start : start + batch_size]
        chunk = preprocess.convert(chunk)
        yield start, chunk.to(preprocess.device).float().div_(255)


def predict_inputs(loaded: LoadedRun, inputs: list[Inputs], batch_size: int = 256,
                   on_batch: Callable[[int], None] | None = None) -> Predictions:
    """The run's answer for every image: name, prediction, confidence (and label, class index
    and, for category-shift runs, the top known class)."""
    labels = loaded.labels
    result = Predictions(classes=list(loaded.classes),
                         rejection=loaded.card().get("rejection"))
    for group in inputs:
        for start, batch in _batches(group, loaded, batch_size):
            answers, confidence, logits = loaded.predict_tensor(batch)
            top = logits.argmax(1)
            for offset, (answer, score, best) in enumerate(zip(
                    answers.tolist(), confidence.tolist(), top.tolist(), strict=True)):
                row = {"path": group.names[start + offset], "prediction": labels[answer],
                       "confidence": round(float(score), 6)}
                if loaded.rejection is not None:
                    row["top_class"] = loaded.classes[best]
                label = group.labels[start + offset]
                if label is not None:
                    row["label"] = label
                result.rows.append(row)
            if on_batch:
                on_batch(len(answers))
    return result


def write_predictions(predictions: Predictions, path: Path, run_dir: Path) -> Path:
    """CSV (one row per image) or JSON (the run, classes, rule and rows), by extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        record = {"run": str(run_dir), "classes": predictions.classes,
                  "rejection": predictions.rejection, "accuracy": predictions.accuracy,
                  "predictions": predictions.rows}
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
    if path.suffix.lower() != ".csv":
        raise DataError(f"{path}: the output must be a .csv or .json file")
    columns = ["path", "prediction", "confidence"]
    for extra in ("top_class", "label"):
        if any(extra in row for row in predictions.rows):
            columns.append(extra)
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, columns, restval="")
        writer.writeheader()
        writer.writerows(predictions.rows)
    return path


def predict(run_dir: str | Path, inputs: Sequence[str | Path], batch_size: int = 256,
            which: str = "selected", device: str | None = "cpu", progress: bool = False,
            ) -> Predictions:
    """Predict every image of ``inputs`` with the run's model (``tamebias predict``)."""
    loaded = load_run(run_dir, which, device)
    read = collect_inputs(inputs)
    total = sum(len(group) for group in read)
    if not progress:
        return predict_inputs(loaded, read, batch_size)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[bold]predict", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("predict", total=total)
        return predict_inputs(loaded, read, batch_size,
                              on_batch=lambda count: bar.advance(task, count))
