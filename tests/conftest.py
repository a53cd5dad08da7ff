"""Shared test fixtures.

Tests that need the real data sets look under ``$FEDSCOPE_DATA_DIR`` or, failing that,
``<repo>/../shared/data``, and skip with the path they looked for when a file is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("FEDSCOPE_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require_file(data_root: Path, relative: str) -> Path:
    path = data_root / relative
    if not path.is_file():
        pytest.skip(f"real data not found: {path} (set FEDSCOPE_DATA_DIR to the data root)")
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests never read or write the user's real cache.
    monkeypatch.setenv("FEDSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fedscope-cache"))
