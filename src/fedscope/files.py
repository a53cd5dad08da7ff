"""Writing files that other processes read while we write them.

Runs, experiment indexes and semantic stores are read by reports and by other commands while a
long job is still writing them, and a job can be killed at any moment. Every such file is
replaced atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader or a
SIGKILL sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks there
    fcntl = None  # type: ignore[assignment]


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Replace ``path`` with what ``write(binary_file)`` writes, atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target, so os.replace is a rename within one file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically and durably."""

    def write(fh: Any) -> None:
        fh.write(text.encode("utf-8"))

    atomic_write(path, write)


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive kernel lock on ``lock_file`` (created if missing), waiting for it.

    For short read-modify-write sections shared by processes, such as merging an experiment
    index. The kernel drops the lock with the process, so a killed holder never blocks others.
    """
    if fcntl is None:
        yield
        return
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable across a power loss; harmless where unsupported.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
