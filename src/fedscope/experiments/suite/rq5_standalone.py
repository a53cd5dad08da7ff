"""RQ5 (Figure 6): federated training against standalone training, per client.

Standalone is the ``local`` regime: every client trains its own FedSCOPE on its own users only
(the same expected number of epochs as a federated client) and selects its own best epoch on
its own validation instances. Both runs are RQ1's (shared). results.json of a local run holds
the merged evaluation only, so the per-client comparison is computed here from the stored
checkpoints (the federated run's selected model and each client's own best.npz), on each
client's own test instances, sampled protocol; it is cached next to the experiment index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.experiments.suite import rq1_overall
from fedscope.experiments.suite.base import (
    Experiment,
    Figure,
    Mode,
    RunSpec,
    StoredExperiment,
    StoredRun,
    Summary,
    Table,
    fmt_mean_std,
    protocol_tables,
    pyplot,
    save_figure,
)

FEDERATED = "FedSCOPE (federated)"
STANDALONE = "FedSCOPE (standalone per client)"
CLIENT_METRICS = ("HR@10", "NDCG@10", "MRR")
SIDES = ("federated", "standalone", "popularity")
RIVALS = SIDES[1:]  # what the federated model is counted against, client by client


def per_client_metrics(federated_dir: Path, local_dir: Path) -> list[dict[str, Any]]:
    """Each client's test metrics (sampled protocol) under the federated model, under its
    own standalone model and under the popularity floor, on the same instances: the client's
    users in its domains."""
    from fedscope.evaluation import Evaluator
    from fedscope.evaluation.floors import PopularityScorer
    from fedscope.experiments import runner
    from fedscope.federation import run_dir as layout
    from fedscope.training.task import PARTITION_FILE, RecommendationTask

    if (federated_dir / PARTITION_FILE).read_text() != (local_dir / PARTITION_FILE).read_text():
        raise ValueError(
            f"{federated_dir / PARTITION_FILE} and {local_dir / PARTITION_FILE} differ: the "
            "per-client comparison needs the same clients in both runs"
        )
    fed = RecommendationTask.from_run_dir(federated_dir)
    local = RecommendationTask.from_run_dir(local_dir)
    cfg = fed.config.eval
    ev = Evaluator(
        fed.dataset, "test", "sampled", n_negatives=cfg.n_negatives, seed=cfg.candidate_seed
    )
    fed.load_shared_weights(
        layout.load_checkpoint(layout.best_checkpoint_path(federated_dir)).weights
    )
    fed_higher, fed_equal = ev.rank(fed.method.scorer(fed.model), ev.selected)
    pop_higher, pop_equal = ev.rank(PopularityScorer(fed.dataset), ev.selected)
    out = []
    n = len(ev.split)
    for k, part in enumerate(local.partitioning.clients):
        rows = np.nonzero(np.isin(ev.users, part.users) & np.isin(ev.domains, part.domains))[0]
        if rows.shape[0] == 0:
            continue
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        fed_result = ev.summarise("federated", np.where(mask, fed_higher, -1), fed_equal)
        pop_result = ev.summarise("popularity", np.where(mask, pop_higher, -1), pop_equal)
        ck = layout.load_checkpoint(runner.client_dir(local_dir, k) / "best.npz")
        local.load_shared_weights(ck.weights)
        h, e = ev.rank(local.method.scorer(local.model), rows)
        local_result = ev.summarise("standalone", h, e)
        out.append(
            {
                "client": k,
                "users": int(part.users.shape[0]),
                "instances": int(rows.shape[0]),
                "federated": {m: fed_result.metrics["overall"][m] for m in CLIENT_METRICS},
                "standalone": {m: local_result.metrics["overall"][m] for m in CLIENT_METRICS},
                "popularity": {m: pop_result.metrics["overall"][m] for m in CLIENT_METRICS},
            }
        )
    return out


def cached_per_client(fed: StoredRun, local: StoredRun, cache_dir: Path) -> list[dict[str, Any]]:
    cache = cache_dir / f"per-client-s{fed.seed}.json"
    if cache.is_file():
        rows = json.loads(cache.read_text())
        # Caches written before the floor was added lack it: recompute rather than show none.
        if all(side in c for c in rows for side in SIDES):
            return rows
    rows = per_client_metrics(fed.run_dir, local.run_dir)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows, indent=1))
    return rows


class Standalone(Experiment):
    name = "rq5_standalone"
    title = "Federated against standalone training, per client"
    paper = "RQ5, Figure 6"
    description = (
        "FedSCOPE trained federatedly against FedSCOPE trained by each client alone (local "
        "regime); overall test metrics, and each client's metrics on its own test instances."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        fed = rq1_overall.spec_for("fedscope", "federated", mode)
        local = rq1_overall.spec_for("fedscope", "local", mode)
        return [
            RunSpec(FEDERATED, fed.name, fed.overrides, fed.seeds, fed.owner, fed.tags),
            RunSpec(STANDALONE, local.name, local.overrides, local.seeds, local.owner, local.tags),
        ]

    def notes(self, mode: Mode) -> list[str]:
        return [
            "shares RQ1's FedSCOPE federated and local runs; per-client metrics are computed "
            "from their stored checkpoints (sampled protocol)",
            "the paper's 'platforms' are its clients here: K equal clients holding both domains",
        ]

    def missing(self, mode: Mode) -> list[str]:
        return ["Movie-Book scenario of Fig. 6 (its training file is not available)"]

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        out = Summary()
        groups = stored.by_label()
        if not stored.runs:
            return out
        title = "Test metrics (%), all clients' instances"
        out.tables += protocol_tables(stored, title, ("HR@10", "NDCG@10", "MRR"), groups=groups)
        fed_by_seed = {r.seed: r for r in groups.get(FEDERATED, [])}
        local_by_seed = {r.seed: r for r in groups.get(STANDALONE, [])}
        seeds = sorted(set(fed_by_seed) & set(local_by_seed))
        if not seeds:
            return out
        per_seed = {
            s: cached_per_client(fed_by_seed[s], local_by_seed[s], stored.folder / "derived")
            for s in seeds
        }
        rows = []
        for s, clients in per_seed.items():
            wins = {
                rival: sum(c["federated"]["HR@10"] > c[rival]["HR@10"] for c in clients)
                for rival in RIVALS
            }
            rows.append(
                [str(s), str(len(clients))]
                + [
                    fmt_mean_std([np.mean([c[side][m] for c in clients])])
                    for side in SIDES
                    for m in CLIENT_METRICS
                ]
                + [f"{wins[rival]}/{len(clients)}" for rival in RIVALS]
            )
        out.tables.append(
            Table(
                "Per-client test metrics (%), mean over clients, sampled protocol",
                ["seed", "clients"]
                + [f"{side} {m}" for side in SIDES for m in CLIENT_METRICS]
                + [f"clients where federated HR@10 > {rival}" for rival in RIVALS],
                rows,
            )
        )
        out.figures.append(self._figure(per_seed, stored, figures))
        return out

    def _figure(
        self, per_seed: dict[int, list[dict[str, Any]]], stored: StoredExperiment, figures: Path
    ) -> Figure:
        seed = min(per_seed)
        clients = sorted(per_seed[seed], key=lambda c: c["instances"])
        plt = pyplot()
        width = max(7.0, 0.22 * len(clients) + 2)
        fig, ax = plt.subplots(figsize=(width, 4.2))
        x = np.arange(len(clients))
        for offset, side, label in (
            (-0.2, "federated", FEDERATED),
            (0.2, "standalone", STANDALONE),
        ):
            ax.bar(x + offset, [100 * c[side]["HR@10"] for c in clients], width=0.4, label=label)
        ax.scatter(
            x,
            [100 * c["popularity"]["HR@10"] for c in clients],
            marker="_",
            s=120,
            color="black",
            zorder=3,
            label="popularity (floor)",
        )
        ax.set_xticks(x, [str(c["client"]) for c in clients], fontsize=7, rotation=90)
        ax.set_xlabel("client (sorted by its number of test instances)")
        ax.set_ylabel("test HR@10 (%) on the client's own instances")
        ax.set_title(f"{stored.index.get('dataset')} · seed {seed} · sampled protocol")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        path = save_figure(fig, figures / f"{self.name}-{stored.mode}.png")
        return Figure(
            "Per-client HR@10: federated against standalone",
            path,
            "Each client's own test instances, ranked by the federated model and by the "
            "client's own standalone model; the black mark is the popularity floor on the same "
            "instances.",
        )


EXPERIMENT = Standalone()
