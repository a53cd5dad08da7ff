"""MovieLens 100K loader: the real files against the README, and broken copies."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import require_file

from fedscope.data import CrossDomainDataset, DataError, load_dataset
from fedscope.data.errors import ProblemLog
from fedscope.data.formats import movielens

FOLDER = "movielens-100k"
# The documented rule, written out independently of the loader's constants.
THRILL = {"Action", "Adventure", "Crime", "Film-Noir", "Horror", "Mystery", "Sci-Fi",
          "Thriller", "War", "Western"}  # fmt: skip


# --- real data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(data_root: Path) -> CrossDomainDataset:
    require_file(data_root, f"{FOLDER}/u.data")
    require_file(data_root, f"{FOLDER}/u.item")
    return load_dataset("movielens-100k", data_dir=data_root, use_cache=False)


def _movie_of_global(ds: CrossDomainDataset) -> np.ndarray:
    return np.array([int(k) for d in ds.domains for k in d.item_keys])


def test_real_counts(real: CrossDomainDataset) -> None:
    # README: 100,000 ratings, 943 users, 1,682 items (all rated).
    assert real.n_users == 943
    assert real.n_items_total == 1682
    assert real.items.shape[0] == 100_000
    assert np.unique(real.items).shape[0] == 1682
    assert round(real.items.shape[0] / real.n_users, 1) == 106.0
    assert len(real.valid) == len(real.test) == 943
    assert real.n_train_interactions() == 100_000 - 2 * 943
    assert real.times.min() == 874_724_710 and real.times.max() == 893_286_638
    assert real.protocol == "movielens-genre-loo"


def test_real_domains_follow_the_documented_rule(real: CrossDomainDataset, data_root: Path) -> None:
    genres = [line.split("|")[0] for line in (data_root / FOLDER / "u.genre").read_text().split()]
    expected: dict[str, set[str]] = {"Thrill": set(), "Heart": set()}
    for line in (data_root / FOLDER / "u.item").read_bytes().decode("latin-1").splitlines():
        parts = line.split("|")
        names = [g for g, f in zip(genres, parts[5:], strict=True) if f == "1"]
        thrill = sum(g in THRILL for g in names)
        heart = len(names) - thrill
        expected["Thrill" if thrill > heart or (thrill == heart > 0) else "Heart"].add(parts[0])
    assert [d.name for d in real.domains] == ["Thrill", "Heart"]
    for d in real.domains:
        assert set(d.item_keys) == expected[d.name]
        assert list(d.item_keys) == sorted(d.item_keys, key=int)  # local order = movie id order
    counts = f"Thrill {real.domains[0].n_items:,}, Heart {real.domains[1].n_items:,}"
    assert any(counts in n for n in real.notes)
    assert "ties to Thrill" in real.protocol_note


def test_real_item_attributes(real: CrossDomainDataset) -> None:
    attrs = {
        key: {a: v[k] for a, v in d.item_attributes.items()}
        for d in real.domains
        for k, key in enumerate(d.item_keys)
    }
    assert attrs["1"] == {
        "title": "Toy Story",
        "year": "1995",
        "genres": "Animation;Children's;Comedy",
        "release_date": "01-Jan-1995",
    }
    assert attrs["267"]["title"] == "" and attrs["267"]["year"] == ""
    # README: 1,681 titles. It counts 1,680 parsable years because item 1412 ends in
    # "(1995) (V)"; the loader reads the year before the video marker too.
    assert sum(1 for a in attrs.values() if a["title"]) == 1681
    assert attrs["1412"]["year"] == "1995" and attrs["1412"]["title"].endswith("(V)")
    assert sum(1 for a in attrs.values() if a["year"]) == 1681
    assert not any(re.search(r"\(\d{4}\)$", a["title"]) for a in attrs.values())


def test_real_sequences_are_stable_time_sorted(real: CrossDomainDataset, data_root: Path) -> None:
    per_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for line in (data_root / FOLDER / "u.data").read_text().splitlines():
        user, item, _, ts = line.split("\t")
        per_user[user].append((int(ts), int(item)))
    movie = _movie_of_global(real)
    for u, key in enumerate(real.user_keys):
        expected = sorted(per_user[key], key=lambda r: r[0])  # Python's sort is stable
        assert movie[real.sequence(u)].tolist() == [i for _, i in expected], key
        assert real.sequence_times(u).tolist() == [t for t, _ in expected], key


def test_real_leave_one_out(real: CrossDomainDataset) -> None:
    lengths = real.sequence_lengths()
    assert np.array_equal(real.test.cutoff, lengths[real.test.seq] - 1)
    assert np.array_equal(real.valid.cutoff, lengths[real.valid.seq] - 2)
    assert np.array_equal(real.train_len, lengths - 2)


def test_real_user_attributes(real: CrossDomainDataset, data_root: Path) -> None:
    rows = {
        line.split("|")[0]: line.split("|")[1:]
        for line in (data_root / FOLDER / "u.user").read_text().splitlines()
    }
    for u in (0, 500, 942):
        key = real.user_keys[u]
        got = [real.user_attributes[f][u] for f in ("age", "gender", "occupation", "zip")]
        assert got == rows[key]


# --- small hand-made copies ------------------------------------------------------------------


def _item(movie_id: int, title: str, genres: set[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in movielens.GENRES)
    return f"{movie_id}|{title}|01-Jan-1995||http://x|{flags}\n"


GOOD_ITEMS = (
    _item(1, "Heat (1995)", {"Action", "Crime"})
    + _item(2, "Mixed (1990)", {"Action", "Comedy"})
    + _item(3, "Drama Only (1980)", {"Drama"})
)
GOOD = {
    "u.genre": "".join(f"{g}|{k}\n" for k, g in enumerate(movielens.GENRES)) + "\n",
    "u.item": GOOD_ITEMS,
    "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
    "u.data": "1\t1\t5\t100\n1\t2\t3\t90\n1\t3\t4\t100\n2\t3\t2\t50\n2\t1\t1\t60\n2\t2\t4\t70\n",
}


def write_copy(root: Path, **changes: str | bytes) -> Path:
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**GOOD, **changes}.items():
        if isinstance(text, bytes):
            (folder / name).write_bytes(text)
        else:
            (folder / name).write_text(text)
    return folder


def test_small_copy_loads(tmp_path: Path) -> None:
    write_copy(tmp_path)
    ds = load_dataset("movielens-100k", data_dir=tmp_path, use_cache=False)
    assert ds.domains[0].item_keys == ("1", "2")  # the Action+Comedy tie goes to Thrill
    assert ds.domains[1].item_keys == ("3",)
    movie = _movie_of_global(ds)
    # user 1: ts 90, 100, 100 -> the tie keeps file order (item 1 before item 3)
    assert movie[ds.sequence(0)].tolist() == [2, 1, 3]
    assert movie[ds.sequence(1)].tolist() == [3, 1, 2]
    assert ds.user_attributes["occupation"] == ["technician", "other"]


def test_tie_domain_option(tmp_path: Path) -> None:
    write_copy(tmp_path)
    ds = load_dataset("movielens-100k", data_dir=tmp_path, use_cache=False, tie_domain="Heart")
    assert ds.domains[0].item_keys == ("1",)
    assert ds.domains[1].item_keys == ("2", "3")
    assert "ties to Heart" in ds.protocol_note


def test_latin1_titles(tmp_path: Path) -> None:
    items = GOOD_ITEMS.replace("Drama Only", "Caf\u00e9 Ol\u00e9").encode("latin-1")
    write_copy(tmp_path, **{"u.item": items})
    ds = load_dataset("movielens-100k", data_dir=tmp_path, use_cache=False)
    assert ds.domains[1].titles() == ("Caf\u00e9 Ol\u00e9",)


def _data(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize(
    ("changes", "where", "message"),
    [
        ({"u.data": _data("1\t1\t5\t100", "1\t2\t3")}, ("u.data", 2), "expected 4"),
        ({"u.data": _data("1\t1\t5\t100", "x\t2\t3\t5")}, ("u.data", 2), "non-integer"),
        ({"u.data": _data("1\t1\t5\t100", "1\t9\t3\t5")}, ("u.data", 2), "item 9 is not in u.item"),
        ({"u.data": _data("1\t1\t5\t100", "7\t2\t3\t5")}, ("u.data", 2), "user 7 is not in u.user"),
        ({"u.data": _data("1\t1\t5\t100", "1\t2\t6\t5")}, ("u.data", 2), "rating 6 outside 1..5"),
        ({"u.data": _data("1\t1\t5\t100", "1\t2\t0\t5")}, ("u.data", 2), "rating 0 outside 1..5"),
        ({"u.data": _data("1\t1\t5\t100", "1\t2\t3\t5", "1\t1\t4\t9")}, ("u.data", 3),
         "duplicate rating of item 1 by user 1 (first on line 1)"),
        ({"u.user": "1|24|M|technician|85711\n1|53|F|other|94043\n"}, ("u.user", 2),
         "duplicate user 1"),
        ({"u.user": "1|24|M|technician|85711\nx|53|F|other|94043\n"}, ("u.user", 2),
         "user id 'x'"),
        ({"u.user": "1|24|M|technician\n"}, ("u.user", 1), "expected 5"),
        ({"u.item": GOOD_ITEMS + "4|Short (1999)|01-Jan-1999\n"}, ("u.item", 4), "expected 24"),
        ({"u.item": GOOD_ITEMS + GOOD_ITEMS.splitlines(keepends=True)[0]}, ("u.item", 4),
         "duplicate movie id 1"),
        ({"u.item": GOOD_ITEMS.replace("|0|0|0\n", "|0|0|2\n", 1)}, ("u.item", 1), "0 or 1"),
        ({"u.genre": "unknown|0\nAction|1\n"}, ("u.genre", None), "genre list differs"),
    ],
)  # fmt: skip
def test_problem_reported_with_file_and_line(
    tmp_path: Path, changes: dict[str, str], where: tuple[str, int | None], message: str
) -> None:
    write_copy(tmp_path, **changes)
    with pytest.raises(DataError) as info:
        load_dataset("movielens-100k", data_dir=tmp_path, use_cache=False)
    found = [(p.path.name, p.line, p.message) for p in info.value.problems]
    assert any((f, line) == where and message in m for f, line, m in found), found
    log = ProblemLog()
    assert movielens.validate_file(tmp_path / FOLDER / where[0], log)
    assert any(p.line == where[1] and message in p.message for p in log), list(log)


def test_every_problem_is_collected(tmp_path: Path) -> None:
    write_copy(tmp_path, **{"u.data": _data("1\t1\t5\t100", "1\t9\t3\t5", "bad", "1\t1\t2\t3")})
    with pytest.raises(DataError) as info:
        load_dataset("movielens-100k", data_dir=tmp_path, use_cache=False)
    assert [p.line for p in info.value.problems] == [2, 3, 4]


def test_validate_file_declines_other_files(tmp_path: Path) -> None:
    assert not movielens.validate_file(tmp_path / "valid.txt", ProblemLog())
    assert not movielens.validate_file(tmp_path / "u.occupation", ProblemLog())
