"""PSI-aligned users feed the inter-domain term across clients (federation.exchange_representations)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from fedscope.config import ConfigError, load_config
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.federation.exchange import (
    RepresentationRelay,
    pack_outbox,
    relay_path,
    unpack_inbox,
)
from fedscope.privacy.alignment import load_client_alignment

EXCHANGE = [
    'data.options={"n_users": 240, "n_items": 100}',
    "partition.n_clients=4",
    "partition.scheme=by-domain",
    "federation.exchange_representations=true",
    "train.batch_size=32",
    "eval.valid_subset=200",
    # the inter-domain term alone, strongly weighted, so its effect is unmistakable
    "loss.alpha=1.0",
    "loss.lambda_intra=0",
    "loss.lambda_inter=1.0",
]


def test_relay_routes_blocks_by_pair_and_carries_no_identifiers() -> None:
    rng = np.random.default_rng(0)
    # client 0 shares its rows 2 and 0 with client 1 (intersection order), client 1 its rows 1, 3
    align0, align1 = {1: np.array([2, 0])}, {0: np.array([1, 3])}
    reps0 = rng.normal(size=(2, 4, 8)).astype(np.float32)
    present0 = np.array([[True] * 4, [False] * 4])  # client 0 holds domain 0 only
    outbox = pack_outbox(align0, reps0, present0)
    assert outbox is not None and pack_outbox({}, reps0, present0) is None
    with np.load(io.BytesIO(outbox)) as sent:
        assert sorted(sent.files) == ["present-1", "to-1"]
        assert sent["to-1"].dtype == np.float32 and sent["present-1"].dtype == bool

    relay = RepresentationRelay()
    assert relay.absorb(0, outbox) == 1
    assert relay.inbox_for(0) is None  # nothing addressed to the sender
    users1 = np.array([10, 11, 12, 13])  # client 1's partition users
    got = unpack_inbox(relay.inbox_for(1), align1, users1, 2, client_id=1)
    assert got is not None
    assert got.users.tolist() == [11, 13]
    expected = reps0[0, [2, 0]] / np.linalg.norm(reps0[0, [2, 0]], axis=1, keepdims=True)
    np.testing.assert_allclose(got.reps[0], expected, rtol=1e-6)
    assert got.present[0].all() and not got.present[1].any()
    assert not got.reps[1].any()  # an absent domain carries zeros, nothing stale

    # a block from someone who is not a partner is refused
    with pytest.raises(ValueError, match="not a partner"):
        unpack_inbox(relay.inbox_for(1), {5: np.array([0, 1])}, users1, 2, client_id=1)


def test_relay_state_survives_save_and_load(tmp_path: Path) -> None:
    relay = RepresentationRelay()
    reps = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 1
    relay.absorb(2, pack_outbox({0: np.array([1]), 3: np.array([0, 2])}, reps, reps[..., 0] > 0))
    relay.save(tmp_path / "r.npz")
    loaded = RepresentationRelay.load(tmp_path / "r.npz")
    assert loaded.n_blocks == 2
    assert loaded.inbox_for(3) == relay.inbox_for(3) and loaded.inbox_for(0) == relay.inbox_for(0)


def test_noise_is_added_after_normalising() -> None:
    reps = np.ones((1, 2, 16), dtype=np.float32) * 5
    clean = pack_outbox({1: np.array([0, 1])}, reps, np.ones((1, 2), dtype=bool))
    noisy = pack_outbox(
        {1: np.array([0, 1])},
        reps,
        np.ones((1, 2), dtype=bool),
        noise_std=0.5,
        rng=np.random.default_rng(1),
    )
    with np.load(io.BytesIO(clean)) as c, np.load(io.BytesIO(noisy)) as n:
        np.testing.assert_allclose(np.linalg.norm(c["to-1"], axis=2), 1.0, rtol=1e-6)
        spread = float(np.std(n["to-1"] - c["to-1"]))
    assert 0.3 < spread < 0.7


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("partition.scheme=equal", "by-domain"),
        ("federation.secure_aggregation=true", "SecAgg+"),
        ("loss.lambda_inter=0", "inter-domain term is off"),
        ("federation.regime=local", "regime"),
    ],
)
def test_exchange_is_refused_where_it_cannot_work(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [*EXCHANGE, override])


@pytest.fixture(scope="module")
def exchange_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(None, [*EXCHANGE, "federation.rounds=4", "federation.fraction=0.5"])
    return runner.prepare_run(config, tmp_path_factory.mktemp("exchange") / "run")


def test_psi_alignment_lists_the_same_users_in_the_same_order_on_both_sides(
    exchange_run: Path,
) -> None:
    from fedscope.data.partition import load_partitioning

    parts = load_partitioning(exchange_run / "partition.json").clients
    assert [p.domains for p in parts] == [(0,), (1,), (0,), (1,)]
    n_pairs = 0
    for k, part in enumerate(parts):
        mine = load_client_alignment(exchange_run, k, len(part.users))
        assert mine  # every client shares someone with a client of the other domain
        for j, rows in mine.items():
            theirs = load_client_alignment(exchange_run, j, len(parts[j].users))[k]
            assert part.domains != parts[j].domains  # same-domain pairs share nobody
            np.testing.assert_array_equal(part.users[rows], parts[j].users[theirs])
            truth = np.intersect1d(part.users, parts[j].users)
            assert sorted(part.users[rows].tolist()) == truth.tolist() and truth.size > 0
            n_pairs += 1
    assert n_pairs % 2 == 0 and n_pairs >= 4  # each pair seen from both sides


def test_partners_representations_switch_the_cross_client_term_on(exchange_run: Path) -> None:
    from fedscope.training.task import RecommendationTask

    task = RecommendationTask.from_run_dir(exchange_run)
    weights = task.initial_weights()
    alone = task.client_update(0, weights, 1)
    assert alone.metrics["inter"] == 0.0  # one domain per client, no partner data: fallback
    assert alone.outbox is not None  # but it already sends its shared users to its partners

    relay = RepresentationRelay()
    partners = load_client_alignment(exchange_run, 0, len(task.partitioning.clients[0].users))
    for k in partners:  # clients of the other domain
        update = task.client_update(k, weights, 1)
        relay.absorb(k, update.outbox)
    inbox = relay.inbox_for(0)
    assert inbox is not None
    paired = task.client_update(0, weights, 2, inbox)
    again = task.client_update(0, weights, 2, inbox)
    assert paired.metrics["inter"] != 0.0
    for a, b in zip(paired.delta, again.delta, strict=True):  # deterministic given the inbox
        np.testing.assert_array_equal(a, b)
    without = task.client_update(0, weights, 2)
    assert any(not np.array_equal(a, b) for a, b in zip(paired.delta, without.delta, strict=True))


@pytest.mark.slow
def test_federated_run_with_exchange_trains_and_its_mailbox_survives_a_restart(
    exchange_run: Path,
) -> None:
    from fedscope.federation.simulation import run_simulation

    # Stopped after round 2 and resumed: rounds 3-4 can only train the cross-client term if
    # the server restored the relay's mailbox from disk (a fresh one would be empty).
    run_simulation(exchange_run, 4, run_config={"stop-after-round": 2, "torch-threads": 1})
    assert relay_path(exchange_run, 2).is_file()
    run_simulation(exchange_run, 4, resume=True, run_config={"torch-threads": 1})
    rows = layout.read_metrics(exchange_run)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    inter = [r["client_train"]["inter"] for r in rows]
    assert inter[0] == 0.0  # round 1: nobody has sent anything yet
    assert all(v != 0.0 and np.isfinite(v) for v in inter[1:])
    # two mailboxes kept: the checkpoint may lag the newest by one round
    assert relay_path(exchange_run, 4).is_file() and relay_path(exchange_run, 3).is_file()
    assert not relay_path(exchange_run, 2).exists()
