"""Run logging: metrics as JSON lines, and a rich progress bar with ETA and live metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..rundir import RunFileError, warn, write_text_atomic


class JsonLines:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as stream:
            stream.write(json.dumps(record, allow_nan=True) + "\n")

    def keep_until(self, global_step: int) -> None:
        """Drop the records past ``global_step``: what a killed process logged after its last
        checkpoint is logged again when the run resumes (0: a fresh start, nothing kept). A
        torn last line (the process died while writing it) is dropped with a warning."""
        if not self.path.exists():
            return
        kept = [line for line, record in _parse(self.path, warn_torn=True)
                if record.get("global_step", 0) <= global_step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))


def _parse(path: Path, warn_torn: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) pairs of a JSON-lines file; a torn last line is skipped (the mark of
    a process killed mid-write), a damaged line before it is an error naming the file."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                if warn_torn:
                    warn(f"{path}: dropped its torn last line {number} (the process writing "
                         "it was stopped)")
                break
            raise RunFileError(
                f"{path}: line {number} is not valid JSON ({error}); delete that line or "
                "the file (it is a log; resume rewrites it from the checkpoint)") from error
        if not isinstance(record, dict):
            raise RunFileError(f"{path}: line {number} is not a JSON object")
        parsed.append((line, record))
    return parsed


def read_json_lines(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [record for _, record in _parse(path)]


def format_metrics(metrics: dict[str, float]) -> str:
    parts = []
    for key, value in metrics.items():
        parts.append(f"{key} {value:.3g}" if math.isfinite(value) else f"{key} {value}")
    return "  ".join(parts)


class ProgressBar:
    """One bar per run; the description names the stage, the trailing text shows metrics."""

    def __init__(self, total: int, title: str, enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task(title, total=total, metrics="")
        self.progress.start()

    def advance_to(self, completed: int, description: str, metrics: dict[str, float]) -> None:
        if self.enabled:
            self.progress.update(
                self.task, completed=completed, description=description,
                metrics=format_metrics(metrics),
            )

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()
