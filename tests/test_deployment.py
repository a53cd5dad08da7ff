"""Deployment: node bundles, certificates, and real runs across processes (SuperLink and
SuperNodes with TLS on 127.0.0.1).

The in-process tests are fast. Each deployment test starts real Flower processes; every
ClientApp process imports torch afresh for every message, so a round costs seconds to a
minute depending on the machine's load.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from fedscope.config import load_config
from fedscope.data import load_dataset
from fedscope.deployment import certs as tls
from fedscope.deployment.audit import read_opened_paths
from fedscope.deployment.bundle import (
    DATASET_DIR,
    export_node_bundles,
    read_node_info,
    restrict_dataset,
)
from fedscope.deployment.local import DeployOptions, deploy_local, pid_alive, run_config_arg
from fedscope.deployment.node_task import NodeTask
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.semantics.store import SemanticStore, SidePart
from fedscope.training.task import RecommendationTask

SMALL = {"n_users": 300, "n_items": 120}


def _config(*sets: str):
    return load_config(
        None,
        [
            f"data.options={json.dumps(SMALL)}",
            "partition.n_clients=3",
            "federation.rounds=3",
            "model.dim=16",
            "eval.n_negatives=99",
            *sets,
        ],
    )


def _random_store(path: Path) -> Path:
    ds = load_dataset("synthetic", None, **SMALL)
    rng = np.random.default_rng(0)
    store = SemanticStore(path)
    store.begin(ds, {"backend": "test-random"}, 8)
    n_items, n_users = ds.n_items_total, ds.n_users
    store.write_part(
        "items",
        SidePart(
            rng.normal(size=(n_items, 8)).astype(np.float32),
            rng.random(n_items) < 0.8,
            np.ones(n_items, np.int8),
        ),
    )
    store.write_part(
        "all",
        SidePart(
            rng.normal(size=(n_users, 8)).astype(np.float32),
            rng.random(n_users) < 0.9,
            np.ones(n_users, np.int8),
        ),
    )
    return path


# --- bundles, in-process ------------------------------------------------------------------------


def test_a_node_bundle_trains_exactly_like_the_whole_data_set(tmp_path: Path) -> None:
    """A client's update (and its DP-privatised update) from its bundle alone equals the
    one computed from the whole data set: same users' data, same seeds, same features."""
    config = _config(
        "partition.scheme=by-domain",  # a client holds one domain of its users
        "privacy.epsilon=8",
        f"semantics.store={_random_store(tmp_path / 'store')}",
    )
    run_dir = runner.prepare_run(config, tmp_path / "run")
    bundles = export_node_bundles(run_dir)
    full = RecommendationTask.from_run_dir(run_dir)
    weights = full.initial_weights()
    for k, bundle in enumerate(bundles):
        node = NodeTask(bundle)
        users = full.partitioning.clients[k].users
        assert node.dataset.n_users == users.shape[0] < full.dataset.n_users
        assert node.dataset.user_keys == [full.dataset.user_keys[u] for u in users]
        assert node.settings() == full.settings()  # S and the SecAgg+ range are the run's
        mine = full.client_update(k, weights, 2)
        theirs = node.client_update(k, weights, 2)
        assert theirs.n_users == mine.n_users
        assert mine.metrics["batches"] > 0
        assert 0 < mine.metrics["compute_s"] <= mine.metrics["update_s"]
        for a, b in zip(mine.delta, theirs.delta, strict=True):
            np.testing.assert_array_equal(a, b)
        private_full = full.privatiser(mine.delta, k, 2, None)
        private_node = node.privatiser(theirs.delta, k, 2, None)
        for a, b in zip(private_full, private_node, strict=True):
            np.testing.assert_array_equal(a, b)
        # The node's ledger is its own file, in its bundle.
        assert (bundle / "privacy" / f"client-{k:04d}.jsonl").is_file()
        with pytest.raises(ValueError, match=f"holds partition {k}"):
            node.client_update((k + 1) % 3, weights, 2)


