"""Throughput of offline semantic augmentation, per backend, on this machine's CPU.

    python bench/semantics_throughput.py --out bench/results/semantics_throughput.json
    python bench/semantics_throughput.py --encoder-items 500 --llm-items 3 --skip-full  # quick

Measured, each with a fresh cache (so every entity really runs through the model):

* encoder backend (all-MiniLM-L6-v2): items/s and users/s on a sample of Food-Kitchen
  (LLMCDSR release: every item has a title), per torch thread count;
* llm backend (Gemma 3 270M Q4_K_M through llama-cpp-python, grammar-constrained JSON, then
  the encoder): items/s and users/s on a small sample, with the valid/repaired/N/A counts;
* the two greedy decoders of the llm backend (llama-cpp-python's grammar sampling against
  fedscope's GreedyGrammar), alternately on the same items, with whether their answers agree;
* the time to augment a whole data set (items and users) with the encoder backend, and the
  time of the rerun that finds everything in the cache.

Other jobs share the CPU while this runs (a training run in the background, typically), so
``os.getloadavg()`` is recorded before and after every measurement: compare numbers only with
their load next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.cli.errors import run_reporting_errors
from fedscope.data import load_dataset
from fedscope.semantics.augment import Augmenter, Catalogue, client_view
from fedscope.semantics.cache import SemanticCache
from fedscope.semantics.encoder import SentenceEncoder
from fedscope.semantics.prompts import item_text, user_text


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed_side(job: Augmenter, ds: Any, side: str, n: int | None) -> dict[str, Any]:
    catalogue = Catalogue(ds.domains)
    before = load()
    if side == "items":
        _, report = job.augment_items(catalogue, limit=n)
    else:
        _, report = job.augment_users(client_view(ds, None), catalogue, ds.n_users, limit=n)
    out = report.as_dict()
    out["loadavg_before"], out["loadavg_after"] = before, load()
    return out


def text_lengths(ds: Any, n_items: int, n_users: int) -> dict[str, float]:
    catalogue = Catalogue(ds.domains)
    items = [item_text(catalogue.facts(i)) for i in range(min(n_items, catalogue.n_items))]
    view = client_view(ds, None)
    users = [user_text([catalogue.facts(int(g)) for g in h]) for h in view.histories[:n_users]]
    return {
        "item_chars_mean": round(float(np.mean([len(t) for t in items])), 1),
        "user_chars_mean": round(float(np.mean([len(t) for t in users])), 1),
    }


def encoder_rates(ds: Any, n_items: int, n_users: int, threads: int) -> dict[str, Any]:
    start = time.perf_counter()
    encoder = SentenceEncoder(threads=threads)
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, SemanticCache(Path(tmp) / "c.sqlite") as cache:
        job = Augmenter(encoder, cache)
        items = timed_side(job, ds, "items", n_items)
        users = timed_side(job, ds, "users", n_users)
    return {
        "backend": "encoder",
        "threads": threads,
        "model_load_s": round(load_s, 2),
        "items": items,
        "users": users,
    }


def llm_rates(ds: Any, n_items: int, n_users: int, threads: int) -> dict[str, Any]:
    from fedscope.semantics.llm import LlamaGenerator

    encoder = SentenceEncoder(threads=threads)
    start = time.perf_counter()
    generator = LlamaGenerator(threads=threads)
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, SemanticCache(Path(tmp) / "c.sqlite") as cache:
        job = Augmenter(encoder, cache, generator)
        tokens0 = generator.n_tokens
        items = timed_side(job, ds, "items", n_items)
        items["completion_tokens"] = generator.n_tokens - tokens0
        users = None
        if n_users:
            tokens0 = generator.n_tokens
            users = timed_side(job, ds, "users", n_users)
            users["completion_tokens"] = generator.n_tokens - tokens0
    return {
        "backend": "llm",
        "model": generator.model_id,
        "threads": threads,
        "model_load_s": round(load_s, 2),
        "settings": generator.settings_key(),
        "items": items,
        "users": users,
    }


def greedy_decoders(ds: Any, n_items: int, threads: int) -> dict[str, Any]:
    """Seconds per item answer of llama-cpp-python's grammar sampling against GreedyGrammar
    (fedscope's default), alternating on the same prompts from an empty context each time,
    so that both see the same load; and whether every answer is the same."""
    from fedscope.semantics.llm import LlamaGenerator
    from fedscope.semantics.prompts import item_prompt
    from fedscope.semantics.schemas import item_schema

    generator = LlamaGenerator(threads=threads)
    max_tokens = generator.settings.max_tokens_item
    catalogue = Catalogue(ds.domains)
    facts = [f for f in (catalogue.facts(i) for i in range(catalogue.n_items)) if f.has_text]
    seconds: dict[str, list[float]] = {"library": [], "greedy_grammar": []}
    tokens: dict[str, int] = {"library": 0, "greedy_grammar": 0}
    same = full_passes = 0
    before = load()
    for k, item in enumerate(facts[:n_items]):
        schema = item_schema(item.domain)
        prompt = item_prompt(item, schema)
        answers = {}
        for way in ("library", "greedy_grammar") if k % 2 == 0 else ("greedy_grammar", "library"):
            start = time.perf_counter()
            if way == "greedy_grammar":
                count = generator.n_tokens
                answers[way] = generator.generate(prompt, schema.json_schema(), max_tokens)
                tokens[way] += generator.n_tokens - count
                full_passes += generator.last_full_passes
            else:
                generator._llm.reset()
                result = generator._llm.create_chat_completion(
                    messages=generator._messages(prompt),
                    response_format={"type": "json_object", "schema": schema.json_schema()},
                    temperature=0.0,
                    max_tokens=max_tokens,
                    seed=generator.settings.seed,
                )
                answers[way] = result["choices"][0]["message"]["content"]
                tokens[way] += int(result["usage"]["completion_tokens"])
            seconds[way].append(time.perf_counter() - start)
        same += answers["library"] == answers["greedy_grammar"]
    out: dict[str, Any] = {"threads": threads, "items": len(seconds["library"]), "same": same}
    for way, values in seconds.items():
        out[way] = {
            "median_s_per_item": round(float(np.median(values)), 3),
            "total_s": round(sum(values), 1),
            "completion_tokens": tokens[way],
            "tokens_per_s": round(tokens[way] / sum(values), 2),
        }
    out["full_vocabulary_passes"] = full_passes
    out["loadavg_before"], out["loadavg_after"] = before, load()
    return out


def full_run(name: str, data_dir: str | None, threads: int) -> dict[str, Any]:
    ds = load_dataset(name, data_dir)
    encoder = SentenceEncoder(threads=threads)
    out: dict[str, Any] = {
        "dataset": name,
        "threads": threads,
        "items": ds.n_items_total,
        "users": ds.n_users,
    }
    with tempfile.TemporaryDirectory() as tmp, SemanticCache(Path(tmp) / "c.sqlite") as cache:
        job = Augmenter(encoder, cache)
        start = time.perf_counter()
        out["items_run"] = timed_side(job, ds, "items", None)
        out["users_run"] = timed_side(job, ds, "users", None)
        out["total_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        timed_side(job, ds, "items", None)
        timed_side(job, ds, "users", None)
        out["rerun_from_cache_s"] = round(time.perf_counter() - start, 1)
    print(f"full {name}: {out['total_s']} s (rerun {out['rerun_from_cache_s']} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="food-kitchen-llmcdsr")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--encoder-items", type=int, default=3000)
    parser.add_argument("--encoder-users", type=int, default=1000)
    parser.add_argument("--encoder-threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--llm-items", type=int, default=20)
    parser.add_argument("--llm-users", type=int, default=10)
    parser.add_argument("--llm-threads", type=int, nargs="*", default=[1])
    parser.add_argument(
        "--llm-contention-items",
        type=int,
        default=5,
        help="items for a short llm run with 2 threads (shows thread contention)",
    )
    parser.add_argument(
        "--llm-decoders",
        type=int,
        default=10,
        help="items answered by both greedy decoders, alternately (0: skip)",
    )
    parser.add_argument("--full", nargs="*", default=["food-kitchen-llmcdsr", "food-kitchen"])
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    ds = load_dataset(args.dataset, args.data_dir)
    result: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "dataset": args.dataset,
        "text": text_lengths(ds, args.encoder_items, args.encoder_users),
        "loadavg_start": load(),
        "runs": [],
    }
    for threads in args.encoder_threads:
        run = encoder_rates(ds, args.encoder_items, args.encoder_users, threads)
        result["runs"].append(run)
        print(
            f"encoder t={threads}: {run['items']['per_second']:.1f} items/s, "
            f"{run['users']['per_second']:.1f} users/s, load {run['users']['loadavg_after']}",
            flush=True,
        )
    for threads in args.llm_threads:
        run = llm_rates(ds, args.llm_items, args.llm_users, threads)
        result["runs"].append(run)
        users = run["users"]
        print(
            f"llm t={threads}: {run['items']['per_second']:.3f} items/s, "
            f"{users['per_second'] if users else 0:.3f} users/s, "
            f"load {run['items']['loadavg_after']}",
            flush=True,
        )
    if args.llm_contention_items:
        run = llm_rates(ds, args.llm_contention_items, 0, 2)
        run["note"] = "2 llama.cpp threads on the 2 shared cores (contention check)"
        result["runs"].append(run)
        print(f"llm t=2: {run['items']['per_second']:.3f} items/s", flush=True)
    if args.llm_decoders:
        result["greedy_decoders"] = run = greedy_decoders(ds, args.llm_decoders, 1)
        print(
            f"llm greedy decoders, {run['items']} items: library "
            f"{run['library']['median_s_per_item']} s/item, GreedyGrammar "
            f"{run['greedy_grammar']['median_s_per_item']} s/item, same answers {run['same']}",
            flush=True,
        )
    if not args.skip_full:
        best = max(
            (r for r in result["runs"] if r["backend"] == "encoder"),
            key=lambda r: r["users"]["per_second"],
            default={"threads": 1},
        )
        result["full"] = [full_run(name, args.data_dir, best["threads"]) for name in args.full]
    result["loadavg_end"] = load()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    run_reporting_errors(main)
