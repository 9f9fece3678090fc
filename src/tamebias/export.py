"""Export a run's classifier (ONNX or TorchScript) with its preprocessing as metadata.

The exported graph takes ``N x C x H x W`` float images in [0, 1] (the output of the run's
``preprocess``; the per-channel normalization is inside the graph) and returns class logits.
The metadata (input size, channels, normalization, class names, open-set rule) goes beside the
weights: ONNX ``metadata_props`` under the key ``tamebias`` (JSON), TorchScript an extra file
``tamebias.json`` (``torch.jit.load(path, _extra_files={"tamebias.json": ""})``), and in both
cases a ``FILE.json`` sidecar.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .inference import LoadedRun, load_run

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
METADATA_KEY = "tamebias"


class ExportError(ValueError):
    """An export cannot be made as asked (format, missing package)."""


def _example(loaded: LoadedRun, batch: int = 2) -> torch.Tensor:
    size, channels = loaded.preprocess.size, loaded.preprocess.channels
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, channels, size, size, generator=generator)


def export_torchscript(loaded: LoadedRun, path: Path, metadata: str) -> None:
    model = loaded.model.cpu().eval()
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in recent torch releases but still what C++ and older
        # runtimes load; the export is checked against the eager model by the tests
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, _example(loaded), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": metadata})


def export_onnx(loaded: LoadedRun, path: Path, metadata: str, opset: int = 17) -> None:
    try:
        import onnx
    except ImportError as error:
        raise ExportError("ONNX export needs the onnx package: pip install 'tamebias[export]' "
                          "(onnx, onnxruntime)") from error
    model = loaded.model.cpu().eval()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript-based exporter (deprecated, still shipped): needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (_example(loaded),), str(path), input_names=["images"],
                          output_names=["logits"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata
    graph.doc_string = ("tamebias classifier: images N x C x H x W in [0, 1] -> class logits; "
                        f"see metadata_props['{METADATA_KEY}']")
    onnx.save(graph, str(path))


def export_run(run_dir: str | Path, format: str = "onnx", output: str | Path | None = None,
               which: str = "selected") -> Path:
    """Write the run's classifier as ``output`` (default ``RUN/model.onnx`` or
    ``RUN/model.pt``) and its metadata as ``output + .json``; returns the model path."""
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    loaded = load_run(run_dir, which, device="cpu")
    path = Path(output) if output is not None else Path(run_dir) / f"model{FORMATS[format]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    card = {**loaded.card(), "format": format, "input": "images", "output": "logits",
            "which": which}
    metadata = json.dumps(card, indent=2)
    if format == "onnx":
        export_onnx(loaded, path, metadata)
    else:
        export_torchscript(loaded, path, metadata)
    Path(f"{path}.json").write_text(metadata + "\n")
    return path
