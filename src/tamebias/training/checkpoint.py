"""Checkpoints: written atomically (temporary file, fsync, rename, fsync of the folder), read
back with ``weights_only=True`` so a checkpoint cannot run code, and kept in two generations
(``checkpoint.pt`` and ``checkpoint.previous.pt``) so one damaged or bad file never costs the
run: loading falls back to the older generation with a warning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..rundir import RunFileError, fsync_folder, warn, write_atomic
from .distributed import is_writer


class CheckpointError(RunFileError):
    """No usable checkpoint: the message names the files and what to do."""


def save_atomic(payload: dict[str, Any], path: str | Path) -> None:
    if not is_writer():  # a data-parallel run: rank 0 alone writes its files
        return
    write_atomic(path, lambda stream: torch.save(payload, stream), binary=True)


def previous(path: str | Path) -> Path:
    """The older generation of ``path``: ``checkpoint.pt`` -> ``checkpoint.previous.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_generation(payload: dict[str, Any], path: str | Path) -> None:
    """Write ``path`` atomically, keeping the checkpoint it replaces as :func:`previous`. A
    process killed at any point leaves at least one complete generation."""
    if not is_writer():
        return
    path = Path(path)
    save_atomic(payload, path.with_name(path.name + ".next"))
    if path.exists():
        os.replace(path, previous(path))
    os.replace(path.with_name(path.name + ".next"), path)
    fsync_folder(path.parent)


def exists(path: str | Path) -> bool:
    """Whether any generation of ``path`` (or a finished but unrenamed one) is on disk."""
    path = Path(path)
    return any(p.exists() for p in (path, previous(path), path.with_name(path.name + ".next")))


def load(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} is unreadable or corrupt ({type(error).__name__}: "
            f"{str(error)[:200]})") from error


def finite(state: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor of a state dict is finite."""
    return all(bool(torch.isfinite(value).all()) for value in state.values()
               if torch.is_tensor(value) and value.is_floating_point())


def load_latest(path: str | Path, device: str | torch.device = "cpu", repair: bool = False
                ) -> dict[str, Any]:
    """The newest usable generation of ``path``: a missing, torn or corrupt newest file (or
    one with non-finite weights) falls back to the previous generation with a warning. With
    ``repair`` (the trainer, holding the run's lock) an unusable newer file is renamed
    ``*.damaged`` so the next checkpoint does not rotate it over the good older one."""
    path = Path(path)
    repair = repair and is_writer()
    pending = path.with_name(path.name + ".next")  # killed between the two renames
    candidates = [p for p in (pending, path, previous(path)) if p.exists()]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint at {path}")
    problems, damaged = [], []
    for candidate in candidates:
        try:
            state = load(candidate, device)
            if not finite(state.get("method", {})):
                raise CheckpointError(f"checkpoint {candidate} holds non-finite weights")
        except CheckpointError as error:
            problems.append(str(error))
            damaged.append(candidate)
            continue
        if problems or candidate == previous(path):
            moved = ""
            if repair:
                for bad in damaged:
                    os.replace(bad, bad.with_name(bad.name + ".damaged"))
                moved = " (the damaged file is kept as *.damaged)" if damaged else ""
            warn(f"{'; '.join(problems) or f'{path} is missing'}; using the older "
                 f"checkpoint {candidate}{moved}")
        return state
    raise CheckpointError(
        f"{'; '.join(problems)}. No usable checkpoint is left in {path.parent}: delete "
        f"{', '.join(p.name for p in candidates)} to train this run again from the start")