def test_a_bundle_holds_only_its_own_client(tmp_path: Path) -> None:
    run_dir = runner.prepare_run(_config("privacy.epsilon=8"), tmp_path / "run")
    bundles = export_node_bundles(run_dir)
    full = RecommendationTask.from_run_dir(run_dir)
    sizes = full.partitioning.sizes()
    for k, bundle in enumerate(bundles):
        info = read_node_info(bundle)
        assert (info.partition_id, info.n_clients, info.n_users) == (k, 3, sizes[k])
        assert info.size_bound == int(sizes.max())
        partition = json.loads((bundle / "partition.json").read_text())
        assert [c["client_id"] for c in partition["clients"]] == [k]
        plan = json.loads((bundle / "privacy_plan.json").read_text())
        assert [c["client_id"] for c in plan["clients"]] == [k]
        meta = json.loads((bundle / DATASET_DIR / "meta.json").read_text())
        others = {
            full.dataset.user_keys[u]
            for j, c in enumerate(full.partitioning.clients)
            for u in c.users
            if j != k
        }
        assert not others & set(meta["user_keys"])
        assert json.loads((bundle / "config.json").read_text())["data"]["data_dir"] is None
    with pytest.raises(FileExistsError, match="node-0"):
        export_node_bundles(run_dir)


def test_restricting_keeps_sequences_and_moves_evaluation_cutoffs() -> None:
    ds = load_dataset("synthetic", None, **SMALL)
    users = np.array([3, 10, 42])
    mine = restrict_dataset(ds, users, (1,), "t")
    assert mine.n_users == 3 and mine.fingerprint.endswith("/t")
    for new, old in enumerate(users):
        seq = int(np.nonzero(ds.seq_user == old)[0][0])
        items = ds.sequence(seq)
        expect = items[ds.domain_of(items) == 1]
        np.testing.assert_array_equal(
            mine.sequence(int(np.nonzero(mine.seq_user == new)[0][0])), expect
        )
    assert set(mine.domain_of(mine.valid.target).tolist()) <= {1}
    for i in range(len(mine.valid)):  # the history before each target is the filtered one
        assert mine.history(mine.valid, i).shape[0] == mine.valid.cutoff[i] >= 1


# --- certificates ------------------------------------------------------------------------------


def test_certificates_name_the_hosts_and_keep_keys_private(tmp_path: Path) -> None:
    from cryptography import x509

    certs = tls.generate_certificates(tmp_path / "c", hosts=["127.0.0.1", "link.example.org"])
    assert tls.certificate_hosts(certs.server_cert) == ["127.0.0.1", "link.example.org"]
    for key in (certs.server_key, certs.ca_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    with pytest.raises(ValueError, match="at least one"):
        tls.generate_certificates(tmp_path / "d", hosts=[])


def test_run_config_text_is_toml() -> None:
    text = run_config_arg({"run-dir": "/a b/'x'", "resume": True, "round-timeout": 2.5})
    assert text == "run-dir=\"/a b/'x'\" resume=true round-timeout=2.5"


def test_cli_refuses_a_client_count_that_contradicts_nodes() -> None:
    from fedscope.cli.deploy_commands import config_for_nodes
    from fedscope.config import ConfigError

    with pytest.raises(ConfigError, match="conflicts with --nodes 3"):
        config_for_nodes(None, ["partition.n_clients=5"], 3)
    config = config_for_nodes(None, ["partition.n_clients=3"], 3)
    assert config.partition.n_clients == 3 and config.federation.engine == "deployment"


# --- real deployments ----------------------------------------------------------------------------


def _children_and_descendants(run_dir: Path) -> list[int]:
    record = json.loads((run_dir / "deploy" / "processes.json").read_text())
    return [c["pid"] for c in record["children"] + record["retired"]] + [
        d["pid"] for d in record["descendants"]
    ]


@pytest.mark.slow
def test_three_nodes_train_over_tls_and_each_reads_only_its_bundle(
    tmp_path: Path, data_root: Path
) -> None:
    config = _config(
        "federation.rounds=2",
        "federation.fraction=1.0",
        "train.lr=0.005",
        "train.local_epochs=2",
        "partition.n_clients=3",
    )
    run_dir = runner.prepare_run(config, tmp_path / "run")
    try:
        report, results = deploy_local(
            run_dir, DeployOptions(n_nodes=3, audit_opens=True, timeout_s=420)
        )
    finally:
        pids = _children_and_descendants(run_dir)
        assert pids, "the launcher recorded no processes"
        assert not [p for p in pids if pid_alive(p)], "a process of the deployment outlived it"
    assert report.status is not None and report.status["state"] == "done"
    rows = layout.read_metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["aggregated"] and r["sampled"] == [0, 1, 2] for r in rows)
    assert rows[-1]["validation"]["MRR"] > rows[0]["validation"]["MRR"]
    assert results["selected_round"] == 2
    assert (run_dir / runner.RESULTS_FILE).is_file()
    # TLS: the SuperNodes were given the run's CA, the SuperLink its certificate.
    commands = {
        c["name"]: c["command"]
        for c in json.loads((run_dir / "deploy" / "processes.json").read_text())["children"]
    }
    assert not any("--insecure" in command for command in commands.values())
    assert "--ssl-certfile" in commands["superlink"]
    assert "--root-certificates" in commands["node-0"]

    nodes = [run_dir / "nodes" / f"node-{k}" for k in range(3)]
    shared = data_root.resolve()
    for k, own in enumerate(nodes):
        opened = read_opened_paths(run_dir / "deploy" / "audit" / f"node-{k}-opens.tsv")
        assert own / DATASET_DIR / "arrays.npz" in opened, f"node {k} never read its bundle"
        in_run = [p for p in opened if p.is_relative_to(run_dir)]
        strays = [p for p in in_run if not p.is_relative_to(own)]
        assert not strays, f"node {k} opened files outside its bundle: {strays[:5]}"
        assert not [p for p in opened if p.is_relative_to(shared)]


