"""C2DSR loader: the README's statistics on real data, and every kind of bad input."""

import shutil
import time

import numpy as np
import pytest
from tests.conftest import require_file

from fedscope.data import DataError, load_dataset
from fedscope.data.stats import dataset_stats
from fedscope.data.validate import validate_path

FK = "amazon-food-kitchen"


@pytest.fixture(scope="module")
def food_kitchen(data_root):
    require_file(data_root, f"{FK}/testdata_new.txt")
    return load_dataset("food-kitchen", data_root, use_cache=False)


def test_food_kitchen_matches_readme_statistics(food_kitchen):
    ds = food_kitchen
    assert ds.protocol == "c2dsr-derived-loo"
    assert "not the paper's split" in ds.protocol_note
    assert ds.n_users == 16_579
    assert [d.n_items for d in ds.domains] == [29_207, 34_886]
    st = dataset_stats(ds)
    assert st["interactions"] == 76_842 + 86_392
    assert [d["distinct_items_interacted"] for d in st["domains"]] == [24_354, 29_000]
    assert [d["text_coverage"]["title"] for d in st["domains"]] == pytest.approx(
        [0.289, 0.641], abs=1e-3
    )
    # The last item of every window after the stable timestamp sort is the test target:
    # README: valid targets A/B 2,722/5,451 and test 2,747/5,659 over the two files.
    test_dom = np.bincount(ds.target_domains(ds.test), minlength=2)
    assert test_dom.tolist() == [2_722 + 2_747, 5_451 + 5_659]


def test_windows_are_stable_sorted_by_timestamp(food_kitchen):
    ds = food_kitchen
    for s in range(0, ds.n_sequences, 997):
        t = ds.sequence_times(s)
        assert np.all(np.diff(t) >= 0)


def test_movie_book_loads(data_root):
    require_file(data_root, "amazon-movie-book/testdata_new.txt")
    ds = load_dataset("movie-book", data_root, use_cache=False)
    assert ds.n_users == 15_352
    assert [d.n_items for d in ds.domains] == [36_845, 63_937]
    assert np.bincount(ds.target_domains(ds.test)).tolist() == [2_032 + 1_978, 5_612 + 5_730]


def test_load_is_fast_and_cached(data_root, tmp_path, monkeypatch):
    require_file(data_root, f"{FK}/testdata_new.txt")
    monkeypatch.setenv("FEDSCOPE_CACHE_DIR", str(tmp_path))
    t0 = time.perf_counter()
    first = load_dataset("food-kitchen", data_root)
    t1 = time.perf_counter()
    second = load_dataset("food-kitchen", data_root)
    t2 = time.perf_counter()
    assert np.array_equal(first.items, second.items)
    assert second.domains[1].titles() == first.domains[1].titles()
    assert first.fingerprint == second.fingerprint != ""
    # Loose ceilings so that a regression from seconds to minutes is caught, not a benchmark.
    assert t1 - t0 < 30 and t2 - t1 < 10


def _broken_copy(data_root, tmp_path):
    src = data_root / FK
    dst = tmp_path / "broken"
    dst.mkdir()
    for name in ("Alist.txt", "Blist.txt", "userlist.txt", "validdata_new.txt", "testdata_new.txt"):
        shutil.copy(src / name, dst / name)
    return dst


