"""Bytes on the wire: the server counts each message's content as Flower's protobuf would
serialise it, per round and (SecAgg+) per protocol stage, into metrics.jsonl.

The size function is checked against Flower's own serialiser; the per-round counts come
from real runs of the toy task through Flower's simulation engine (about 10 s each, one
plain and one SecAgg+ run, shared by the tests of this module).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common import Code, FitIns, FitRes, Status, ndarray_to_bytes, ndarrays_to_parameters
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common.recorddict_compat import fitins_to_recorddict, fitres_to_recorddict
from tests.toy_task import DEFAULTS, ToyTask, make_run_dir, reference_run

from fedscope.federation import run_dir as layout
from fedscope.federation.server_app import content_wire_bytes
from fedscope.federation.simulation import run_simulation
from fedscope.federation.strategy import encode_weighted
from fedscope.federation.task import load_task

# Per message, beyond the arrays' serialised bytes: record and array keys, dtype/shape/stype
# strings, the fit config or the reply's status, metrics and num_examples (about 150-250 B).
MESSAGE_OVERHEAD_BOUND = 400
SECAGG_STAGES = ["setup", "share_keys", "collect_masked_vectors", "unmask"]
ROUNDS = 2


# --- the size function, without any engine ------------------------------------------------------


def _mixed_content() -> RecordDict:
    rng = np.random.default_rng(0)
    arrays = ArrayRecord(
        {
            "big": Array(rng.normal(size=(70, 300)).astype(np.float32)),  # 3-byte varint length
            "ünïcode-kéy": Array(np.arange(6, dtype=np.int64).reshape(1, 2, 3)),
            "empty": Array(np.zeros((0,), dtype=np.float64)),
            "scalar": Array(np.array(2.5)),  # shape ()
        }
    )
    config = ConfigRecord(
        {
            "blob": b"\x00" * 200,
            "blobs": [b"", b"x" * 130, rng.bytes(20_000)],
            "no-bytes": b"",
            "text": "päd",
            "empty-text": "",
            "int": -7,
            "big-int": 2**40,
            "float": 0.1,
            "flag": True,
            "ints": [1, -2, 300],
            "floats": [0.5, -1.5],
            "texts": ["a", "bc"],
            "flags": [False, True],
        }
    )
    metrics = MetricRecord({"loss": 0.25, "n": 12, "curve": [0.1, 0.2, 0.3], "counts": [1, 2]})
    return RecordDict({"weights": arrays, "config": config, "metrics": metrics})


def _fit_messages() -> list[RecordDict]:
    weights = [np.ones((50, 8), dtype=np.float32), np.zeros(3)]
    fitins = FitIns(ndarrays_to_parameters(weights), {"server_round": 3, "secagg": False})
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), 1, {"loss": 0.5})
    return [
        fitins_to_recorddict(fitins, keep_input=True),
        fitres_to_recorddict(fitres, keep_input=True),
    ]


@pytest.mark.parametrize(
    "content",
    [RecordDict(), _mixed_content(), *_fit_messages()],
    ids=["empty", "mixed", "fitins", "fitres"],
)
def test_content_bytes_equal_flowers_protobuf_size(content: RecordDict) -> None:
    assert content_wire_bytes(content) == recorddict_to_proto(content).ByteSize()


def test_content_bytes_grow_with_the_array_data() -> None:
    def size(n: int) -> int:
        return content_wire_bytes(
            RecordDict({"w": ArrayRecord({"0": Array(np.zeros(n, dtype=np.float32))})})
        )

    # 4 bytes per float32 entry, plus at most the length varints growing by a byte each
    assert 4000 <= size(2000) - size(1000) <= 4003


# --- real runs ----------------------------------------------------------------------------------


def _payload(arrays: list[np.ndarray]) -> int:
    """What the arrays themselves take in a message: Flower carries each as .npy bytes."""
    return sum(len(ndarray_to_bytes(a)) for a in arrays)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    rows = {}
    for name, secagg in (("plain", False), ("secagg", True)):
        run_dir = make_run_dir(tmp_path_factory.mktemp(name), rounds=ROUNDS, secagg=secagg)
        run_simulation(run_dir, load_task(run_dir).settings().n_clients)
        rows[name] = layout.read_metrics(run_dir)  # metrics.jsonl
    return rows


@pytest.mark.slow
def test_plain_rounds_carry_the_weights_to_and_the_updates_from_each_sampled_client(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    task = ToyTask(DEFAULTS)
    weights = task.initial_weights()
    down = _payload(weights)  # float64 (4,) and (1,)
    up = _payload(encode_weighted(weights, 1, task.config["size_bound"]))  # + size weight
    sampled = reference_run({}, rounds=ROUNDS).sampled

    rows = runs["plain"]
    assert [r["round"] for r in rows] == list(range(1, ROUNDS + 1))
    for row in rows:
        m = len(row["sampled"])
        assert row["sampled"] == sampled[row["round"]] and m == 3
        # one train message per sampled client and its reply; discovery is not in a round
        assert (row["messages_to_clients"], row["messages_from_clients"]) == (m, m)
        assert row["messages"] == 2 * m
        assert m * down <= row["bytes_to_clients"] <= m * (down + MESSAGE_OVERHEAD_BOUND)
        assert m * up <= row["bytes_from_clients"] <= m * (up + MESSAGE_OVERHEAD_BOUND)
        assert row["secagg_stage_wire"] is None
    # the same clients get the same-sized weights every round
    assert rows[0]["bytes_to_clients"] == rows[1]["bytes_to_clients"]


@pytest.mark.slow
def test_secagg_rounds_cost_more_than_plain_ones_and_are_split_by_stage(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    task = ToyTask(DEFAULTS)
    down = _payload(task.initial_weights())
    encoded = encode_weighted(task.initial_weights(), 1, task.config["size_bound"])
    # SecAgg+ uploads the encoded update quantised to integers of at least 4 bytes
    masked_at_least = _payload([a.astype(np.int32) for a in encoded])
    for plain, secure in zip(runs["plain"], runs["secagg"], strict=True):
        assert secure["aggregated"] and secure["sampled"] == plain["sampled"]
        m = len(secure["sampled"])
        assert secure["bytes_to_clients"] > plain["bytes_to_clients"]
        assert secure["bytes_from_clients"] > plain["bytes_from_clients"]

        stages = secure["secagg_stage_wire"]
        assert [s["stage"] for s in stages] == SECAGG_STAGES
        assert all(s["sent"] == m and s["replied"] == m for s in stages)
        assert secure["messages"] == 2 * m * len(SECAGG_STAGES)
        assert sum(s["bytes_to_clients"] for s in stages) == secure["bytes_to_clients"]
        assert sum(s["bytes_from_clients"] for s in stages) == secure["bytes_from_clients"]
        by_stage = {s["stage"]: s for s in stages}
        # the collect stage carries the weights down and the masked vectors up
        fit = by_stage["collect_masked_vectors"]
        assert fit["bytes_to_clients"] >= m * down
        assert fit["bytes_from_clients"] >= m * masked_at_least
        # the key exchange: every client sends its public keys, then shares for each other
        assert by_stage["setup"]["bytes_from_clients"] > 0
        assert by_stage["share_keys"]["bytes_from_clients"] > 0
