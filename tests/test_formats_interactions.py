"""The `interactions` format (a user's own CSV files): round trip, order, every kind of bad row
reported with its file and line, and a federated run trained and served from such files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import run_cli, tiny_dataset

from fedscope.data import DataError, load_dataset
from fedscope.data.formats import interactions
from fedscope.data.validate import validate_path


def _write(folder: Path, inter: str, items: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text(inter, encoding="utf-8")
    if items is not None:
        (folder / "items.csv").write_text(items, encoding="utf-8")
    return folder


def _load(folder: Path):
    return load_dataset("interactions", folder, use_cache=False)


def test_a_generated_data_set_round_trips_exactly(tmp_path: Path) -> None:
    ds = load_dataset("synthetic", use_cache=False, n_users=300, n_items=60)
    interactions.write(ds, tmp_path)
    back = _load(tmp_path)
    assert [d.name for d in back.domains] == [d.name for d in ds.domains]
    assert back.user_keys == ds.user_keys
    for name in ("seq_offsets", "items", "times", "train_len"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    for split in ("valid", "test"):
        for name in ("seq", "cutoff", "target"):
            np.testing.assert_array_equal(
                getattr(getattr(back, split), name), getattr(getattr(ds, split), name)
            )
    for a, b in zip(ds.domains, back.domains, strict=True):
        assert a.item_keys == b.item_keys
        assert a.item_attributes == b.item_attributes  # titles with commas and quotes too


def test_order_ties_iso_times_and_catalogue_only_items(tmp_path: Path) -> None:
    folder = _write(
        tmp_path,
        "timestamp,domain,item,user,rating\n"
        "2024-03-02T10:00:00+02:00,Books,b2,alice,5\n"  # 08:00 UTC
        "2024-03-02,Movies,m1,alice,4\n"  # midnight UTC: first
        "2024-03-02T08:00:00Z,Movies,m9,alice,3\n"  # same instant as b2: file order after it
        "2024-03-03,Books,b1,bob,1\n",
        'domain,item,title,year\nBooks,b1,"A, B and ""C""",1999\nBooks,b7,"Unsold\nbook",\n'
        "Movies,m1,Film,\n",
    )
    ds = _load(folder)
    assert [d.name for d in ds.domains] == ["Books", "Movies"]
    books, movies = ds.domains
    assert books.item_keys == ("b1", "b2", "b7") and movies.item_keys == ("m1", "m9")
    assert books.item_attributes["title"] == ('A, B and "C"', "", "Unsold\nbook")
    assert books.item_attributes["year"] == ("1999", "", "")
    assert movies.item_attributes["title"] == ("Film", "")
    alice = ds.user_keys.index("alice")
    keys = [
        ds.domains[d].item_keys[i]
        for d, i in zip(
            ds.domain_of(ds.sequence(alice)), ds.to_local(ds.sequence(alice)), strict=True
        )
    ]
    assert keys == ["m1", "b2", "m9"]
    assert ds.sequence_times(alice).tolist() == [1709337600, 1709366400, 1709366400]
    assert len(ds.test) == 1 and ds.test.target.tolist() == [movies.offset + 1]  # alice: m9
    assert any("columns ignored in interactions.csv: rating" in n for n in ds.notes)
    assert any("1 of them without interactions" in n for n in ds.notes)

    (folder / "items.csv").write_text("domain,item,title\n")  # present, lists nothing
    assert any("items.csv: 0 items with attributes (title)" in n for n in _load(folder).notes)
    (folder / "items.csv").unlink()
    assert any(n.startswith("no items.csv") for n in _load(folder).notes)


