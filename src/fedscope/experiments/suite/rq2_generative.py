"""RQ2 with the generative backend, on the most interacted items (Table 6, LLM rows).

The paper's item attributes come from an LLM. Ours can too (``fedscope augment --backend
llm``: Gemma 3 270M through llama-cpp-python, constrained to the schema), but at about 0.125
items/s on one core (BENCHMARKS.md) the titled Food-Kitchen catalogue (36,298 items) would
take about 80 hours. So this experiment gives the LLM a subset: the ITEM_LIMIT items with the
most training interactions (about 16% of the titled training interactions for 500), and every
other item takes the N/A path (zero f_A, masked out). To separate what the LLM's attributes
add from what the choice of subset does, the same items are also embedded by the encoder
backend alone. Runs: FedSCOPE without semantics (RQ1's run, shared), IAE from the encoder on
the subset, IAE from the LLM on the subset. Item side only: user profiles from the LLM run at
about 0.1 users/s (the titled data has 53,061 users).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedscope.experiments.suite import rq2_semantics
from fedscope.experiments.suite.base import (
    Experiment,
    Mode,
    Plan,
    RunSpec,
    StoredExperiment,
    Summary,
    Table,
    default_seeds,
    protocol_tables,
)

NAME = "rq2_generative"
# Items the LLM describes per mode. Quick: a minute or two of Gemma on 2 cores. Reduced: about
# an hour of one core. Full: every item, as the paper (days on 2 cores; a GPU build of
# llama-cpp-python is the way to run it).
ITEM_LIMIT: dict[Mode, int | None] = {"quick": 12, "reduced": 500, "full": None}
BACKENDS: tuple[tuple[str, str], ...] = (
    ("encoder", "FedSCOPE + IAE from the encoder"),
    ("llm", "FedSCOPE + IAE from the LLM"),
)


def store_path(mode: Mode, backend: str) -> str:
    limit = ITEM_LIMIT[mode]
    subset = "all" if limit is None else f"top{limit}"
    return f"{{root}}/{NAME}/{mode}/semantics-{backend}-items-{subset}"


def subset_label(mode: Mode) -> str:
    limit = ITEM_LIMIT[mode]
    return "all items" if limit is None else f"top {limit} items"


def variant_spec(backend: str, label: str, mode: Mode) -> RunSpec:
    return RunSpec(
        f"{label} ({subset_label(mode)})",
        f"fedscope-federated-iae-{backend}-subset",
        (
            "method=fedscope",
            "federation.regime=federated",
            f"semantics.store={store_path(mode, backend)}",
            "semantics.items=true",
            "semantics.users=false",
        ),
        default_seeds(mode),
        owner=NAME,
        tags=(("backend", backend), ("item_limit", ITEM_LIMIT[mode])),
    )


class GenerativeSemantics(Experiment):
    name = NAME
    title = "Item semantics from the local LLM against the sentence encoder, on a subset"
    paper = "RQ2, Table 6 (LLM-generated item attributes)"
    description = (
        "Federated FedSCOPE with item features (IAE) for the most interacted items, from the "
        "local generative LLM or from the sentence encoder alone, against no semantics; test "
        "metrics per domain."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        return [
            rq2_semantics.without_semantics(mode),
            *(variant_spec(backend, label, mode) for backend, label in BACKENDS),
        ]

    def notes(self, mode: Mode) -> list[str]:
        limit = ITEM_LIMIT[mode]
        notes = [
            "item side only (IAE); user profiles from the LLM are too slow on CPU",
            "the generative model is the packaged Gemma 3 270M (Q4_K_M GGUF), temperature 0, "
            "answers constrained to the item schema and validated; unknown fields are N/A",
            "the run without semantics is RQ1's FedSCOPE run (shared)",
        ]
        if limit is not None:
            notes.append(
                f"{mode}: only the {limit} items with the most training interactions are "
                "described (by both backends); every other item is N/A (zero features)"
            )
        if mode == "reduced":
            notes.append("reduced: seeds 0, 1, 2 instead of five")
        return notes

    def missing(self, mode: Mode) -> list[str]:
        return [
            "user-side features (UFE) from the LLM: about 0.1 users/s on one core",
            "the paper's larger LLMs (Llama2, Llama3.1): any GGUF file works with "
            "`fedscope augment --backend llm --model FILE`, but not in this time on 2 cores",
        ]

    def prepare(self, plan: Plan, root: Path, echo: Any) -> None:
        for spec in plan.runs:
            if spec.owner != NAME:
                continue
            rq2_semantics.write_store(
                plan.config(spec, spec.seeds[0]),
                echo,
                backend=spec.tag("backend"),
                users=False,
                item_limit=spec.tag("item_limit"),
                order="popularity",
            )

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        out = Summary()
        title = "Test metrics (%) by source of item features"
        out.tables += protocol_tables(stored, title, rq2_semantics.TABLE6_METRICS)
        answers = answer_table(stored)
        if answers is not None:
            out.tables.append(answers)
        return out


def answer_table(stored: StoredExperiment) -> Table | None:
    """What each backend made of the subset, from the stores' manifests (when present)."""
    rows = []
    for backend, _ in BACKENDS:
        manifests = sorted(stored.folder.glob(f"semantics-{backend}-items-*/manifest.json"))
        for manifest in manifests:
            report = json.loads(manifest.read_text()).get("parts", {}).get("items", {})
            report = report.get("report")
            if not report:
                continue
            rows.append(
                [
                    f"{backend} ({manifest.parent.name.rsplit('-', 1)[-1]})",
                    f"{report['processed']:,}",
                    f"{report['valid']:,}",
                    f"{report['repaired']:,}",
                    f"{report['na']:,}",
                    rate_cell(report),
                    model_time_cell(report, backend),
                ]
            )
    if not rows:
        return None
    return Table(
        "Item answers per backend",
        ["store", "items described", "valid", "repaired", "N/A", "items/s", "model s per item"],
        rows,
        "The encoder backend embeds the item text and makes no answer, so its items are all "
        "valid. An LLM answer is repaired when a field had to be cleaned or set to N/A, and N/A "
        "when nothing usable came back (the item text is still embedded). items/s is the job's "
        "wall time, waits on a busy machine included; a store served from the cache made no "
        "model call and has no rate. Model s per item: mean wall seconds inside the model, per "
        "LLM completion (retries count as completions) or per text the encoder embedded; "
        "without cache lookups or pauses of the job, but with waits for a core on a busy "
        "machine (– where the store's manifest predates this timing).",
    )


def rate_cell(report: dict[str, Any]) -> str:
    """The store job's items/s, or a dash when every answer and vector came from the cache:
    then the job measured a cache lookup, not either backend."""
    if not report.get("generated") and not report.get("encoded"):
        return "– (all cached)"
    return f"{report['per_second']:.3f}"


def model_time_cell(report: dict[str, Any], backend: str) -> str:
    """Mean seconds per model call: per completion for the LLM, per embedded text for the
    encoder (whose vectors the LLM store also computes, but the completions dominate)."""
    calls, seconds = (
        (report.get("generated"), report.get("generate_s"))
        if backend == "llm"
        else (report.get("encoded"), report.get("encode_s"))
    )
    if seconds is None or not calls:
        return "–"
    return f"{seconds / calls:.3g}"


EXPERIMENT = GenerativeSemantics()
