"""CSV files with a header row, read so that every problem names its file and line.

Shared by the ``interactions`` data format and the client-assignment file of
``partition.scheme=file``: a quoted field may span lines, so line numbers come from the
parser; rows with the wrong number of fields are reported, never dropped silently.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fedscope.data.errors import ProblemLog
from fedscope.data.textio import read_text


@dataclass
class ParsedTable:
    header: list[str] | None
    rows: list[tuple[int, list[str]]]  # (the line the row starts on, its fields)
    error: tuple[int, str] | None = None  # where the CSV stopped parsing, and why

    def report_error(self, path: Path, log: ProblemLog) -> None:
        """Logged after the rows' own problems, so that a file's problems come in line order."""
        if self.error is not None:
            log.add(path, self.error[0], self.error[1])


def _rows(path: Path, log: ProblemLog) -> ParsedTable:
    """The header and the data rows with the line each starts on. A quoted field may span
    lines (a title with a newline), so lines are counted from the parser, not by splitting."""
    text = read_text(path, log=log)
    if not text.strip():
        log.add(path, None, "the file is empty: expected a header row, then one row per line")
        return ParsedTable(None, [])
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    parsed = ParsedTable(None, [])
    start = 1
    try:
        for row in reader:
            if parsed.header is None:
                parsed.header = [c.strip() for c in row]
            else:
                parsed.rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        # csv reads on to the end of the file looking for a closing quote; the row that
        # went wrong is the one that started here. Nothing after it can be read.
        parsed.error = (start, f"not valid CSV from this line on ({exc}); a quote left open?")
    return parsed


def _columns(
    path: Path, header: list[str], required: tuple[str, ...], log: ProblemLog
) -> dict[str, int] | None:
    position: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in position:
            log.add(path, 1, f"column {name!r} appears twice in the header")
            return None
        position[name] = i
    missing = [c for c in required if c not in position]
    if missing:
        log.add(
            path,
            1,
            f"the header lacks the column(s) {', '.join(missing)}; it must name "
            f"{', '.join(required)} (got {', '.join(header) or 'nothing'})",
        )
        return None
    return position


def read_table(
    path: Path, required: tuple[str, ...], log: ProblemLog
) -> tuple[ParsedTable, dict[str, int]] | None:
    """The parsed file and each header column's position; None when the header is unusable."""
    parsed = _rows(path, log)
    if parsed.header is None:
        return None
    col = _columns(path, parsed.header, required, log)
    return None if col is None else (parsed, col)


def complete_rows(
    path: Path, parsed: ParsedTable, log: ProblemLog
) -> Iterator[tuple[int, list[str]]]:
    """The rows with as many fields as the header; the others are reported."""
    assert parsed.header is not None
    width = len(parsed.header)
    for line, row in parsed.rows:
        if len(row) != width:
            log.add(path, line, f"expected {width} fields as in the header, got {len(row)}")
            continue
        yield line, row
