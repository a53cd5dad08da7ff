"""The machine's process table, read from Linux /proc.

Both the simulation driver (Ray's workers) and the local deployment launcher (Flower's
SuperLink and SuperNodes) must find the processes a run started and see them gone, also
when they were re-parented away from us. psutil would do it, but it is not a dependency
and a process table is all either needs.
"""

from __future__ import annotations

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
