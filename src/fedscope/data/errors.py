"""Errors for bad input data.

Loaders never stop at the first bad line: they record every problem in a
:class:`ProblemLog` and raise one :class:`DataError` listing all of them at the
end, so ``fedscope data validate`` can show a user everything that is wrong
with a file at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_PROBLEMS_IN_MESSAGE = 20


@dataclass(frozen=True)
class Problem:
    """One problem in one input file."""

    path: Path
    line: int | None  # 1-based; None when the problem concerns the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.message}"


class DataError(Exception):
    """Input data that cannot be loaded; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        shown = [str(p) for p in self.problems[:MAX_PROBLEMS_IN_MESSAGE]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more problem(s) (run `fedscope data validate` for all)")
        super().__init__("\n".join(shown) if shown else "invalid data")


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not where the data root says they should be."""


@dataclass
class ProblemLog:
    """Collects problems while a loader reads files."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, path: Path, line: int | None, message: str) -> None:
        self.problems.append(Problem(Path(path), line, message))

    def __bool__(self) -> bool:
        return bool(self.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise DataError(self.problems)
