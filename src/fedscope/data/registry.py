"""Data set names, where their files live, and one entry point to load them.

Each format module registers a :class:`DatasetSpec`. Real data sets live under
a data root given by ``--data-dir`` or ``FEDSCOPE_DATA_DIR``; the generated
data set needs none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedscope.data import cache
from fedscope.data.dataset import CrossDomainDataset
from fedscope.data.errors import DatasetNotFoundError, ProblemLog

DATA_DIR_ENV = "FEDSCOPE_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str | None  # folder under the data root; None for generated data
    description: str
    required_files: tuple[str, ...]
    optional_files: tuple[str, ...]
    # (folder, log, options) -> data set; must record problems in `log` rather than raise early
    build: Callable[[Path | None, ProblemLog, dict[str, Any]], CrossDomainDataset]
    version: int = 1
    default_options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_registered() -> None:
    # Importing the format modules registers them; done lazily to keep imports cheap.
    from fedscope.data import formats  # noqa: F401


def available() -> list[DatasetSpec]:
    _ensure_registered()
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def spec(name: str) -> DatasetSpec:
    _ensure_registered()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown data set {name!r}; known data sets: {known}")
    return _REGISTRY[name]


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data root: the explicit argument, else ``$FEDSCOPE_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def dataset_folder(name: str, data_dir: str | Path | None = None) -> Path | None:
    s = spec(name)
    if s.folder is None:
        return None
    root = resolve_data_dir(data_dir)
    own_folder = s.folder == "."  # the data root is the data set's own folder
    if root is None:
        where = (
            f"the folder that holds {', '.join(s.required_files)}"
            if own_folder
            else f"the folder that contains {s.folder}/"
        )
        raise DatasetNotFoundError(
            f"data set {name!r} needs a data root: pass --data-dir (data.data_dir in a "
            f"configuration) or set {DATA_DIR_ENV} to {where}"
        )
    folder = root / s.folder
    missing = [f for f in s.required_files if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"data set {name!r}: missing {', '.join(str(folder / f) for f in missing)}"
        )
    return folder


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    use_cache: bool = True,
    **options: Any,
) -> CrossDomainDataset:
    """Load a data set by name, from the on-disk cache when its sources are unchanged."""
    s = spec(name)
    opts = {**s.default_options, **options}
    folder = dataset_folder(name, data_dir)

    def build() -> CrossDomainDataset:
        log = ProblemLog()
        ds = s.build(folder, log, opts)
        log.raise_if_any()
        ds.check_consistency()
        return ds

    if folder is None:  # generated: cheap to rebuild and keyed by its options alone
        files: list[Path] = []
    else:
        files = [
            folder / f for f in (*s.required_files, *s.optional_files) if (folder / f).is_file()
        ]
    key = cache.content_key(s.name, s.version, files, opts)
    return cache.cached(key, build, use_cache=use_cache)