def test_validate_lists_every_problem_with_its_line(data_root, tmp_path):
    require_file(data_root, f"{FK}/testdata_new.txt")
    dst = _broken_copy(data_root, tmp_path)
    lines = (dst / "testdata_new.txt").read_text().split("\n")
    first_user = lines[0].split("\t")[0]
    lines[2] = "this is not a window"  # malformed line -> line 3
    parts = lines[4].split("\t")
    parts[3] = "99999999|1393113600|2014-02-23 08:00:00|"  # item out of range -> line 5
    lines[4] = "\t".join(parts)
    lines[6] = "\t".join(lines[6].split("\t")[:2])  # empty sequence -> line 7
    lines[8] = "\t".join(lines[8].split("\t")[:3])  # one item -> line 9
    lines[10] = (
        first_user + "\t" + "\t".join(lines[10].split("\t")[1:])
    )  # duplicate user -> line 11
    (dst / "testdata_new.txt").write_text("\n".join(lines))

    problems, _ = validate_path(dst)
    by_line = {p.line: p.message for p in problems if p.path.name == "testdata_new.txt"}
    assert "malformed line" in by_line[3]
    assert "out of range" in by_line[5]
    assert "empty sequence" in by_line[7]
    assert "one-item sequence" in by_line[9]
    assert "duplicate user" in by_line[11]
    # The same problems when the file is validated on its own.
    alone, _ = validate_path(dst / "testdata_new.txt")
    assert {p.line for p in alone} >= {3, 5, 7, 9, 11}
    # And loading refuses with all of them at once.
    with pytest.raises(DataError) as exc:
        from fedscope.data.errors import ProblemLog
        from fedscope.data.formats.c2dsr import build

        log = ProblemLog()
        build(dst, log, {"name": "x", "domains": ["A", "B"]})
        log.raise_if_any()
    assert len(exc.value.problems) >= 5
    assert "testdata_new.txt:3" in str(exc.value)


def test_unknown_encoding_is_named(data_root, tmp_path):
    require_file(data_root, f"{FK}/testdata_new.txt")
    dst = _broken_copy(data_root, tmp_path)
    text = (dst / "userlist.txt").read_text()
    (dst / "userlist.txt").write_bytes(text.encode("utf-16"))
    problems, _ = validate_path(dst / "userlist.txt")
    assert any("UTF-16" in p.message for p in problems)
    raw = bytearray((dst / "Alist.txt").read_bytes())
    offset = raw.index(b"\n", raw.index(b"\n") + 1) + 5  # somewhere on line 3
    raw[offset] = 0xFF
    (dst / "Alist.txt").write_bytes(bytes(raw))
    problems, _ = validate_path(dst / "Alist.txt")
    assert problems[0].line == 3 and "not valid utf-8" in problems[0].message


def test_duplicate_user_in_userlist(tmp_path):
    f = tmp_path / "userlist.txt"
    f.write_text("U1\t0\nU2\t1\nU1\t2\nU4\t7\n")
    problems, _ = validate_path(f)
    assert [
        (p.line, "duplicate user" in p.message or "should be" in p.message) for p in problems
    ] == [
        (3, True),
        (4, True),
    ]


def _window(user: int, line: int, items_ts: list[tuple[int, int]]) -> str:
    toks = "\t".join(f"{i}|{t}|2014-01-01 08:00:00|" for i, t in items_ts)
    return f"{user}\t{line}\t{toks}\t"


def test_given_split_is_used_when_traindata_exists(tmp_path):
    """With traindata_new.txt present (not in our copies), its windows are the training data."""
    d = tmp_path / "c2dsr"
    d.mkdir()
    (d / "Alist.txt").write_text("".join(f"{i}\tA{i}\t{i}\n" for i in range(5)))
    (d / "Blist.txt").write_text("".join(f"{i}\tB{i}\t{i}\n" for i in range(5)))
    (d / "userlist.txt").write_text("u0\t0\nu1\t1\nu2\t2\n")
    (d / "traindata_new.txt").write_text(
        _window(0, 0, [(1, 20), (0, 10), (6, 30)]) + "\n" + _window(0, 1, [(2, 5), (7, 6)]) + "\n"
    )
    (d / "validdata_new.txt").write_text(_window(1, 2, [(3, 3), (8, 1), (4, 9)]) + "\n")
    (d / "testdata_new.txt").write_text(_window(2, 3, [(9, 7), (0, 2)]) + "\n")
    from fedscope.data.errors import ProblemLog
    from fedscope.data.formats.c2dsr import build

    log = ProblemLog()
    ds = build(d, log, {"name": "given", "domains": ["A", "B"]})
    assert not log
    ds.check_consistency()
    assert ds.protocol == "c2dsr-given"
    assert ds.seq_user.tolist() == [0, 0, 1, 2]
    assert ds.sequence(0).tolist() == [0, 1, 6]  # stable-sorted by timestamp
    assert ds.train_len.tolist() == [3, 2, 0, 0]
    assert ds.valid.target.tolist() == [4] and ds.history(ds.valid, 0).tolist() == [8, 3]
    assert ds.test.target.tolist() == [9] and ds.history(ds.test, 0).tolist() == [0]