def test_every_bad_row_is_reported_with_its_line(tmp_path: Path) -> None:
    folder = _write(
        tmp_path,
        "user,item,domain,timestamp\n"
        "u1,i1,A,100\n"
        "u1,i2,A\n"  # 3: too few fields
        "u2,,A,101\n"  # 4: empty item
        "u2,i3,A,yesterday\n"  # 5: not a time
        "u2,i3,A,2024-01-01\n"  # 6: another kind of time than line 2's
        '"u3,i1,A,102\n',  # 7: an unterminated quote
        "domain,item,title\nA,i1,x\nA,i1,y\nB,i9,z\n",
    )
    problems, what = validate_path(folder)
    assert what == "folder as data set format of 'interactions'"
    got = [(p.path.name, p.line, p.message) for p in problems]
    assert [(name, line) for name, line, _ in got] == [
        ("interactions.csv", 3),
        ("interactions.csv", 4),
        ("interactions.csv", 5),
        ("interactions.csv", 6),
        ("interactions.csv", 7),
        ("items.csv", 3),
    ]
    assert "expected 4 fields as in the header, got 3" in got[0][2]
    assert "empty item" in got[1][2]
    assert "neither integer Unix seconds nor an ISO 8601" in got[2][2]
    assert "but line 2's is unix seconds" in got[3][2]
    assert "not valid CSV from this line on" in got[4][2]
    assert "listed again (first on line 2)" in got[5][2]
    with pytest.raises(DataError, match=r"interactions.csv:3: expected 4 fields"):
        _load(folder)

    # The CLI: every problem on its own line, exit 1, no traceback.
    p = run_cli("data", "validate", str(folder))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"{folder / 'interactions.csv'}:5: timestamp 'yesterday'" in p.stderr
    assert "6 problem(s)" in p.stderr


def test_problems_with_whole_files(tmp_path: Path) -> None:
    def problems(inter: str, items: str | None = None) -> list[str]:
        folder = _write(tmp_path / str(len(list(tmp_path.iterdir()))), inter, items)
        return [str(p).split(str(folder) + "/")[1] for p in validate_path(folder)[0]]

    assert problems("") == [
        "interactions.csv: the file is empty: expected a header row, then one row per line"
    ]
    assert problems("user,item,domain,timestamp\n") == [
        "interactions.csv: no interactions: the file has a header and nothing else"
    ]
    assert problems("user,item,when\nu,i,1\n") == [
        "interactions.csv:1: the header lacks the column(s) domain, timestamp; it must name "
        "user, item, domain, timestamp (got user, item, when)"
    ]
    assert problems("user,item,item,domain,timestamp\n") == [
        "interactions.csv:1: column 'item' appears twice in the header"
    ]
    assert problems("user,item,domain,timestamp\nu,i,A,1\n", "domain,item\nB,x\n") == [
        "items.csv: domain 'B' has items but no interactions"
    ]
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "interactions.csv").write_bytes(
        b"user,item,domain,timestamp\nu,caf\xe9,A,1\n"
    )
    assert "interactions.csv:2: not valid utf-8" in str(validate_path(tmp_path / "latin")[0][0])


def test_export_refuses_data_without_one_sequence_per_user(tmp_path: Path) -> None:
    ds = tiny_dataset([[0, 1, 20, 2], [3, 21, 4]])
    ds.seq_user = np.array([0, 0], dtype=np.int64)  # two windows of one user, as C2DSR holds
    with pytest.raises(ValueError, match="does not hold exactly one sequence per user"):
        interactions.write(ds, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_own_files_train_federated_and_recommend_with_their_titles(tmp_path: Path) -> None:
    """The product path: export a template, train FedSCOPE federated on the files through the
    CLI, and get recommendations titled from items.csv."""
    folder = tmp_path / "mine"
    p = run_cli("data", "export", "synthetic", "--to", str(folder), "--set", "n_users=200")
    assert p.returncode == 0, p.stderr
    assert "data.name=interactions" in " ".join(p.stdout.split())
    again = run_cli("data", "export", "synthetic", "--to", str(folder))
    assert again.returncode == 2 and "pass --force" in " ".join(again.stderr.split())

    run = tmp_path / "run"
    p = run_cli(
        "train",
        *("--set", "data.name=interactions", "--set", f"data.data_dir={folder}"),
        *("--set", "federation.rounds=2", "--set", "partition.n_clients=2"),
        *("--set", "federation.fraction=1.0", "--set", "train.batch_size=32"),
        *("--run-dir", str(run)),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["run"]["dataset"] == "interactions"
    assert results["run"]["protocol"] == "interactions-loo"

    ds = _load(folder)
    book = ds.domains[0].item_keys[3]
    p = run_cli("recommend", str(run), "--history", book, "--domain", "Books", "--top-k", "3")
    assert p.returncode == 0, p.stderr
    titles = dict(zip(ds.domains[0].item_keys, ds.domains[0].titles(), strict=True))
    listed = [line.split()[1] for line in p.stdout.splitlines()[1:4]]
    assert all(titles[key] and titles[key] in p.stdout for key in listed)
