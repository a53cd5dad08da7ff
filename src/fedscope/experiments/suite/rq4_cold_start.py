"""RQ4 (Table 7): cold-start users, FedSCOPE with and without semantic features.

The evaluator already reports every group on the subset "history<=5": test instances whose
visible history (all domains together, the items before the target) holds at most 5 items.
That is our reading of the paper's "users with <= 5 interactions". Nothing is trained here:
the rows are RQ2's FedSCOPE + UFE + IAE run, RQ1's FedSCOPE run (no semantics), and RQ1's
FedCSR-style and FedAvg+SASRec runs.
"""

from __future__ import annotations

from pathlib import Path

from fedscope.experiments.suite import rq1_overall, rq2_semantics
from fedscope.experiments.suite.base import (
    Experiment,
    Mode,
    Plan,
    RunSpec,
    StoredExperiment,
    Summary,
    default_seeds,
    protocol_tables,
)

SUBSET = "history<=5"
TABLE7_METRICS = ("HR@10", "NDCG@10")
# RQ1's federated baselines in the table: the paper's FedCSR, plus FedAvg+SASRec.
BASELINES = ("fedcsr", "sasrec")


class ColdStart(Experiment):
    name = "rq4_cold_start"
    title = "Cold-start users (at most 5 interactions before the target)"
    paper = "RQ4, Table 7"
    description = (
        "Test HR@10 and NDCG@10 per domain on the instances whose visible history has at most "
        "5 items, for FedSCOPE with semantic features (UFE + IAE), without them, the "
        "FedCSR-style baseline and FedAvg+SASRec."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        with_llm = rq2_semantics.with_semantics(mode)
        without = rq1_overall.spec_for("fedscope", "federated", mode)
        present, _ = rq1_overall.registered_grid()
        # every grid line of a baseline, so that a baseline at its tuned learning rate is
        # compared here too (its own line, its own run directory)
        baselines = [
            rq1_overall.grid_spec(label, method, regime, extra, default_seeds(mode))
            for label, method, regime, extra in present
            if method in BASELINES and regime == "federated"
        ]
        return [
            *baselines,
            RunSpec("FedSCOPE w/o LLM semantics", *_rest(without)),
            RunSpec("FedSCOPE (UFE + IAE)", *_rest(with_llm)),
        ]

    def notes(self, mode: Mode) -> list[str]:
        return [
            f"cold-start subset: the evaluator's '{SUBSET}' groups (visible history of the test "
            "instance, all domains, at most 5 items)",
            "shares RQ1's and RQ2's runs; the semantic store is RQ2's",
        ]

    def missing(self, mode: Mode) -> list[str]:
        return [m for m in rq1_overall.EXPERIMENT.missing(mode) if "FedCSR" in m]

    def prepare(self, plan: Plan, root: Path, echo: object) -> None:
        # The semantic run may be trained from here first: it needs RQ2's store.
        rq2_semantics.build_store(plan, root, echo)

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        out = Summary()
        if not stored.runs:
            return out
        first = stored.runs[0].results
        counts = first["test"]["sampled"][0]["counts"]
        sizes = ", ".join(f"{d} {counts.get(f'{d}|{SUBSET}', 0)}" for d in stored.domains())
        out.tables += protocol_tables(
            stored,
            "Cold-start test metrics (%)",
            TABLE7_METRICS,
            subset=SUBSET,
            caption=f"Cold-start test instances per domain: {sizes}.",
        )
        return out


def _rest(spec: RunSpec) -> tuple:
    return spec.name, spec.overrides, spec.seeds, spec.owner, spec.tags


EXPERIMENT = ColdStart()
