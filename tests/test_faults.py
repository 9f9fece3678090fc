"""Fault injection: a run killed with SIGKILL at random points (between steps, in the middle of
a checkpoint write, between the two renames that keep two checkpoint generations, in the
middle of a metrics line) resumes to exactly the run that was never interrupted."""

from __future__ import annotations

import io
import os
import random
import signal
import sys

import pytest
import torch

import tamebias
from tamebias.methods import common
from tamebias.training import checkpoint
from tamebias.training.log import JsonLines, read_json_lines

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(kind: str, when: int) -> None:
    """In the child: SIGKILL this process at the ``when``-th occurrence of ``kind``."""
    count = {"n": 0}

    def due() -> bool:
        count["n"] += 1
        return count["n"] == when

    if kind == "step":
        original_step = common.classification_step

        def step(*args):
            if due():
                die()
            return original_step(*args)

        common.classification_step = step
    elif kind == "checkpoint-write":  # half the bytes reach the disk, then the kill
        original_save = torch.save

        def save(payload, stream, *args, **kwargs):
            if not due():
                return original_save(payload, stream, *args, **kwargs)
            buffer = io.BytesIO()
            original_save(payload, buffer)
            stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            stream.flush()
            die()

        torch.save = save
    elif kind == "between-renames":  # checkpoint.pt already moved to checkpoint.previous.pt
        original_replace = os.replace

        def replace(source, target, *args, **kwargs):
            if str(source).endswith("checkpoint.pt.next") and due():
                die()
            return original_replace(source, target, *args, **kwargs)

        os.replace = replace
    elif kind == "metrics-line":  # a torn last line in metrics.jsonl
        original_write = JsonLines.write

        def write(self, record):
            if due():
                with self.path.open("a") as stream:
                    stream.write('{"stage": "source", "st')
                die()
            return original_write(self, record)

        JsonLines.write = write


def run_killed(overrides: list[str], run_dir, kind: str, when: int) -> bool:
    """Train in a forked child armed to die; True when it was killed, False when it finished
    before the armed point."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the child exits right after
            arm(kind, when)
            tamebias.fit(None, overrides, run_dir=run_dir)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the child failed instead of being killed"
    return False


def test_random_kills_then_resume_is_bit_identical(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "method.steps=8", "train.checkpoint_every=2",
                 "train.log_every=1", "train.eval_every=3"]
    full = tamebias.fit(None, overrides, run_dir=tmp_path / "full")
    run = tmp_path / "killed"
    rng = random.Random(17)
    plan = [("step", rng.randint(2, 7)), ("checkpoint-write", rng.randint(1, 2)),
            ("between-renames", 1), ("metrics-line", rng.randint(1, 4)),
            ("step", rng.randint(1, 3))]
    kills = 0
    for kind, when in plan:
        kills += run_killed(overrides, run, kind, when)
        if kind == "checkpoint-write":
            assert list(run.glob("*.tmp")), "the simulated kill left no torn file"
        if kind == "between-renames":
            assert not (run / "checkpoint.pt").exists()  # only the two other names hold it
    assert kills >= 4, plan
    resumed = tamebias.fit(None, None, run_dir=run)

    assert resumed.target == full.target and resumed.history == full.history
    assert read_json_lines(run / "metrics.jsonl") == read_json_lines(
        tmp_path / "full" / "metrics.jsonl")
    final = checkpoint.load(tmp_path / "full" / "checkpoint.pt")["method"]
    again = checkpoint.load(run / "checkpoint.pt")["method"]
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)
    assert not list(run.glob("*.tmp")) and not (run / "checkpoint.pt.next").exists()
