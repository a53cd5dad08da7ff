"""Processes: the machine's process table (Linux /proc) and how ours react to signals.

Both the simulation driver (Ray's workers) and the local deployment launcher (Flower's
SuperLink and SuperNodes) must find the processes a run started and see them gone, also
when they were re-parented away from us. psutil would do it, but it is not a dependency
and a process table is all either needs. The commands that start children (the local
deployment, an experiment's training processes) turn SIGTERM into KeyboardInterrupt so that
their ``finally`` blocks stop those children, as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class ProcessEntry(NamedTuple):
    ppid: int
    start: int  # start time in clock ticks since boot: (pid, start) names one process
    name: str
    state: str  # "R", "S", ..., "Z" for a zombie


def process_table() -> dict[int, ProcessEntry]:
    """pid -> its entry, for every process visible in /proc; {} where there is no /proc."""
    table: dict[int, ProcessEntry] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # "pid (name) state ppid ... starttime(22nd field)"; the name may hold spaces and ")"
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = ProcessEntry(int(fields[1]), int(fields[19]), name, fields[0])
    return table


@contextlib.contextmanager
def signals_raise_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt), so ``finally`` blocks stop children.

    Only in the main thread (Python delivers signals there); elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send this process ``signum`` when its parent dies (prctl PDEATHSIG).

    For worker processes that must not train on, unseen, after the command that started
    them was killed (SIGKILL leaves it no chance to stop them). The standard library has no
    call for this, hence ctypes. Returns False where it is not available (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
