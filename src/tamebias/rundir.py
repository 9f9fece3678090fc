"""Run folders that lose nothing: atomic file writes (temporary file, fsync, rename, fsync of
the folder), one training process per folder (an OS lock the kernel releases when the process
dies), run names confined to the output folder, and clear errors for damaged run files.

This module imports nothing from tamebias, so every layer may use it."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

LOCK_FILE = ".lock"
TEMPORARY_SUFFIX = ".tmp"
# the records of folders that group runs (written by tamebias sweep / demo / diagnose)
SWEEP_FILE = "sweep.json"
DEMO_FILE = "demo.json"
DIAGNOSE_FILE = "diagnose.json"


class RunDir:
    """A run folder and the one place its file names are spelled: code asks for
    ``RunDir(path).best`` instead of writing ``path / "best.pt"``."""

    CONFIG: ClassVar[str] = "config.json"  # the full run config (resume reads it)
    PROTOCOL: ClassVar[str] = "protocol.json"  # data protocol: splits, geometry, classes
    LINEAGE: ClassVar[str] = "lineage.json"  # the runs it was built from (lineage.py)
    RESULT: ClassVar[str] = "result.json"  # records.RunResult, written when it finishes
    METRICS: ClassVar[str] = "metrics.jsonl"  # training logs and evaluation records
    CHECKPOINT: ClassVar[str] = "checkpoint.pt"  # the latest state (two generations)
    BEST: ClassVar[str] = "best.pt"  # the weights the selection rule picked
    ADABN: ClassVar[str] = "adabn.pt"  # AdaBN-adapted weights
    ADABN_SUMMARY: ClassVar[str] = "adabn.json"
    TENSORBOARD: ClassVar[str] = "tensorboard"  # a folder
    SUMMARY: ClassVar[str] = "summary.md"
    CONFUSION: ClassVar[str] = "confusion.png"
    CURVES: ClassVar[str] = "curves.png"
    TSNE: ClassVar[str] = "tsne.png"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def stage(self, name: str) -> Path:
        """The weights at the end of stage ``name`` (every stage but the last)."""
        return self.path / f"stage-{name}.pt"

    config = property(lambda self: self.path / self.CONFIG)
    protocol = property(lambda self: self.path / self.PROTOCOL)
    lineage = property(lambda self: self.path / self.LINEAGE)
    result = property(lambda self: self.path / self.RESULT)
    metrics = property(lambda self: self.path / self.METRICS)
    checkpoint = property(lambda self: self.path / self.CHECKPOINT)
    best = property(lambda self: self.path / self.BEST)
    adabn = property(lambda self: self.path / self.ADABN)
    adabn_summary = property(lambda self: self.path / self.ADABN_SUMMARY)
    tensorboard = property(lambda self: self.path / self.TENSORBOARD)
    summary = property(lambda self: self.path / self.SUMMARY)
    confusion = property(lambda self: self.path / self.CONFUSION)
    curves = property(lambda self: self.path / self.CURVES)
    tsne = property(lambda self: self.path / self.TSNE)

    def is_run(self) -> bool:
        """Whether the folder holds a run (its config is written before training starts)."""
        return self.config.exists()

    def is_finished(self) -> bool:
        return self.result.exists()

    def read_config(self, remedy: str = "") -> Any:
        return read_json(self.config, remedy)

    def write_json(self, name: str, value: Any) -> None:
        """``value`` as the JSON file ``name`` of this folder, written atomically."""
        write_json_atomic(self.path / name, value)


class RunFileError(ValueError):
    """A run file is damaged or a run folder cannot be used; the message names the file and
    what to do."""


class RunBusyError(RunFileError):
    """Another process is training in this run folder."""


def warn(message: str) -> None:
    """A one-line note on stderr (the CLI and the API both show it)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


