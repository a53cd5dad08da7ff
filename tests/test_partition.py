import numpy as np
import pytest
from tests.helpers import tiny_dataset

from fedscope.data.partition import ClientData, Partitioning, partition

SEQS = (
    [[i % 20, 20 + i % 30, (i + 1) % 20, 20 + (i + 3) % 30] for i in range(60)]
    + [[1, 2, 3] for _ in range(20)]
    + [[21, 22, 23] for _ in range(20)]
)


@pytest.mark.parametrize("scheme", ["equal", "dirichlet", "powerlaw"])
def test_user_schemes_cover_every_user_exactly_once(scheme):
    ds = tiny_dataset(SEQS)
    p = partition(ds, 7, scheme, seed=3, alpha=0.3)
    users = np.concatenate([c.users for c in p.clients])
    assert sorted(users.tolist()) == list(range(ds.n_users))
    assert p.sizes().min() >= 1
    assert p.sizes().sum() == ds.n_users
    again = partition(ds, 7, scheme, seed=3, alpha=0.3)
    assert all(
        np.array_equal(a.users, b.users) for a, b in zip(p.clients, again.clients, strict=True)
    )
    other = partition(ds, 7, scheme, seed=4, alpha=0.3)
    assert any(
        not np.array_equal(a.users, b.users) for a, b in zip(p.clients, other.clients, strict=True)
    )


def test_equal_sizes_differ_by_at_most_one():
    p = partition(tiny_dataset(SEQS), 7, "equal")
    assert p.sizes().max() - p.sizes().min() <= 1


def test_skewed_schemes_are_skewed():
    ds = tiny_dataset(SEQS * 5)
    for scheme in ("dirichlet", "powerlaw"):
        sizes = partition(ds, 10, scheme, seed=0, alpha=0.2, exponent=1.5).sizes()
        assert sizes.max() >= 4 * sizes.min(), (scheme, sizes)


def test_by_domain_puts_each_domain_on_its_own_clients():
    ds = tiny_dataset(SEQS)
    p = partition(ds, 4, "by-domain")
    assert [c.domains for c in p.clients] == [(0,), (1,), (0,), (1,)]
    # users active in both domains appear on one client of each domain
    on_a = np.concatenate([c.users for c in p.clients if c.domains == (0,)])
    on_b = np.concatenate([c.users for c in p.clients if c.domains == (1,)])
    assert len(np.intersect1d(on_a, on_b)) == 60
    view = ClientData(ds, p.clients[1])
    for _, items in view.train_sequences():
        assert np.all(ds.domain_of(items) == 1)
    assert np.all(ds.domain_of(ds.test.target[view.eval_indices("test")]) == 1)
    with pytest.raises(ValueError, match="holds no data of domain 0"):
        view.train_sequences(0)


def test_client_view_splits_mixed_and_per_domain_sequences():
    ds = tiny_dataset(SEQS)
    p = partition(ds, 3, "equal")
    view = ClientData(ds, p.clients[0])
    mixed = dict(view.train_sequences())
    a = dict(view.train_sequences(0))
    b = dict(view.train_sequences(1))
    for u, items in mixed.items():
        assert np.array_equal(
            np.sort(items), np.sort(np.concatenate([a.get(u, []), b.get(u, [])]).astype(int))
        )
        assert set(u for u in mixed) <= set(view.users.tolist())


def test_round_trip_and_bad_arguments():
    ds = tiny_dataset(SEQS)
    p = partition(ds, 5, "dirichlet", seed=1)
    q = Partitioning.from_json(p.to_json())
    assert q.scheme == "dirichlet" and np.array_equal(q.sizes(), p.sizes())
    with pytest.raises(ValueError, match="at least 1 user"):
        partition(ds, 1000, "equal")
    with pytest.raises(ValueError, match="unknown partition scheme"):
        partition(ds, 2, "by-colour")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one client per domain"):
        partition(ds, 1, "by-domain")


def _assignment(path, rows, header="user,client"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_file_assigns_each_user_to_the_client_it_names(tmp_path):
    ds = tiny_dataset(SEQS)
    clients = ["10", "2", "7"]
    rows = [f"u{u},{clients[u % 3]}" for u in range(ds.n_users)]
    p = partition(ds, 3, "file", file=_assignment(tmp_path / "clients.csv", rows))
    assert p.scheme == "file" and [c.name for c in p.clients] == ["2", "7", "10"]
    for c in p.clients:
        expected = [u for u in range(ds.n_users) if clients[u % 3] == c.name]
        assert c.users.tolist() == expected and c.domains == (0, 1)
    q = Partitioning.from_json(p.to_json())
    assert [c.name for c in q.clients] == ["2", "7", "10"]
    assert all(np.array_equal(a.users, b.users) for a, b in zip(p.clients, q.clients, strict=True))
    # names that are not all numbers sort as text
    rows = [f"u{u},{'shop-b' if u < 10 else 'shop-a'}" for u in range(ds.n_users)]
    p = partition(ds, 2, "file", file=_assignment(tmp_path / "named.csv", rows))
    assert [c.name for c in p.clients] == ["shop-a", "shop-b"] and p.sizes().tolist() == [90, 10]


def test_every_problem_of_an_assignment_file_is_named_with_its_line(tmp_path):
    from fedscope.data.errors import DataError

    ds = tiny_dataset(SEQS)
    rows = [f"u{u},a" for u in range(ds.n_users - 3)]  # u97..u99 have no client
    rows[4] = "u4,"  # line 6: empty client
    rows.append("nobody,b")  # line 99: unknown user
    rows.append("u1,b")  # line 100: second assignment
    f = _assignment(tmp_path / "clients.csv", rows)
    with pytest.raises(DataError) as err:
        partition(ds, 2, "file", file=f)
    text = str(err.value)
    assert f"{f}:6: empty client" in text
    assert f"{f}:99: user 'nobody' is not a user of the data set" in text
    assert f"{f}:100: user 'u1' is assigned a second time (line 3 gives it client 'a')" in text
    assert "have no client" not in text  # said once the rows themselves are right
    rows = [f"u{u},a" for u in range(ds.n_users - 3)]
    with pytest.raises(
        DataError, match=r"3 of the data set's 100 users have no client \(e.g. 'u97'"
    ):
        partition(ds, 1, "file", file=_assignment(f, rows))
    rows = [f"u{u},{u % 4}" for u in range(ds.n_users)]
    with pytest.raises(DataError, match=r"names 4 client.*set partition.n_clients=4"):
        partition(ds, 3, "file", file=_assignment(f, rows))
    with pytest.raises(DataError, match=r"clients.csv:1: unexpected column\(s\) domain.*by-domain"):
        partition(
            ds, 4, "file", file=_assignment(f, [r + ",0" for r in rows], "user,client,domain")
        )
    with pytest.raises(DataError, match=r"clients.csv:1: the header lacks the column\(s\) client"):
        partition(ds, 4, "file", file=_assignment(f, rows, "user,platform"))
    with pytest.raises(DataError, match="file not found"):
        partition(ds, 4, "file", file=tmp_path / "missing.csv")


def test_the_configuration_pairs_the_file_with_its_scheme(tmp_path):
    from fedscope.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"partition\.file is not set"):
        load_config(None, ["partition.scheme=file"])
    with pytest.raises(ConfigError, match=r"read only with partition\.scheme=file"):
        load_config(None, [f"partition.file={tmp_path / 'c.csv'}"])
    cfg = load_config(None, ["partition.scheme=file", "partition.file=c.csv"])
    assert cfg.partition.file == "c.csv"
