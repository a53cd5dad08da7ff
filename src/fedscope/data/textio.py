"""Reading text files line by line with problems reported per file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fedscope.data.errors import DataError, Problem, ProblemLog


def is_uint(text: str) -> bool:
    """A non-negative decimal integer (surrounding whitespace allowed).

    ``str.isdigit()`` alone accepts characters such as "²" that ``int()`` rejects, which would
    turn a bad field into an uncaught ValueError instead of a reported problem.
    """
    t = text.strip()
    return t.isascii() and t.isdigit()


def _line_of_offset(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def read_text(path: Path, encoding: str = "utf-8", log: ProblemLog | None = None) -> str:
    """Read ``path`` as text in ``encoding``.

    A file in another encoding is reported with the line and byte where decoding
    failed, rather than as a bare ``UnicodeDecodeError``. UTF-16/32 files (NUL
    bytes) and a UTF-8 byte-order mark are named as such.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError([Problem(path, None, "file not found")])
    raw = path.read_bytes()
    problem: Problem | None = None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4096]:
        problem = Problem(
            path, None, f"unsupported encoding: file looks like UTF-16/UTF-32; expected {encoding}"
        )
    else:
        if raw.startswith(b"\xef\xbb\xbf") and encoding.replace("-", "").lower() == "utf8":
            raw = raw[3:]
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            line = _line_of_offset(raw, exc.start)
            problem = Problem(
                path,
                line,
                f"not valid {encoding}: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                f"({exc.reason}); the file's encoding is not the expected {encoding}",
            )
    if log is not None:
        log.problems.append(problem)
        return ""
    raise DataError([problem])


def iter_lines(
    path: Path, encoding: str = "utf-8", log: ProblemLog | None = None, skip_header: bool = False
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` pairs (1-based, without the newline).

    Blank lines at the very end are ignored; a blank line in the middle is
    yielded so that the caller can report it.
    """
    text = read_text(path, encoding, log)
    lines = text.split("\n")
    while lines and lines[-1].strip() == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if skip_header and number == 1:
            continue
        yield number, line.rstrip("\r")
