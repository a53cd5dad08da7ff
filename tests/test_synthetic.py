"""The generated ``synthetic`` data set: determinism, its designed properties, and fairness.

Properties are measured on the generated data against the hidden ground truth that
``generate`` returns. The fairness test runs a small version of
bench/synthetic_testbed.py through fedscope's evaluator, plus controls in which the
signal is switched off, so the assertions are shown to be able to fail.
"""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
import pytest
from tests.helpers import load_bench_script

from fedscope.data import available, load_dataset
from fedscope.data.dataset import CrossDomainDataset, Domain
from fedscope.data.formats import synthetic
from fedscope.data.formats.synthetic import AGE_RANGES, TOPICS, generate
from fedscope.evaluation import Evaluator

SMALL = {"n_users": 2000, "n_items": 800}
TEXT_WEIGHT = 0.02


testbed = load_bench_script("synthetic_testbed")


@pytest.fixture(scope="module")
def default_world() -> tuple[CrossDomainDataset, synthetic.SyntheticTruth, float]:
    started = time.perf_counter()
    ds, truth = generate()
    return ds, truth, time.perf_counter() - started


def _arrays(ds: CrossDomainDataset) -> dict[str, np.ndarray]:
    return {
        "seq_user": ds.seq_user,
        "seq_offsets": ds.seq_offsets,
        "items": ds.items,
        "times": ds.times,
        "train_len": ds.train_len,
        "valid_seq": ds.valid.seq,
        "valid_target": ds.valid.target,
        "test_target": ds.test.target,
    }


# --- determinism and registration ----------------------------------------------------------


def test_same_seed_gives_byte_identical_data_and_other_seed_differs() -> None:
    a, _ = generate(seed=5, n_users=500, n_items=300)
    b, _ = generate(seed=5, n_users=500, n_items=300)
    c, _ = generate(seed=6, n_users=500, n_items=300)
    for key, arr in _arrays(a).items():
        other = _arrays(b)[key]
        assert arr.dtype == other.dtype and arr.tobytes() == other.tobytes(), key
    assert [d.item_attributes for d in a.domains] == [d.item_attributes for d in b.domains]
    assert a.user_attributes == b.user_attributes
    assert a.fingerprint == b.fingerprint
    assert a.items.tobytes() != c.items.tobytes()
    assert a.domains[0].item_attributes["title"] != c.domains[0].item_attributes["title"]
    assert a.fingerprint != c.fingerprint


def test_registered_without_files_and_loads_through_the_registry() -> None:
    spec = next(s for s in available() if s.name == "synthetic")
    assert spec.folder is None and spec.required_files == ()
    ds = load_dataset("synthetic", seed=3, n_users=400, n_items=200)
    direct, _ = generate(seed=3, n_users=400, n_items=200)
    assert ds.items.tobytes() == direct.items.tobytes()
    assert ds.protocol == "synthetic-loo" and ds.protocol_note
    cached = load_dataset("synthetic", seed=3, n_users=400, n_items=200)  # from the cache
    assert cached.items.tobytes() == ds.items.tobytes() and cached.fingerprint == ds.fingerprint


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="n_userz"):
        generate(n_userz=10)
    with pytest.raises(ValueError, match="Comics"):
        generate(domains=["Books", "Comics"])
    with pytest.raises(ValueError, match="overlap"):
        generate(overlap=1.5)
    with pytest.raises(ValueError, match="n_items"):
        generate(n_items=[100, 100, 100])


def test_default_generation_is_fast_and_consistent(default_world) -> None:
    ds, _, seconds = default_world
    ds.check_consistency()
    assert seconds < 10.0, f"default generation took {seconds:.1f} s"
    assert [d.name for d in ds.domains] == ["Books", "Movies"]
    assert ds.n_users == 4000 and [d.n_items for d in ds.domains] == [2000, 2000]


