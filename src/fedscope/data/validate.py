"""``fedscope data validate PATH``: report every problem in a file or data set folder."""

from __future__ import annotations

import importlib
from pathlib import Path

from fedscope.data.errors import DataError, Problem, ProblemLog
from fedscope.data.registry import DatasetSpec, available

# Format modules that can validate one of their files on its own.
_FILE_FORMATS = ("c2dsr", "llmcdsr", "movielens", "xmarket", "hvideo", "interactions")


def _matching_specs(folder: Path) -> list[DatasetSpec]:
    return [
        s
        for s in available()
        if s.folder is not None and all((folder / f).is_file() for f in s.required_files)
    ]


def validate_path(path: Path) -> tuple[list[Problem], str]:
    """Problems found under ``path`` and a line saying what was checked."""
    path = Path(path)
    if not path.exists():
        return [Problem(path, None, "no such file or folder")], "nothing"
    log = ProblemLog()
    if path.is_dir():
        specs = _matching_specs(path)
        if specs:
            s = specs[0]
            try:
                s.build(path, log, dict(s.default_options))
            except DataError as exc:
                log.problems.extend(exc.problems)
            return log.problems, f"folder as data set format of {s.name!r}"
        files = sorted(p for p in path.iterdir() if p.is_file())
        checked = [f for f in files if _validate_file(f, log)]
        return log.problems, f"{len(checked)} file(s) of known formats in {path}"
    if not _validate_file(path, log):
        return [Problem(path, None, "not a file of any known data set format")], "nothing"
    return log.problems, f"file {path.name}"


def _validate_file(path: Path, log: ProblemLog) -> bool:
    for name in _FILE_FORMATS:
        try:
            module = importlib.import_module(f"fedscope.data.formats.{name}")
        except ImportError:
            continue
        try:
            if module.validate_file(path, log):
                return True
        except DataError as exc:
            log.problems.extend(exc.problems)
            return True
    return False
