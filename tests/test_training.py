"""The recommender's training path: batching, train/eval consistency, regimes, CLI."""

import json

import numpy as np
import pytest
import torch
from tests.helpers import run_cli, tiny_dataset

from fedscope.config import load_config
from fedscope.data import load_dataset
from fedscope.evaluation import EvalBatch
from fedscope.experiments import runner
from fedscope.methods import DataShape, StepContext, method_class
from fedscope.training.batching import ClientExamples

SMALL = ['data.options={"n_users": 300, "n_items": 120}']


def test_every_position_examples_follow_the_sequence():
    ds = tiny_dataset([[0, 20, 1, 21, 2]])  # A B A B A (A: 0..19, B: 20..49)
    ex = ClientExamples.build([0], [ds.sequence(0)], ds.domain_of, 2, max_len=10)
    # prefix 0 20 1 21 -> targets 20 1 21 2
    assert ex.mixed[0, :4].tolist() == [1, 21, 2, 22]
    assert ex.target[0, :4].tolist() == [20, 1, 21, 2]
    assert ex.target_domain[0, :4].tolist() == [1, 0, 1, 0]
    # the state for target 20 (domain B) has no B item before it; for 21 the last B is index 0
    assert ex.domain_pos[0, :4].tolist() == [-1, 0, 0, 1]
    assert ex.domain[0, 0, :2].tolist() == [1, 2] and ex.domain[1, 0, :2].tolist() == [21, 22]
    assert ex.target[0, 4] == -1


def test_max_len_keeps_the_most_recent_items():
    ds = tiny_dataset([list(range(12))])
    ex = ClientExamples.build([0], [ds.sequence(0)], ds.domain_of, 2, max_len=4)
    assert ex.mixed[0].tolist() == [8, 9, 10, 11]  # items 7..10 as tokens
    assert ex.target[0].tolist() == [8, 9, 10, 11]


@pytest.mark.parametrize("method", ["fedscope", "sasrec", "gru4rec"])
def test_training_states_equal_evaluation_states(method):
    """The state a position is trained with is exactly what evaluation computes for that prefix."""
    ds = tiny_dataset([[0, 20, 1, 21, 2, 3, 22], [5, 6, 25, 7, 26, 27]])
    cfg = load_config(None, [f"method={method}", "model.max_len=10"])
    m = method_class(method)(cfg, DataShape.of(ds))
    model = m.build_model(0).eval()
    seqs = [ds.sequence(s) for s in range(ds.n_sequences)]
    ex = ClientExamples.build([0, 1], seqs, ds.domain_of, 2, max_len=10)
    with torch.no_grad():
        states, _ = model.forward_train(ex.batch(np.array([0, 1])))
        scorer = m.scorer(model)
        for row, seq in enumerate(seqs):
            for p in range(1, len(seq)):
                d = int(ds.domain_of(seq[p : p + 1])[0])
                items = model.domain_item_vectors(d).numpy()
                expect = scorer.score(EvalBatch(np.array([row]), [seq[:p]], d))[0]
                got = items @ states[row, p - 1].numpy()
                np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


def test_client_step_is_deterministic_and_learns():
    ds = load_dataset("synthetic", n_users=300, n_items=120)
    cfg = load_config(None, ["method=fedscope", "train.lr=0.005", "train.batch_size=64"])
    m = method_class("fedscope")(cfg, DataShape.of(ds))
    ex = m.prepare_client(ds, np.arange(ds.n_users), (0, 1))
    a, b = m.build_model(1), m.build_model(1)
    sa = m.client_step(a, ex, StepContext(7, 1, 0, 1))
    sb = m.client_step(b, ex, StepContext(7, 1, 0, 1))
    assert sa == sb
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert sa["intra"] != 0 and sa["inter"] != 0  # both IIDCL terms were computed
    later = [m.client_step(a, ex, StepContext(s, s, 0, 1))["pred"] for s in range(2, 7)]
    assert later[-1] < sa["pred"]


@pytest.mark.parametrize("regime", ["centralised", "local"])
def test_standalone_regimes_select_on_validation_and_report(regime, tmp_path):
    cfg = load_config(
        None,
        [
            *SMALL,
            "method=sasrec",
            f"federation.regime={regime}",
            "federation.rounds=10",
            "federation.fraction=0.3",
            "partition.n_clients=3",
            "train.lr=0.005",
        ],
    )
    run_dir = runner.prepare_run(cfg, tmp_path / regime)
    out = runner.train(run_dir)
    for split in ("valid", "test"):
        for mode in ("sampled", "full"):
            method, floor = out[split][mode]
            assert method["protocol"] == "synthetic-loo" and floor["scorer"] == "popularity"
            assert 0 < method["metrics"]["overall"]["HR@10"] <= 1
    assert json.loads((run_dir / "run.json").read_text())["regime"] == regime
    if regime == "centralised":
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rows] == [1, 2, 3]  # ceil(10 * 0.3 * 1) epochs
        best = max(rows, key=lambda r: r["validation"]["MRR"])
        assert out["selected_round"] == best["round"]
        assert (run_dir / "convergence.png").stat().st_size > 1000
    else:
        assert len(list((run_dir / "clients").glob("*/best.npz"))) == 3