def test_other_domains_and_three_domains() -> None:
    ds, truth = generate(domains=["Food", "Kitchen", "Music"], n_users=600, n_items=[300, 200, 150])
    ds.check_consistency()
    assert [d.n_items for d in ds.domains] == [300, 200, 150]
    active = truth.user_active.sum(axis=1)
    assert set(np.unique(active)) <= {1, 2, 3} and (active >= 2).any() and (active == 3).any()
    brands = ds.domains[0].item_attributes["brand"]
    assert sum(1 for b in brands if b) > 0.8 * len(brands)
    assert all(y == "" for y in ds.domains[1].item_attributes["year"])


def test_a_user_can_exhaust_a_tiny_domain() -> None:
    ds, _ = generate(n_items=16, n_users=50, mean_length=40, max_length=50, seed=2)
    ds.check_consistency()
    assert ds.sequence_lengths().max() > ds.domains[0].n_items


# --- the designed properties, measured -----------------------------------------------------


def _user_domains(ds: CrossDomainDataset) -> list[set[int]]:
    return [set(ds.domain_of(ds.sequence(s)).tolist()) for s in range(ds.n_sequences)]


def test_overlapping_and_single_domain_users(default_world) -> None:
    ds, truth, _ = default_world
    doms = _user_domains(ds)
    overlap = np.mean([len(d) >= 2 for d in doms])
    assert 0.5 <= overlap <= 0.7, overlap
    for k in range(ds.n_domains):  # single-domain users of every domain exist
        assert sum(1 for d in doms if d == {k}) > 0.1 * ds.n_users
    observed = np.array([[k in d for k in range(ds.n_domains)] for d in doms])
    assert np.array_equal(observed, truth.user_active)


def test_cold_start_users_are_a_sizeable_share(default_world) -> None:
    ds, _, _ = default_world
    lengths = ds.sequence_lengths()
    cold = np.mean(lengths <= 5)
    assert 0.2 <= cold <= 0.4, cold
    # most of them are evaluated: only length-2 users cannot be split
    evaluated_cold = np.mean(ds.valid.cutoff + 2 <= 5)
    assert evaluated_cold > 0.15, evaluated_cold
    assert 0 < sum(ds.dropped.values()) < 0.1 * ds.n_users


