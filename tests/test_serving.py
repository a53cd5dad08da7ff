"""`fedscope serve`: the real HTTP service (a uvicorn subprocess on loopback) over a real,
tiny federated run, checked against the in-process Recommender and `fedscope recommend`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedscope.data.dataset import CrossDomainDataset
from fedscope.evaluation.evaluator import NonFiniteScoreError
from fedscope.federation import run_dir as layout
from fedscope.serving import (
    EmptyHistoryError,
    Query,
    Recommender,
    RunNotServableError,
    UnknownDomainError,
    UnknownItemsError,
    check_servable,
)
from fedscope.serving.app import MAX_BATCH, MAX_BODY_BYTES, MAX_TOP_K
from fedscope.serving.recommender import ItemIndex, display_title

# One tiny federated run through Flower's simulation engine: most of this module's time.
pytestmark = pytest.mark.slow

FEDSCOPE = [sys.executable, "-m", "fedscope.cli"]
DATA_OPTIONS = {"n_users": 120, "n_items": 60}
TRAIN_SETTINGS = [
    f"data.options={json.dumps(DATA_OPTIONS)}",
    "method=fedscope",
    "federation.rounds=2",
    "partition.n_clients=2",
    "federation.fraction=1.0",
    "train.batch_size=32",
    "model.max_len=20",  # short enough that some test histories are truncated
]
TIE_NOTE = (
    "= tied: another item has exactly this score, so the order among them is by item id, "
    "not the model's preference"
)
TOL = 1e-4  # batched and single forward passes differ by float rounding (~1e-6)


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200", FEDSCOPE_CACHE_DIR=str(cache))
    env.update(FLWR_DISABLE_UPDATE_CHECK="1", FLWR_TELEMETRY_ENABLED="0")
    env.pop("FEDSCOPE_DEBUG", None)
    return env


def _cli(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FEDSCOPE, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(run_dir: Path, env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    """`fedscope serve` as a subprocess; always stopped by its pid, also when a test fails."""
    port = _free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*FEDSCOPE, "serve", str(run_dir), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    log_tail = log.read_text()[-3000:]
                    pytest.fail(f"server exited with {proc.returncode}:\n{log_tail}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"server not up after 180 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
            yield client
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _env(tmp_path_factory.getbasetemp() / "fedscope-cache")


@pytest.fixture(scope="module")
def fed_run(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    run_dir = tmp_path_factory.mktemp("serving") / "fedrun"
    sets = [x for s in TRAIN_SETTINGS for x in ("--set", s)]
    p = _cli(env, "train", *sets, "--run-dir", str(run_dir))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["regime"] == "federated"
    return run_dir


@pytest.fixture(scope="module")
def local(fed_run: Path, env: dict[str, str]) -> Recommender:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDSCOPE_CACHE_DIR", env["FEDSCOPE_CACHE_DIR"])
        return Recommender.from_run_dir(fed_run)


@pytest.fixture(scope="module")
def server(
    fed_run: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with _server(fed_run, env, tmp_path_factory.mktemp("logs") / "server.log") as client:
        yield client


def _keys(ds: CrossDomainDataset, global_ids: np.ndarray) -> list[str]:
    doms, local = ds.domain_of(global_ids), ds.to_local(global_ids)
    return [ds.domains[int(d)].item_keys[int(i)] for d, i in zip(doms, local, strict=True)]


def _test_histories(ds: CrossDomainDataset, n: int) -> list[list[str]]:
    out = [_keys(ds, ds.history(ds.test, i)) for i in range(min(n, len(ds.test)))]
    # longer than model.max_len (20): the scorer keeps the most recent items
    out.append(_keys(ds, np.concatenate([ds.history(ds.test, i) for i in range(8)])))
    return out


def _as_json(answer: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [item.as_dict() for item in items] for name, items in answer.items()}


def _assert_same(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> None:
    """Same domains, ranks and scores (within TOL); the items equal except where two
    scores are within TOL of each other (float rounding may swap a near-tie)."""
    assert list(a) == list(b)
    for name in a:
        xs, ys = a[name], b[name]
        assert [x["rank"] for x in xs] == [y["rank"] for y in ys] == list(range(1, len(xs) + 1))
        assert [x["score"] for x in xs] == pytest.approx([y["score"] for y in ys], abs=TOL)
        score_in_b = {y["item"]: y["score"] for y in ys}
        for x, y in zip(xs, ys, strict=True):
            if x["item"] == y["item"]:
                assert x["title"] == y["title"]
                continue
            if x["item"] in score_in_b:
                assert score_in_b[x["item"]] == pytest.approx(x["score"], abs=TOL)
            else:  # fell off b's list: tied with b's last item
                assert x["score"] == pytest.approx(ys[-1]["score"], abs=TOL)


def _check_answer(ds: CrossDomainDataset, history: list[str], body: dict, top_k: int) -> None:
    seen = set(history)
    titles = {
        k: display_title(t)
        for dom in ds.domains
        for k, t in zip(dom.item_keys, dom.titles(), strict=True)
    }
    for dom in ds.domains:
        items = body["recommendations"][dom.name]
        assert len(items) == min(top_k, dom.n_items - len(seen & set(dom.item_keys)))
        scores = [x["score"] for x in items]
        assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
        assert [x["rank"] for x in items] == list(range(1, len(items) + 1))
        assert all(x["item"] in set(dom.item_keys) for x in items)  # its own domain's items
        assert not seen & {x["item"] for x in items}  # history items are never recommended
        assert all(x["title"] == titles[x["item"]] for x in items)


# --- the service ---------------------------------------------------------------------------


def test_health_domains_and_openapi(server: httpx.Client, local: Recommender, fed_run: Path):
    health = server.get("/health").json()
    assert health["model_loaded"] is True and health["status"] == "ok"
    assert health["run_id"] == fed_run.name
    assert (health["dataset"], health["method"], health["regime"]) == (
        "synthetic",
        "fedscope",
        "federated",
    )
    assert health["domains"] == [d.name for d in local.dataset.domains]
    assert (
        health["selected_round"]
        == layout.load_checkpoint(layout.best_checkpoint_path(fed_run)).round
    )
    domains = server.get("/domains").json()["domains"]
    assert [(d["name"], d["n_items"]) for d in domains] == [
        (d.name, d.n_items) for d in local.dataset.domains
    ]
    spec = server.get("/openapi.json").json()
    assert {"/health", "/domains", "/recommend", "/recommend/batch"} <= set(spec["paths"])
    assert (
        "post" in spec["paths"]["/recommend"]
        and "422" in spec["paths"]["/recommend"]["post"]["responses"]
    )
    docs = server.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_single_requests_match_the_in_process_recommender(server: httpx.Client, local: Recommender):
    ds = local.dataset
    histories = _test_histories(ds, 12)
    assert max(len(h) for h in histories) > 20
    for i, history in enumerate(histories):
        top_k = 5 + i % 7
        r = server.post("/recommend", json={"history": history, "top_k": top_k})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["history_length"] == len(history)
        _check_answer(ds, history, body, top_k)
        _assert_same(body["recommendations"], _as_json(local.recommend(history, None, top_k)))
    titled = [
        x["title"]
        for h in histories[:3]
        for xs in server.post("/recommend", json={"history": h}).json()["recommendations"].values()
        for x in xs
    ]
    assert any(titled)  # titles come back with the items


def test_domain_filter_global_ids_and_top_k_larger_than_the_domain(
    server: httpx.Client, local: Recommender
):
    ds = local.dataset
    history_ids = ds.history(ds.test, 0)
    keys = _keys(ds, history_ids)
    by_keys = server.post("/recommend", json={"history": keys, "domain": "Movies"}).json()
    assert list(by_keys["recommendations"]) == ["Movies"]
    by_ids = server.post(
        "/recommend", json={"history": [int(g) for g in history_ids], "domain": "Movies"}
    ).json()
    assert by_ids == by_keys
    # every item not in the history, and no more: excluded items never appear with a score
    r = server.post("/recommend", json={"history": keys, "top_k": MAX_TOP_K}).json()
    _check_answer(ds, keys, r, MAX_TOP_K)


def test_batch_equals_the_single_answers(server: httpx.Client, local: Recommender):
    ds = local.dataset
    histories = _test_histories(ds, 20)
    requests = [
        {"history": h, "top_k": 3 + i % 5, "domain": [None, "Books", "Movies"][i % 3]}
        for i, h in enumerate(histories)
    ]
    r = server.post("/recommend/batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(requests)
    in_process = local.recommend_many(
        [Query(q["history"], q["domain"], q["top_k"]) for q in requests]
    )
    for q, got, mine in zip(requests, results, in_process, strict=True):
        single = server.post("/recommend", json=q).json()
        assert got["history_length"] == single["history_length"] == len(q["history"])
        _assert_same(got["recommendations"], single["recommendations"])
        _assert_same(got["recommendations"], _as_json(mine))
        wanted = [q["domain"]] if q["domain"] else [d.name for d in ds.domains]
        assert list(got["recommendations"]) == wanted
        assert all(len(v) == q["top_k"] for v in got["recommendations"].values())


def _bad_requests(known: str) -> list[tuple[str, str, dict[str, Any], int, str, str]]:
    """(name, path, httpx request arguments, status, error code, text the message must hold)."""
    j = {"headers": {"content-type": "application/json"}}
    return [
        ("unknown ids", "/recommend", {"json": {"history": [known, "nope-1", "nope-2"]}}, 422, "unknown_items", "nope-1, nope-2"),
        ("global id out of range", "/recommend", {"json": {"history": [10**9]}}, 422, "unknown_items", str(10**9)),
        ("unknown domain", "/recommend", {"json": {"history": [known], "domain": "Food"}}, 422, "unknown_domain", "no domain 'Food'"),
        ("empty history", "/recommend", {"json": {"history": []}}, 422, "invalid_request", "history: List should have at least 1 item"),
        ("no history", "/recommend", {"json": {"top_k": 3}}, 422, "invalid_request", "history: Field required"),
        ("top_k zero", "/recommend", {"json": {"history": [known], "top_k": 0}}, 422, "invalid_request", "top_k: Input should be greater than or equal to 1"),
        ("top_k too large", "/recommend", {"json": {"history": [known], "top_k": MAX_TOP_K + 1}}, 422, "invalid_request", f"less than or equal to {MAX_TOP_K}"),
        ("top_k as a string", "/recommend", {"json": {"history": [known], "top_k": "5"}}, 422, "invalid_request", "top_k: Input should be a valid integer"),
        ("history as a string", "/recommend", {"json": {"history": known}}, 422, "invalid_request", "history: Input should be a valid list"),
        ("item id of a wrong type", "/recommend", {"json": {"history": [known, True, 1.5]}}, 422, "invalid_request", "history[1]: an item id is a string"),
        ("misspelt field", "/recommend", {"json": {"history": [known], "topk": 3}}, 422, "invalid_request", "topk: Extra inputs are not permitted"),
        ("not an object", "/recommend", {"json": [known]}, 422, "invalid_request", "valid dictionary"),
        ("malformed JSON", "/recommend", {"content": b'{"history": ["a"', **j}, 400, "malformed_json", "not valid JSON"),
        ("undecodable bytes", "/recommend", {"content": b"\xff\xfe{", **j}, 400, "malformed_json", "not valid JSON"),
        ("not JSON", "/recommend", {"content": b"history=a", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type", "application/json"),
        ("body too large", "/recommend", {"content": b" " * (MAX_BODY_BYTES + 1), **j}, 413, "body_too_large", str(MAX_BODY_BYTES)),
        ("empty batch", "/recommend/batch", {"json": {"requests": []}}, 422, "invalid_request", "requests: List should have at least 1 item"),
        ("batch too large", "/recommend/batch", {"json": {"requests": [{"history": [known]}] * (MAX_BATCH + 1)}}, 422, "invalid_request", f"at most {MAX_BATCH} items"),
        ("bad request in a batch", "/recommend/batch", {"json": {"requests": [{"history": [known]}, {"history": ["zzz"]}]}}, 422, "unknown_items", "requests[1]: unknown item id(s)"),
        ("bad field in a batch", "/recommend/batch", {"json": {"requests": [{"history": [known], "top_k": -1}]}}, 422, "invalid_request", "requests[0].top_k"),
        ("unknown path", "/recommendations", {"json": {"history": [known]}}, 404, "not_found", "Not Found"),
    ]  # fmt: skip


def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_answering(
    server: httpx.Client, local: Recommender
):
    known = local.dataset.domains[0].item_keys[3]
    for name, path, request, status, code, text in _bad_requests(known):
        r = server.post(path, **request)
        assert r.status_code == status, (name, r.text)
        body = r.json()
        assert body["error"] == code, (name, body)
        assert text in body["message"], (name, body)
        assert server.get("/health").status_code == 200, name
    r = server.post("/recommend", json={"history": [known, "nope-1", "nope-2", "nope-1"]})
    assert r.json()["unknown_items"] == ["nope-1", "nope-2"]  # every unknown id, once
    r = server.post(
        "/recommend/batch", json={"requests": [{"history": [known]}, {"history": ["x"]}]}
    )
    assert r.json()["request_index"] == 1
    assert server.get("/recommend").status_code == 405
    ok = server.post("/recommend", json={"history": [known], "top_k": 2})
    assert ok.status_code == 200 and len(ok.json()["recommendations"]["Books"]) == 2


def test_concurrent_requests_get_their_own_answers(server: httpx.Client, local: Recommender):
    from concurrent.futures import ThreadPoolExecutor

    histories = _test_histories(local.dataset, 16)
    expected = [_as_json(local.recommend(h, None, 5)) for h in histories]

    def ask(history: list[str]) -> dict:
        with httpx.Client(base_url=server.base_url, timeout=60) as c:
            return c.post("/recommend", json={"history": history, "top_k": 5}).json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, histories * 2))
    for got, want in zip(answers, expected * 2, strict=True):
        _assert_same(got["recommendations"], want)


# --- in process and on the command line ------------------------------------------------------


def test_titles_are_shown_decoded_and_the_data_keeps_its_text() -> None:
    assert display_title("Black &amp; Decker 12&quot; Fan&reg;") == 'Black & Decker 12" Fan®'
    assert display_title("[FFP] AT&T R&D &#9733;") == "[FFP] AT&T R&D ★"
    assert display_title("") is None


def test_recommender_errors_are_typed(local: Recommender):
    known = local.dataset.domains[1].item_keys[0]
    with pytest.raises(UnknownItemsError) as e:
        local.recommend([known, "x1", "x2"])
    assert e.value.unknown == ["x1", "x2"] and "x1, x2" in str(e.value)
    with pytest.raises(EmptyHistoryError):
        local.recommend([])
    with pytest.raises(UnknownDomainError, match="no domain 'Food'"):
        local.recommend([known], "Food")
    with pytest.raises(UnknownItemsError, match=r"requests\[1\]") as e:
        local.recommend_many([Query([known]), Query(["x3"])])
    assert e.value.request_index == 1


def test_cli_recommend_prints_the_recommenders_answer(
    fed_run: Path, env: dict[str, str], local: Recommender
):
    ds = local.dataset
    history = _keys(ds, ds.history(ds.test, 1))
    p = _cli(env, "recommend", str(fed_run), "--history", ",".join(history), "--top-k", "4")
    assert p.returncode == 0, p.stderr
    expected = []
    for name, items in local.recommend(history, None, 4).items():
        expected.append(f"{name}: top {len(items)} after {len(history)} history items")
        expected += [
            f"{x.rank:>3}. {x.item}  {x.title or '(no title)'}  {x.score:.3f}"
            + (" =" if x.tied else "")
            for x in items
        ]
    if any(x.tied for items in local.recommend(history, None, 4).values() for x in items):
        expected.append(TIE_NOTE)
    assert p.stdout.splitlines() == expected
    bad = _cli(env, "recommend", str(fed_run), "--history", "no-such-item")
    assert bad.returncode == 2 and "unknown item id(s)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_serve_refuses_missing_unfinished_and_local_runs(
    tmp_path: Path, env: dict[str, str], fed_run: Path
):
    missing = _cli(env, "serve", str(tmp_path / "nope"), timeout=120)
    assert missing.returncode == 2 and "no such run directory" in missing.stderr
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((fed_run / "config.json").read_text())
    p = _cli(env, "serve", str(unfinished), timeout=120)
    assert p.returncode == 2 and "has not finished" in p.stderr
    for proc in (missing, p):  # one message (the console may wrap it), not a traceback
        assert proc.stderr.startswith("error: ") and proc.stderr.count("error") == 1
        assert "Traceback" not in proc.stderr
    with pytest.raises(RunNotServableError, match="has not finished"):
        Recommender.from_run_dir(unfinished)
    local_run = tmp_path / "local"
    local_run.mkdir()
    cfg = json.loads((fed_run / "config.json").read_text())
    cfg["federation"]["regime"] = "local"
    (local_run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunNotServableError, match="local-only run"):
        check_servable(local_run)


def _copy_with_weights(
    run: Path, dest: Path, env: dict[str, str], weights: Callable[[np.ndarray], np.ndarray]
) -> Recommender:
    """A copy of ``run`` whose selected checkpoint holds ``weights(w)`` for each array w."""
    dest.mkdir()
    for name in ("config.json", "run.json", "partition.json", "results.json"):
        (dest / name).write_text((run / name).read_text())
    best = layout.load_checkpoint(layout.best_checkpoint_path(run))
    layout.save_checkpoint(
        layout.best_checkpoint_path(dest),
        layout.Checkpoint([weights(w) for w in best.weights], best.round, None, None),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDSCOPE_CACHE_DIR", env["FEDSCOPE_CACHE_DIR"])
        return Recommender.from_run_dir(dest)


def test_non_finite_scores_are_a_500_not_a_rank(fed_run: Path, env: dict[str, str], tmp_path: Path):
    """A model whose weights went NaN: the service answers 500 with the reason and stays up."""
    broken = tmp_path / "broken"
    rec = _copy_with_weights(fed_run, broken, env, lambda w: np.full_like(w, np.nan))
    known = rec.dataset.domains[0].item_keys[0]
    with pytest.raises(NonFiniteScoreError, match="not a rank"):
        rec.recommend([known])
    with _server(broken, env, tmp_path / "broken.log") as client:
        r = client.post("/recommend", json={"history": [known]})
        assert r.status_code == 500
        assert r.json()["error"] == "internal_error" and "non-finite" in r.json()["message"]
        assert client.get("/health").status_code == 200


def test_tied_scores_are_flagged(fed_run: Path, env: dict[str, str], local: Recommender, tmp_path):
    """`tied` is true exactly when another unseen item of the domain has the same score; a
    model with all-zero weights scores every item alike, and every item says so."""
    ds = local.dataset
    for i in range(5):
        history = _keys(ds, ds.history(ds.test, i))
        answer = local.recommend(history, None, 8)
        for d, dom in enumerate(ds.domains):
            scores = local._score(d, [ItemIndex(ds).resolve(history)])[0]
            unseen = np.ones(dom.n_items, dtype=bool)
            unseen[[dom.item_keys.index(k) for k in history if k in set(dom.item_keys)]] = False
            for rec in answer[dom.name]:
                same = np.count_nonzero(scores[unseen] == np.float32(rec.score))
                assert rec.tied == (same > 1)

    flat = tmp_path / "flat"
    rec = _copy_with_weights(fed_run, flat, env, np.zeros_like)
    dom = ds.domains[0]
    listed = rec.recommend([dom.item_keys[0]], dom.name, 5)[dom.name]
    assert len({x.score for x in listed}) == 1 and all(x.tied for x in listed)
    assert [x.item for x in listed] == list(dom.item_keys[1:6])  # by item id, the history left out
    p = _cli(env, "recommend", str(flat), "--history", dom.item_keys[0], "--top-k", "3")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert all(line.endswith(" =") for line in lines[1:4]) and lines[-1] == TIE_NOTE
