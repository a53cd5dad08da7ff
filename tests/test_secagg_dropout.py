"""SecAgg+ with clients dropping out, and rounds whose clients send zero size weight.

What Flower 1.41's ``SecAggPlusWorkflow`` does (read from its source): a client counts
as dropped when its reply to a stage is an error or missing; each stage only talks to
the clients left after the previous one, and the workflow halts (silently) once fewer
than the reconstruction threshold are left. Our server runs it with ``num_shares=1.0``
(m shares for m sampled clients, everyone is everyone's neighbour) and
``reconstruction_threshold=0.7``, so the threshold is ``max(2, round(0.7 m))``. The train
handler only runs in the collect-masked-vectors stage, after the client has shared its
keys: a client raising there is the dropout that needs the threshold, because the
survivors' masked vectors hold pairwise masks with it that the server can only remove by
reconstructing its key from at least threshold shares.

Engine runs cost about 10-20 s each (Ray start and shutdown), so each is made once per
module and shared by the tests that inspect it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from tests.toy_task import DEFAULTS, ToyTask, make_run_dir, reference_run

from fedscope.federation import run_dir as layout
from fedscope.federation.simulation import FederationError, SimulationResult, run_simulation
from fedscope.federation.strategy import SizeWeightedDeltaStrategy, encode_weighted
from fedscope.federation.task import load_task

SECAGG_TOLERANCE = 1e-4  # SecAgg+ quantises entries in +-8 to 2^22 levels (step 3.8e-6)
ZERO_WEIGHT_REASON = "every contributing client sent zero weight (|U_k| = 0)"

# --- strategy, without any engine -------------------------------------------------------------


def _fitres(vector: list[np.ndarray]) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(vector), 1, {})


def _strategy(
    partitions: list[int], **kwargs: Any
) -> tuple[SizeWeightedDeltaStrategy, SimpleClientManager]:
    strategy = SizeWeightedDeltaStrategy(seed=3, fraction=1.0, **kwargs)
    strategy.set_partitions({p: 500 + p for p in partitions})
    manager = SimpleClientManager()
    for p in partitions:
        # The proxies are only looked up, never called, in configure_fit/aggregate_fit.
        manager.register(GridClientProxy(node_id=500 + p, grid=None, run_id=0))  # type: ignore[arg-type]
    return strategy, manager


WEIGHTS = [np.array([1.0, -2.0]), np.array([0.5])]
DELTAS = {
    0: [np.array([0.4, 0.2]), np.array([-1.0])],
    1: [np.array([-0.2, 0.6]), np.array([0.5])],
    2: [np.array([3.0, -3.0]), np.array([2.0])],
}


def test_encode_weighted_accepts_zero_users_and_then_sends_only_zeros() -> None:
    wild = [np.array([np.nan, np.inf, 5.0], dtype=np.float32), np.array([[1.0]])]
    encoded = encode_weighted(wild, 0, 40)
    assert [e.shape for e in encoded] == [(3,), (1, 1), (1,)]
    assert encoded[0].dtype == np.float32  # the same dtype a weighted encoding has
    for array in encoded:
        np.testing.assert_array_equal(array, np.zeros_like(array))
    with pytest.raises(ValueError, match="must be at least 0, got -1"):
        encode_weighted(wild, -1, 40)
    with pytest.raises(ValueError, match="exceeds the public size bound S = 40"):
        encode_weighted(wild, 41, 40)


@pytest.mark.parametrize("size_bound", [None, 100])
def test_a_round_where_every_client_sends_zero_weight_keeps_the_weights(
    size_bound: int | None,
) -> None:
    strategy, manager = _strategy([0, 1, 2], size_bound=size_bound)
    instructions = strategy.configure_fit(1, ndarrays_to_parameters(WEIGHTS), manager)
    results = [
        (proxy, _fitres(encode_weighted(DELTAS[p], 0, 100)))
        for p, (proxy, _) in zip([0, 1, 2], instructions, strict=True)
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert params is not None
    for got, want in zip(parameters_to_ndarrays(params), WEIGHTS, strict=True):
        np.testing.assert_array_equal(got, want)
    record = strategy.rounds[1]
    assert record.applied and record.contributors == [0, 1, 2]
    assert record.mean_size_weight == 0.0
    assert record.step_skipped == ZERO_WEIGHT_REASON


def test_zero_weight_clients_drop_out_of_the_size_weighted_mean() -> None:
    sizes = {0: 10, 1: 30, 2: 0}  # client 2's large delta must not count
    # (10 * 0.4 + 30 * -0.2) / 40 = -0.05, (2 + 18) / 40 = 0.5, (-10 + 15) / 40 = 0.125
    expected = [WEIGHTS[0] + np.array([-0.05, 0.5]), WEIGHTS[1] + np.array([0.125])]
    strategy, manager = _strategy([0, 1, 2], size_bound=100)
    instructions = strategy.configure_fit(1, ndarrays_to_parameters(WEIGHTS), manager)
    results = [
        (proxy, _fitres(encode_weighted(DELTAS[p], sizes[p], 100)))
        for p, (proxy, _) in zip([0, 1, 2], instructions, strict=True)
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert params is not None
    for got, want in zip(parameters_to_ndarrays(params), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    record = strategy.rounds[1]
    assert record.step_skipped is None
    assert record.mean_size_weight == pytest.approx(40 / (3 * 100), rel=1e-15)


@pytest.mark.parametrize("residue", [2.4e-6, -3.1e-6, 0.0])
def test_a_quantised_zero_weight_secagg_aggregate_moves_nothing(residue: float) -> None:
    # SecAgg+ hands every FitRes the same dequantised mean; a zero weight may come back as
    # a few quantisation steps off zero, and dividing by it would blow the step up.
    aggregate = [np.array([3e-6, -1e-6]), np.array([2e-6]), np.array([residue])]
    strategy, manager = _strategy([0, 1, 2], secagg=True, size_bound=50)
    instructions = strategy.configure_fit(1, ndarrays_to_parameters(WEIGHTS), manager)
    params, _ = strategy.aggregate_fit(1, [(p, _fitres(aggregate)) for p, _ in instructions], [])
    assert params is not None
    new = parameters_to_ndarrays(params)
    assert all(np.isfinite(a).all() for a in new)
    for got, want in zip(new, WEIGHTS, strict=True):
        np.testing.assert_array_equal(got, want)
    assert strategy.rounds[1].step_skipped == ZERO_WEIGHT_REASON
    # One user among three contributors is 1 / (50 * 3) = 0.0067: far above the residue.
    one_user = [np.array([0.0, 0.0]), np.array([0.0]), np.array([1 / 150])]
    strategy.configure_fit(2, ndarrays_to_parameters(WEIGHTS), manager)
    strategy.aggregate_fit(2, [(p, _fitres(one_user)) for p, _ in instructions], [])
    assert strategy.rounds[2].step_skipped is None


def test_only_secagg_rounds_aggregate_over_the_clients_that_survived() -> None:
    # What SecAggPlusWorkflow hands the strategy after unmasking with client 1 dropped:
    # one FitRes per survivor, each holding the survivors' mean, plus the failures.
    sizes = {0: 10, 2: 30}
    mean = [
        np.mean([encode_weighted(DELTAS[p], sizes[p], 100)[i] for p in sizes], axis=0)
        for i in range(3)
    ]
    expected = [w + (10 * DELTAS[0][i] + 30 * DELTAS[2][i]) / 40 for i, w in enumerate(WEIGHTS)]
    failures: list[Any] = [Exception("client 1 failed in round 1")]
    for secagg in (True, False):
        strategy, manager = _strategy([0, 1, 2], secagg=secagg, size_bound=100)
        instructions = strategy.configure_fit(1, ndarrays_to_parameters(WEIGHTS), manager)
        survivors = [(proxy, _fitres(mean)) for proxy, _ in (instructions[0], instructions[2])]
        params, _ = strategy.aggregate_fit(1, survivors, failures)
        record = strategy.rounds[1]
        assert record.contributors == [0, 2]
        if not secagg:  # a plain round needs every sampled client
            assert params is None and not record.applied and record.dropped == []
            continue
        assert params is not None and record.applied and record.dropped == [1]
        for got, want in zip(parameters_to_ndarrays(params), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


# --- whole runs through Flower's simulation engine ---------------------------------------------


def _run(run_dir: Path, **kwargs: Any) -> SimulationResult:
    return run_simulation(run_dir, load_task(run_dir).settings().n_clients, **kwargs)


def _last_weights(run_dir: Path) -> list[np.ndarray]:
    return layout.load_checkpoint(layout.last_checkpoint_path(run_dir)).weights


# Six clients, all sampled: SecAgg+ threshold max(2, round(0.7 * 6)) = 4, so a round
# survives two dropouts and not three.
DROPOUT_CONFIG: dict[str, Any] = {
    "fraction": 1.0,
    "secagg": True,
    "rounds": 2,
    "fail_schedule": {"1": [1, 4], "2": [0, 2, 5]},
}


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FederationError]:
    run_dir = make_run_dir(tmp_path_factory.mktemp("dropouts"), **DROPOUT_CONFIG)
    with pytest.raises(FederationError) as raised:
        _run(run_dir)
    return run_dir, raised.value


@pytest.mark.slow
def test_secagg_round_completes_over_the_survivors_with_their_size_weights(
    dropout_run: tuple[Path, FederationError],
) -> None:
    run_dir, _ = dropout_run
    rows = layout.read_metrics(run_dir)
    assert [r["round"] for r in rows] == [1]
    row = rows[0]
    assert row["sampled"] == [0, 1, 2, 3, 4, 5] and row["aggregated"] is True
    assert row["dropped"] == [1, 4] and row["step_skipped"] is None
    assert row["server_distinct_updates"] == 1  # still only the aggregate reached the server

    got = layout.load_checkpoint(layout.last_checkpoint_path(run_dir))
    assert got.round == 1
    survivors = reference_run(DROPOUT_CONFIG, rounds=1)  # sum over 0, 2, 3, 5 of |U_k| Delta_k
    for have, want in zip(got.weights, survivors.weights, strict=True):
        np.testing.assert_allclose(have, want, rtol=0, atol=SECAGG_TOLERANCE)
    # The weighting by |U_k| survived: the unweighted survivor mean is far off, and so is
    # the step over all six clients.
    task = ToyTask({**DEFAULTS, **DROPOUT_CONFIG})
    start = task.initial_weights()
    assert len({task.clients[k].y.size for k in (0, 2, 3, 5)}) > 1  # sizes really differ
    deltas = [task.client_update(k, start, 1).delta for k in (0, 2, 3, 5)]
    unweighted = [w + np.mean([d[i] for d in deltas], axis=0) for i, w in enumerate(start)]
    everyone = reference_run({"fraction": 1.0}, rounds=1).weights
    for other in (unweighted, everyone):
        gap = max(float(np.max(np.abs(h - o))) for h, o in zip(got.weights, other, strict=True))
        assert gap > 100 * SECAGG_TOLERANCE

    dropped = [e for e in layout.read_events(run_dir) if e["event"] == "clients_dropped_out"]
    assert [(e["round"], e["dropped"], e["secagg_threshold"]) for e in dropped] == [(1, [1, 4], 4)]
    for k in (1, 4):
        assert any(f"client {k} failed in round 1" in e for e in dropped[0]["errors"])


@pytest.mark.slow
def test_too_many_secagg_dropouts_fail_the_round_with_the_counts_and_threshold(
    dropout_run: tuple[Path, FederationError],
) -> None:
    run_dir, error = dropout_run
    expected = (
        "SecAgg+ halted without aggregating: it could not reconstruct the aggregate because "
        "too many clients dropped out (6 sampled, 3 replied in its 'collect masked vectors' "
        "stage, fewer than the reconstruction threshold of 4; a round survives at most 2 "
        "dropouts)"
    )
    message = str(error)
    assert "round 2 did not aggregate" in message
    assert expected in message
    assert "failed clients [0, 2, 5]" in message
    assert re.search(r"First error: .*client [025] failed in round 2: RuntimeError", message)

    status = layout.read_status(run_dir)
    assert status is not None and status["state"] == "failed"
    assert expected in status["error"]
    failed = [e for e in layout.read_events(run_dir) if e["event"] == "round_failed"]
    assert len(failed) == 1
    event = failed[0]
    assert event["round"] == 2 and event["reason"] == expected
    assert event["sampled"] == [0, 1, 2, 3, 4, 5] and event["failed_clients"] == [0, 2, 5]
    assert event["secagg_threshold"] == 4
    assert [(s["stage"], s["sent"], s["replied"]) for s in event["secagg_stages"]] == [
        ("setup", 6, 6),
        ("share_keys", 6, 6),
        ("collect_masked_vectors", 6, 3),
    ]
    assert layout.load_checkpoint(layout.last_checkpoint_path(run_dir)).round == 1


# seed 6: round 1 samples [0, 2, 5], round 2 samples [2, 3, 4]. With 0, 2 and 5 weightless,
# round 1 carries no weight at all and round 2 one weightless client among two real ones.
ZERO_WEIGHT_CONFIG: dict[str, Any] = {"seed": 6, "rounds": 2, "zero_weight_clients": [0, 2, 5]}


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "secagg"])
def zero_weight_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, bool]:
    secagg = bool(request.param)
    run_dir = make_run_dir(
        tmp_path_factory.mktemp("zero-weight"), **ZERO_WEIGHT_CONFIG, secagg=secagg
    )
    result = _run(run_dir)
    assert result.skipped_rounds == [] and result.last_round == 2
    return run_dir, secagg


@pytest.mark.slow
def test_zero_weight_rounds_keep_the_model_and_weight_only_real_users(
    zero_weight_run: tuple[Path, bool],
) -> None:
    run_dir, secagg = zero_weight_run
    tolerance = SECAGG_TOLERANCE if secagg else 1e-12
    reference = reference_run(ZERO_WEIGHT_CONFIG, rounds=2)
    assert reference.sampled == {1: [0, 2, 5], 2: [2, 3, 4]}

    rows = layout.read_metrics(run_dir)
    assert [(r["round"], r["aggregated"], r["secagg"]) for r in rows] == [
        (1, True, secagg),
        (2, True, secagg),
    ]
    assert rows[0]["step_skipped"] == ZERO_WEIGHT_REASON
    assert rows[0]["mean_size_weight"] == pytest.approx(0.0, abs=SECAGG_TOLERANCE)
    assert rows[1]["step_skipped"] is None and rows[1]["mean_size_weight"] > 0
    # Round 1 left the initial weights: its validation is theirs.
    task = ToyTask({**DEFAULTS, **ZERO_WEIGHT_CONFIG})
    initial = task.evaluate(task.initial_weights(), 1)
    assert rows[0]["validation"]["loss"] == pytest.approx(initial["loss"], rel=1e-12)
    assert rows[1]["validation"]["loss"] < initial["loss"]

    weights = _last_weights(run_dir)
    assert all(np.isfinite(w).all() for w in weights)
    for got, want in zip(weights, reference.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)
    # Client 2's real delta reached round 2 with weight 0: counting its users would differ.
    counted = reference_run({"seed": 6, "rounds": 2}, rounds=2, skip_rounds=(1,)).weights
    gap = max(float(np.max(np.abs(g - c))) for g, c in zip(weights, counted, strict=True))
    assert gap > 100 * SECAGG_TOLERANCE