# --- lost nodes, server side (no engine) -----------------------------------------------------------


def test_a_sampled_partition_whose_node_is_gone_is_a_dropout_not_an_error() -> None:
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    from fedscope.federation.server_app import LostNodeStrategy, ServerOptions
    from fedscope.federation.strategy import SizeWeightedDeltaStrategy, encode_weighted

    nodes = {p: 500 + p for p in range(3)}
    manager = SimpleClientManager()
    for p in (0, 1):  # node of partition 2 has left the SuperLink
        manager.register(GridClientProxy(node_id=nodes[p], grid=None, run_id=0))  # type: ignore[arg-type]
    weights = ndarrays_to_parameters([np.zeros(2)])

    plain = SizeWeightedDeltaStrategy(seed=1, fraction=1.0)
    plain.set_partitions(nodes)
    with pytest.raises(RuntimeError, match=r"sampled partitions \[2\] have no connected node"):
        plain.configure_fit(1, weights, manager)

    strategy = LostNodeStrategy(seed=1, fraction=1.0, size_bound=10)
    strategy.set_partitions(nodes)
    instructions = strategy.configure_fit(1, weights, manager)
    assert sorted(int(proxy.cid) for proxy, _ in instructions) == [500, 501]
    assert strategy.absent[1] == [502] and strategy.rounds[1].sampled == [0, 1, 2]
    replies = [
        (proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(vector), 1, {}))
        for (proxy, _), vector in zip(
            instructions,
            [
                encode_weighted([np.array([1.0, 0.0])], 2, 10),
                encode_weighted([np.array([0.0, 4.0])], 6, 10),
            ],
            strict=True,
        )
    ]
    params, _ = strategy.aggregate_fit(1, replies, [])
    assert params is not None
    # the size-weighted step over the two that replied: (2*[1,0] + 6*[0,4]) / 8
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], [0.25, 3.0])
    assert strategy.rounds[1].dropped == [2]

    options = ServerOptions.from_run_config({"run-dir": "/x", "round-timeout": 30})
    assert options.round_timeout_s == 30.0
    assert ServerOptions.from_run_config({"run-dir": "/x"}).round_timeout_s == 0.0
    with pytest.raises(ValueError, match="round-timeout must be >= 0"):
        ServerOptions.from_run_config({"run-dir": "/x", "round-timeout": -1})
