"""LLMCDSR Food-Kitchen loader: the real files against the README, and broken copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import require_file

from fedscope.data import CrossDomainDataset, DataError, load_dataset
from fedscope.data.errors import ProblemLog
from fedscope.data.formats import llmcdsr

FOLDER = "amazon-food-kitchen-llmcdsr"


# --- real data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(data_root: Path) -> CrossDomainDataset:
    require_file(data_root, f"{FOLDER}/train_overlap.txt")
    return load_dataset("food-kitchen-llmcdsr", data_dir=data_root, use_cache=False)


def _groups(ds: CrossDomainDataset) -> dict[str, np.ndarray]:
    prefixes = np.array([k.split(":")[0] for k in ds.user_keys])
    return {g: np.nonzero(prefixes == g)[0] for g in np.unique(prefixes)}


def test_real_item_counts_and_titles(real: CrossDomainDataset) -> None:
    assert [(d.name, d.n_items) for d in real.domains] == [("Food", 8661), ("Kitchen", 27637)]
    assert real.domains[1].offset == 8661
    assert real.domains[0].text_coverage() == 1.0
    assert real.domains[1].text_coverage() == 1.0


def test_real_user_groups_and_mean_lengths(real: CrossDomainDataset) -> None:
    groups = _groups(real)
    # README: counts and mean sequence lengths of each file.
    expected = {
        "train_A": (5472, 6.81),
        "train_B": (38191, 6.96),
        "train_overlap": (7501, 13.22),
        "valid": (960, 18.89),
        "test": (937, 16.78),
    }
    lengths = real.sequence_lengths()
    assert set(groups) == set(expected)
    for group, (count, mean) in expected.items():
        assert len(groups[group]) == count, group
        assert round(float(lengths[groups[group]].mean()), 2) == mean, group
    assert len(set(real.user_keys)) == real.n_users == real.n_sequences


def test_real_single_domain_groups(real: CrossDomainDataset) -> None:
    groups = _groups(real)
    for group, domain in (("train_A", 0), ("train_B", 1)):
        items = np.concatenate([real.sequence(int(s)) for s in groups[group]])
        assert np.all(real.domain_of(items) == domain)


def test_real_split(real: CrossDomainDataset) -> None:
    groups = _groups(real)
    lengths = real.sequence_lengths()
    train = np.concatenate([groups["train_A"], groups["train_B"], groups["train_overlap"]])
    assert np.array_equal(real.train_len[train], lengths[train])
    held_out = np.concatenate([groups["valid"], groups["test"]])
    assert np.all(real.train_len[held_out] == 0)
    assert len(real.valid) == 960 and len(real.test) == 937
    assert np.array_equal(np.sort(real.valid.seq), groups["valid"])
    assert np.array_equal(real.valid.cutoff, lengths[real.valid.seq] - 1)
    # README: valid targets A/B 363/597, test 300/637.
    assert np.bincount(real.target_domains(real.valid), minlength=2).tolist() == [363, 597]
    assert np.bincount(real.target_domains(real.test), minlength=2).tolist() == [300, 637]
    assert real.protocol == "llmcdsr-given"
    assert any("7,501 overlapping" in n for n in real.notes)


def test_real_instances_match_the_file(real: CrossDomainDataset, data_root: Path) -> None:
    lines = (data_root / FOLDER / "test.txt").read_text().splitlines()
    for i in (0, len(lines) // 2, len(lines) - 1):
        uid, ids = lines[i].split("\t")
        ids = [int(x) for x in ids.split(",")]
        k = int(np.nonzero(real.test.seq == real.user_keys.index(f"test:{uid}"))[0][0])
        assert real.history(real.test, k).tolist() == ids[:-1]
        assert int(real.test.target[k]) == ids[-1]
    first_item = (data_root / FOLDER / "items_B.tsv").read_text().splitlines()[1].split("\t")
    assert real.domains[1].item_keys[0] == first_item[1]
    assert real.domains[1].titles()[0] == first_item[2].strip()


# --- small hand-made copies ------------------------------------------------------------------

GOOD = {
    "num.txt": "3\n4\n",
    "instance_num.txt": "2\n1\n1\n",
    "items_A.tsv": "item_id\tasin\ttitle\n0\tA0\tapple\n1\tA1\tbread\n2\tA2\t\n",
    "items_B.tsv": "item_id\tasin\ttitle\n3\tB0\tpan\n4\tB1\tpot\n5\tB2\tknife\n6\tB3\tcup\n",
    "train_A.txt": "1\t0,1,2\n2\t1,2\n",
    "train_B.txt": "1\t3,4,5\n",
    "train_overlap.txt": "1\t0,3,1,4\n",
    "valid.txt": "1\t0,3,5\n",
    "test.txt": "1\t1,4,2,6\n",
}


def write_copy(root: Path, **changes: str) -> Path:
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**GOOD, **changes}.items():
        (folder / name).write_text(text)
    return folder


def problems_of(root: Path) -> list[tuple[str, int | None, str]]:
    with pytest.raises(DataError) as info:
        load_dataset("food-kitchen-llmcdsr", data_dir=root, use_cache=False)
    return [(p.path.name, p.line, p.message) for p in info.value.problems]


def test_small_copy_loads(tmp_path: Path) -> None:
    write_copy(tmp_path)
    ds = load_dataset("food-kitchen-llmcdsr", data_dir=tmp_path, use_cache=False)
    assert ds.user_keys == [
        "train_A:1", "train_A:2", "train_B:1", "train_overlap:1", "valid:1", "test:1",
    ]  # fmt: skip
    assert ds.train_len.tolist() == [3, 2, 3, 4, 0, 0]
    assert ds.history(ds.valid, 0).tolist() == [0, 3] and ds.valid.target.tolist() == [5]
    assert ds.history(ds.test, 0).tolist() == [1, 4, 2] and ds.test.target.tolist() == [6]
    assert ds.sequence_times(5).tolist() == [0, 1, 2, 3]
    assert ds.domains[0].titles() == ("apple", "bread", "")
    assert ds.domains[1].item_keys == ("B0", "B1", "B2", "B3")


@pytest.mark.parametrize(
    ("changes", "where", "message"),
    [
        ({"train_overlap.txt": "1\t0,3\n2\t1,9\n"}, ("train_overlap.txt", 2), "out of range [0, 7)"),
        ({"train_A.txt": "1\t0,1\n2\t0,4\n"}, ("train_A.txt", 2), "is a Kitchen item"),
        ({"train_B.txt": "1\t3,4\n2\t5,1\n"}, ("train_B.txt", 2), "is a Food item"),
        ({"train_B.txt": "1\t3,x,4\n"}, ("train_B.txt", 1), "malformed item id 'x'"),
        ({"train_B.txt": "1\t3,4,\n"}, ("train_B.txt", 1), "malformed item id ''"),
        ({"train_B.txt": "1\t3,4\n2\t3,\u00b2\n"}, ("train_B.txt", 2), "malformed item id"),
        ({"valid.txt": "1\t0,3\n2\t5\n"}, ("valid.txt", 2), "one-item sequence"),
        ({"valid.txt": "1\t\n"}, ("valid.txt", 1), "empty sequence"),
        ({"test.txt": "1\t1,4\n2 0,3,4\n"}, ("test.txt", 2), "malformed line"),
        ({"test.txt": "0\t1,4\n"}, ("test.txt", 1), "not a positive integer"),
        ({"train_overlap.txt": "1\t0,3\n1\t1,4\n"}, ("train_overlap.txt", 2), "duplicate uid 1"),
        ({"instance_num.txt": "2\n5\n1\n"}, ("instance_num.txt", 2), "train_B.txt has 5 lines"),
        ({"num.txt": "3\nfour\n"}, ("num.txt", 2), "non-negative integer"),
        ({"items_A.tsv": "item_id\tasin\ttitle\n0\tA0\tx\n2\tA1\ty\n1\tA2\tz\n"},
         ("items_A.tsv", 3), "item_id 2 should be 1"),
        ({"items_B.tsv": "item_id\tasin\ttitle\n3\tB0\tx\n4\tB0\ty\n5\tB2\tz\n6\tB3\tw\n"},
         ("items_B.tsv", 3), "duplicate item 'B0'"),
        ({"items_B.tsv": "item_id\tasin\ttitle\n3\tB0\tx\n"}, ("items_B.tsv", None), "num.txt says 4"),
        ({"items_A.tsv": "id\tasin\n0\tA0\tx\n1\tA1\ty\n2\tA2\tz\n"}, ("items_A.tsv", 1), "header"),
    ],
)  # fmt: skip
def test_problem_reported_with_file_and_line(
    tmp_path: Path, changes: dict[str, str], where: tuple[str, int | None], message: str
) -> None:
    write_copy(tmp_path, **changes)
    found = problems_of(tmp_path)
    assert any((f, line) == where and message in m for f, line, m in found), found
    # The same problem is found when the file is validated on its own.
    log = ProblemLog()
    assert llmcdsr.validate_file(tmp_path / FOLDER / where[0], log)
    assert any(p.line == where[1] and message in p.message for p in log), list(log)


def test_every_problem_is_collected(tmp_path: Path) -> None:
    changes = {
        "train_A.txt": "1\t0,1\n2\t0,99\n3\t2\n3\t1,2\n",
        "valid.txt": "1\t0,3\nbroken\n",
    }
    write_copy(tmp_path, **changes)
    found = {(f, line) for f, line, _ in problems_of(tmp_path)}
    assert {("train_A.txt", 2), ("train_A.txt", 3), ("train_A.txt", 4), ("valid.txt", 2)} <= found


def test_validate_file_declines_other_formats(tmp_path: Path) -> None:
    c2dsr_like = tmp_path / "valid.txt"
    c2dsr_like.write_text("0\t12\t5|1400000000|2014-05-13 08:00:00|\t\n")
    assert not llmcdsr.validate_file(c2dsr_like, ProblemLog())
    assert not llmcdsr.validate_file(tmp_path / "u.data", ProblemLog())
    standalone = tmp_path / "other" / "test.txt"
    standalone.parent.mkdir()
    standalone.write_text("1\t0,5,2\n")
    log = ProblemLog()
    assert llmcdsr.validate_file(standalone, log) and not log
