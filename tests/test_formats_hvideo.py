"""HVIDEO loader: item lists only, no interactions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import require_file

from fedscope.data import CrossDomainDataset, DataError, load_dataset
from fedscope.data.errors import ProblemLog
from fedscope.data.formats import hvideo

FOLDER = "hvideo-entertainment-education"


@pytest.fixture(scope="module")
def real(data_root: Path) -> CrossDomainDataset:
    require_file(data_root, f"{FOLDER}/items_x.txt")
    require_file(data_root, f"{FOLDER}/items_y.txt")
    return load_dataset("hvideo", data_dir=data_root, use_cache=False)


def test_real_items_per_domain(real: CrossDomainDataset, data_root: Path) -> None:
    # README: 8,367 "E" items and 11,404 "V" items.
    assert [(d.name, d.n_items, d.offset) for d in real.domains] == [
        ("E", 8367, 0),
        ("V", 11404, 8367),
    ]
    assert all(k.startswith("E") for k in real.domains[0].item_keys)
    assert all(k.startswith("V") for k in real.domains[1].item_keys)
    last = (data_root / FOLDER / "items_y.txt").read_text().splitlines()[-1].split("\t")
    assert real.domains[1].item_keys[-1] == last[1]
    assert int(last[0]) == real.n_items_total - 1
    assert any("E 8,367, V 11,404" in n for n in real.notes)


def test_real_has_no_interactions_and_is_consistent(real: CrossDomainDataset) -> None:
    real.check_consistency()
    assert real.n_users == real.n_sequences == 0
    assert real.items.shape == (0,)
    assert len(real.valid) == len(real.test) == 0
    assert real.protocol == "none"
    assert "not available" in real.protocol_note
    counts = real.train_item_counts()
    assert counts.shape == (real.n_items_total,) and not counts.any()
    assert real.user_item_sets() == []


def test_cache_round_trip(data_root: Path) -> None:
    require_file(data_root, f"{FOLDER}/items_x.txt")
    first = load_dataset("hvideo", data_dir=data_root)  # conftest isolates the cache
    again = load_dataset("hvideo", data_dir=data_root)
    again.check_consistency()
    assert again.domains == first.domains and again.n_sequences == 0
    assert np.array_equal(again.seq_offsets, [0])


# --- small hand-made copies ------------------------------------------------------------------

GOOD = {"items_x.txt": "0\tE5\t0\n1\tE7\t1\n", "items_y.txt": "2\tV1\t2\n3\tV9\t3\n4\tV3\t4\n"}


def write_copy(root: Path, **changes: str) -> Path:
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**GOOD, **changes}.items():
        (folder / name).write_text(text)
    return folder


def test_small_copy_loads(tmp_path: Path) -> None:
    write_copy(tmp_path)
    ds = load_dataset("hvideo", data_dir=tmp_path, use_cache=False)
    assert ds.domains[0].item_keys == ("E5", "E7")
    assert ds.domains[1].item_keys == ("V1", "V9", "V3") and ds.domains[1].offset == 2


@pytest.mark.parametrize(
    ("changes", "where", "message"),
    [
        ({"items_x.txt": "0\tE5\t0\n1\tE7\n"}, ("items_x.txt", 2), "expected 3"),
        ({"items_x.txt": "0\tE5\t0\n1\tE7\t2\n"}, ("items_x.txt", 2), "differ"),
        ({"items_x.txt": "0\tE5\t0\n1\tV7\t1\n"}, ("items_x.txt", 2), "'E' followed by digits"),
        ({"items_x.txt": "0\tE5\t0\nx\tE7\tx\n"}, ("items_x.txt", 2), "non-negative integers"),
        ({"items_y.txt": "2\tV1\t2\n3\tV1\t3\n4\tV3\t4\n"}, ("items_y.txt", 2), "duplicate item"),
        ({"items_y.txt": "0\tV1\t0\n1\tV9\t1\n2\tV3\t2\n"}, ("items_y.txt", 1), "should be 2"),
    ],
)
def test_problem_reported_with_file_and_line(
    tmp_path: Path, changes: dict[str, str], where: tuple[str, int], message: str
) -> None:
    folder = write_copy(tmp_path, **changes)
    with pytest.raises(DataError) as info:
        load_dataset("hvideo", data_dir=tmp_path, use_cache=False)
    found = [(p.path.name, p.line, p.message) for p in info.value.problems]
    assert any((f, n) == where and message in m for f, n, m in found), found
    log = ProblemLog()
    assert hvideo.validate_file(folder / where[0], log)
    assert any(p.line == where[1] and message in p.message for p in log), list(log)


def test_validate_file_alone_and_declines_other_files(tmp_path: Path) -> None:
    lone = tmp_path / "items_y.txt"
    lone.write_text(
        "7\tV1\t7\n8\tV2\t8\n"
    )  # no items_x.txt beside it: ids need only be consecutive
    log = ProblemLog()
    assert hvideo.validate_file(lone, log) and not log
    lone.write_text("7\tV1\t7\n9\tV2\t9\n")
    assert hvideo.validate_file(lone, log) and [p.line for p in log] == [2]
    assert not hvideo.validate_file(tmp_path / "Alist.txt", ProblemLog())