def test_item_popularity_has_a_long_tail(default_world) -> None:
    ds, _, _ = default_world
    counts = np.bincount(ds.items, minlength=ds.n_items_total)
    for d in ds.domains:
        c = np.sort(counts[d.offset : d.offset + d.n_items])[::-1]
        top_share = c[: d.n_items // 10].sum() / c.sum()
        assert 0.4 <= top_share <= 0.8, (d.name, top_share)
        assert np.mean(c <= 2) > 0.2, d.name  # many rarely seen items


def _topic_histograms(ds: CrossDomainDataset, truth: synthetic.SyntheticTruth) -> np.ndarray:
    """[users, domains, topics] normalised topic counts of each user's items."""
    k = len(truth.topic_labels)
    hist = np.zeros((ds.n_users, ds.n_domains, k))
    dom = ds.domain_of(ds.items)
    users = np.repeat(ds.seq_user, ds.sequence_lengths())
    np.add.at(hist, (users, dom, truth.item_topic[ds.items]), 1.0)
    norm = np.linalg.norm(hist, axis=2, keepdims=True)
    return np.divide(hist, norm, out=np.zeros_like(hist), where=norm > 0)


def test_taste_in_one_domain_predicts_the_other(default_world) -> None:
    ds, truth, _ = default_world
    hist = _topic_histograms(ds, truth)
    both = np.nonzero(truth.user_active.all(axis=1))[0]
    same_user = np.mean(np.sum(hist[both, 0] * hist[both, 1], axis=1))
    rng = np.random.default_rng(0)
    other = rng.permutation(both)
    random_pair = np.mean(np.sum(hist[both, 0] * hist[other, 1], axis=1))
    assert same_user > random_pair + 0.25, (same_user, random_pair)


def test_order_matters_topic_chain_series_and_adaptations(default_world) -> None:
    ds, truth, _ = default_world
    topic = truth.item_topic
    adjacent, distant = [], []
    follows_series = follows_companion = n_pairs = 0
    for s in range(ds.n_sequences):
        seq = ds.sequence(s)
        if seq.shape[0] < 6:
            continue
        t = topic[seq]
        adjacent.append(np.mean(t[1:] == t[:-1]))
        distant.append(np.mean(t[5:] == t[:-5]))
        follows_series += int(np.sum(truth.series_next[seq[:-1]] == seq[1:]))
        follows_companion += int(np.sum(truth.companion[seq[:-1]] == seq[1:]))
        n_pairs += seq.shape[0] - 1
    assert np.mean(adjacent) > np.mean(distant) + 0.1, (np.mean(adjacent), np.mean(distant))
    # chance level for either is about 1 / items per domain = 0.0005
    assert follows_series / n_pairs > 0.02, follows_series / n_pairs
    assert follows_companion / n_pairs > 0.005, follows_companion / n_pairs
    # a series is read forwards: part k+1 after part k far more often than before it
    forward = backward = 0
    for s in range(ds.n_sequences):
        seq = ds.sequence(s)
        pos = {int(g): i for i, g in enumerate(seq)}
        for g, i in pos.items():
            nxt = int(truth.series_next[g])
            if nxt >= 0 and nxt in pos:
                forward += pos[nxt] > i
                backward += pos[nxt] < i
    assert forward > 5 * backward, (forward, backward)


def test_timestamps_increase_within_every_user(default_world) -> None:
    ds, _, _ = default_world
    for s in range(0, ds.n_sequences, 7):
        assert np.all(np.diff(ds.sequence_times(s)) > 0)
    assert ds.times.min() >= 1_420_070_400


_TITLE = re.compile(r"^[A-Z][A-Za-z0-9&'.,:()\- ]+$")


def test_item_text_is_english_looking_with_gaps(default_world) -> None:
    ds, truth, _ = default_world
    for d in ds.domains:
        titles = d.item_attributes["title"]
        cats = d.item_attributes["category"]
        assert 0.8 <= d.text_coverage() <= 0.97, (d.name, d.text_coverage())
        assert 0.9 <= np.mean([bool(c) for c in cats]) < 1.0
        for title in titles:
            if title:
                assert _TITLE.match(title) and len(title.split()) >= 2, title
        years = [y for y in d.item_attributes["year"] if y]
        assert years and all(1900 < int(y) < 2030 for y in years)
    labels = {t.label for t in TOPICS}
    topic = truth.item_topic
    for d in ds.domains:
        for i, cat in enumerate(d.item_attributes["category"]):
            if cat:
                root, label = cat.split(" > ")
                assert root == synthetic.DOMAIN_KINDS[d.name].category_root
                assert label in labels and label == truth.topic_labels[topic[d.offset + i]]


_STOPWORDS = {"the", "and", "of", "at", "to", "my", "from", "a", "an"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z\-]+", text.lower()) if w not in _STOPWORDS}


def test_items_of_one_topic_share_words_across_domains(default_world) -> None:
    ds, truth, _ = default_world
    books, movies = ds.domains
    rng = np.random.default_rng(1)
    titles: dict[bool, list[bool]] = {True: [], False: []}
    texts: dict[bool, list[bool]] = {True: [], False: []}
    for _ in range(20000):
        i, j = int(rng.integers(books.n_items)), int(rng.integers(movies.n_items))
        ti, tj = books.item_attributes["title"][i], movies.item_attributes["title"][j]
        if not ti or not tj:
            continue
        ci, cj = books.item_attributes["category"][i], movies.item_attributes["category"][j]
        label_i, label_j = ci.split(" > ")[-1], cj.split(" > ")[-1]
        same = bool(truth.item_topic[books.offset + i] == truth.item_topic[movies.offset + j])
        titles[same].append(bool(_words(ti) & _words(tj)))
        texts[same].append(bool(_words(f"{ti} {label_i}") & _words(f"{tj} {label_j}")))
    # titles alone: same-topic pairs share a word several times as often as others
    share_same, share_other = np.mean(titles[True]), np.mean(titles[False])
    assert share_same > 4 * share_other, (share_same, share_other)
    # title + category label: almost always for one topic, rarely across topics
    assert np.mean(texts[True]) > 0.8 and np.mean(texts[False]) < 0.1
    # a film and the novel it is based on share their title
    linked = np.nonzero(truth.companion[: books.n_items] >= 0)[0]
    shared = [
        books.item_attributes["title"][i]
        == movies.item_attributes["title"][truth.companion[i] - movies.offset]
        for i in linked
        if books.item_attributes["title"][i]
        and movies.item_attributes["title"][truth.companion[i] - movies.offset]
    ]
    assert len(shared) > 50 and np.mean(shared) > 0.95


def test_age_range_correlates_weakly_with_taste(default_world) -> None:
    ds, truth, _ = default_world
    ages = ds.user_attributes["age_range"]
    assert set(ages) <= {*AGE_RANGES, ""}
    known = np.array([a != "" for a in ages])
    assert 0.75 < known.mean() < 0.95
    leaning = np.array([TOPICS[t].age for t in truth.user_taste.argmax(axis=1)])
    age_index = np.array([AGE_RANGES.index(a) if a else -1 for a in ages])
    match = np.mean(age_index[known] == leaning[known])
    chance = sum(np.mean(leaning[known] == k) * np.mean(age_index[known] == k) for k in range(5))
    assert match > chance + 0.15, (match, chance)
    assert match < 0.7, match  # weak: most of the age is not explained by taste


# --- a fair test bed: the other domain, the text and the order help ------------------------


def _domain_mean_hr(ds: CrossDomainDataset, split: str, scorers: dict) -> dict[str, float]:
    ev = Evaluator(ds, split=split, mode="full")
    out = {}
    for name, scorer in scorers.items():
        m = ev.evaluate(scorer).metrics
        out[name] = 100 * float(np.mean([m[d.name]["HR@10"] for d in ds.domains]))
    return out


def _gains(options: dict, shuffle_text: bool = False) -> tuple[float, float]:
    """Mean over seeds 0-2 and both splits of (2)-(1) and (3)-(2), in HR@10 points."""
    d21, d32 = [], []
    for seed in (0, 1, 2):
        ds, _ = generate(seed=seed, **options)
        if shuffle_text:
            ds = _with_shuffled_text(ds, seed)
        scorers = testbed.build_scorers(ds, text_weight=TEXT_WEIGHT)
        for split in ("valid", "test"):
            hr = _domain_mean_hr(ds, split, scorers)
            d21.append(hr[testbed.CROSS_DOMAIN] - hr[testbed.IN_DOMAIN])
            d32.append(hr[testbed.WITH_TEXT] - hr[testbed.CROSS_DOMAIN])
    return float(np.mean(d21)), float(np.mean(d32))


def _with_shuffled_text(ds: CrossDomainDataset, seed: int) -> CrossDomainDataset:
    """Same interactions, item text permuted within each domain: text without signal."""
    rng = np.random.default_rng(seed)
    domains = []
    for d in ds.domains:
        order = rng.permutation(d.n_items)
        attrs = {k: tuple(v[i] for i in order) for k, v in d.item_attributes.items()}
        domains.append(Domain(d.name, d.offset, d.item_keys, attrs))
    out = dataclasses.replace(ds, domains=domains)
    out.fingerprint = ds.fingerprint + "-shuffled-text"
    return out


def test_cross_domain_history_and_text_help_a_simple_model() -> None:
    d21, d32 = _gains(SMALL)
    assert d21 > 1.0, f"(2) cross-domain beats (1) in-domain by only {d21:.2f} HR@10 points"
    assert d32 > 0.5, f"(3) +text beats (2) cross-domain by only {d32:.2f} HR@10 points"


def test_the_gains_vanish_when_their_signal_is_removed() -> None:
    # No shared taste, no adaptations, no topic chain across domains: the other domain
    # carries no information about this one, and using it must not help.
    unrelated = {
        **SMALL,
        "taste_sharing": 0.0,
        "companion_share": 0.0,
        "topic_stickiness": 0.0,
        "topic_drift": 0.0,
    }
    d21, _ = _gains(unrelated)
    assert d21 < 0.5, d21
    _, d32 = _gains(SMALL, shuffle_text=True)
    assert d32 < 0.3, d32
