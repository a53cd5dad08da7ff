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
