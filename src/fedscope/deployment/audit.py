"""Which files a process opens: a Python audit hook for checking a node's data access.

With ``FEDSCOPE_AUDIT_OPENS=<file>`` in its environment, a ClientApp process appends one
line ``<pid>\\t<absolute path>`` to ``<file>`` for every file Python opens (the ``open``
audit event: ``open()``, ``io.open``, ``os.open``, and everything built on them, such as
``numpy.load`` and ``pathlib``). The deployment test reads it to check that a node opened
its own bundle and nothing of another node's or of the shared data.

An audit hook cannot be removed, so this is a test and diagnosis aid, off unless the
variable is set; it costs one string write per opened file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

AUDIT_ENV = "FEDSCOPE_AUDIT_OPENS"

_installed: set[str] = set()


def install_open_audit(log_path: Path) -> None:
    """Record every file this process opens from now on in ``log_path``."""
    log_path = Path(log_path).resolve()
    if str(log_path) in _installed:
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Opened before the hook exists, so writing the log never reports itself.
    sink = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
    pid = os.getpid()

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "open" or not args:
            return
        target = args[0]
        if not isinstance(target, str | bytes | os.PathLike):
            return  # an already open descriptor
        try:
            path = os.path.abspath(os.fsdecode(os.fspath(target)))
            sink.write(f"{pid}\t{path}\n")
        except (OSError, ValueError):
            pass  # auditing must never break the audited code

    sys.addaudithook(hook)
    _installed.add(str(log_path))


def install_open_audit_from_env() -> None:
    """:func:`install_open_audit` when ``FEDSCOPE_AUDIT_OPENS`` is set, else nothing."""
    target = os.environ.get(AUDIT_ENV)
    if target:
        install_open_audit(Path(target))


def read_opened_paths(log_path: Path) -> set[Path]:
    """The distinct paths an audit log recorded (from every process that wrote to it)."""
    log_path = Path(log_path)
    if not log_path.is_file():
        return set()
    paths: set[Path] = set()
    for line in log_path.read_text(encoding="utf-8").splitlines():
        _, _, path = line.partition("\t")
        if path:
            paths.add(Path(path))
    return paths