def test_recommend_prints_titles_and_rejects_unknown_items(tmp_path):
    cfg = load_config(
        None, [*SMALL, "method=sasrec", "federation.regime=centralised", "federation.rounds=5"]
    )
    run_dir = runner.prepare_run(cfg, tmp_path / "run")
    runner.train(run_dir)
    ds = load_dataset("synthetic", n_users=300, n_items=120)
    keys = [ds.domains[0].item_keys[i] for i in (3, 5, 8)]
    p = run_cli("recommend", str(run_dir), "--history", ",".join(keys), "--top-k", "4")
    assert p.returncode == 0, p.stderr
    titles = [t for t in ds.domains[0].titles() if t]
    assert sum(1 for t in titles if t in p.stdout) >= 3  # titles are printed
    assert p.stdout.count("\n") >= 2 * 5
    bad = run_cli("recommend", str(run_dir), "--history", "no-such-item")
    assert (
        bad.returncode == 2 and "unknown item id(s)" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_batch_with_targets_in_one_domain_only():
    """Domains without a target in the batch still line up with their index in the objective."""
    ds = tiny_dataset([[20, 21, 22, 23], [24, 25, 26, 27], [0, 1, 28, 2, 29, 3]])
    cfg = load_config(None, ["method=fedscope", "loss.alpha=1.0"])
    m = method_class("fedscope")(cfg, DataShape.of(ds))
    ex = m.prepare_client(ds, np.array([0, 1]), (0, 1))  # only domain B targets
    stats = m.client_step(m.build_model(0), ex, StepContext(1, 1, 0, 1))
    assert np.isfinite(stats["loss"])
    ex = m.prepare_client(ds, np.array([0, 1, 2]), (0, 1))
    stats = m.client_step(m.build_model(0), ex, StepContext(1, 1, 0, 1))
    assert stats["inter"] != 0  # user 2 has items of both domains


def test_no_item_table_keeps_the_table_public_frozen_and_off_the_wire(tmp_path):
    from fedscope.training.task import RecommendationTask

    sets = [*SMALL, "partition.n_clients=2", "federation.rounds=3"]
    full_dir = runner.prepare_run(load_config(None, sets), tmp_path / "all")
    lean_dir = runner.prepare_run(
        load_config(None, [*sets, "federation.shared_parameters=no-item-table"]), tmp_path / "lean"
    )
    full, lean = (
        RecommendationTask.from_run_dir(full_dir),
        RecommendationTask.from_run_dir(lean_dir),
    )
    sent_full, sent_lean = full.initial_weights(), lean.initial_weights()
    assert len(sent_lean) == len(sent_full) - 1
    table = full.model.items.weight.detach().numpy()
    assert not any(w.shape == table.shape for w in sent_lean)
    assert sum(w.size for w in sent_lean) < sum(w.size for w in sent_full) - table.size + 1

    before = lean.model.items.weight.detach().clone()
    update = lean.client_update(0, sent_lean, server_round=1)
    assert [d.shape for d in update.delta] == [w.shape for w in sent_lean]
    assert any(np.abs(d).max() > 0 for d in update.delta)  # the shared part trained
    assert torch.equal(lean.model.items.weight, before)  # the table did not
    # every party rebuilds the same table from the run seed: server and a fresh client agree
    other = RecommendationTask.from_run_dir(lean_dir)
    assert torch.equal(other.model.items.weight, before)
    np.testing.assert_array_equal(before.numpy(), table)  # same seed, same initial table


def test_a_diverged_step_or_model_is_a_divergence_error_naming_where(tmp_path):
    from fedscope.federation.task import DivergenceError, is_divergence_report
    from fedscope.training.task import RecommendationTask

    sets = [*SMALL, "partition.n_clients=2", "federation.rounds=3"]
    task = RecommendationTask.from_run_dir(runner.prepare_run(load_config(None, sets), tmp_path))
    weights = task.initial_weights()
    assert task.client_update(1, weights, server_round=2).delta  # finite weights: no error
    broken = [w.copy() for w in weights]
    broken[0].flat[0] = np.nan
    with pytest.raises(DivergenceError) as raised:
        task.client_update(1, broken, server_round=2)
    assert "client 1, round 2" in str(raised.value) and is_divergence_report(str(raised.value))
    with pytest.raises(DivergenceError, match="global model after round 3") as raised:
        task.evaluate([np.full_like(w, np.inf) for w in weights], 3)
    assert is_divergence_report(str(raised.value))


def _long_tailed_examples(n_users: int = 300, seed: int = 0) -> ClientExamples:
    """Users of 2–6 items with a few of 40: random batches are mostly padding."""
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(n_users) < 0.05, 40, rng.integers(2, 7, n_users))
    seqs = [rng.integers(0, 50, n) for n in lengths]
    return ClientExamples.build(
        list(range(n_users)), seqs, lambda x: (np.asarray(x) >= 20).astype(np.int64), 2, 50
    )


