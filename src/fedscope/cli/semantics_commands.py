"""``fedscope augment``: offline LLM semantic augmentation (IAE for items, UFE for users).

Everything runs on this machine with local models; no prompt, answer or vector is sent
anywhere. User profiles are built per client, from that client's own training histories:

* ``--run-dir RUN --client K``: the users of client K of a prepared run (its partition.json),
  written to ``RUN/semantics/users-client-000K.npz``. This is what a federated client runs.
* ``--run-dir RUN`` alone: every client of the run in turn, each on its own view.
* neither: all users of the data set as one party (a single data owner, or the centralised
  regime), written to ``users-all.npz``.

Items are described by public catalogue fields only, so the item side is the same for every
client (``items.npz``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from fedscope.cli.app import DataDir, Sets, app, console, err_console, parse_sets


class _RateColumn(ProgressColumn):
    """Entities per second over rich's recent-speed window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  -  /s" if speed is None else f"{speed:7.2f}/s", style="progress.data.speed")


def _progress_bar(quiet: bool) -> tuple[Progress | None, Any]:
    if quiet:
        return None, None
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        speed_estimate_period=60,
    )
    tasks: dict[str, Any] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    return bar, update


def _summary_lines(reports: list[Any], backend: str) -> list[str]:
    lines = []
    for r in reports:
        cached = f" · cached answers {r.cached_answers:,} · generated {r.generated:,}"
        if r.seconds_per_answer is not None:
            cached += f" ({r.seconds_per_answer:.2f} s each in the model)"
        lines.append(
            f"[bold]{r.side} ({r.scope})[/]: {r.processed:,}/{r.total:,} done · "
            f"valid {r.valid:,} · repaired {r.repaired:,} · N/A {r.na:,} "
            f"(no text {r.no_text:,})" + (cached if backend == "llm" else "") + f" · encoded "
            f"{r.encoded:,} · {r.seconds:.1f} s ({r.per_second:.1f}/s)"
        )
    return lines


