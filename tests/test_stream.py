"""The streaming path (data/stream.py): the same batches as the memory path for the same seed,
decoded in worker processes, and exact resume from the step number alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tamebias
from tamebias.api import build_run, build_streams
from tamebias.compose import load_config
from tamebias.data import domain
from tamebias.data.domain import prepare_data
from tamebias.data.imageset import DataError
from tamebias.data.stream import LazyImages


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """RGB JPEGs of mixed sizes: a labeled source folder, a flat unlabeled target folder and
    a labeled list test set."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    lines = []
    for index in range(30):
        label = index % 3
        pixels = rng.integers(0, 255, (18 + index % 5, 20, 3), dtype=np.uint8)
        pixels[:, 6 * label : 6 * label + 6] = 250
        for folder in (root / "source" / f"class{label}", root / "target"):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels // (1 if folder.name != "target" else 2)).save(
                folder / f"{index}.jpg")
        if index < 12:
            test = root / "test" / f"class{label}"
            test.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(test / f"{index}.png")
            lines.append(f"test/class{label}/{index}.png {label}")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return {"root": root}


def overrides(photos, *extra: str) -> list[str]:
    root = photos["root"]
    return [f"data.source=folder:{root / 'source'}", f"data.target=folder:{root / 'target'}",
            f"data.target_test=list:{root / 'test.txt'}", "data.size=16", "data.channels=1",
            "data.batch_size=8", "data.source_val_fraction=0.2", "data.augment.source=weak",
            "data.augment.target=weak", "method.name=dann", "method.steps=6",
            "train.log_every=3", "train.eval_every=3", "train.checkpoint_every=3",
            "train.progress=false", "train.threads=1", "data.workers=0",
            f"output_dir={root / 'runs'}", *extra]


def batches(config, steps) -> list:
    data, method, device = build_run(config)
    streams = build_streams(config, data, method, device)
    return [streams.batch(step) for step in steps], data


def test_streamed_and_memory_batches_are_identical(photos):
    memory, memory_data = batches(load_config(None, overrides(photos, "data.cache=memory")),
                                  range(6))
    stream, stream_data = batches(load_config(None, overrides(photos, "data.cache=stream")),
                                  range(6))
    assert isinstance(stream_data.source_train.images, LazyImages)
    assert not isinstance(memory_data.source_train.images, LazyImages)
    assert stream_data.protocol["cache"] == "stream" and memory_data.protocol["cache"] == "memory"
    for left, right in zip(memory, stream, strict=True):
        assert torch.equal(left.source.images, right.source.images)  # weak views included
        assert torch.equal(left.source.labels, right.source.labels)
        assert torch.equal(left.target.images, right.target.images)
    assert torch.equal(stream_data.target_test.images[:], memory_data.target_test.images)


def test_worker_processes_and_out_of_order_steps_give_the_same_batches(photos):
    config = load_config(None, overrides(photos, "data.cache=stream"))
    sequential, _ = batches(config, range(5))
    config = load_config(None, overrides(photos, "data.cache=stream", "data.workers=2"))
    jumping, _ = batches(config, [3, 4, 0, 1, 2])  # a resume mid-epoch, then a restart
    for step, batch in zip([3, 4, 0, 1, 2], jumping, strict=True):
        assert torch.equal(batch.source.images, sequential[step].source.images)
        assert torch.equal(batch.target.images, sequential[step].target.images)


def test_a_streamed_run_trains_like_a_memory_run_and_resumes_exactly(photos, monkeypatch):
    runs = photos["root"] / "runs"
    memory = tamebias.fit(None, overrides(photos, "data.cache=memory"), run_dir=runs / "memory")
    stream = tamebias.fit(None, overrides(photos, "data.cache=stream", "data.workers=1"),
                          run_dir=runs / "stream")
    assert stream.history == memory.history and stream.target == memory.target

    original, calls = domain.DomainStreams.batch, {"count": 0}

    def crash_at_step_five(self, step):
        calls["count"] += 1
        if calls["count"] == 5:
            raise KeyboardInterrupt  # the process dies mid-epoch, after the step-3 checkpoint
        return original(self, step)

    monkeypatch.setattr(domain.DomainStreams, "batch", crash_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        tamebias.fit(None, overrides(photos, "data.cache=stream"), run_dir=runs / "killed")
    monkeypatch.setattr(domain.DomainStreams, "batch", original)
    resumed = tamebias.fit(None, None, run_dir=runs / "killed")
    assert resumed.history == stream.history and resumed.target == stream.target
    shutil.rmtree(runs)


def test_auto_streams_above_the_memory_budget_and_needs_a_geometry(photos):
    small = prepare_data(load_config(None, overrides(
        photos, "data.cache=auto", "data.cache_budget_gb=1e-6")).data)
    assert small.protocol["cache"] == "stream"
    assert small.protocol["cache_estimate_gb"] == pytest.approx(72 * 3 * 16 * 16 / 1e9, abs=1e-3)
    large = prepare_data(load_config(None, overrides(photos, "data.cache=auto")).data)
    assert large.protocol["cache"] == "memory"
    config = load_config(None, [o for o in overrides(photos, "data.cache=stream")
                                if not o.startswith("data.size")])
    with pytest.raises(DataError, match="set data.size and data.channels"):
        prepare_data(config.data)
