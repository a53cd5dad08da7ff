"""The in-memory form every loader produces and every method consumes.

A :class:`CrossDomainDataset` holds

* ``domains``: each with its own item set. Items have a *local* index inside
  their domain and a *global* id ``domain.offset + local`` in one unified item
  space (the paper's V*), so a mixed cross-domain sequence is one int array.
* ``sequences``: chronologically ordered, mixed-domain interaction sequences in
  CSR form. A user usually owns one sequence; formats that ship several windows
  per user (C2DSR's train windows) or held-out users (LLMCDSR) own more or
  different ones. ``train_len[s]`` says how many leading items of sequence
  ``s`` are training data.
* ``valid`` / ``test``: evaluation instances, each "the first ``cutoff`` items
  of sequence ``seq`` are the visible history; predict ``target``".

The protocol that produced the split is part of the data (``protocol`` and
``protocol_note``) so that every report can say which one it used, and
whatever the protocol had to leave out is counted in ``dropped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNKNOWN = ""  # value of an item/user attribute that the source does not give


@dataclass(frozen=True)
class Domain:
    """One domain (e.g. Food) with its own item set."""

    name: str
    offset: int  # global id of local item 0
    item_keys: tuple[str, ...]  # source ids (ASIN, MovieLens id, ...), index = local id
    # attribute name -> value per local item ("" when unknown): title, category, year, genres ...
    item_attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_keys)

    def titles(self) -> tuple[str, ...]:
        return self.item_attributes.get("title", tuple(UNKNOWN for _ in self.item_keys))

    def text_coverage(self) -> float:
        """Share of items with a non-empty title."""
        if self.n_items == 0:
            return 0.0
        titles = self.item_attributes.get("title")
        if titles is None:
            return 0.0
        return sum(1 for t in titles if t) / self.n_items


@dataclass(frozen=True)
class EvalSplit:
    """Leave-one-out evaluation instances."""

    seq: np.ndarray  # int64 [E]: which sequence
    cutoff: np.ndarray  # int64 [E]: number of leading items visible as history
    target: np.ndarray  # int64 [E]: global id of the item to predict

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    @staticmethod
    def empty() -> EvalSplit:
        z = np.zeros(0, dtype=np.int64)
        return EvalSplit(z, z.copy(), z.copy())

    def select(self, mask: np.ndarray) -> EvalSplit:
        return EvalSplit(self.seq[mask], self.cutoff[mask], self.target[mask])


@dataclass
class CrossDomainDataset:
    name: str
    protocol: str  # short protocol name carried into every result, e.g. "c2dsr-derived-loo"
    protocol_note: str  # one sentence a report prints next to the numbers
    domains: list[Domain]
    user_keys: list[str]  # source user ids, index = user index
    seq_user: np.ndarray  # int64 [S]
    seq_offsets: np.ndarray  # int64 [S+1]
    items: np.ndarray  # int64 [N] global item ids, chronological within each sequence
    times: np.ndarray  # int64 [N] unix seconds (or a synthetic clock)
    train_len: np.ndarray  # int64 [S]
    valid: EvalSplit
    test: EvalSplit
    user_attributes: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # what the protocol left out, counted
    notes: list[str] = field(default_factory=list)  # facts about the source worth reporting
    fingerprint: str = ""  # content hash of the source files and loader version

    def __post_init__(self) -> None:
        self._domain_starts = np.array([d.offset for d in self.domains], dtype=np.int64)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_keys)

    @property
    def n_sequences(self) -> int:
        return int(self.seq_user.shape[0])

    @property
    def n_domains(self) -> int:
        return len(self.domains)

    @property
    def n_items_total(self) -> int:
        return sum(d.n_items for d in self.domains)

    def domain_index(self, name: str) -> int:
        for i, d in enumerate(self.domains):
            if d.name == name:
                return i
        known = ", ".join(d.name for d in self.domains)
        raise KeyError(f"data set {self.name!r} has no domain {name!r} (domains: {known})")

    # --- item ids ----------------------------------------------------------------------------
    def domain_of(self, global_items: np.ndarray) -> np.ndarray:
        """Domain index of each global item id."""
        return np.searchsorted(self._domain_starts, np.asarray(global_items), side="right") - 1

    def to_local(self, global_items: np.ndarray) -> np.ndarray:
        g = np.asarray(global_items)
        return g - self._domain_starts[self.domain_of(g)]

    def to_global(self, domain: int, local_items: np.ndarray) -> np.ndarray:
        return np.asarray(local_items) + self.domains[domain].offset

    # --- sequences ---------------------------------------------------------------------------
    def sequence(self, s: int) -> np.ndarray:
        return self.items[self.seq_offsets[s] : self.seq_offsets[s + 1]]

    def sequence_times(self, s: int) -> np.ndarray:
        return self.times[self.seq_offsets[s] : self.seq_offsets[s + 1]]

    def sequence_lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    def history(self, split: EvalSplit, i: int) -> np.ndarray:
        """Visible history (global ids) of evaluation instance ``i``."""
        start = self.seq_offsets[split.seq[i]]
        return self.items[start : start + split.cutoff[i]]

    def eval_split(self, name: str) -> EvalSplit:
        if name == "valid":
            return self.valid
        if name == "test":
            return self.test
        raise ValueError(f"unknown split {name!r}: expected 'valid' or 'test'")

    def target_domains(self, split: EvalSplit) -> np.ndarray:
        return self.domain_of(split.target)

    def n_train_interactions(self) -> int:
        return int(self.train_len.sum())

    def user_item_sets(self) -> list[np.ndarray]:
        """Every global item each user interacted with, in any of their sequences (sorted, unique)."""
        order = np.argsort(self.seq_user, kind="stable")
        out: list[list[np.ndarray]] = [[] for _ in range(self.n_users)]
        for s in order:
            out[int(self.seq_user[s])].append(self.sequence(int(s)))
        return [
            np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
            for parts in out
        ]

    def train_item_counts(self) -> np.ndarray:
        """Interaction count per global item over the training portions only."""
        lengths = self.sequence_lengths()
        pos_in_seq = np.arange(self.items.shape[0]) - np.repeat(self.seq_offsets[:-1], lengths)
        in_train = pos_in_seq < np.repeat(self.train_len, lengths)
        return np.bincount(self.items[in_train], minlength=self.n_items_total).astype(np.int64)

    def check_consistency(self) -> None:
        """Invariants every loader must satisfy; a failure is a bug in the loader."""
        n = self.items.shape[0]
        assert self.seq_offsets[0] == 0 and self.seq_offsets[-1] == n
        assert np.all(np.diff(self.seq_offsets) >= 0)
        assert self.times.shape == self.items.shape
        assert self.train_len.shape == self.seq_user.shape
        assert np.all(self.train_len <= self.sequence_lengths())
        if n:
            assert self.items.min() >= 0 and self.items.max() < self.n_items_total
        if self.n_sequences:
            assert self.seq_user.min() >= 0 and self.seq_user.max() < self.n_users
        for split in (self.valid, self.test):
            if len(split):
                lengths = self.sequence_lengths()[split.seq]
                assert np.all(split.cutoff < lengths) and np.all(split.cutoff >= 1)
                ends = self.seq_offsets[split.seq] + split.cutoff
                assert np.array_equal(self.items[ends], split.target)
