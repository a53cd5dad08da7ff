"""Top-K next-item recommendations from a finished run: the one code path behind
``fedscope recommend`` and the HTTP service (``fedscope serve``).

A :class:`Recommender` loads a run's configuration, data set and validation-selected
weights once. Histories are item keys (ASINs, MovieLens ids, ...) or global item ids;
they are scored as an anonymous user (no user index: the service knows nobody), items
already in the history are never recommended again, and a non-finite score is an error
(a bug in the model), never a rank.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedscope.config import ConfigError
from fedscope.data.dataset import CrossDomainDataset
from fedscope.evaluation.evaluator import EvalBatch, NonFiniteScoreError, Scorer
from fedscope.federation import run_dir as layout

RESULTS_FILE = "results.json"  # written by the runner's final evaluation: the run is finished
RUN_FILE = "run.json"
# Rows scored in one forward pass: bounds the [rows, n_items] score matrix on real data sets.
SCORE_CHUNK_ROWS = 256
MAX_NAMED_UNKNOWN = 10  # unknown ids quoted in an error message (the error keeps them all)
ANONYMOUS_USER = -1  # no user index: user-side features are zeros (see user_features)


class RecommendationError(ValueError):
    """A request that cannot be answered; ``code`` names the kind, the message says why."""

    code = "invalid_request"

    def __init__(self, message: str, *, request_index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_index = request_index

    def details(self) -> dict[str, Any]:
        """Machine-readable fields beyond the message (for the HTTP error body)."""
        return {}

    def in_request(self, index: int) -> RecommendationError:
        """This error, located in request ``index`` of a batch."""
        self.request_index = index
        self.message = f"requests[{index}]: {self.message}"
        self.args = (self.message,)
        return self


class EmptyHistoryError(RecommendationError):
    code = "empty_history"


class UnknownItemsError(RecommendationError):
    code = "unknown_items"

    def __init__(
        self, message: str, unknown: Sequence[str], *, request_index: int | None = None
    ) -> None:
        super().__init__(message, request_index=request_index)
        self.unknown = list(unknown)

    def details(self) -> dict[str, Any]:
        return {"unknown_items": self.unknown}


class UnknownDomainError(RecommendationError):
    code = "unknown_domain"

    def __init__(
        self, message: str, domain: str, known: Sequence[str], *, request_index: int | None = None
    ) -> None:
        super().__init__(message, request_index=request_index)
        self.domain = domain
        self.known = list(known)

    def details(self) -> dict[str, Any]:
        return {"domain": self.domain, "known_domains": self.known}


class InvalidTopKError(RecommendationError):
    code = "invalid_top_k"


class RunNotServableError(ConfigError):
    """A run directory that cannot serve recommendations (missing, unfinished, local-only)."""


@dataclass(frozen=True)
class RecommendedItem:
    item: str  # the item's source key (ASIN, ...)
    title: str | None  # None when the data set has no title for it
    score: float
    rank: int  # 1-based within its domain
    # Another unseen item of the domain has exactly this score, so this item's place relative
    # to it comes from the item ids (lower id first), not from the model. A list of tied items
    # (an untrained or collapsed model) says nothing about what the model prefers.
    tied: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    """One recommendation request: a history, an optional target domain, how many items."""

    history: Sequence[str | int]
    domain: str | None = None
    top_k: int = 10


# domain name -> that domain's top-K, best first; domains in data-set order
Recommendations = dict[str, list[RecommendedItem]]


class ItemIndex:
    """Item keys (or global ids written as digits) to global ids, for one data set."""

    def __init__(self, dataset: CrossDomainDataset) -> None:
        self.dataset = dataset
        self.by_key: dict[str, int] = {}
        for dom in dataset.domains:
            for local, key in enumerate(dom.item_keys):
                # A key shared by two domains means the first domain's item, as it always has.
                self.by_key.setdefault(key, dom.offset + local)
        self.n_items = dataset.n_items_total

    def resolve(self, tokens: Sequence[str | int]) -> np.ndarray:
        """Global ids of ``tokens``; an empty list or unknown ids raise, naming the ids."""
        if not tokens:
            raise EmptyHistoryError("the history is empty: give at least one item id")
        out: list[int] = []
        unknown: list[str] = []
        for token in tokens:
            text = str(token)
            if text in self.by_key:
                out.append(self.by_key[text])
            elif text.isascii() and text.isdigit() and int(text) < self.n_items:
                out.append(int(text))
            elif text not in unknown:
                unknown.append(text)
        if unknown:
            named = ", ".join(unknown[:MAX_NAMED_UNKNOWN])
            more = len(unknown) - MAX_NAMED_UNKNOWN
            if more > 0:
                named += f" (and {more} more)"
            raise UnknownItemsError(
                f"unknown item id(s) for data set {self.dataset.name!r}: {named}", unknown
            )
        return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class _Resolved:
    items: np.ndarray  # global ids, chronological
    targets: tuple[int, ...]  # domain indices to recommend for
    top_k: int


def check_servable(run_dir: Path, *, require_finished: bool = True) -> dict[str, Any]:
    """The run's stored configuration, after checking the run can serve recommendations.

    Cheap (reads JSON files only), so a server can refuse a bad run directory before it
    loads anything or starts worker processes.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / layout.CONFIG_FILE
    if not run_dir.is_dir():
        raise RunNotServableError(f"{run_dir}: no such run directory")
    if not config_file.is_file():
        raise RunNotServableError(f"{run_dir}: not a run directory (no {layout.CONFIG_FILE})")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise RunNotServableError(f"{config_file}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    regime = (config.get("federation") or {}).get("regime", "federated")
    if regime == "local":
        raise RunNotServableError(
            "a local-only run has one model per client; recommend from a federated or centralised run"
        )
    if require_finished and not (run_dir / RESULTS_FILE).is_file():
        raise RunNotServableError(
            f"{run_dir}: the run has not finished (no {RESULTS_FILE}); let it finish, or "
            "continue it with `fedscope train --resume <run dir>`"
        )
    if not layout.best_checkpoint_path(run_dir).is_file():
        raise RunNotServableError(
            f"{run_dir}: no selected model ({layout.BEST_CHECKPOINT} is missing)"
        )
    return config


def display_title(title: str) -> str | None:
    """A title as a person should read it; None when the item has none.

    Amazon's catalogue titles (in the C2DSR and LLMCDSR files alike) carry HTML entities:
    ``Black &amp; Decker``, ``&quot;``, ``&reg;``. They are decoded for display only; the data
    set, its fingerprint and the semantic features keep the files' text, so stored runs and
    stores stay valid."""
    return html.unescape(title) if title else None


class Recommender:
    """A run's selected model, loaded once, answering top-K requests.

    Thread-safe: the model (and the scorer's cached item vectors) is shared, so forward
    passes are serialised by a lock; resolving ids and ranking run outside it.
    """

    def __init__(
        self,
        dataset: CrossDomainDataset,
        scorer: Scorer,
        *,
        run_id: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.scorer = scorer
        self.run_id = run_id
        self.metadata = dict(metadata or {})
        self.index = ItemIndex(dataset)
        self.domain_names = tuple(d.name for d in dataset.domains)
        self._titles = [tuple(display_title(t) for t in dom.titles()) for dom in dataset.domains]
        self._lock = threading.Lock()

    @staticmethod
    def from_run_dir(
        run_dir: Path, *, threads: int | None = None, require_finished: bool = True
    ) -> Recommender:
        """Load a federated or centralised run's validation-selected model.

        ``threads``: torch intra-op threads for this process (None: leave torch's setting).
        ``require_finished``: refuse a run without its final results (a server must serve
        what was evaluated; the CLI may peek at a run still in progress).
        """
        from fedscope.training.task import RecommendationTask

        run_dir = Path(run_dir)
        check_servable(run_dir, require_finished=require_finished)
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        task = RecommendationTask.from_run_dir(run_dir)
        checkpoint = layout.load_checkpoint(layout.best_checkpoint_path(run_dir))
        task.load_shared_weights(checkpoint.weights)
        task.model.eval()
        run_meta: dict[str, Any] = {}
        if (run_dir / RUN_FILE).is_file():
            run_meta = json.loads((run_dir / RUN_FILE).read_text())
        metadata = {
            "dataset": task.dataset.name,
            "method": task.config.method,
            "regime": task.config.federation.regime,
            "selected_round": checkpoint.round,
            "code_version": run_meta.get("code_version"),
            "created": run_meta.get("created"),
            "finished": (run_dir / RESULTS_FILE).is_file(),
        }
        return Recommender(
            task.dataset,
            task.method.scorer(task.model),
            run_id=run_dir.resolve().name,
            metadata=metadata,
        )

    # --- requests ------------------------------------------------------------------------
    def resolve_domain(self, domain: str | None) -> tuple[int, ...]:
        """Domain indices a request targets: the named one, or every domain."""
        if domain is None:
            return tuple(range(len(self.domain_names)))
        if domain not in self.domain_names:
            known = ", ".join(self.domain_names)
            raise UnknownDomainError(
                f"data set {self.dataset.name!r} has no domain {domain!r} (domains: {known})",
                domain,
                self.domain_names,
            )
        return (self.domain_names.index(domain),)

    def _resolve(self, query: Query) -> _Resolved:
        if isinstance(query.top_k, bool) or not isinstance(query.top_k, int) or query.top_k < 1:
            raise InvalidTopKError(f"top_k must be a positive integer, got {query.top_k!r}")
        items = self.index.resolve(list(query.history))
        return _Resolved(items, self.resolve_domain(query.domain), query.top_k)

    def recommend(
        self, history: Sequence[str | int], domain: str | None = None, top_k: int = 10
    ) -> Recommendations:
        """Top-K items per target domain after ``history`` (one request)."""
        return self._answer([self._resolve(Query(history, domain, top_k))], batched=False)[0]

    def recommend_many(self, queries: Sequence[Query]) -> list[Recommendations]:
        """Answers to many requests, each target domain scored in one forward pass.

        Every request is checked before anything is scored; a bad one raises its error
        located as ``requests[i]``.
        """
        resolved: list[_Resolved] = []
        for i, query in enumerate(queries):
            try:
                resolved.append(self._resolve(query))
            except RecommendationError as exc:
                raise exc.in_request(i) from None
        return self._answer(resolved, batched=True)

    def _answer(self, resolved: list[_Resolved], *, batched: bool) -> list[Recommendations]:
        answers: list[Recommendations] = [
            {self.domain_names[d]: [] for d in r.targets} for r in resolved
        ]
        for d, name in enumerate(self.domain_names):
            rows = [i for i, r in enumerate(resolved) if d in r.targets]
            for start in range(0, len(rows), SCORE_CHUNK_ROWS):
                chunk = rows[start : start + SCORE_CHUNK_ROWS]
                scores = self._score(d, [resolved[i].items for i in chunk])
                for row, i in enumerate(chunk):
                    try:
                        answers[i][name] = self._top_k(d, scores[row], resolved[i])
                    except NonFiniteScoreError as exc:
                        where = f"requests[{i}]: " if batched else ""
                        raise NonFiniteScoreError(f"{where}{exc}") from None
        return answers

    # --- scoring and ranking -------------------------------------------------------------
    def _score(self, domain: int, histories: list[np.ndarray]) -> np.ndarray:
        batch = EvalBatch(
            np.full(len(histories), ANONYMOUS_USER, dtype=np.int64), histories, domain
        )
        with self._lock, torch.inference_mode():
            scores = np.asarray(self.scorer.score(batch), dtype=np.float32)
        expected = (len(histories), self.dataset.domains[domain].n_items)
        if scores.shape != expected:
            raise ValueError(
                f"scorer {self.scorer.name!r} returned scores of shape {scores.shape} for domain "
                f"{self.domain_names[domain]!r}; expected {expected}"
            )
        return scores

    def _top_k(self, domain: int, scores: np.ndarray, request: _Resolved) -> list[RecommendedItem]:
        dom = self.dataset.domains[domain]
        bad = ~np.isfinite(scores)
        if bad.any():
            raise NonFiniteScoreError(
                f"scorer {self.scorer.name!r} returned {int(bad.sum())} non-finite scores in "
                f"domain {dom.name!r}; a non-finite score is a bug in the model, not a rank"
            )
        in_domain = request.items[self.dataset.domain_of(request.items) == domain]
        seen = np.zeros(dom.n_items, dtype=bool)
        seen[self.dataset.to_local(in_domain)] = True  # already in the history: never again
        candidates = np.nonzero(~seen)[0]
        k = min(request.top_k, candidates.shape[0])
        if k == 0:
            return []
        cand_scores = scores[candidates]
        if k < candidates.shape[0]:
            # Keep everything tied with the k-th best so the order below is exactly a stable
            # full sort's (best score first, lower item id first among equal scores).
            kth = np.partition(cand_scores, candidates.shape[0] - k)[candidates.shape[0] - k]
            keep = cand_scores >= kth
            candidates, cand_scores = candidates[keep], cand_scores[keep]
        order = np.lexsort((candidates, -cand_scores))[:k]
        # Every candidate scoring the same as a listed item is still in `cand_scores` (the cut
        # above keeps all ties with the k-th), so counting equal scores there finds every tie.
        _, score_class, class_size = np.unique(cand_scores, return_inverse=True, return_counts=True)
        tied = class_size[score_class] > 1
        titles = self._titles[domain]
        return [
            RecommendedItem(
                item=dom.item_keys[int(local)],
                title=titles[int(local)],
                score=float(cand_scores[j]),
                rank=rank,
                tied=bool(tied[j]),
            )
            for rank, (j, local) in enumerate(((j, candidates[j]) for j in order), start=1)
        ]

    # --- descriptions ----------------------------------------------------------------------
    def domains(self) -> list[dict[str, Any]]:
        return [
            {
                "name": dom.name,
                "n_items": dom.n_items,
                "items_with_title": sum(1 for t in self._titles[d] if t is not None),
            }
            for d, dom in enumerate(self.dataset.domains)
        ]
