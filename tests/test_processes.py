"""The /proc process table that the simulation driver and the deployment launcher share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedscope.processes import process_table

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def test_process_table_sees_this_process_and_a_child_and_its_end() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        table = process_table()
        me = table[os.getpid()]
        assert me.ppid == os.getppid()
        assert me.state in {"R", "S"}
        entry = table[child.pid]
        assert entry.ppid == os.getpid()
        assert entry.start >= me.start  # started after us, in clock ticks since boot
        assert entry.name.startswith("python")
    finally:
        child.communicate(b"")
    assert child.pid not in process_table()  # reaped: gone from the table


def test_process_table_keeps_names_with_spaces_and_parentheses(tmp_path: Path) -> None:
    # /proc/<pid>/stat puts the name between "(" and ")", and the name may hold both.
    odd = tmp_path / "a b) (c"
    odd.symlink_to(Path(sys.executable).resolve())
    child = subprocess.Popen(
        [str(odd), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        # The kernel keeps the first 15 bytes of the executable's name.
        assert process_table()[child.pid].name == "a b) (c"
    finally:
        child.communicate(b"")