def test_length_buckets_cover_every_user_once_with_far_less_padding():
    ex = _long_tailed_examples()

    def cells(batches):
        rows = [b.rows.numpy() for b in batches]
        widths = [b.mixed.shape[0] * b.mixed.shape[1] for b in batches]
        return np.concatenate(rows), sum(widths), rows

    random_rows, random_cells, _ = cells(list(ex.batches(32, np.random.default_rng(1))))
    sorted_rows, sorted_cells, per_batch = cells(
        list(ex.batches(32, np.random.default_rng(1), by_length=True))
    )
    assert sorted(sorted_rows.tolist()) == sorted(random_rows.tolist()) == list(range(300))
    assert sorted_cells < random_cells / 2
    lengths = (ex.target >= 0).sum(axis=1)
    spans = [(lengths[r].min(), lengths[r].max()) for r in per_batch]
    # batches hold contiguous length ranges, and their order is shuffled
    assert all(a[1] <= b[0] or b[1] <= a[0] for a in spans for b in spans if a is not b)
    assert [s[0] for s in spans] != sorted(s[0] for s in spans)
    # another epoch's rng gives another order of the same batches' contents
    again = list(ex.batches(32, np.random.default_rng(2), by_length=True))
    assert [b.rows.tolist() for b in again] != [r.tolist() for r in per_batch]


def test_length_buckets_weigh_every_target_as_random_batches_do():
    ex = _long_tailed_examples()
    expected = torch.from_numpy(ex.mean_targets_per_batch(32, 2))
    total = np.array([(ex.target_domain == d).sum() for d in range(2)])
    n_batches = -(-300 // 32)
    np.testing.assert_allclose(expected.numpy(), total / n_batches)
    # a loss of 1 per target: the reweighted batch means, summed over an epoch, count each
    # target 1/expected[d] times, whatever the batch composition
    from fedscope.methods.sequential import _reweight_by_targets

    summed = torch.zeros(2, dtype=torch.float64)
    for batch in ex.batches(32, np.random.default_rng(0), by_length=True):
        ones = [torch.tensor(1.0, dtype=torch.float64) for _ in range(2)]
        summed += torch.stack(_reweight_by_targets(ones, batch.target_domain, expected))
    np.testing.assert_allclose(summed.numpy(), total / expected.numpy())
    np.testing.assert_allclose(summed.numpy(), [n_batches, n_batches])


def test_client_step_with_length_buckets_is_deterministic_and_learns():
    ds = load_dataset("synthetic", n_users=300, n_items=120)
    cfg = load_config(
        None,
        ["method=fedscope", "train.lr=0.005", "train.batch_size=64", "train.length_buckets=true"],
    )
    m = method_class("fedscope")(cfg, DataShape.of(ds))
    ex = m.prepare_client(ds, np.arange(ds.n_users), (0, 1))
    a, b = m.build_model(1), m.build_model(1)
    sa = m.client_step(a, ex, StepContext(7, 1, 0, 1))
    assert sa == m.client_step(b, ex, StepContext(7, 1, 0, 1))
    later = [m.client_step(a, ex, StepContext(s, s, 0, 1))["pred"] for s in range(2, 7)]
    assert later[-1] < sa["pred"]


def test_the_representation_bank_is_each_users_own_whatever_the_batching():
    """The bank is built from length-sorted small batches; every row must still hold that
    user's representation as one pass over all users in row order computes it."""
    ex = _long_tailed_examples(n_users=150)
    order = np.concatenate([b.rows.numpy() for b in ex.all_rows(16, by_length=True)])
    assert sorted(order.tolist()) == list(range(150)) and order.tolist() != list(range(150))
    lengths = (ex.mixed > 0).sum(axis=1)
    assert (np.diff(lengths[order]) >= 0).all()
    cfg = load_config(None, ["method=fedscope", "model.max_len=50"])
    shape = DataShape(("A", "B"), domain_offsets=(0, 20), domain_sizes=(20, 30))
    m = method_class("fedscope")(cfg, shape)
    model = m.build_model(0).train()
    reps, present = m._bank(model, ex)
    assert model.training  # the bank is built without dropout, and training mode comes back
    with torch.no_grad():
        _, last = model.eval().forward_train(ex.batch(np.arange(150)))
    assert reps.shape == last.shape
    torch.testing.assert_close(reps, last, rtol=1e-5, atol=1e-6)
    assert torch.equal(present, ex.batch(np.arange(150)).present)
