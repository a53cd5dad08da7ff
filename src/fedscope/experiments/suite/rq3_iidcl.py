"""RQ3 (Figures 4 and 5): IIDCL sensitivity over lambda_intra, lambda_inter and alpha, and a
t-SNE of user representations with and without IIDCL.

Each sweep varies one weight with the other two at their defaults (lambda_intra 0.5,
lambda_inter 0.5, alpha 0.1); the default point is RQ1's FedSCOPE run (shared by all three
sweeps). "Without IIDCL" in the t-SNE is the alpha=0 point of the alpha sweep.

User representations for the t-SNE are the fused user states z~_u^d the scorer uses (one per
user and domain the user has history in), computed from each run's selected checkpoint for a
fixed sample of test instances; nothing is retrained. The 2-D embedding is cached next to the
experiment index.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    draw_test_floors,
    floor_cells,
    fmt_mean_std,
    legend_below,
    mean_std,
    metric_of,
    paired_table,
    pyplot,
    rank_on_validation,
    save_figure,
)

NAME = "rq3_iidcl"
DEFAULTS = {"lambda_intra": 0.5, "lambda_inter": 0.5, "alpha": 0.1}
DEFAULT_LABEL = "FedSCOPE (default weights)"
SYMBOL = {"lambda_intra": "λ_intra", "lambda_inter": "λ_inter", "alpha": "α"}
PAPER_VALUES = tuple(round(0.1 * i, 1) for i in range(11))  # 0 to 1, step 0.1
VALUES: dict[str, dict[str, tuple[float, ...]]] = {
    "full": {k: PAPER_VALUES for k in DEFAULTS},
    "reduced": {
        "lambda_intra": (0.0, 0.25, 0.5, 0.75, 1.0),
        "lambda_inter": (0.0, 0.25, 0.5, 0.75, 1.0),
        "alpha": (0.0, 0.1, 0.25, 0.5, 1.0),
    },
    "quick": {
        "lambda_intra": (0.0, 0.5, 1.0),
        "lambda_inter": (0.0, 0.5, 1.0),
        "alpha": (0.0, 0.1, 1.0),
    },
}
SEEDS = {"full": (0, 1, 2, 3, 4), "reduced": (0,), "quick": (0,)}
TSNE_POINTS = 600  # test instances sampled for the t-SNE (up to one point per domain each)


def sweep_specs(mode: Mode) -> list[RunSpec]:
    seeds = SEEDS[mode]
    default = rq1_overall.spec_for("fedscope", "federated", mode)
    specs = [
        RunSpec(
            DEFAULT_LABEL,
            default.name,
            default.overrides,
            seeds,
            default.owner,
            tuple(sorted(DEFAULTS.items())),
        )
    ]
    for param, values in VALUES[mode].items():
        for v in values:
            if v == DEFAULTS[param]:
                continue
            specs.append(
                RunSpec(
                    f"{SYMBOL[param]}={v:g}",
                    f"fedscope-{param.replace('_', '-')}-{v:g}",
                    ("method=fedscope", "federation.regime=federated", f"loss.{param}={v!r}"),
                    seeds,
                    NAME,
                    tuple(sorted((DEFAULTS | {param: v}).items())),
                )
            )
    return specs


def sweep_points(stored: StoredExperiment, param: str) -> dict[float, list[StoredRun]]:
    """Runs of one sweep by value: those whose other two weights are at their defaults."""
    out: dict[float, list[StoredRun]] = {}
    for run in stored.runs:
        tags = dict(run.spec.tags)
        if all(tags.get(k) == v for k, v in DEFAULTS.items() if k != param):
            out.setdefault(float(tags[param]), []).append(run)
    return dict(sorted(out.items()))


def user_representations(
    run_dir: Path, n_instances: int = TSNE_POINTS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fused user representations z~_u^d ``[n, dim]`` of a run's selected model and the domain
    index of each, for a fixed random sample of test instances (one row per domain the
    instance's history touches)."""
    import torch

    from fedscope.federation import run_dir as layout
    from fedscope.models.transformer import pad_sequences
    from fedscope.training.task import RecommendationTask

    task = RecommendationTask.from_run_dir(run_dir)
    task.load_shared_weights(layout.load_checkpoint(layout.best_checkpoint_path(run_dir)).weights)
    model = task.model
    model.eval()
    ds = task.dataset
    split = ds.eval_split("test")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(split), size=min(n_instances, len(split)), replace=False))
    histories = [ds.history(split, int(i)) for i in rows]
    users = ds.seq_user[split.seq[rows]]
    shape = model.shape
    reps, domains = [], []
    with torch.no_grad():
        sem = model.user_features(torch.as_tensor(np.asarray(users, dtype=np.int64)))
        mixed = pad_sequences(histories, shape.max_len) if model.cross_encoder is not None else None
        for d in range(ds.n_domains):
            lo, hi = shape.domain_offsets[d], shape.domain_offsets[d] + shape.domain_sizes[d]
            own = [h[(h >= lo) & (h < hi)] for h in histories]
            has = np.array([len(h) > 0 for h in own])
            if not has.any():
                continue
            z = model.user_states(d, pad_sequences(own, shape.max_len), mixed, sem)
            reps.append(z.numpy()[has])
            domains.append(np.full(int(has.sum()), d))
    return np.concatenate(reps), np.concatenate(domains)