# -- atomic writes ----------------------------------------------------------------------------
def fsync_folder(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(handle)
    except OSError:  # pragma: no cover - file systems without folder fsync
        pass
    finally:
        os.close(handle)


def write_atomic(path: str | Path, write: Any, binary: bool = False) -> None:
    """Write ``path`` through ``write(stream)`` into a temporary file beside it, fsync it and
    rename it over ``path``: a reader sees the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=TEMPORARY_SUFFIX,
                                         dir=path.parent)
    try:
        with os.fdopen(handle, "wb" if binary else "w") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda stream: stream.write(text))


def write_json_atomic(path: str | Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str | Path, remedy: str = "") -> Any:
    """A JSON file, or a RunFileError naming the file when it is empty or torn."""
    path = Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        state = "is empty" if not text.strip() else f"is not valid JSON ({error})"
        raise RunFileError(f"{path} {state}" + (f"; {remedy}" if remedy else "")) from error


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (only call this while
    holding the folder's lock: a live writer's temporary file is not a leftover)."""
    removed = []
    for leftover in Path(folder).glob(f"*{TEMPORARY_SUFFIX}"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


# -- names ------------------------------------------------------------------------------------
def confined(output_dir: str | Path, name: str, setting: str = "name") -> Path:
    """``output_dir / name``, refusing names that would leave ``output_dir`` (``../..``, an
    absolute path) or that name no folder at all."""
    candidate = Path(name)
    if (not name.strip() or candidate.is_absolute() or any(
            part in ("..", "") for part in candidate.parts) or name.strip() in (".",)):
        raise RunFileError(
            f"{setting}={name!r} must be a plain folder name inside the output folder "
            f"{output_dir} (no '..', no absolute path); to write elsewhere set output_dir "
            "or pass --run-dir")
    root = Path(output_dir).resolve()
    path = (root / candidate).resolve()
    if path != root and root not in path.parents:  # e.g. a symbolic link pointing out
        raise RunFileError(f"{setting}={name!r} resolves to {path}, outside the output folder "
                           f"{root}; choose another name")
    return Path(output_dir) / candidate


# -- one process per run folder ---------------------------------------------------------------
def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder while a process trains in it.

    POSIX: ``flock`` on ``RUN/.lock`` (the kernel drops it when the process dies, so a lock
    left by a killed process is never stale). Elsewhere: the file is created exclusively with
    the owner's pid, and a lock whose pid no longer runs on this host is taken over."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.handle: int | None = None

    def _busy(self) -> RunBusyError:
        return RunBusyError(
            f"{self.run_dir} is in use: {_holder(self.path)} is training in it (lock file "
            f"{self.path}); wait for it to finish, or give this run another folder "
            "(--run-dir or name=...)")

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        owner = f"process {os.getpid()} on {socket.gethostname()}"
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self._acquire_exclusive(owner)
        while True:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                raise self._busy() from None
            try:  # the file we locked may have been unlinked by a releasing holder: retry
                if os.fstat(handle).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(handle)
        os.ftruncate(handle, 0)
        os.write(handle, owner.encode())
        self.handle = handle
        return self

    def _acquire_exclusive(self, owner: str) -> RunLock:  # pragma: no cover - Windows
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                words = _holder(self.path).split()
                stale = (len(words) >= 4 and words[0] == "process" and words[1].isdigit()
                         and words[3] == socket.gethostname() and not _pid_alive(int(words[1])))
                if not stale:
                    raise self._busy() from None
                warn(f"removing the stale lock {self.path} ({' '.join(words)} no longer runs)")
                self.path.unlink(missing_ok=True)
                continue
            os.write(handle, owner.encode())
            self.handle = handle
            return self
        raise self._busy()

    def release(self) -> None:
        if self.handle is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: no one waits on a dead name
        os.close(self.handle)
        self.handle = None


@contextmanager
def hold_run(run_dir: str | Path) -> Iterator[RunLock]:
    """Hold ``run_dir``'s lock for the block; a second process gets :class:`RunBusyError`."""
    lock = RunLock(run_dir).acquire()
    try:
        yield lock
    finally:
        lock.release()
