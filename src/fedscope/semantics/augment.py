"""The offline augmentation job: items from the public catalogue, users per client.

Privacy model (the paper's "Offline usage"): augmentation runs on the client's own machine,
before training, with a local model; nothing is sent anywhere.

* Item side (IAE): every item is described by public catalogue fields only (title, year,
  genres, category, brand). No interaction data is involved, so the result is the same on
  every client and one ``items.npz`` serves them all.
* User side (UFE): a user job is given a :class:`ClientView`, which holds *one* client's
  users and their training histories and nothing else; the job has no handle on the data set,
  so it cannot read another client's partition. Only training interactions are used (never a
  validation or test target; see :func:`profile_prefix_lengths` for held-out users), restricted
  to the domains the client holds. A prompt describes the user by the items of that history
  alone (see :mod:`fedscope.semantics.prompts`).

Per entity: no text at all (e.g. the Book domain of Movie-Book, where 95 % of books have no
title) takes the N/A path: status N/A, a zero row, mask False, no model call. Otherwise the
encoder backend embeds the entity's text; the llm backend asks the local model for the schema's
attributes, validates and repairs the answer, and embeds the entity's text together with the
attributes it got (an answer that stays N/A leaves the text alone, so the row is still useful).
Every answer and vector goes through the content-addressed cache, committed as it is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain
from fedscope.data.partition import ClientPartition
from fedscope.semantics.cache import CachedAnswer, SemanticCache, content_key
from fedscope.semantics.encoder import SentenceEncoder
from fedscope.semantics.llm import LlamaGenerator
from fedscope.semantics.prompts import (
    PROMPT_VERSION,
    ChatPrompt,
    ItemFacts,
    item_facts,
    item_prompt,
    item_text,
    user_prompt,
    user_text,
    with_attributes,
)
from fedscope.semantics.schemas import (
    Schema,
    Status,
    item_schema,
    problem_kind,
    render_values,
    user_schema,
    validate_answer,
)
from fedscope.semantics.store import SidePart, client_scope

Backend = Literal["llm", "encoder"]
ItemOrder = Literal["catalogue", "popularity"]
ProgressFn = Callable[[str, int, int], None]  # (label, done, total)
CHUNK = 64  # entities per encoder batch and per cache commit of vectors


# --- what a job may read ---------------------------------------------------------------------


class Catalogue:
    """Public item metadata of every domain, by global item id."""

    def __init__(self, domains: list[Domain]):
        self.domains = list(domains)
        self.n_items = sum(d.n_items for d in self.domains)
        self._starts = np.array([d.offset for d in self.domains], dtype=np.int64)
        self._facts: dict[int, ItemFacts] = {}

    def domain_of(self, global_id: int) -> Domain:
        return self.domains[int(np.searchsorted(self._starts, global_id, side="right") - 1)]

    def facts(self, global_id: int) -> ItemFacts:
        found = self._facts.get(global_id)
        if found is None:
            d = self.domain_of(global_id)
            local = global_id - d.offset
            attrs = {k: v[local] for k, v in d.item_attributes.items()}
            found = item_facts(d.name, attrs)
            self._facts[global_id] = found
        return found


def item_order(dataset: CrossDomainDataset, order: ItemOrder) -> np.ndarray:
    """Global item ids in the order an item job visits them, so that ``limit`` keeps a prefix.

    ``catalogue``: by id. ``popularity``: most training interactions first (ties by id), so a
    limited run of a slow backend spends its budget on the items most histories contain. The
    counts are the catalogue owner's aggregate over training interactions; no user's data
    enters a prompt through them.
    """
    if order == "catalogue":
        return np.arange(dataset.n_items_total, dtype=np.int64)
    if order == "popularity":
        return np.argsort(-dataset.train_item_counts(), kind="stable").astype(np.int64)
    raise ValueError(f"unknown item order {order!r}; use 'catalogue' or 'popularity'")


@dataclass(frozen=True)
class ClientView:
    """One party's users and their training histories: all a user job gets to see."""

    client_id: int | None  # None: the whole data set as one party
    users: np.ndarray  # int64, sorted user indices
    histories: tuple[np.ndarray, ...]  # per user: chronological global item ids (train only)
    domain_names: tuple[str, ...]  # the domains the client holds


def profile_prefix_lengths(dataset: CrossDomainDataset) -> np.ndarray:
    """How many leading items of each sequence a user profile may use.

    The training part, ``train_len``. A sequence without a training part (LLMCDSR's held-out
    users) gets the history visible to its earliest evaluation instance instead: the model
    is given that history at evaluation time anyway, and it stops before every target on the
    sequence, so no validation or test target ever enters a profile.
    """
    prefix = dataset.train_len.astype(np.int64).copy()
    first_cutoff = np.full(dataset.n_sequences, np.iinfo(np.int64).max, dtype=np.int64)
    for split in (dataset.valid, dataset.test):
        np.minimum.at(first_cutoff, split.seq, split.cutoff)
    held_out = (prefix == 0) & (first_cutoff < np.iinfo(np.int64).max)
    prefix[held_out] = first_cutoff[held_out]
    return prefix


