"""A trained run as a ready model: ``tamebias.load_run(RUN)`` gives the classifier in eval mode,
the run's input preprocessing as a callable, and the class names, so user code predicts in
three lines::

    model, preprocess, classes = tamebias.load_run("runs/demo/adda+bn+aug")
    logits = model(preprocess(["digit.png", "other.png"]))
    print([classes[i] for i in logits.argmax(1)])

The preprocessing is the one the run's data went through (``protocol.json``): image files are
decoded as RGB and resized bilinearly to the run's square input size (as ``folder:`` datasets
are), arrays are resized bilinearly with antialiasing (as named and ``npz:`` datasets are),
RGB becomes gray by BT.601 luma and gray becomes RGB by repetition, and uint8 pixels are
scaled to [0, 1]. The model normalizes per channel itself (``(x - mean) / std``, recorded in
:meth:`Preprocess.card`), so exported models take the same [0, 1] tensor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .api import rejection_rule, restore_run
from .data.imageset import DataError, ImageSet
from .data.transforms import to_geometry

UNKNOWN = "unknown"


def decode_image(path: str | Path, size: int) -> Tensor:
    """One image file as uint8 ``3 x size x size``: decoded as RGB and resized bilinearly, as
    the ``folder:`` reader does."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: cannot decode the image ({error})") from error
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def _as_uint8_batch(images: Any) -> Tensor:
    """An array batch as uint8 ``N x C x H x W``. numpy arrays are channels-last, as PIL and
    image libraries give them (``H x W``, ``H x W x C``, ``N x H x W``, ``N x H x W x C``);
    tensors are channels-first (``H x W``, ``C x H x W``, ``N x C x H x W``). uint8 values are
    pixels; floating-point values are read as [0, 1]."""
    if isinstance(images, np.ndarray):
        array = images
        if array.ndim == 2:
            array = array[None, :, :, None]
        elif array.ndim == 3:
            array = array[None] if array.shape[-1] in (1, 3) else array[..., None]
        if array.ndim != 4:
            raise DataError(f"expected H x W, H x W x C, N x H x W or N x H x W x C images, "
                            f"got an array of shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
    elif isinstance(images, Tensor):
        tensor = images.detach().cpu()
        tensor = tensor[None, None] if tensor.ndim == 2 else tensor
        tensor = tensor[None] if tensor.ndim == 3 else tensor
        if tensor.ndim != 4:
            raise DataError(f"expected H x W, C x H x W or N x C x H x W tensors, got shape "
                            f"{tuple(tensor.shape)}")
    else:
        raise DataError(f"cannot read images from a {type(images).__name__} (give paths, PIL "
                        "images, numpy arrays or tensors)")
    if tensor.is_floating_point():
        tensor = tensor.mul(255).round_().clamp_(0, 255)
    elif tensor.dtype != torch.uint8:
        tensor = tensor.clamp(0, 255)
    return tensor.to(torch.uint8)


class Preprocess:
    """The run's input preprocessing: paths, PIL images, numpy arrays or tensors in, a float
    ``N x C x size x size`` tensor in [0, 1] out (on the model's device)."""

    def __init__(self, size: int, channels: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu") -> None:
        self.size, self.channels = size, channels
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.device = torch.device(device)

    def card(self) -> dict[str, Any]:
        """What an exported model records beside its weights."""
        return {"input_size": [self.size, self.size], "channels": self.channels,
                "input_range": [0.0, 1.0], "layout": "NCHW",
                "scaling": "uint8 pixels / 255",
                "normalization": {"mean": self.mean, "std": self.std,
                                  "applied": "inside the model: (x - mean) / std"},
                "resize": "bilinear (image files: PIL on decode; arrays: antialiased)",
                "color": "RGB -> gray by BT.601 luma; gray -> RGB by repetition"}

    def to_uint8(self, images: Any) -> Tensor:
        """Images as uint8 ``N x C x size x size`` in the run's geometry."""
        from PIL import Image

        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        if isinstance(images, (list, tuple)):
            parts = []
            for item in images:
                if isinstance(item, (str, Path)):
                    item = decode_image(item, self.size)
                elif isinstance(item, Image.Image):
                    item = np.asarray(item.convert("RGB"))
                parts.append(self.convert(_as_uint8_batch(item)))
            if not parts:
                return torch.empty(0, self.channels, self.size, self.size, dtype=torch.uint8)
            return torch.cat(parts)
        return self.convert(_as_uint8_batch(images))

    def convert(self, images: Tensor) -> Tensor:
        """uint8 ``N x C x H x W`` (C 1 or 3) to the run's size and channels."""
        converted = to_geometry(ImageSet(images, torch.zeros(len(images), dtype=torch.int64),
                                          ["image"], "input"), self.size, self.channels)
        return converted.images

    def __call__(self, images: Any) -> Tensor:
        return self.to_uint8(images).to(self.device).float().div_(255)


@dataclass
class LoadedRun:
    """A finished run ready to predict; unpacks as ``model, preprocess, classes``.

    ``model`` maps the [0, 1] tensor of ``preprocess`` to class logits (eval mode, no
    gradients). ``rejection`` is the run's open-set rule for category-shift runs (an index
    ``len(classes)`` means "unknown"), else None."""

    model: nn.Module
    preprocess: Preprocess
    classes: list[str]
    rejection: Any
    run: Any  # api.TrainedRun: config, method, protocol, device
    run_dir: Path

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.preprocess, self.classes))

    @property
    def labels(self) -> list[str]:
        """Answer names: the classes, plus "unknown" for category-shift runs."""
        return self.classes + ([UNKNOWN] if self.rejection is not None else [])

    @torch.no_grad()
    def predict_tensor(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For a preprocessed batch: answer index (``len(classes)`` = unknown), the softmax
        confidence of the top class, and the logits."""
        logits = self.model(images).float()
        confidence, answers = logits.softmax(1).max(1)
        if self.rejection is not None:
            answers = self.rejection.predict(logits)
        return answers, confidence, logits

    def card(self) -> dict[str, Any]:
        """The metadata an export records: preprocessing, classes, the rejection rule."""
        card = {"tamebias_run": str(self.run_dir), "method": self.run.config.method.name,
                "backbone": self.run.config.model.backbone, "classes": self.classes,
                "preprocessing": self.preprocess.card()}
        if self.rejection is not None:
            card["rejection"] = {"kind": self.rejection.kind,
                                 "threshold": self.rejection.threshold,
                                 "unknown_index": len(self.classes)}
        return card


def load_run(run_dir: str | Path, which: str = "selected", device: str | None = "cpu",
             root: str | None = None) -> LoadedRun:
    """A finished run's model (``which``: ``selected``, ``last``, ``adabn`` or
    ``stage:NAME``, as ``tamebias eval``), its preprocessing and its class names."""
    run = restore_run(run_dir, which, root, device)
    protocol = run.protocol
    size, _, channels = (int(v) for v in protocol["input"].split("x"))
    model = run.method.classifier.eval().requires_grad_(False)
    preprocess = Preprocess(size, channels, model.mean.flatten().tolist(),
                            model.std.flatten().tolist(), run.device)
    rule = rejection_rule(run.config, run.method, protocol)
    return LoadedRun(model, preprocess, list(protocol["classes"]), rule, run, Path(run_dir))
