"""Leave-one-out ranking evaluation, per target domain, in two protocols.

* ``sampled``: the paper's protocol — the target against ``n_negatives``
  (999) items drawn once per instance (see :mod:`candidates`).
* ``full``: the target against every item of its domain, the user's visible
  history masked (a repeat of the target itself is never masked).

Sampled metrics can rank methods differently from full ranking, so both are
always available and reports carry the protocol with every number.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, EvalSplit
from fedscope.evaluation.candidates import SampledCandidates, load_or_draw
from fedscope.evaluation.metrics import METRIC_NAMES, expected_metrics

Mode = Literal["sampled", "full"]


class NonFiniteScoreError(ValueError):
    """A scorer returned NaN or infinite scores: that is a bug, never a rank."""


@dataclass(frozen=True)
class EvalBatch:
    """What a scorer sees: users, their visible histories, and the target domain."""

    users: np.ndarray  # int64 [B] user indices
    histories: list[np.ndarray]  # visible histories as global item ids, chronological
    domain: int  # target domain index; scores are over its local item ids

    def __len__(self) -> int:
        return int(self.users.shape[0])


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score(self, batch: EvalBatch) -> np.ndarray:
        """Scores ``[len(batch), n_items(batch.domain)]`` over the domain's local item ids."""
        ...


@dataclass(frozen=True)
class Slice:
    """A named subset of evaluation instances, e.g. cold-start users."""

    name: str
    select: Callable[[CrossDomainDataset, EvalSplit], np.ndarray]  # -> bool mask [E]


def _history_lengths(ds: CrossDomainDataset, sp: EvalSplit) -> np.ndarray:
    return sp.cutoff


def _n_history_domains(ds: CrossDomainDataset, sp: EvalSplit) -> np.ndarray:
    out = np.zeros(len(sp), dtype=np.int64)
    for i in range(len(sp)):
        out[i] = np.unique(ds.domain_of(ds.history(sp, i))).shape[0]
    return out


DEFAULT_SLICES: tuple[Slice, ...] = (
    Slice("history<=5", lambda ds, sp: _history_lengths(ds, sp) <= 5),
    Slice("cross-domain history", lambda ds, sp: _n_history_domains(ds, sp) >= 2),
    Slice("single-domain history", lambda ds, sp: _n_history_domains(ds, sp) == 1),
)


@dataclass
class EvalResult:
    scorer: str
    dataset: str
    protocol: str
    protocol_note: str
    split: str
    mode: Mode
    n_negatives: int | None
    candidate_seed: int | None
    metrics: dict[str, dict[str, float]]  # group -> metric -> value (fractions, not %)
    counts: dict[str, int]  # group -> number of instances
    notes: list[str] = field(default_factory=list)
    # group -> metric -> standard error of the mean over the group's instances (fractions):
    # the sampling error of a metric on this test set, which on small test sets can exceed
    # the differences between methods. Absent (empty) in results written before it existed.
    standard_errors: dict[str, dict[str, float]] = field(default_factory=dict)
    per_instance: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "protocol_note": self.protocol_note,
            "split": self.split,
            "mode": self.mode,
            "n_negatives": self.n_negatives,
            "candidate_seed": self.candidate_seed,
            "metrics": self.metrics,
            "counts": self.counts,
            "notes": self.notes,
            "standard_errors": self.standard_errors,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @property
    def mode_label(self) -> str:
        return (
            f"sampled ({self.n_negatives} negatives)" if self.mode == "sampled" else "full ranking"
        )


