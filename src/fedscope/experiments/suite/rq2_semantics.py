"""RQ2 (Table 6): what the semantic features contribute, user side (UFE) and item side (IAE).

Four federated FedSCOPE runs that differ only in ``semantics.*``: neither (RQ1's FedSCOPE run,
shared), IAE only, UFE only, both. The features come from one semantic store written before
training with the sentence-encoder backend (``fedscope augment --backend encoder``): item
features from public catalogue fields, user profiles per client from that client's own
training histories (the partition is the one every run of the mode uses). The store is
written once and reused; the encoder's cache makes a rerun cheap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedscope.config import ExperimentConfig
from fedscope.experiments.suite import rq1_overall
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

if TYPE_CHECKING:
    from fedscope.semantics.augment import Backend, ItemOrder

NAME = "rq2_semantics"
STORE = "{root}/rq2_semantics/{mode}/semantics-encoder"
TABLE6_METRICS = ("NDCG@10", "HR@10", "MRR")
# Measured on the quick data set (2,000 users, 2,000 items) on 2 busy cores: the whole store
# takes about a minute, so quick mode augments every item and user (no cap).
QUICK_LIMIT: int | None = None

VARIANTS: tuple[tuple[str, str, bool, bool], ...] = (
    ("FedSCOPE + IAE (items only)", "iae", True, False),
    ("FedSCOPE + UFE (users only)", "ufe", False, True),
    ("FedSCOPE + UFE + IAE", "ufe-iae", True, True),
)


def store_path(mode: str) -> str:
    return STORE.replace("{mode}", mode)


def variant_spec(label: str, name: str, items: bool, users: bool, mode: Mode) -> RunSpec:
    return RunSpec(
        label,
        f"fedscope-federated-{name}",
        (
            "method=fedscope",
            "federation.regime=federated",
            f"semantics.store={store_path(mode)}",
            f"semantics.items={str(items).lower()}",
            f"semantics.users={str(users).lower()}",
        ),
        default_seeds(mode),
        owner=NAME,
        tags=(("iae", items), ("ufe", users)),
    )


def without_semantics(mode: Mode) -> RunSpec:
    shared = rq1_overall.spec_for("fedscope", "federated", mode)
    return RunSpec(
        "FedSCOPE w/o UFE and IAE",
        shared.name,
        shared.overrides,
        shared.seeds,
        shared.owner,
        (("iae", False), ("ufe", False)),
    )


def with_semantics(mode: Mode) -> RunSpec:
    return variant_spec(*VARIANTS[-1], mode)


def build_store(plan: Plan, root: Path, echo: Any) -> Path | None:
    """Write what the plan's runs with semantic features read from the store: the items, and
    each client's user profiles only if one of those runs uses UFE. Parts already written
    are kept. Nothing (None) when no run of the plan uses the store."""
    specs = [s for s in plan.runs if s.owner == NAME and s.seeds]
    if not specs:
        return None
    limit = QUICK_LIMIT if plan.mode == "quick" else None
    return write_store(
        plan.config(specs[0], specs[0].seeds[0]),
        echo,
        users=any(s.tag("ufe") for s in specs),
        item_limit=limit,
        user_limit=limit,
    )


def write_store(
    cfg: ExperimentConfig,
    echo: Any,
    *,
    backend: Backend = "encoder",
    users: bool = True,
    item_limit: int | None = None,
    user_limit: int | None = None,
    order: ItemOrder = "catalogue",
) -> Path:
    """Write the store ``cfg.semantics.store`` names, for ``cfg``'s data and partition: items
    (the first ``item_limit`` in ``order``), and each client's users unless ``users`` is
    False. Parts already written are kept, so an interrupted store resumes part by part (and
    within a part from the answer cache)."""
    from fedscope.data import load_dataset
    from fedscope.experiments import runner
    from fedscope.semantics.augment import Augmenter, Catalogue, client_view, item_order
    from fedscope.semantics.cache import SemanticCache
    from fedscope.semantics.encoder import SentenceEncoder
    from fedscope.semantics.store import MANIFEST, SemanticStore, client_scope

    out = Path(cfg.semantics.store or "")
    dataset = load_dataset(cfg.data.name, cfg.data.data_dir, **cfg.data.options)
    partitioning = runner.make_partitioning(cfg, dataset)
    wanted = {"items"}
    if users:
        wanted |= {client_scope(c.client_id) for c in partitioning.clients}
    manifest = out / MANIFEST
    have = set(json.loads(manifest.read_text()).get("parts", {})) if manifest.is_file() else set()
    if wanted <= have:
        echo(f"semantic store: {out} (complete, reused)")
        return out
    sides = f"items and {len(partitioning.clients)} clients' users" if users else "items only"
    limits = "".join(
        f", at most {n} {what}" for n, what in ((item_limit, "items"), (user_limit, "users")) if n
    )
    echo(
        f"semantic store: writing {out} ({backend} backend, {sides}{limits}"
        + (f", items by {order}" if order != "catalogue" else "")
        + ")"
    )
    t0 = time.perf_counter()
    threads = cfg.train.threads
    encoder = SentenceEncoder(threads=threads)
    generator = None
    if backend == "llm":
        from fedscope.semantics.llm import LlamaGenerator

        generator = LlamaGenerator(threads=threads)
    catalogue = Catalogue(dataset.domains)
    store = SemanticStore(out)
    with SemanticCache(None) as cache:
        job = Augmenter(encoder, cache, generator, progress=ProgressLines(echo))
        store.begin(dataset, job.identity(), encoder.dim)
        store.expect(sorted(wanted - have))
        if "items" not in have:
            part, report = job.augment_items(catalogue, item_limit, item_order(dataset, order))
            store.write_part("items", part, {"report": report.as_dict(), "order": order})
        for client in partitioning.clients if users else ():
            if client_scope(client.client_id) in have:
                continue
            view = client_view(dataset, client)
            part, report = job.augment_users(view, catalogue, dataset.n_users, user_limit)
            store.write_part(report.scope, part, {"report": report.as_dict()})
    echo(f"semantic store written in {time.perf_counter() - t0:.0f}s")
    return out


class ProgressLines:
    """Augmentation progress as a line every ``every`` seconds (and at the end of a part), with
    throughput and time left: an experiment's log, unlike a terminal, has no progress bar.

    The rate counts only work done: answers served from the cache (a resumed store) arrive in
    a burst, calls under ``burst`` seconds apart, and move the start of the measured window past
    them instead of inflating the rate."""

    def __init__(self, echo: Any, every: float = 60.0, burst: float = 0.05):
        self.echo, self.every, self.burst = echo, every, burst
        self.started: dict[str, float] = {}
        self.window: dict[str, tuple[float, int]] = {}  # (time, done) the rate is measured from
        self.previous: dict[str, tuple[float, int]] = {}  # the last call, per part
        self.last_line = 0.0
        self.last_said: tuple[str, int] | None = None

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.perf_counter()
        start = self.started.setdefault(label, now)
        previous_time, _ = self.previous.get(label, (now, done))
        if label not in self.window or now - previous_time < self.burst:
            self.window[label] = (now, done)
        self.previous[label] = (now, done)
        if done < total and now - self.last_line < self.every:
            return
        if done == 0 or (done == total and now - start < self.every):
            return  # short parts (a client's users with the encoder) stay quiet
        if self.last_said == (label, done):
            return  # the job reports the end of a part twice (last item, last chunk)
        self.last_line, self.last_said = now, (label, done)
        window_time, window_done = self.window[label]
        rate = (done - window_done) / (now - window_time) if now > window_time else 0.0
        speed = f" ({rate:.2f}/s" if rate else " (from the cache"
        left = f", about {(total - done) / rate / 60:.0f} min left" if rate and done < total else ""
        self.echo(f"  {label}: {done:,}/{total:,}{speed}{left})")


class SemanticsAblation(Experiment):
    name = NAME
    title = "Semantic augmentation ablation (UFE and IAE)"
    paper = "RQ2, Table 6"
    description = (
        "Federated FedSCOPE with neither, item-side (IAE), user-side (UFE) or both semantic "
        "features from the sentence-encoder backend; test metrics per domain."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        return [without_semantics(mode), *(variant_spec(*v, mode) for v in VARIANTS)]

    def notes(self, mode: Mode) -> list[str]:
        notes = [
            "semantic features from the sentence encoder (all-MiniLM-L6-v2, the paper's "
            "encoder-only 'BERT' kind), not from an LLM; written once per mode before training",
            "the run without semantics is RQ1's FedSCOPE run (shared)",
        ]
        if mode == "quick" and QUICK_LIMIT:
            notes.append(f"quick: at most {QUICK_LIMIT} items and users per client augmented")
        if mode == "reduced":
            notes.append("reduced: seeds 0, 1, 2 instead of five")
        return notes

    def missing(self, mode: Mode) -> list[str]:
        return [
            "Figure 3 (sensitivity to the LLM: BERT, Longformer, Llama2, Llama3.1 against "
            "FedSeqRec): only the encoder backend is run here; the local GGUF backend "
            "(`fedscope augment --backend llm`) is too slow for a full store on 2 cores"
        ]

    def prepare(self, plan: Plan, root: Path, echo: Any) -> None:
        build_store(plan, root, echo)

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        title = "Test metrics (%) by semantic features"
        return Summary(tables=protocol_tables(stored, title, TABLE6_METRICS))


EXPERIMENT = SemanticsAblation()