@app.command("augment")
def augment(
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Data set name; with --run-dir, taken from the run."),
    ] = None,
    backend: Annotated[
        Literal["llm", "encoder"],
        typer.Option(
            "--backend",
            help="llm: a local GGUF model writes the schema's attributes, then the sentence "
            "encoder embeds them. encoder: the sentence encoder embeds item/user text directly.",
        ),
    ] = "encoder",
    side: Annotated[
        Literal["items", "users", "both"], typer.Option("--side", help="What to augment.")
    ] = "both",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, help="Process only the first N items / users (per client)."),
    ] = None,
    order: Annotated[
        Literal["catalogue", "popularity"],
        typer.Option(
            "--order",
            help="Which items come first (and which --limit keeps): catalogue order, or the "
            "most interacted items of the training split first.",
        ),
    ] = "catalogue",
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="A prepared run: users are augmented per client."),
    ] = None,
    client: Annotated[
        int | None,
        typer.Option("--client", min=0, help="Only this client of --run-dir (its own users)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Store folder (default: RUN/semantics with --run-dir, else "
            "runs/semantics/DATASET-BACKEND).",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="GGUF file for --backend llm (default: the packaged Gemma 3 270M)."
        ),
    ] = None,
    chat_format: Annotated[
        str | None,
        typer.Option(
            "--chat-format", help="llama.cpp chat format (default: the GGUF's own template)."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Cache file (default: $FEDSCOPE_CACHE_DIR/semantics/)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for the models.")
    ] = None,
    max_retries: Annotated[
        int, typer.Option("--max-retries", min=0, help="Retries of an unparseable answer.")
    ] = 1,
    data_dir: DataDir = None,
    option: Sets = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Offline semantic augmentation: attributes per item and profiles per user, as f_A vectors.

    Runs locally (nothing is sent anywhere) and is resumable (every answer is cached as it is
    made; rerun the same command after an interruption). Users are augmented per client:
    --run-dir RUN --client K takes client K's users and its own training data only; --run-dir
    alone does every client in turn, each on its own data; without --run-dir all users are one
    party. Items use public catalogue fields only; items without any text get N/A.
    """
    from fedscope.data import load_dataset
    from fedscope.data.partition import PARTITION_FILE, load_partitioning
    from fedscope.semantics.augment import Augmenter, Catalogue, client_view, item_order
    from fedscope.semantics.cache import SemanticCache
    from fedscope.semantics.encoder import EncoderUnavailableError, SentenceEncoder
    from fedscope.semantics.llm import GenerationSettings, LlamaGenerator, LLMUnavailableError
    from fedscope.semantics.store import SemanticStore, client_scope

    if client is not None and run_dir is None:
        raise typer.BadParameter("--client needs --run-dir (the run that defines the clients)")
    partitioning = None
    options = parse_sets(option)
    if run_dir is not None:
        from fedscope.config import ExperimentConfig
        from fedscope.federation.run_dir import CONFIG_FILE

        config = ExperimentConfig.model_validate_json((run_dir / CONFIG_FILE).read_text())
        if dataset is not None and dataset != config.data.name:
            raise typer.BadParameter(
                f"--dataset {dataset} but {run_dir} was prepared for {config.data.name}"
            )
        dataset = config.data.name
        data_dir = data_dir or (Path(config.data.data_dir) if config.data.data_dir else None)
        options = {**config.data.options, **options}
        partitioning = load_partitioning(run_dir / PARTITION_FILE)
        if client is not None and client not in {c.client_id for c in partitioning.clients}:
            raise typer.BadParameter(
                f"{run_dir / PARTITION_FILE} has no client {client} "
                f"(clients 0..{partitioning.n_clients - 1})"
            )
    if dataset is None:
        raise typer.BadParameter("give --dataset NAME (or --run-dir RUN)")
    ds = load_dataset(dataset, data_dir, **options)
    out = out or (
        run_dir / "semantics" if run_dir else Path("runs/semantics") / f"{ds.name}-{backend}"
    )

    try:
        encoder = SentenceEncoder(threads=threads)
        generator = None
        if backend == "llm":
            generator = LlamaGenerator(
                model, chat_format, threads, settings=GenerationSettings(max_retries=max_retries)
            )
    except (EncoderUnavailableError, LLMUnavailableError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc

    bar, update = _progress_bar(quiet or as_json)
    reports = []
    catalogue = Catalogue(ds.domains)
    start = time.perf_counter()
    with SemanticCache(cache) as store_cache:
        job = Augmenter(encoder, store_cache, generator, progress=update)
        store = SemanticStore(out)
        store.begin(ds, job.identity(), encoder.dim)
        if partitioning is None:
            views = [client_view(ds, None)]
        else:
            chosen = [c for c in partitioning.clients if client is None or c.client_id == client]
            views = [client_view(ds, c) for c in chosen]
        store.expect(
            (["items"] if side in ("items", "both") else [])
            + ([client_scope(v.client_id) for v in views] if side in ("users", "both") else [])
        )
        try:
            if bar is not None:
                bar.start()
            if side in ("items", "both"):
                part, report = job.augment_items(catalogue, limit, item_order(ds, order))
                store.write_part("items", part, {"report": report.as_dict(), "order": order})
                reports.append(report)
            if side in ("users", "both"):
                for view in views:
                    part, report = job.augment_users(view, catalogue, ds.n_users, limit)
                    store.write_part(report.scope, part, {"report": report.as_dict()})
                    reports.append(report)
        except KeyboardInterrupt:
            if bar is not None:
                bar.stop()
            counts = store_cache.counts()
            err_console.print(
                f"interrupted: {counts['answers']:,} answers and {counts['vectors']:,} vectors "
                f"are in {store_cache.path}; run the same command again to resume"
            )
            raise typer.Exit(130) from None
        finally:
            if bar is not None:
                bar.stop()
    summary = {
        "dataset": ds.name,
        "backend": backend,
        "store": str(out),
        "cache": str(store_cache.path),
        "seconds": round(time.perf_counter() - start, 2),
        "threads": encoder.threads,
        "identity": job.identity(),
        "reports": [r.as_dict() for r in reports],
    }
    if as_json:
        console.print_json(json.dumps(summary))
        return
    for line in _summary_lines(reports, backend):
        console.print(line, highlight=False)
    problems: dict[str, int] = {}
    for r in reports:
        for k, v in r.problems.items():
            problems[k] = problems.get(k, 0) + v
    if problems:
        console.print(
            "repairs by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(problems.items())),
            highlight=False,
        )
    console.print(f"store: {out}  (cache: {store_cache.path})", highlight=False)
