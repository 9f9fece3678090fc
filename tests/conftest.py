"""Shared fixtures: tiny synthetic domains written as npz files, and fast run configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_domain(count: int, seed: int, shift: float, size: int = 16, classes: int = 3):
    """Class c is a bright horizontal bar at row band c (plus noise); ``shift`` brightens the
    background, a simple domain shift."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    images = rng.normal(40 + 80 * shift, 20, (count, size, size))
    band = size // classes
    for index, label in enumerate(labels):
        images[index, label * band : label * band + band // 2 + 1, 2:-2] += 150
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_npz_domain(folder: Path, seed: int, shift: float, size: int = 16,
                     classes: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, offset in (("train", 96, 0), ("test", 48, 1000)):
        x, y = make_domain(count, seed + offset, shift, size, classes)
        np.savez(folder / f"{split}.npz", x=x, y=y)
    return folder


@pytest.fixture(scope="session")
def domains(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("domains")
    return {
        "source": f"npz:{write_npz_domain(root / 'source', 0, 0.0)}",
        "target": f"npz:{write_npz_domain(root / 'target', 7, 1.0)}",
    }


@pytest.fixture
def tiny_overrides(domains, tmp_path) -> list[str]:
    """A fast config on the tiny domains: LeNet at 16 px, a few steps, no progress bar."""
    return [
        f"data.source={domains['source']}", f"data.target={domains['target']}",
        "data.size=16", "data.channels=1", "data.batch_size=16", "data.source_val_fraction=0.2",
        "method.steps=6", "train.log_every=2", "train.eval_every=3", "train.checkpoint_every=2",
        "train.progress=false", "train.threads=1", f"output_dir={tmp_path / 'runs'}",
    ]



@pytest.fixture(scope="module")
def wide_plain_consoles():
    """Rich wraps and truncates table cells at 80 columns: give the CLI wide, uncolored
    consoles so values and paths can be read back from its output (``usefixtures``)."""
    from rich.console import Console

    from tamebias import cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "console", Console(width=400, color_system=None))
        patch.setattr(cli, "errors", Console(stderr=True, width=400, color_system=None))
        yield
