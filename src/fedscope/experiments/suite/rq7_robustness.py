"""RQ7 (Figure 8): robustness to the number of clients K and the sampling ratio C.

K in {20, 50, 100} at C = 0.2 and C in {0.1, 0.2, 0.4} at K = 50, for FedSCOPE and
FedAvg+SASRec; the point K=50, C=0.2 is RQ1's runs (shared). Quick mode scales K down to
the generated data set ({5, 10, 20} at the quick C = 0.3; C in {0.1, 0.3, 0.5} at K = 10) and
runs FedSCOPE only.
"""

from __future__ import annotations

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
    draw_floor,
    draw_test_floors,
    floor_cells,
    fmt_mean_std,
    legend_below,
    mean_std,
    metric_of,
    plot_curves,
    pyplot,
    save_figure,
    validation_floor,
)

NAME = "rq7_robustness"
# (default K, default C, K values, C values) per mode; the default point is RQ1's.
AXES: dict[str, tuple[int, float, tuple[int, ...], tuple[float, ...]]] = {
    "full": (50, 0.2, (20, 50, 100), (0.1, 0.2, 0.4)),
    "reduced": (50, 0.2, (20, 50, 100), (0.1, 0.2, 0.4)),
    "quick": (10, 0.3, (5, 10, 20), (0.1, 0.3, 0.5)),
}
METHODS = {
    "full": ("fedscope", "sasrec"),
    "reduced": ("fedscope", "sasrec"),
    "quick": ("fedscope",),
}
SEEDS = {"full": (0, 1, 2, 3, 4), "reduced": (0,), "quick": (0,)}
LABELS = {"fedscope": "FedSCOPE", "sasrec": "FedAvg+SASRec"}


def robustness_specs(mode: Mode) -> list[RunSpec]:
    k0, c0, ks, cs = AXES[mode]
    points = [(k, c0) for k in ks] + [(k0, c) for c in cs if c != c0]
    specs = []
    for method in METHODS[mode]:
        for k, c in points:
            tags = (("K", k), ("C", c), ("method", method))
            if (k, c) == (k0, c0):
                shared = rq1_overall.spec_for(method, "federated", mode)
                specs.append(
                    RunSpec(
                        LABELS[method],
                        shared.name,
                        shared.overrides,
                        SEEDS[mode],
                        shared.owner,
                        tags,
                    )
                )
                continue
            specs.append(
                RunSpec(
                    LABELS[method],
                    f"{method}-federated-K{k}-C{c:g}",
                    (
                        f"method={method}",
                        "federation.regime=federated",
                        f"partition.n_clients={k}",
                        f"federation.fraction={c!r}",
                    ),
                    SEEDS[mode],
                    NAME,
                    tags,
                )
            )
    return specs


def _point_runs(
    stored: StoredExperiment, axis: str, fixed: tuple[str, float]
) -> dict[str, dict[float, list[StoredRun]]]:
    """method label -> value of ``axis`` -> runs, over runs whose other axis is ``fixed``."""
    out: dict[str, dict[float, list[StoredRun]]] = {}
    for run in stored.runs:
        tags = dict(run.spec.tags)
        if tags.get(fixed[0]) != fixed[1]:
            continue
        out.setdefault(run.spec.label, {}).setdefault(tags[axis], []).append(run)
    return out


