"""Data-parallel training (training/distributed.py) on CPU: 2 processes, gloo. A run with
global batch B on 2 ranks equals a single-process run with batch B; only rank 0 writes; a
data-parallel run stopped mid-way resumes exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tamebias import api
from tamebias.training import checkpoint
from tamebias.training.distributed import ShardedStreams

WORLD = 2
DIMENSIONS = 12


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, port: int, function, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        function(*args)
    finally:
        dist.destroy_process_group()


def run_parallel(function, *args) -> None:
    """``function(*args)`` on 2 local ranks (gloo), as torchrun would start them."""
    # fork: the ranks start from this process, torch and tamebias already imported
    mp.start_processes(_worker, args=(_free_port(), function, args), nprocs=WORLD,
                       join=True, start_method="fork")


def fit_then_stop(overrides: list[str], run_dir: str, stop_at: int) -> None:
    """``api.fit`` whose every rank dies at step ``stop_at`` (after a checkpoint)."""
    original = ShardedStreams.batch

    def batch(self, step: int):
        if step == stop_at:
            raise RuntimeError(f"killed at step {step}")
        return original(self, step)

    ShardedStreams.batch = batch
    api.fit(None, overrides, run_dir=run_dir)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> dict[str, str]:
    """Three Gaussian classes in 12 dimensions; the target shifted (mlp backbone: batch
    norm, no dropout, so the run is a function of the global batch alone)."""
    root = tmp_path_factory.mktemp("ddp-vectors")
    centers = np.random.default_rng(0).normal(0, 3, (3, DIMENSIONS))

    def clusters(count: int, seed: int, shift: float):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 3, count)
        x = centers[labels] + rng.normal(0, 1, (count, DIMENSIONS)) + shift
        return x.astype(np.float32), labels.astype(np.int64)

    for name, count, seed, shift in (("source", 120, 1, 0.0), ("target", 120, 2, 2.0),
                                     ("test", 60, 3, 2.0)):
        x, y = clusters(count, seed, shift)
        np.savez(root / f"{name}.npz", x=x, y=y)
    return {name: f"npz:{root / name}.npz" for name in ("source", "target", "test")}


def overrides_for(vectors: dict[str, str], method: str, *extra: str) -> list[str]:
    return [f"data.source={vectors['source']}", f"data.target={vectors['target']}",
            f"data.target_test={vectors['test']}", f"method.name={method}",
            "model.backbone=mlp", "model.mlp_widths=[16,8]", "data.batch_size=16",
            "data.source_val_fraction=0.2", "method.steps=6", "train.log_every=3",
            "train.eval_every=3", "train.checkpoint_every=3", "train.progress=false",
            "train.threads=1", "train.device=cpu",
            # SGD: Adam divides the float-rounding-sized gradient of a bias that feeds a batch
            # norm (zero in exact arithmetic) by its own size, so any summation order moves it
            # by a whole step; clipping acts on the averaged gradient
            "method.optim.name=sgd", "method.optim.lr=0.05", "method.optim.clip_grad_norm=5.0",
            *extra]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoint.pt")["method"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_records(parallel: list[dict], single: list[dict]) -> None:
    assert len(parallel) == len(single)  # rank 1 appended nothing
    for left, right in zip(parallel, single, strict=True):
        assert left.keys() == right.keys()
        for key, value in right.items():
            if isinstance(value, float):
                assert left[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
            elif key != "validators":
                assert left[key] == value, key


def fit_both(vectors: dict[str, str], folder: Path, method: str, *extra: str):
    """The same config trained by one process and by 2 ranks (batch 16 = 2 x 8)."""
    settings = overrides_for(vectors, method, *extra)
    single = api.fit(None, settings, run_dir=folder / "single")
    run_parallel(api.fit, None, settings, str(folder / "parallel"))
    return settings, single


@pytest.fixture(scope="module")
def dann_runs(vectors, tmp_path_factory):
    """DANN with domain-specific batch norm (one synchronized norm per domain)."""
    folder = tmp_path_factory.mktemp("ddp-dann")
    return folder, *fit_both(vectors, folder, "dann", "model.norm=dsbn")


@pytest.fixture(scope="module")
def source_only_runs(vectors, tmp_path_factory):
    """Source only with batch norm (a synchronized norm over the global batch)."""
    folder = tmp_path_factory.mktemp("ddp-source-only")
    return folder, *fit_both(vectors, folder, "source_only")


@pytest.mark.parametrize("runs", ["source_only_runs", "dann_runs"])
def test_two_ranks_with_global_batch_equal_one_process(runs, request):
    folder, settings, single = request.getfixturevalue(runs)
    parallel_weights, single_weights = weights(folder / "parallel"), weights(folder / "single")
    assert parallel_weights.keys() == single_weights.keys()
    for key, value in single_weights.items():  # batch-norm statistics included
        torch.testing.assert_close(parallel_weights[key], value, rtol=1e-4, atol=1e-5,
                                   msg=lambda text, key=key: f"{key}: {text}")
    initial = api.build_run(api.load_config(None, settings))[1].state_dict()
    assert any(not torch.equal(value, parallel_weights[key]) for key, value in initial.items()
               if value.is_floating_point())  # training did move the weights
    # the same files, written once: only rank 0 writes
    assert sorted(p.name for p in (folder / "parallel").iterdir()) == sorted(
        p.name for p in (folder / "single").iterdir())
    assert_same_records(records(folder / "parallel"), records(folder / "single"))
    result = json.loads((folder / "parallel" / "result.json").read_text())
    assert result["target"]["accuracy"] == pytest.approx(single.accuracy, abs=1e-9)
    assert result["steps"] == single.steps == 6


def test_a_data_parallel_run_stopped_mid_way_resumes_exactly(dann_runs, tmp_path):
    folder, settings, _ = dann_runs
    with pytest.raises(Exception, match="killed at step 4"):
        run_parallel(fit_then_stop, settings, str(tmp_path / "stopped"), 4)
    assert checkpoint.load(tmp_path / "stopped" / "checkpoint.pt")["stage_step"] == 3
    run_parallel(api.fit, None, None, str(tmp_path / "stopped"))  # resume: its saved config

    whole, resumed = weights(folder / "parallel"), weights(tmp_path / "stopped")
    for key, value in whole.items():
        assert torch.equal(resumed[key], value), key
    assert_same_records(records(tmp_path / "stopped"), records(folder / "parallel"))


def test_fit_nproc_launches_torchrun_and_reports_once(vectors, tmp_path):
    run_dir = tmp_path / "cli"
    command = [sys.executable, "-m", "tamebias", "fit", "--nproc", "2", "--run-dir",
               str(run_dir), *(item for value in overrides_for(vectors, "source_only")
                               for item in ("--set", value))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("target acc %") == 1  # rank 0 alone prints the result
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 6
    assert len(records(run_dir)) == 2 + 2  # logged and evaluated at steps 3 and 6


def test_a_global_batch_that_does_not_divide_among_ranks_is_refused():
    from tamebias.data.batch import DomainBatch, LabeledBatch
    from tamebias.training.distributed import Distributed

    group = Distributed.__new__(Distributed)
    group.rank, group.world, group.writer = 0, 2, True
    batch = DomainBatch(LabeledBatch(torch.zeros(5, 3), torch.zeros(5), torch.arange(5)))
    with pytest.raises(ValueError, match="batch_size 5 .* divide evenly among the 2"):
        group.shard(batch)
    halves = DomainBatch(LabeledBatch(torch.arange(8.0).view(4, 2), torch.arange(4),
                                      torch.arange(4)))
    group.rank = 1
    assert group.shard(halves).source.indices.tolist() == [2, 3]
