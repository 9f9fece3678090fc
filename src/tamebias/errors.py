"""Errors the command line turns into one-line messages; importing this loads no torch."""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """A loss or a weight became NaN or infinite; the last good checkpoints are kept."""