class Robustness(Experiment):
    name = NAME
    title = "Robustness to the federated configuration (K and C)"
    paper = "RQ7, Figure 8"
    description = (
        "Federated FedSCOPE (and FedAvg+SASRec) with K clients at a fixed C, and with sampling "
        "ratio C at a fixed K; test HR@10 per domain and validation convergence."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        return robustness_specs(mode)

    def notes(self, mode: Mode) -> list[str]:
        k0, c0, ks, cs = AXES[mode]
        notes = [
            f"K in {list(ks)} at C={c0:g}; C in {list(cs)} at K={k0}; methods "
            f"{[LABELS[m] for m in METHODS[mode]]}",
            f"the point K={k0}, C={c0:g} is RQ1's runs (shared)",
        ]
        if mode == "quick":
            notes.append("quick: K scaled to the generated data set; FedSCOPE only")
        if mode == "reduced":
            notes.append(
                "reduced: by default one seed instead of five (8 new runs, about 3 h on 2 cores)"
            )
        return notes

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        out = Summary()
        if not stored.runs:
            return out
        k0, c0, _, _ = AXES.get(stored.mode, AXES["full"])
        domains = stored.domains()
        panels = (
            ("K", ("C", c0), "number of clients K", f"C = {c0:g}"),
            ("C", ("K", k0), "sampling ratio C", f"K = {k0}"),
        )
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
        rows = []
        for ax, (axis, fixed, xlabel, fixed_label) in zip(axes, panels, strict=True):
            by_method = _point_runs(stored, axis, fixed)
            values = sorted({v for pts in by_method.values() for v in pts})
            bars = [(m, d) for m in by_method for d in domains]
            width = 0.8 / max(len(bars), 1)
            x = np.arange(len(values))
            for i, (method, d) in enumerate(bars):
                stats = [
                    mean_std(metric_of(r.results, d, "HR@10") for r in by_method[method].get(v, []))
                    for v in values
                ]
                ax.bar(
                    x + (i - (len(bars) - 1) / 2) * width,
                    [100 * s[0] if s[2] else 0 for s in stats],
                    width,
                    # no error bar where there is one seed: a zero-length bar reads as a claim
                    yerr=[100 * s[1] if s[2] > 1 else np.nan for s in stats],
                    capsize=2,
                    label=f"{method}, {d}",
                )
            label = "popularity (floor), {d}" if ax is axes[0] else None
            draw_test_floors(ax, stored.runs[0], domains, ("--", ":", "-."), label)
            ax.set_xticks(x, [f"{v:g}" for v in values])
            ax.set_xlabel(f"{xlabel} ({fixed_label})")
            ax.set_ylabel("test HR@10 (%), sampled protocol")
            ax.set_title(f"varying {axis}")
            ax.grid(alpha=0.3, axis="y")
            for method, pts in by_method.items():
                for v in values:
                    runs = pts.get(v, [])
                    if runs:
                        rows.append(
                            [f"{axis}={v:g} ({fixed_label})", method]
                            + [
                                fmt_mean_std(metric_of(r.results, d, m) for r in runs)
                                for d in domains
                                for m in ("HR@10", "NDCG@10")
                            ]
                            + [str(len(runs))]
                        )
        floors = floor_cells(stored.runs[0], domains, ("HR@10", "NDCG@10"))
        rows.append(["(every setting)", "popularity (floor)", *floors, ""])
        # Below the panels: bars reach the top of the axes, where a legend would cover them.
        bottom = legend_below(fig, axes[0], ncol=3)
        path = save_figure(fig, figures / f"{self.name}-{stored.mode}.png", bottom)
        out.figures.append(
            Figure(
                "Test HR@10 against K and C",
                path,
                "Mean ± std over seeds, per domain; the lines are the popularity floor on the "
                "same test instances.",
            )
        )
        out.tables.append(
            Table(
                "Robustness: test metrics (%), sampled protocol",
                ["setting", "method"]
                + [f"{d} {m}" for d in domains for m in ("HR@10", "NDCG@10")]
                + ["n"],
                rows,
            )
        )
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
        # Every K and C shares the validation instances: one floor for both panels.
        floor = validation_floor(stored.runs[0], stored.folder / "derived")
        for ax, (axis, fixed, _xlabel, fixed_label) in zip(axes, panels, strict=True):
            groups: dict[str, list[StoredRun]] = {}
            for method, pts in _point_runs(stored, axis, fixed).items():
                for v, runs in sorted(pts.items()):
                    groups[f"{method}, {axis}={v:g}"] = runs
            plot_curves(ax, groups)
            draw_floor(ax, floor["HR@10"])
            ax.set_xlabel("communication round")
            ax.set_ylabel("validation HR@10 (%), all domains")
            ax.set_title(f"varying {axis} ({fixed_label})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        path = save_figure(fig, figures / f"{self.name}-{stored.mode}-convergence.png")
        out.figures.append(
            Figure(
                "Convergence for each K and C",
                path,
                "Validation subset; the dashed line is the popularity floor on it.",
            )
        )
        return out


EXPERIMENT = Robustness()
