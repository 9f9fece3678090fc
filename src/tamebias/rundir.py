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
from typing import Any

LOCK_FILE = ".lock"
TEMPORARY_SUFFIX = ".tmp"


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
