"""The federation layer: strategy maths, run-directory files, and whole runs through
Flower's real simulation engine (Ray) with the numpy toy task of tests/toy_task.py.

Engine runs cost about 8-10 s each (Ray start and shutdown), so each is made once per
module and shared by the tests that inspect it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from tests.helpers import run_held_by_another_process
from tests.toy_task import DEFAULTS, ToyTask, make_run_dir, reference_run

from fedscope.data.errors import DataError
from fedscope.federation import run_dir as layout
from fedscope.federation.simulation import FederationError, SimulationResult, run_simulation
from fedscope.federation.strategy import (
    SizeWeightedDeltaStrategy,
    decode_weighted_mean,
    encode_weighted,
    sample_partitions,
    sample_size,
)
from fedscope.federation.task import load_task

# --- strategy, without any engine -------------------------------------------------------------


def _fitres(vector: list[np.ndarray], metrics: dict[str, float] | None = None) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(vector), 1, metrics or {})


def _strategy_with_nodes(partitions: list[int]) -> tuple[SizeWeightedDeltaStrategy, Any]:
    strategy = SizeWeightedDeltaStrategy(seed=3, fraction=1.0)
    strategy.set_partitions({p: 1000 + 7 * p for p in partitions})
    manager = SimpleClientManager()
    for p in partitions:
        # The proxies are only looked up, never called, in configure_fit/aggregate_fit.
        manager.register(GridClientProxy(node_id=1000 + 7 * p, grid=None, run_id=0))  # type: ignore[arg-type]
    return strategy, manager


def test_aggregation_is_the_size_weighted_mean_of_deltas() -> None:
    weights = [np.array([1.0, -2.0, 0.5]), np.array([[0.25]])]
    sizes = {0: 10, 1: 30, 2: 60}
    deltas = {
        0: [np.array([0.3, 0.0, -0.6]), np.array([[1.0]])],
        1: [np.array([-0.1, 0.2, 0.4]), np.array([[-2.0]])],
        2: [np.array([0.05, -0.5, 0.0]), np.array([[0.5]])],
    }
    # sum_k |U_k| Delta_k / sum_k |U_k|, written out by hand:
    # (10*0.3 + 30*-0.1 + 60*0.05) / 100 = 0.03, (0 + 6 - 30) / 100 = -0.24, (-6 + 12) / 100 = 0.06
    # (10*1 + 30*-2 + 60*0.5) / 100 = -0.2
    expected = [weights[0] + np.array([0.03, -0.24, 0.06]), weights[1] + np.array([[-0.2]])]

    strategy, manager = _strategy_with_nodes([0, 1, 2])
    instructions = strategy.configure_fit(1, ndarrays_to_parameters(weights), manager)
    assert sorted(int(proxy.cid) for proxy, _ in instructions) == [1000, 1007, 1014]
    assert instructions[0][1].config == {"server_round": 1, "secagg": False}
    results = [
        (proxy, _fitres(encode_weighted(deltas[p], sizes[p], size_bound=100), {"loss": p}))
        for p, proxy in zip([0, 1, 2], [pr for pr, _ in instructions], strict=True)
    ]
    params, _ = strategy.aggregate_fit(1, results[::-1], [])  # arrival order must not matter
    assert params is not None
    new = parameters_to_ndarrays(params)
    for got, want in zip(new, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    record = strategy.rounds[1]
    assert record.applied and record.contributors == [0, 1, 2]
    assert record.distinct_updates == 3
    assert record.client_metrics == {"loss": 1.0}

    # Under SecAgg+ every FitRes carries the same aggregate (the mean of the encodings):
    # the same strategy code must give the same step.
    mean = [
        np.mean([encode_weighted(deltas[p], sizes[p], 100)[i] for p in sizes], axis=0)
        for i in range(3)
    ]
    strategy.configure_fit(2, ndarrays_to_parameters(weights), manager)
    same = [(proxy, _fitres(mean)) for proxy, _ in results]
    params, _ = strategy.aggregate_fit(2, same, [])
    assert params is not None
    for got, want in zip(parameters_to_ndarrays(params), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert strategy.rounds[2].distinct_updates == 1
    assert strategy.rounds[2].client_metrics is None


def test_a_round_with_a_failure_is_not_aggregated() -> None:
    strategy, manager = _strategy_with_nodes([0, 1])
    weights = [np.zeros(2)]
    instructions = strategy.configure_fit(1, ndarrays_to_parameters(weights), manager)
    good = (instructions[0][0], _fitres(encode_weighted([np.ones(2)], 5, 10)))
    params, _ = strategy.aggregate_fit(1, [good], [RuntimeError("client 1 failed in round 1")])
    assert params is None
    assert strategy.rounds[1].aggregate_called and not strategy.rounds[1].applied
    assert strategy.rounds[1].failures == ["client 1 failed in round 1"]


def test_size_weight_encoding_round_trips_and_checks_the_bound() -> None:
    delta = [np.array([0.5, -1.0])]
    encoded = encode_weighted(delta, 20, 80)
    np.testing.assert_allclose(encoded[-1], [0.25])
    np.testing.assert_allclose(decode_weighted_mean(encoded)[0], delta[0])
    with pytest.raises(ValueError, match="exceeds the public size bound S = 80"):
        encode_weighted(delta, 81, 80)


def test_sampling_is_seeded_by_round_and_sized_by_the_fraction() -> None:
    assert sample_size(50, 0.2) == 10
    assert sample_size(6, 0.5) == 3
    assert sample_size(10, 0.05) == 2  # SecAgg+ needs two
    assert sample_size(1, 0.2) == 1
    ids = list(range(50))
    first = sample_partitions(4, 7, ids, 0.2)
    assert first == sample_partitions(4, 7, ids[::-1], 0.2)  # independent of node order
    assert len(set(first)) == 10 and set(first) <= set(ids)
    rounds = [tuple(sample_partitions(4, r, ids, 0.2)) for r in range(1, 21)]
    assert len(set(rounds)) > 15  # rounds differ
    expected = sorted(np.random.default_rng([4, 7]).choice(50, 10, replace=False).tolist())
    assert first == expected


# --- run directory -------------------------------------------------------------------------------


def test_checkpoints_round_trip_and_are_written_atomically(tmp_path: Path) -> None:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3)] + [
        np.full(2, i, dtype=np.float64) for i in range(11)
    ]
    path = tmp_path / "checkpoints" / "last.npz"
    layout.save_checkpoint(path, layout.Checkpoint(weights, 7, 0.25, 5))
    layout.save_checkpoint(path, layout.Checkpoint(weights, 8, None, None))
    loaded = layout.load_checkpoint(path)
    assert loaded.round == 8 and loaded.best_value is None and loaded.best_round is None
    assert len(loaded.weights) == 12
    for got, want in zip(loaded.weights, weights, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.npz"]  # no temp files left


def test_a_run_directory_has_one_writing_process(tmp_path: Path) -> None:
    import signal

    with run_held_by_another_process(tmp_path) as holder:
        in_use = pytest.raises(layout.RunInUseError, match=f"in use by process {holder.pid} ")
        with in_use, layout.exclusive(tmp_path):
            pass
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with its process
        holder.wait(timeout=30)
        with layout.exclusive(tmp_path), layout.exclusive(tmp_path / "." / ""):
            # re-entrant within a process (the simulation's ServerApp thread takes it again)
            assert "process" in (tmp_path / layout.LOCK_FILE).read_text()
    # a directory the lock had to create, and nothing else was written to, is removed
    fresh = tmp_path / "refused-run"
    with layout.exclusive(fresh):
        assert (fresh / layout.LOCK_FILE).is_file()
    assert not fresh.exists()
    with layout.exclusive(fresh):
        (fresh / "config.json").write_text("{}")
    assert (fresh / "config.json").is_file()


def test_metrics_reader_tolerates_only_a_torn_last_line(tmp_path: Path) -> None:
    path = layout.metrics_path(tmp_path)
    path.write_text('{"round": 1}\n{"round": 2}\n{"round": 3, "sam')
    assert [r["round"] for r in layout.read_metrics(tmp_path)] == [1, 2]
    assert layout.keep_metrics_up_to(tmp_path, 1) == 2
    assert path.read_text() == '{"round": 1}\n'
    path.write_text('{"round": 1}\nnot json\n{"round": 3}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not valid JSON"):
        layout.read_metrics(tmp_path)


def test_build_task_names_the_task_file_when_it_is_unusable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"task\.json: task file not found"):
        layout.build_task(tmp_path)
    (tmp_path / "task.json").write_text('{"factory": "no_such_module_xyz:build"}')
    with pytest.raises(DataError, match=r"task\.json: cannot import module 'no_such_module_xyz'"):
        layout.build_task(tmp_path)
    (tmp_path / "task.json").write_text('{"factory": "tests.toy_task:missing"}')
    with pytest.raises(DataError, match=r"task\.json: .* has no callable named 'missing'"):
        layout.build_task(tmp_path)
    (tmp_path / "task.json").write_text("{not json")
    with pytest.raises(DataError, match=r"task\.json:1: not valid JSON"):
        layout.build_task(tmp_path)
    with pytest.raises(ValueError, match=r"module\.path:callable"):
        layout.write_task_spec(tmp_path, "no_colon")
    make_run_dir(tmp_path / "ok")
    assert isinstance(layout.build_task(tmp_path / "ok"), ToyTask)


# --- whole runs through Flower's simulation engine ---------------------------------------------


def _ray_processes() -> list[str]:
    """Ray processes of this test session: Ray's daemons and workers stay in the session of
    the process that started them, so another Ray on the machine (another user's run) is
    not counted."""
    out = subprocess.run(["ps", "-eo", "sid,pid,stat,args"], capture_output=True, text=True).stdout
    names = ("raylet", "gcs_server", "ray::")
    own = str(os.getsid(0))
    return [
        line.split(None, 1)[1]
        for line in out.splitlines()[1:]
        if line.split(None, 1)[0] == own and any(n in line for n in names)
    ]


def _last_weights(run_dir: Path) -> list[np.ndarray]:
    return layout.load_checkpoint(layout.last_checkpoint_path(run_dir)).weights


def _run(run_dir: Path, **kwargs: Any) -> SimulationResult:
    return run_simulation(run_dir, load_task(run_dir).settings().n_clients, **kwargs)


def _listening_sockets() -> set[tuple[Any, int]]:
    """(address, port) of every listening TCP socket on this machine, from /proc/net."""
    found: set[Any] = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(address_hex)
            # /proc/net stores each 32-bit word of the address in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((ipaddress.ip_address(raw), int(port_hex, 16)))
    return found


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class _ListenerWatch:
    """Collects the TCP listening sockets that appear while a run goes on."""

    def __init__(self) -> None:
        self.before = _listening_sockets()
        self.new: set[Any] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.new |= _listening_sockets() - self.before

    def __enter__(self) -> _ListenerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def plain_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, SimulationResult, list[str], set[Any]]:
    run_dir = make_run_dir(tmp_path_factory.mktemp("plain"))
    with _ListenerWatch() as listeners:
        result = _run(run_dir, run_config={"audit-received": True})
    return run_dir, result, _ray_processes(), listeners.new


@pytest.fixture(scope="module")
def secagg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationResult]:
    run_dir = make_run_dir(tmp_path_factory.mktemp("secagg"), secagg=True)
    return run_dir, _run(run_dir, run_config={"audit-received": True})


@pytest.mark.slow
def test_simulation_applies_exactly_the_papers_update(
    plain_run: tuple[Path, SimulationResult, list[str], set[Any]],
) -> None:
    run_dir, result, ray_left, _ = plain_run
    reference = reference_run({}, rounds=3)
    rows = layout.read_metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3]
    # K = 6, C = 0.5: three clients a round, drawn with default_rng([seed, round])
    for row in rows:
        expected = sorted(
            np.random.default_rng([DEFAULTS["seed"], row["round"]]).choice(6, 3, replace=False)
        )
        assert row["sampled"] == [int(k) for k in expected] == reference.sampled[row["round"]]
        assert row["aggregated"] is True
        assert row["validation"]["MRR"] == pytest.approx(
            reference.validation[row["round"]]["MRR"], rel=1e-12
        )
        assert row["client_train"] is not None and row["client_train"]["loss"] > 0
        # seconds in the ClientApp (timing_mod): part of the round, never more
        assert 0 < row["client_train"]["app_s"] < row["fit_s"]
        assert row["fit_s"] > 0 and row["eval_s"] is not None
    for got, want in zip(_last_weights(run_dir), reference.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    best = layout.load_checkpoint(layout.best_checkpoint_path(run_dir))
    best_round = max(reference.validation, key=lambda r: reference.validation[r]["MRR"])
    assert best.round == best_round == result.best_round
    assert result.first_round == 1 and result.last_round == 3 and result.skipped_rounds == []
    assert layout.read_status(run_dir)["state"] == "done"
    assert ray_left == [], f"Ray processes left behind: {ray_left}"


@pytest.mark.slow
def test_ray_listens_on_loopback_only(
    plain_run: tuple[Path, SimulationResult, list[str], set[Any]],
) -> None:
    listeners = plain_run[3]
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("needs Linux /proc/net/tcp to list listening sockets")
    assert listeners, "no listening socket seen during the run (Ray's servers were missed)"
    exposed = sorted(str(a) + f":{p}" for a, p in listeners if not _is_loopback(a))
    assert exposed == [], f"sockets listening beyond 127.0.0.1 during the run: {exposed}"


@pytest.mark.slow
def test_plain_server_receives_each_clients_weighted_update(
    plain_run: tuple[Path, SimulationResult, list[str], set[Any]],
) -> None:
    run_dir, _, _, _ = plain_run
    task = ToyTask({**DEFAULTS})
    weights = task.initial_weights()
    with np.load(run_dir / "audit" / "round_00001.npz") as audit:
        received = [audit[f"array_{i:04d}"] for i in range(3)]
        assert audit["num_examples"].tolist() == [1, 1, 1]  # |U_k| is not sent in the clear
    for row, k in enumerate(reference_run({}, 1).sampled[1]):
        update = task.client_update(k, weights, 1)
        encoded = encode_weighted(update.delta, update.n_users, DEFAULTS["size_bound"])
        for i in range(3):
            np.testing.assert_allclose(received[i][row], encoded[i], rtol=0, atol=1e-15)


@pytest.mark.slow
def test_secagg_gives_the_plain_result_and_hides_individual_updates(
    plain_run: tuple[Path, SimulationResult, list[str], set[Any]],
    secagg_run: tuple[Path, SimulationResult],
) -> None:
    plain_dir, _, _, _ = plain_run
    secagg_dir, _ = secagg_run
    # SecAgg+ quantises entries in +-8 to 2^22 levels (step 3.8e-6)
    for got, want in zip(_last_weights(secagg_dir), _last_weights(plain_dir), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    rows = layout.read_metrics(secagg_dir)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert [r["sampled"] for r in rows] == [r["sampled"] for r in layout.read_metrics(plain_dir)]
    assert all(r["client_train"] is None for r in rows)  # no per-client plaintext metrics
    assert all(r["server_distinct_updates"] == 1 for r in rows)

    task = ToyTask({**DEFAULTS, "secagg": True})
    weights = task.initial_weights()
    individual = []
    for k in reference_run({}, 1).sampled[1]:
        update = task.client_update(k, weights, 1)
        individual.append(encode_weighted(update.delta, update.n_users, DEFAULTS["size_bound"]))
    mean = [np.mean([v[i] for v in individual], axis=0) for i in range(3)]
    with np.load(secagg_dir / "audit" / "round_00001.npz") as audit:
        received = [audit[f"array_{i:04d}"] for i in range(3)]
        assert audit["num_examples"].tolist() == [1, 1, 1]
        assert audit["metric_keys"].size == 0
    for i in range(3):
        for row in received[i]:  # every FitRes the strategy got holds the aggregate ...
            np.testing.assert_allclose(row, mean[i], rtol=0, atol=1e-5)
    for vector in individual:  # ... and none holds a single client's update
        gap = max(float(np.max(np.abs(received[i][0] - vector[i]))) for i in range(3))
        assert gap > 1e-3


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config = {"rounds": 4, "privatiser_scale": 0.5}
    straight = make_run_dir(tmp_path_factory.mktemp("straight"), **config)
    _run(straight)
    parts = make_run_dir(tmp_path_factory.mktemp("parts"), **config)
    first = _run(parts, run_config={"stop-after-round": 2})
    rows_after_first = layout.read_metrics(parts)
    # A kill between round 3's metrics line and its checkpoint, then one mid-write:
    with layout.metrics_path(parts).open("a") as fh:
        fh.write(json.dumps({"round": 3, "sampled": [], "note": "killed"}) + "\n")
        fh.write('{"round": 4, "samp')
    refused = None
    try:
        _run(parts)  # without resume: must refuse to start over a checkpoint
    except FileExistsError as exc:
        refused = exc
    second = _run(parts, resume=True)
    return {
        "straight": straight,
        "parts": parts,
        "first": first,
        "second": second,
        "rows_after_first": rows_after_first,
        "refused": refused,
    }


@pytest.mark.slow
def test_resume_repeats_an_uninterrupted_run_exactly(resumed_runs: dict[str, Any]) -> None:
    straight, parts = resumed_runs["straight"], resumed_runs["parts"]
    assert [r["round"] for r in resumed_runs["rows_after_first"]] == [1, 2]
    assert resumed_runs["first"].last_round == 2
    assert resumed_runs["second"].first_round == 3 and resumed_runs["second"].last_round == 4
    refused = resumed_runs["refused"]
    assert refused is not None and "resume=True" in str(refused)

    rows = layout.read_metrics(parts)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    straight_rows = layout.read_metrics(straight)
    assert [r["sampled"] for r in rows] == [r["sampled"] for r in straight_rows]
    assert [r["validation"] for r in rows] == [r["validation"] for r in straight_rows]
    for got, want in zip(_last_weights(parts), _last_weights(straight), strict=True):
        np.testing.assert_array_equal(got, want)
    best_parts = layout.load_checkpoint(layout.best_checkpoint_path(parts))
    best_straight = layout.load_checkpoint(layout.best_checkpoint_path(straight))
    assert (best_parts.round, best_parts.best_value) == (
        best_straight.round,
        best_straight.best_value,
    )
    resumed = [e for e in layout.read_events(parts) if e["event"] == "run_resumed"]
    assert len(resumed) == 1 and resumed[0]["from_round"] == 2
    assert resumed[0]["dropped_metrics_lines"] >= 1

    # The privatiser hook ran on the clients: the numpy reference with it matches.
    reference = reference_run({"rounds": 4, "privatiser_scale": 0.5}, rounds=4)
    for got, want in zip(_last_weights(straight), reference.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    unprivatised = reference_run({"rounds": 4}, rounds=4)
    assert not np.allclose(_last_weights(straight)[0], unprivatised.weights[0], atol=1e-6)


@pytest.mark.slow
def test_a_failing_client_fails_the_run_and_is_named(tmp_path: Path) -> None:
    failing = reference_run({}, 2).sampled[2][1]
    run_dir = make_run_dir(tmp_path, fail_clients=[failing], fail_round=2)
    with pytest.raises(FederationError) as raised:
        _run(run_dir)
    message = str(raised.value)
    assert "round 2 did not aggregate" in message
    assert f"failed clients [{failing}]" in message
    assert f"client {failing} failed in round 2" in message
    assert [r["round"] for r in layout.read_metrics(run_dir)] == [1]
    assert layout.load_checkpoint(layout.last_checkpoint_path(run_dir)).round == 1
    failed = [e for e in layout.read_events(run_dir) if e["event"] == "round_failed"]
    assert len(failed) == 1
    assert failed[0]["failed_clients"] == [failing] and failed[0]["action"] == "fail"
    assert layout.read_status(run_dir)["state"] == "failed"


@pytest.mark.slow
def test_a_silently_halted_secagg_round_is_detected(tmp_path: Path) -> None:
    sampled = reference_run({}, 1).sampled[1]
    failing = sampled[:2]  # two of three: below SecAgg+'s reconstruction threshold
    run_dir = make_run_dir(tmp_path, secagg=True, rounds=2, fail_clients=failing, fail_round=1)
    with pytest.raises(FederationError, match="SecAgg\\+ halted without aggregating") as raised:
        _run(run_dir)
    assert f"failed clients {failing}" in str(raised.value)
    failed = [e for e in layout.read_events(run_dir) if e["event"] == "round_failed"]
    assert len(failed) == 1
    assert failed[0]["aggregate_called"] is False and failed[0]["secagg"] is True
    assert failed[0]["sampled"] == sampled and failed[0]["failed_clients"] == failing
    assert layout.read_metrics(run_dir) == []
    assert not layout.last_checkpoint_path(run_dir).exists()


@pytest.mark.slow
def test_a_halted_secagg_round_can_be_skipped_when_configured(tmp_path: Path) -> None:
    sampled = reference_run({}, 1).sampled[1]
    config = {"secagg": True, "rounds": 2, "fail_clients": sampled[:2], "fail_round": 1}
    run_dir = make_run_dir(tmp_path, **config)
    result = _run(run_dir, run_config={"on-failed-round": "skip"})
    assert result.skipped_rounds == [1] and result.last_round == 2
    rows = layout.read_metrics(run_dir)
    assert [(r["round"], r["aggregated"]) for r in rows] == [(1, False), (2, True)]
    failed = [e for e in layout.read_events(run_dir) if e["event"] == "round_failed"]
    assert [(e["round"], e["action"]) for e in failed] == [(1, "skip")]
    # SecAgg+ restarts cleanly in round 2 and applies only that round's step
    reference = reference_run(config, rounds=2, skip_rounds=(1,))
    for got, want in zip(_last_weights(run_dir), reference.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    not_skipped = reference_run({"secagg": True, "rounds": 2}, rounds=2)
    assert not np.allclose(_last_weights(run_dir)[0], not_skipped.weights[0], atol=1e-2)


@pytest.mark.slow
def test_diverging_clients_fail_the_run_by_default(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, rounds=4, diverge_from_round=3)
    with pytest.raises(FederationError, match="round 3 did not aggregate") as raised:
        _run(run_dir)
    assert "training diverged" in str(raised.value)
    assert layout.read_status(run_dir)["state"] == "failed"


@pytest.mark.slow
def test_on_divergence_stop_keeps_the_best_round_before_it(tmp_path: Path) -> None:
    # Validated every 2 rounds; round 5 diverges, and round 4, the last good model, has
    # already been validated, so nothing more is validated at the stop.
    config = {"rounds": 8, "eval_every": 2, "diverge_from_round": 5, "on_divergence": "stop"}
    run_dir = make_run_dir(tmp_path / "a", **config)
    result = _run(run_dir)
    assert result.stopped is not None and result.stopped["round"] == 5
    assert result.last_round == 4 and "training diverged" in result.stopped["error"]
    assert [r["round"] for r in layout.read_metrics(run_dir)] == [1, 2, 3, 4]
    reference = reference_run(config, rounds=4)
    for got, want in zip(_last_weights(run_dir), reference.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    best = layout.load_checkpoint(layout.best_checkpoint_path(run_dir))
    assert best.round == max((2, 4), key=lambda r: reference.validation[r]["MRR"])
    status = layout.read_status(run_dir)
    assert status["state"] == "done" and status["stopped"]["round"] == 5
    stops = [e for e in layout.read_events(run_dir) if e["event"] == "training_stopped"]
    assert len(stops) == 1 and stops[0]["validation"] is None  # round 4 was validated

    # Round 4 diverges after round 3, which was not validated: it is validated at the stop
    # and, the toy fit still improving, selected with its weights.
    config = {**config, "diverge_from_round": 4}
    run_dir = make_run_dir(tmp_path / "b", **config)
    result = _run(run_dir)
    assert result.stopped["round"] == 4 and result.last_round == 3
    reference = reference_run(config, rounds=3)
    assert result.stopped["validation"]["MRR"] == pytest.approx(
        reference.validation[3]["MRR"], rel=1e-12
    )
    best = layout.load_checkpoint(layout.best_checkpoint_path(run_dir))
    want_best = max((2, 3), key=lambda r: reference.validation[r]["MRR"])
    assert best.round == want_best == result.best_round == 3
    for got, want in zip(best.weights, reference.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_on_divergence_stop_in_the_first_round_has_nothing_to_select(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, diverge_from_round=1, on_divergence="stop")
    with pytest.raises(FederationError, match="before any round was validated"):
        _run(run_dir)
    assert layout.read_status(run_dir)["state"] == "failed"
