"""XMarket Electronics loader: the real files against the README, and broken copies."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import require_file

from fedscope.data import CrossDomainDataset, DataError, load_dataset
from fedscope.data.errors import ProblemLog
from fedscope.data.formats import xmarket
from fedscope.data.formats.xmarket import shared_item_index

FOLDER = "xmarket-electronics-forec"
MARKETS = ("ca", "de", "fr", "in", "jp", "mx", "uk")
# README table: ratings, users, items per market.
README_STATS = {
    "ca": (44_779, 4_668, 5_735),
    "de": (17_300, 1_851, 2_179),
    "fr": (17_624, 1_838, 1_879),
    "in": (2_015, 239, 470),
    "jp": (4_485, 487, 955),
    "mx": (17_095, 1_878, 1_645),
    "uk": (31_547, 3_352, 3_251),
}
README_REPEATS = {"ca": 888, "de": 653, "fr": 470, "in": 42, "jp": 130, "mx": 162, "uk": 673}
SECONDS_PER_DAY = 86_400


# --- real data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(data_root: Path) -> CrossDomainDataset:
    for m in MARKETS:
        require_file(data_root, f"{FOLDER}/{m}_5core.txt")
    return load_dataset("xmarket-electronics", data_dir=data_root, use_cache=False)


def test_real_market_statistics(real: CrossDomainDataset) -> None:
    assert [d.name for d in real.domains] == list(MARKETS)
    ratings = np.bincount(real.domain_of(real.items), minlength=len(MARKETS))
    users_per_market = Counter(m for ms in real.user_attributes["markets"] for m in ms.split(";"))
    for k, m in enumerate(MARKETS):
        n_ratings, n_users, n_items = README_STATS[m]
        assert ratings[k] == n_ratings, m
        assert users_per_market[m] == n_users, m
        assert real.domains[k].n_items == n_items, m
        assert list(real.domains[k].item_keys) == sorted(real.domains[k].item_keys)
    # README: 14,311 distinct users, only 2 in two markets.
    assert real.n_users == 14_311
    assert sum(1 for ms in real.user_attributes["markets"] if ";" in ms) == 2
    assert real.items.shape[0] == sum(r for r, _, _ in README_STATS.values())


def test_real_repeat_purchases_are_kept_and_noted(real: CrossDomainDataset) -> None:
    note = next(n for n in real.notes if n.startswith("repeated (user, item)"))
    for m, n in README_REPEATS.items():
        assert f"{m} {n:,}" in note
    pairs = Counter(zip(real.seq_user[np.repeat(np.arange(real.n_sequences),
                                                real.sequence_lengths())].tolist(),
                        real.items.tolist(), strict=True))  # fmt: skip
    assert sum(c - 1 for c in pairs.values()) == sum(README_REPEATS.values())
    assert any("us_5core.txt" in n for n in real.notes)


def test_real_shared_item_space(real: CrossDomainDataset) -> None:
    shared = shared_item_index(real)
    keys = np.array([k for d in real.domains for k in d.item_keys])
    assert shared.shape == (real.n_items_total,)
    # README: 8,304 distinct ASINs, 3,708 in at least two markets, 56 in all seven.
    assert int(shared.max()) + 1 == np.unique(keys).shape[0] == 8_304
    markets_per_product = np.bincount(shared)
    assert int((markets_per_product >= 2).sum()) == 3_708
    assert int((markets_per_product == 7).sum()) == 56
    # Same ASIN <=> same product index.
    order = np.argsort(shared, kind="stable")
    assert np.all(np.diff(shared[order]) >= 0)
    assert np.array_equal(keys[order][1:] == keys[order][:-1], np.diff(shared[order]) == 0)


def test_real_sequences_sorted_and_dates(real: CrossDomainDataset) -> None:
    for s in range(0, real.n_sequences, 97):
        assert np.all(np.diff(real.sequence_times(s)) >= 0)
    assert np.all(real.times % SECONDS_PER_DAY == 0)
    assert str(np.datetime64(int(real.times.min()), "s").astype("datetime64[D]")) == "2004-05-09"
    assert str(np.datetime64(int(real.times.max()), "s").astype("datetime64[D]")) == "2020-11-18"
    # README: every user has at least 7 ratings, so every user is evaluated.
    assert int(real.sequence_lengths().min()) >= 7
    assert len(real.valid) == len(real.test) == real.n_users
    assert real.protocol == "xmarket-loo"


def test_real_sequence_matches_the_file(real: CrossDomainDataset, data_root: Path) -> None:
    lines = (data_root / FOLDER / "in_5core.txt").read_text().splitlines()[1:]
    per_user: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in lines:
        user, item, _, day = line.split(" ")
        per_user[user].append((day, item))
    d = real.domain_index("in")
    keys = real.domains[d].item_keys
    for user, rows in list(per_user.items())[:50]:
        s = real.user_keys.index(user)
        if ";" in real.user_attributes["markets"][s]:
            continue
        expected = [item for _, item in sorted(rows, key=lambda r: r[0])]  # stable
        assert [keys[i] for i in real.to_local(real.sequence(s))] == expected


# --- small hand-made copies ------------------------------------------------------------------

HEADER = "userId itemId rate date\n"


def write_copy(root: Path, files: dict[str, str]) -> Path:
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_small_copy_subset_of_markets(tmp_path: Path) -> None:
    write_copy(
        tmp_path,
        {
            "ca_5core.txt": HEADER
            + "u1 P2 5.0 2020-01-02\nu1 P1 4.0 2020-01-01\nu1 P3 3.0 2020-01-02\n"
            + "u2 P1 5.0 2019-05-05\nu2 P1 5.0 2019-06-05\nu2 P3 2.0 2019-07-05\n",
            "jp_5core.txt": HEADER + "u3 P3 5.0 2018-01-01\nu3 P9 1.0 2018-01-02\n"
            "u1 P9 5.0 2021-01-01\nu3 P3 4.0 2018-01-03\n",
        },
    )
    ds = load_dataset("xmarket-electronics", data_dir=tmp_path, use_cache=False)
    assert [d.name for d in ds.domains] == ["ca", "jp"]
    assert ds.domains[0].item_keys == ("P1", "P2", "P3")
    assert ds.domains[1].item_keys == ("P3", "P9")
    keys = [k for d in ds.domains for k in d.item_keys]

    def seq(user: str) -> list[str]:
        return [keys[i] for i in ds.sequence(ds.user_keys.index(user))]

    # Same-day tie (P2, P3) keeps file order; the jp rating comes last by date.
    assert seq("u1") == ["P1", "P2", "P3", "P9"]
    assert seq("u2") == ["P1", "P1", "P3"]  # the repeat purchase is kept
    assert ds.domain_of(ds.sequence(ds.user_keys.index("u1"))).tolist() == [0, 0, 0, 1]
    assert ds.user_attributes["markets"][ds.user_keys.index("u1")] == "ca;jp"
    assert shared_item_index(ds).tolist() == [0, 1, 2, 2, 3]
    assert any("ca 1, jp 1" in n for n in ds.notes)


def test_ca_is_required(tmp_path: Path) -> None:
    write_copy(tmp_path, {"de_5core.txt": HEADER + "u1 P1 5.0 2020-01-01\n"})
    with pytest.raises(FileNotFoundError, match=r"ca_5core\.txt"):
        load_dataset("xmarket-electronics", data_dir=tmp_path, use_cache=False)


GOOD_LINES = "u1 P1 5.0 2020-01-01\nu1 P2 4.0 2020-01-02\nu1 P3 3.0 2020-01-03\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("userId itemId rating date\n" + GOOD_LINES, 1, "expected the header"),
        ("u0 P0 5.0 2020-01-01\n" + GOOD_LINES, 1, "expected the header"),
        (HEADER + GOOD_LINES + "u1 P4 5.0\n", 5, "expected 4 space-separated fields"),
        (HEADER + GOOD_LINES + "u1 P4 5.0 2020-01-01 extra\n", 5, "expected 4"),
        (HEADER + GOOD_LINES + "u1 P4 5.0 2020/01/04\n", 5, "not a valid YYYY-MM-DD date"),
        (HEADER + GOOD_LINES + "u1 P4 5.0 2020-02-30\n", 5, "not a valid YYYY-MM-DD date"),
        (HEADER + GOOD_LINES + "u1 P4 6.0 2020-01-04\n", 5, "outside 1..5"),
        (HEADER + GOOD_LINES + "u1 P4 0.5 2020-01-04\n", 5, "outside 1..5"),
        (HEADER + GOOD_LINES + "u1 P4 good 2020-01-04\n", 5, "is not a number"),
        (HEADER + GOOD_LINES + "u1 P4 nan 2020-01-04\n", 5, "outside 1..5"),
    ],
)
def test_problem_reported_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    folder = write_copy(tmp_path, {"ca_5core.txt": HEADER + GOOD_LINES, "fr_5core.txt": text})
    with pytest.raises(DataError) as info:
        load_dataset("xmarket-electronics", data_dir=tmp_path, use_cache=False)
    found = [(p.path.name, p.line, p.message) for p in info.value.problems]
    assert any((f, n) == ("fr_5core.txt", line) and message in m for f, n, m in found), found
    log = ProblemLog()
    assert xmarket.validate_file(folder / "fr_5core.txt", log)
    assert any(p.line == line and message in p.message for p in log), list(log)


def test_every_problem_is_collected(tmp_path: Path) -> None:
    text = "bad header\n" + GOOD_LINES + "u1 P4 9 2020-01-04\nu1 P5 3 yesterday\nu1\n"
    write_copy(tmp_path, {"ca_5core.txt": text})
    with pytest.raises(DataError) as info:
        load_dataset("xmarket-electronics", data_dir=tmp_path, use_cache=False)
    assert [p.line for p in info.value.problems] == [1, 5, 6, 7]


def test_validate_file_declines_other_files(tmp_path: Path) -> None:
    assert not xmarket.validate_file(tmp_path / "u.data", ProblemLog())
    assert not xmarket.validate_file(tmp_path / "valid.txt", ProblemLog())