def client_view(dataset: CrossDomainDataset, client: ClientPartition | None) -> ClientView:
    """Cut one client's users and their histories out of the data set.

    Only the client's users, only the domains it holds, only the profile prefix of each
    sequence (:func:`profile_prefix_lengths`). ``client=None`` treats every user as one party
    (a single data owner, or the centralised regime). A user with several sequences (C2DSR's
    windows) gets them concatenated, keeping the last occurrence of a repeated item.
    """
    if client is None:
        client = ClientPartition(-1, np.arange(dataset.n_users), tuple(range(dataset.n_domains)))
    prefix = profile_prefix_lengths(dataset)
    parts: dict[int, list[np.ndarray]] = {int(u): [] for u in client.users}
    for s in np.nonzero(np.isin(dataset.seq_user, client.users))[0]:
        items = dataset.sequence(int(s))[: prefix[s]]
        items = items[np.isin(dataset.domain_of(items), client.domains)]
        parts[int(dataset.seq_user[s])].append(items)
    histories = []
    for u in client.users:
        seq = np.concatenate(parts[int(u)]) if parts[int(u)] else np.zeros(0, np.int64)
        # Last occurrence of each item, in chronological order.
        _, last_rev = np.unique(seq[::-1], return_index=True)
        histories.append(seq[np.sort(seq.shape[0] - 1 - last_rev)])
    return ClientView(
        None if client.client_id < 0 else client.client_id,
        np.asarray(client.users, dtype=np.int64),
        tuple(histories),
        tuple(dataset.domains[d].name for d in client.domains),
    )


# --- reporting --------------------------------------------------------------------------------


@dataclass
class SideReport:
    side: str  # "items" or "users"
    scope: str  # "catalogue", "all", "client-0003"
    total: int  # entities in scope
    processed: int = 0  # within --limit
    valid: int = 0
    repaired: int = 0
    na: int = 0
    no_text: int = 0  # of the N/A ones: nothing to describe, no model call
    cached_answers: int = 0
    generated: int = 0  # model completions run (retries included)
    encoded: int = 0  # texts run through the sentence encoder
    seconds: float = 0.0
    # Wall seconds inside the model calls alone (completions, encoder batches): what the
    # backend costs, without cache lookups or the job's pauses. On a busy machine they still
    # include waits for a core.
    generate_s: float = 0.0
    encode_s: float = 0.0
    problems: dict[str, int] = field(default_factory=dict)  # repair reasons, counted

    @property
    def per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_per_answer(self) -> float | None:
        """Mean wall seconds of one LLM completion (None when none ran)."""
        return self.generate_s / self.generated if self.generated else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_second": round(self.per_second, 3)}


@dataclass
class _Entry:
    base_text: str  # what the encoder embeds in the encoder backend
    prompt: ChatPrompt
    schema: Schema
    echoes: tuple[str, ...]
    max_tokens: int


# --- the job ----------------------------------------------------------------------------------