class Evaluator:
    """Evaluates scorers on one split of one data set, in one protocol.

    Candidates (sampled mode) are fixed at construction, so every scorer
    evaluated by the same evaluator — or by another one with the same data,
    split and seed — ranks against the same items.
    """

    def __init__(
        self,
        dataset: CrossDomainDataset,
        split: Literal["valid", "test"] = "valid",
        mode: Mode = "sampled",
        n_negatives: int = 999,
        seed: int = 0,
        slices: Sequence[Slice] = DEFAULT_SLICES,
        batch_size: int = 512,
        max_instances: int | None = None,
    ):
        if mode not in ("sampled", "full"):
            raise ValueError(f"unknown evaluation mode {mode!r}: expected 'sampled' or 'full'")
        self.dataset = dataset
        self.split_name = split
        self.split = dataset.eval_split(split)
        self.mode: Mode = mode
        self.seed = seed
        self.n_negatives = n_negatives
        self.batch_size = batch_size
        self.domains = dataset.target_domains(self.split)
        self.users = dataset.seq_user[self.split.seq]
        self.local_targets = dataset.to_local(self.split.target)
        self.candidates: SampledCandidates | None = (
            load_or_draw(dataset, split, n_negatives, seed) if mode == "sampled" else None
        )
        # A fixed, documented subsample for quick validation during training; test uses all.
        self.selected = np.arange(len(self.split))
        if max_instances is not None and max_instances < len(self.split):
            rng = np.random.default_rng(seed + 7919)
            self.selected = np.sort(rng.choice(len(self.split), size=max_instances, replace=False))
        self.slice_masks = {s.name: s.select(dataset, self.split) for s in slices}

    def _counts(self, scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(higher, equal) counts of competitors for each row of ``scores``."""
        targets = self.local_targets[rows]
        target_scores = scores[np.arange(len(rows)), targets][:, None]
        if self.candidates is not None:
            neg = self.candidates.negatives[rows]
            valid = neg >= 0
            cand_scores = np.take_along_axis(scores, np.where(valid, neg, 0), axis=1)
            higher = ((cand_scores > target_scores) & valid).sum(axis=1)
            equal = ((cand_scores == target_scores) & valid).sum(axis=1)
            return higher, equal
        valid = np.ones_like(scores, dtype=bool)
        dom = self.dataset.domains[int(self.domains[rows[0]])]
        for j, i in enumerate(rows):
            hist = self.dataset.history(self.split, int(i))
            hist = hist[(hist >= dom.offset) & (hist < dom.offset + dom.n_items)] - dom.offset
            valid[j, hist] = False
        valid[np.arange(len(rows)), targets] = False
        higher = ((scores > target_scores) & valid).sum(axis=1)
        equal = ((scores == target_scores) & valid).sum(axis=1)
        return higher, equal

    def evaluate(self, scorer: Scorer) -> EvalResult:
        higher, equal = self.rank(scorer, self.selected)
        return self.summarise(scorer.name, higher, equal)

    def rank(self, scorer: Scorer, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(higher, equal) competitor counts for instances ``rows`` (others: -1 / 0).

        Lets several scorers share one evaluation, e.g. each client's own model ranking its
        own users' instances (local-only training); merge with :meth:`summarise`.
        """
        n = len(self.split)
        higher = np.full(n, -1, dtype=np.int64)
        equal = np.zeros(n, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        for d, dom in enumerate(self.dataset.domains):
            rows_d = rows[self.domains[rows] == d]
            for start in range(0, rows_d.shape[0], self.batch_size):
                chunk = rows_d[start : start + self.batch_size]
                batch = EvalBatch(
                    users=self.users[chunk],
                    histories=[self.dataset.history(self.split, int(i)) for i in chunk],
                    domain=d,
                )
                scores = np.asarray(scorer.score(batch), dtype=np.float64)
                if scores.shape != (len(chunk), dom.n_items):
                    raise ValueError(
                        f"scorer {scorer.name!r} returned scores of shape {scores.shape} for domain "
                        f"{dom.name!r}; expected {(len(chunk), dom.n_items)}"
                    )
                bad = ~np.isfinite(scores)
                if bad.any():
                    bad_rows = np.nonzero(bad.any(axis=1))[0]
                    raise NonFiniteScoreError(
                        f"scorer {scorer.name!r} returned {int(bad.sum())} non-finite scores for "
                        f"{bad_rows.shape[0]} of {len(chunk)} users in domain {dom.name!r} "
                        f"(first: user {int(batch.users[bad_rows[0]])}); a non-finite score is a "
                        "bug in the model, not a rank"
                    )
                h, e = self._counts(scores, chunk)
                higher[chunk], equal[chunk] = h, e
        return higher, equal

    def summarise(self, name: str, higher: np.ndarray, equal: np.ndarray) -> EvalResult:
        """Metrics over the instances that were ranked (``higher >= 0``)."""
        sel = higher >= 0
        per = expected_metrics(np.where(sel, higher, 0), np.where(sel, equal, 0))
        groups: dict[str, np.ndarray] = {"overall": sel}
        for d, dom in enumerate(self.dataset.domains):
            groups[dom.name] = sel & (self.domains == d)
        for sname, mask in self.slice_masks.items():
            groups[f"overall|{sname}"] = sel & mask
            for d, dom in enumerate(self.dataset.domains):
                groups[f"{dom.name}|{sname}"] = sel & mask & (self.domains == d)
        metrics: dict[str, dict[str, float]] = {}
        errors: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for g, mask in groups.items():
            counts[g] = int(mask.sum())
            if counts[g] == 0:
                continue
            metrics[g] = {m: float(per[m][mask].mean()) for m in (*METRIC_NAMES, "mean_rank")}
            if counts[g] >= 2:
                errors[g] = {
                    m: float(per[m][mask].std(ddof=1) / np.sqrt(counts[g])) for m in METRIC_NAMES
                }
        notes = []
        if self.candidates is not None and self.candidates.capped:
            notes.append(
                f"{self.candidates.capped} instances had fewer than {self.n_negatives} eligible "
                "negatives (their domain is small) and were ranked against all of them"
            )
        if int(sel.sum()) < len(self.split):
            notes.append(
                f"evaluated {int(sel.sum())} of {len(self.split)} instances (a fixed subset)"
            )
        return EvalResult(
            scorer=name,
            dataset=self.dataset.name,
            protocol=self.dataset.protocol,
            protocol_note=self.dataset.protocol_note,
            split=self.split_name,
            mode=self.mode,
            n_negatives=self.n_negatives if self.mode == "sampled" else None,
            candidate_seed=self.seed if self.mode == "sampled" else None,
            metrics=metrics,
            counts=counts,
            notes=notes,
            standard_errors=errors,
            per_instance={"higher": higher, "equal": equal, "mean_rank": per["mean_rank"]},
        )
