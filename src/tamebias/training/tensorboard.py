"""Optional TensorBoard logging (``train.tensorboard=true``): every record the run writes to
``metrics.jsonl`` also goes to ``RUN/tensorboard`` through torch's ``SummaryWriter``, numbers
by their key (nested tables as ``validators/snd``), evaluations under ``eval/``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .log import JsonLines


def _scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    values = {}
    for key, value in record.items():
        if key in ("step", "global_step"):
            continue
        if isinstance(value, dict):
            values.update(_scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            values[f"{prefix}{key}"] = float(value)
    return values


class TensorBoardLines:
    """A ``JsonLines`` log that also writes its numbers to a TensorBoard event file."""

    def __init__(self, lines: JsonLines, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch imports tensorboard lazily
            raise ConfigError("train.tensorboard=true needs the tensorboard package: "
                              "pip install tensorboard") from error
        self.lines = lines
        self.path = lines.path
        self.writer = SummaryWriter(str(folder))

    def write(self, record: dict[str, Any]) -> None:
        self.lines.write(record)
        step = int(record.get("global_step", 0))
        prefix = "eval/" if record.get("event") == "eval" else f"{record.get('stage', 'train')}/"
        for key, value in _scalars({k: v for k, v in record.items()
                                    if k not in ("event", "stage")}, prefix).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def keep_until(self, global_step: int) -> None:
        self.lines.keep_until(global_step)
