"""Figure 2: validation HR@10 against communication round, FedSCOPE and federated baselines.

Reads RQ1's federated runs (same directories; nothing is trained twice): every run logs its
validation metrics in metrics.jsonl every ``eval.every`` rounds.
"""

from __future__ import annotations

from pathlib import Path

from fedscope.experiments.suite import rq1_overall
from fedscope.experiments.suite.base import (
    Experiment,
    Figure,
    Mode,
    RunSpec,
    StoredExperiment,
    Summary,
    Table,
    draw_floor,
    fmt_mean_std,
    fmt_rounds,
    legend_below,
    plot_curves,
    pyplot,
    save_figure,
    validation_curve,
    validation_floor,
)


class Convergence(Experiment):
    name = "convergence"
    title = "Convergence: validation HR@10 against communication round"
    paper = "RQ1, Figure 2"
    description = (
        "Validation HR@10 (fixed validation subset, sampled protocol) after every evaluated "
        "round, for FedSCOPE and the federated baselines (RQ1's runs), mean over seeds with a "
        "band of one standard deviation."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        return [s for s in rq1_overall.EXPERIMENT.runs(mode) if s.tag("regime") == "federated"]

    def missing(self, mode: Mode) -> list[str]:
        return [m for m in rq1_overall.EXPERIMENT.missing(mode) if "FedCSR" in m] + [
            "FedDCSR and FELLAS curves (methods not implemented)"
        ]

    def notes(self, mode: Mode) -> list[str]:
        return ["shares RQ1's federated runs (rq1_overall/<mode>/)"]

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        out = Summary()
        groups = stored.by_label()
        if not groups:
            return out
        domains = stored.domains()
        panels = ["HR@10", *(f"{d}/HR@10" for d in domains)]
        plt = pyplot()
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2))
        axes = list(axes) if len(panels) > 1 else [axes]
        floor = validation_floor(stored.runs[0], stored.folder / "derived")
        for ax, metric in zip(axes, panels, strict=True):
            plot_curves(ax, groups, metric)
            draw_floor(ax, floor[metric])
            ax.set_xlabel("communication round")
            where = "all domains" if "/" not in metric else metric.split("/")[0]
            ax.set_ylabel(f"validation HR@10 (%), {where}")
            ax.set_title(where)
            ax.grid(alpha=0.3)
        bottom = legend_below(fig, axes[0])
        fig.suptitle(f"{stored.index.get('dataset')} · {stored.mode} mode", fontsize=10)
        path = save_figure(fig, figures / f"{self.name}-{stored.mode}.png", bottom)
        out.figures.append(
            Figure(
                "Validation HR@10 against round",
                path,
                "Validation subset (eval.valid_subset), sampled protocol; the dashed line is "
                "the popularity floor on the same instances. The paper's Fig. 2 shows the "
                "Kitchen domain.",
            )
        )
        rows = []
        for label, runs in groups.items():
            curves = [validation_curve(r) for r in runs]
            best_round = [c[0][c[1].index(max(c[1]))] for c in curves if c[0]]
            rows.append(
                [
                    f"{label} (n={len(runs)})",
                    fmt_mean_std([max(c[1]) for c in curves if c[1]]),
                    fmt_mean_std([c[1][-1] for c in curves if c[1]]),
                    fmt_rounds(best_round),
                    fmt_rounds([r.results.get("selected_round") for r in runs]),
                ]
            )
        rows.append(["popularity (floor)", fmt_mean_std([floor["HR@10"]]), "–", "–", "–"])
        out.tables.append(
            Table(
                "Convergence summary (validation HR@10, %)",
                ["method", "best", "last round", "round of best HR@10", "selected round (MRR)"],
                rows,
            )
        )
        return out


EXPERIMENT = Convergence()