class Augmenter:
    def __init__(
        self,
        encoder: SentenceEncoder,
        cache: SemanticCache,
        generator: LlamaGenerator | None = None,
        progress: ProgressFn | None = None,
    ):
        self.encoder = encoder
        self.cache = cache
        self.generator = generator
        self.progress = progress
        self._generate_s = 0.0  # running totals; each side's report takes its difference
        self._encode_s = 0.0

    @property
    def backend(self) -> Backend:
        return "llm" if self.generator is not None else "encoder"

    def identity(self) -> dict[str, Any]:
        """What makes two stores' features comparable (checked by SemanticStore.begin)."""
        return {
            "backend": self.backend,
            "encoder": self.encoder.model_id,
            "generator": self.generator.model_id if self.generator else None,
            "prompt_version": PROMPT_VERSION,
        }

    # --- sides ---------------------------------------------------------------------------------
    def augment_items(
        self,
        catalogue: Catalogue,
        limit: int | None = None,
        items: np.ndarray | None = None,
    ) -> tuple[SidePart, SideReport]:
        """f_A of every item (or of the global ids in ``items``), rows = global item ids."""
        max_tokens = self.generator.settings.max_tokens_item if self.generator else 0

        def entry(global_id: int) -> _Entry | None:
            facts = catalogue.facts(global_id)
            if not facts.has_text:
                return None
            schema = item_schema(facts.domain)
            return _Entry(
                item_text(facts),
                item_prompt(facts, schema),
                schema,
                (facts.title,),
                max_tokens,
            )

        rows = np.arange(catalogue.n_items, dtype=np.int64) if items is None else items
        report = SideReport("items", "catalogue", int(rows.shape[0]))
        return self._run(rows, catalogue.n_items, entry, report, limit), report

    def augment_users(
        self,
        view: ClientView,
        catalogue: Catalogue,
        n_users: int,
        limit: int | None = None,
    ) -> tuple[SidePart, SideReport]:
        """f_A of the view's users, rows = user index (``n_users`` rows, others zero)."""
        schema = user_schema(view.domain_names)
        max_tokens = self.generator.settings.max_tokens_user if self.generator else 0
        history_of = {int(u): h for u, h in zip(view.users, view.histories, strict=True)}

        def entry(user: int) -> _Entry | None:
            history = [catalogue.facts(int(g)) for g in history_of[user]]
            if not any(f.has_text for f in history):
                return None
            return _Entry(user_text(history), user_prompt(history, schema), schema, (), max_tokens)

        scope = client_scope(view.client_id)
        report = SideReport("users", scope, int(view.users.shape[0]))
        return self._run(view.users, n_users, entry, report, limit), report

    # --- engine --------------------------------------------------------------------------------
    def _answer(self, e: _Entry) -> tuple[CachedAnswer, bool]:
        """(answer, came from cache). Bounded retries; a failure of any kind ends as N/A."""
        gen = self.generator
        assert gen is not None
        key = content_key(
            "answer",
            gen.model_id,
            PROMPT_VERSION,
            e.schema.key,
            gen.settings_key(),
            e.prompt.as_text(),
        )
        cached = self.cache.get_answer(key)
        if cached is not None:
            return cached, True
        raw: str | None = None
        answer: CachedAnswer | None = None
        attempts = 1 + max(0, gen.settings.max_retries)
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                raw = gen.generate(e.prompt, e.schema.json_schema(), e.max_tokens, attempt)
            except (ValueError, RuntimeError) as exc:  # llama.cpp: context overflow, decode error
                raw = None
                answer = CachedAnswer(None, {"_error": str(exc)}, int(Status.NA), attempt + 1)
                continue
            finally:
                self._generate_s += time.perf_counter() - t0
            checked = validate_answer(raw, e.schema, e.echoes)
            answer = CachedAnswer(
                raw,
                {**checked.values, "_problems": checked.problems},
                int(checked.status),
                attempt + 1,
            )
            if checked.parsed:
                break
        assert answer is not None
        self.cache.put_answer(key, gen.model_id, PROMPT_VERSION, answer)
        return answer, False

    def _run(
        self,
        rows: np.ndarray,
        n_rows: int,
        make_entry: Callable[[int], _Entry | None],
        report: SideReport,
        limit: int | None,
    ) -> SidePart:
        dim = self.encoder.dim
        part = SidePart(
            np.zeros((n_rows, dim), dtype=np.float32),
            np.zeros(n_rows, dtype=bool),
            np.zeros(n_rows, dtype=np.int8),
        )
        todo = rows if limit is None else rows[: max(0, limit)]
        label = f"{report.side} ({report.scope})"
        encoded_before = self.encoder.n_encoded
        generated_before = self.generator.n_generated if self.generator else 0
        generate_s_before, encode_s_before = self._generate_s, self._encode_s
        start = time.perf_counter()
        if self.progress:
            self.progress(label, 0, len(todo))
        for chunk_start in range(0, len(todo), CHUNK):
            chunk = todo[chunk_start : chunk_start + CHUNK]
            texts: dict[int, str] = {}
            for i, row in enumerate(chunk.tolist()):
                e = make_entry(row)
                if e is None:
                    part.status[row] = Status.NA
                    report.no_text += 1
                elif self.generator is None:
                    part.status[row] = Status.VALID
                    texts[row] = e.base_text
                else:
                    answer, hit = self._answer(e)
                    report.cached_answers += int(hit)
                    part.status[row] = answer.status
                    values = {k: v for k, v in answer.values.items() if not k.startswith("_")}
                    for p in answer.values.get("_problems", []):
                        kind = problem_kind(p)
                        report.problems[kind] = report.problems.get(kind, 0) + 1
                    rendered = render_values(values) if answer.status != Status.NA else ""
                    texts[row] = with_attributes(e.base_text, rendered)
                    if self.progress:
                        self.progress(label, chunk_start + i + 1, len(todo))
            self._embed(texts, part)
            if self.progress:
                self.progress(label, chunk_start + len(chunk), len(todo))
        report.processed = len(todo)
        status = part.status[todo]
        report.valid = int((status == Status.VALID).sum())
        report.repaired = int((status == Status.REPAIRED).sum())
        report.na = int((status == Status.NA).sum())
        report.encoded = self.encoder.n_encoded - encoded_before
        report.generated = (self.generator.n_generated if self.generator else 0) - generated_before
        report.generate_s = self._generate_s - generate_s_before
        report.encode_s = self._encode_s - encode_s_before
        report.seconds = time.perf_counter() - start
        return part

    def _embed(self, texts: dict[int, str], part: SidePart) -> None:
        if not texts:
            return
        keys = {row: content_key("vector", self.encoder.model_id, t) for row, t in texts.items()}
        found = self.cache.get_vectors(list(set(keys.values())))
        missing = sorted({keys[r]: r for r in texts if keys[r] not in found}.items())
        if missing:
            t0 = time.perf_counter()
            vectors = self.encoder.encode([texts[r] for _, r in missing])
            self._encode_s += time.perf_counter() - t0
            new = {k: v for (k, _), v in zip(missing, vectors, strict=True)}
            self.cache.put_vectors(self.encoder.model_id, new)
            found.update(new)
        for row, key in keys.items():
            part.features[row] = found[key]
            part.mask[row] = True