def tsne_embedding(run: StoredRun, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of :func:`user_representations`, cached as an npz keyed by the run."""
    from sklearn.manifold import TSNE

    cache = _tsne_cache(run, cache_dir)
    if cache.is_file():
        with np.load(cache) as z:
            return z["xy"], z["domain"]
    reps, domains = user_representations(run.run_dir)
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(reps)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, xy=xy, domain=domains)
    return xy, domains


def separation(xy: np.ndarray, domains: np.ndarray) -> float:
    """Silhouette of the domains in the 2-D embedding: higher means clearer domain clusters."""
    from sklearn.metrics import silhouette_score

    if len(set(domains.tolist())) < 2:
        return float("nan")
    return float(silhouette_score(xy, domains))


def _tsne_cache(run: StoredRun, cache_dir: Path) -> Path:
    return cache_dir / f"tsne-{run.run_dir.name}.npz"


def _embeddable(run: StoredRun, cache_dir: Path) -> bool:
    """The run's t-SNE can be drawn: it is cached, or the selected model is there to compute
    it (an archive keeps results and the cache, not checkpoints)."""
    from fedscope.federation import run_dir as layout

    return (
        _tsne_cache(run, cache_dir).is_file() or layout.best_checkpoint_path(run.run_dir).is_file()
    )


def tsne_pair(stored: StoredExperiment) -> list[tuple[str, list[StoredRun]]] | None:
    """(label, runs) with IIDCL and without it (alpha=0), for Figure 5. "With" is the default
    alpha; where that run kept no model, the nearest alpha > 0 whose run did, named in the
    label."""
    cache_dir = stored.folder / "derived"
    sweep = {
        a: [r for r in runs if _embeddable(r, cache_dir)]
        for a, runs in sweep_points(stored, "alpha").items()
    }
    withs = sorted(
        (a for a, runs in sweep.items() if a > 0 and runs),
        key=lambda a: (abs(a - DEFAULTS["alpha"]), a),
    )
    if not withs or not sweep.get(0.0):
        return None
    return [(f"with IIDCL (α={withs[0]:g})", sweep[withs[0]]), ("without IIDCL (α=0)", sweep[0.0])]


def validation_choice(stored: StoredExperiment) -> str:
    """Which weights validation would pick: the test numbers above are the paper's figure, not
    a way to choose, so the choice is stated from validation alone."""
    ranking = rank_on_validation(stored, "MRR", "sampled")
    best = ranking[0]
    default = next((p for p in ranking if p.label == DEFAULT_LABEL), None)
    against = (
        "" if default is None else f", against {100 * default.mean:.2f} at the default weights"
    )
    return (
        f"Chosen on validation (overall MRR of each selected model on the whole validation "
        f"split, mean over seeds): {best.label} ({100 * best.mean:.2f}{against})."
    )


class IIDCLSensitivity(Experiment):
    name = NAME
    title = "IIDCL: sensitivity to its weights, and user representations with and without it"
    paper = "RQ3, Figures 4-5"
    description = (
        "Federated FedSCOPE with one IIDCL weight varied at a time (lambda_intra, lambda_inter, "
        "alpha from 0 to 1), test HR@10 and NDCG@10 per domain; t-SNE of user representations "
        "of the default model and of the alpha=0 model (no IIDCL)."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        return sweep_specs(mode)

    def notes(self, mode: Mode) -> list[str]:
        values = "; ".join(
            f"{SYMBOL[k]} in {{{', '.join(f'{v:g}' for v in vs)}}}"
            for k, vs in VALUES[mode].items()
        )
        notes = [
            f"values: {values}",
            "the default point is RQ1's FedSCOPE run (shared)",
        ]
        if mode == "reduced":
            notes.append(
                "reduced: five values per weight instead of eleven and, by default, one seed instead of "
                "five (the full grid is 31 runs per seed, about 9 h per seed on 2 cores)"
            )
        return notes

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        out = Summary()
        if not stored.runs:
            return out
        domains = stored.domains()
        plt = pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        table_rows = []
        for ax, param in zip(axes, DEFAULTS, strict=True):
            points = sweep_points(stored, param)
            xs = list(points)
            for d in domains:
                for metric, style in (("HR@10", "-o"), ("NDCG@10", "--s")):
                    stats = [
                        mean_std(metric_of(r.results, d, metric) for r in points[x]) for x in xs
                    ]
                    mean = np.array([100 * s[0] for s in stats])
                    std = np.array([100 * s[1] if s[2] > 1 else np.nan for s in stats])
                    ax.errorbar(
                        xs, mean, yerr=std, fmt=style, ms=4, capsize=2, label=f"{d} {metric}"
                    )
            for x in xs:
                runs = points[x]
                table_rows.append(
                    [SYMBOL[param], f"{x:g}"]
                    + [
                        fmt_mean_std(metric_of(r.results, d, m) for r in runs)
                        for d in domains
                        for m in ("HR@10", "NDCG@10")
                    ]
                    + [str(len(runs))]
                )
            first = ax is axes[0]
            label = "popularity HR@10 (floor), {d}" if first else None
            draw_test_floors(ax, stored.runs[0], domains, (":", "-."), label)
            ax.set_xlabel(f"{SYMBOL[param]} (others at defaults)")
            ax.set_ylabel("test metric (%), sampled protocol")
            ax.set_title(f"sensitivity to {SYMBOL[param]}")
            ax.grid(alpha=0.3)
        floors = floor_cells(stored.runs[0], domains, ("HR@10", "NDCG@10"))
        table_rows.append(["popularity (floor)", "", *floors, ""])
        bottom = legend_below(fig, axes[0], ncol=3)
        path = save_figure(fig, figures / f"{self.name}-{stored.mode}-sensitivity.png", bottom)
        out.figures.append(
            Figure(
                "IIDCL sensitivity",
                path,
                "Test HR@10 (solid) and NDCG@10 (dashed), sampled protocol, mean ± std over "
                "seeds; the grey lines are the popularity floor's HR@10 on the same instances.",
            )
        )
        out.tables.append(
            Table(
                "IIDCL sensitivity: test metrics (%), sampled protocol",
                ["weight", "value"]
                + [f"{d} {m}" for d in domains for m in ("HR@10", "NDCG@10")]
                + ["n"],
                table_rows,
            )
        )
        out.notes.append(validation_choice(stored))
        # One seed cannot say which differences are real: each point against the default
        # weights, paired on the test instances.
        paired = paired_table(DEFAULT_LABEL, stored.by_label(), domains)
        if paired is not None:
            out.tables.append(paired)
        pair = tsne_pair(stored)
        if pair is not None:
            out.figures.append(self._tsne(stored, pair, domains, figures))
        else:
            out.notes.append(
                "no t-SNE: it needs the selected models (best.npz) of the α=0 run and of a run "
                "with α > 0, and the stored runs here do not hold both"
            )
        return out

    def _tsne(
        self,
        stored: StoredExperiment,
        pair: list[tuple[str, list[StoredRun]]],
        domains: list[str],
        figures: Path,
    ) -> Figure:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 5))
        scores = {}
        for ax, (label, runs) in zip(axes, pair, strict=True):
            assert runs
            run = min(runs, key=lambda r: r.seed)
            xy, dom = tsne_embedding(run, stored.folder / "derived")
            for d, name in enumerate(domains):
                sel = dom == d
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.6, label=f"{name} ({sel.sum()})")
            scores[label] = separation(xy, dom)
            ax.set_title(f"{label}, seed {run.seed}\ndomain silhouette {scores[label]:.3f}")
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            ax.legend(fontsize=8, markerscale=2, title="representation for domain")
        path = save_figure(fig, figures / f"{self.name}-{stored.mode}-tsne.png")
        (stored.folder / "derived" / "tsne-silhouette.json").write_text(json.dumps(scores))
        return Figure(
            "t-SNE of user representations with and without IIDCL",
            path,
            f"Fused user representations z~_u^d of {TSNE_POINTS} sampled test users (one point "
            "per domain of their history), from each run's selected checkpoint; coloured by the "
            "domain the representation is for. Silhouette of the domains in 2-D as a number.",
        )


EXPERIMENT = IIDCLSensitivity()
