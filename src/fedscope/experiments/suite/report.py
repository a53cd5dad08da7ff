"""`fedscope report`: every stored experiment under a root as one document.

Reads only experiment indexes, results.json, metrics.jsonl and checkpoints (for the t-SNE and
the per-client comparison, whose derived numbers are cached); never trains. Markdown with PNG
figures next to it, or one HTML page referring to the same PNGs.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fedscope.experiments.suite import available
from fedscope.experiments.suite.base import Summary, inline_html
from fedscope.experiments.suite.execute import find_indexes, load_stored
from fedscope.experiments.tune import GRID_MODE, GridSearch

Format = Literal["markdown", "html"]


@dataclass
class Section:
    index: dict
    summary: Summary
    n_runs: int
    seed_note: str = ""


def _order(name: str) -> int:
    names = list(available())
    return names.index(name) if name in names else len(names)


def collect(
    root: Path,
    figures: Path,
    echo: Callable[[str], None] = print,
    common_seeds: bool = False,
) -> list[Section]:
    sections = []
    indexes = sorted(
        find_indexes(root),
        key=lambda p: (_order(p.parent.parent.name), p.parent.name),
    )
    experiments = available()
    for path in indexes:
        stored = load_stored(path)
        n_runs, seed_note = len(stored.runs), ""  # finished runs, before any seed is left out
        if common_seeds:
            stored, seed_note = stored.common_seeds()
        name = stored.index["experiment"]
        if stored.index.get("mode") == GRID_MODE:  # a `fedscope tune` grid under the same root
            summary = GridSearch(name, ()).summarise(stored, figures)
        elif name not in experiments:
            echo(f"skipping {path}: unknown experiment {name!r}")
            continue
        else:
            summary = experiments[name].summarise(stored, figures)
        sections.append(Section(stored.index, summary, n_runs, seed_note))
    return sections


def _facts(index: dict, n_runs: int, seed_note: str = "") -> list[str]:
    trained = [r for r in index["runs"] if r.get("wall_s") is not None]
    walls = [r["wall_s"] for r in trained]
    facts = [
        f"paper: {index['paper']}",
        f"mode: **{index['mode']}**",
        f"data set: {index.get('dataset', '?')} (fingerprint "
        f"{str(index.get('dataset_fingerprint', '?'))[:12]})",
        f"protocol: {index.get('protocol', '?')}",
        f"code version: {index['code_version']}",
        f"seeds: {index['seeds']}",
        f"config file: {index['config_file'] or 'none (built-in defaults)'}",
        "overrides (every run): " + (" ".join(index["base_overrides"]) or "none"),
        f"finished runs: {n_runs} of {len(index['runs'])}",
    ]
    if seed_note:
        facts.append(seed_note)
    unfinished = [r for r in index["runs"] if r.get("status") != "done"]
    if unfinished:
        facts.append(
            "not finished: "
            + "; ".join(
                f"{r['label']} ({r.get('name', r['run_dir'])}), seed {r['seed']} ({r.get('status')})"
                for r in unfinished
            )
        )
    if index.get("extra_sets"):
        facts.append("extra --set: " + " ".join(index["extra_sets"]))
    if walls:
        shared = sum(1 for r in trained if r.get("owner") not in (None, index["experiment"]))
        facts.append(
            f"training wall time of its runs: {sum(walls):.0f} s over {len(walls)} runs "
            f"(max {max(walls):.0f} s per run; {shared} of them trained for another experiment "
            "and shared)"
        )
    return facts


def write_report(
    root: Path,
    out: Path,
    fmt: Format = "markdown",
    echo: Callable[[str], None] = print,
    common_seeds: bool = False,
) -> Path:
    """Write ``out/report.md`` (or ``report.html``) and ``out/figures/*.png``.

    ``common_seeds`` restricts each experiment to the seeds all its rows finished.
    """
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    sections = collect(Path(root), figures, echo, common_seeds)
    if not sections:
        raise FileNotFoundError(
            f"{root}: no experiment index (*/*/experiment.json); run `fedscope experiment NAME`"
        )
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    if fmt == "html":
        path = out / "report.html"
        path.write_text(_html(sections, root, stamp, out))
    else:
        path = out / "report.md"
        path.write_text(_markdown(sections, root, stamp, out))
    return path


def _markdown(sections: list[Section], root: Path, stamp: str, out: Path) -> str:
    parts = [
        "# FedSCOPE experiments",
        f"Generated {stamp} from the stored runs under `{root}` (nothing retrained). "
        "Values are percentages; `a ± b` is the mean and population standard deviation over "
        "seeds (n = number of seeds); a single number is one seed. Each run's model is the "
        "round selected on validation MRR; test is evaluated once. Every table carries the "
        "popularity floor on the same instances.",
    ]
    for s in sections:
        idx = s.index
        parts.append(f"## {idx['title']} ({idx['experiment']}, {idx['mode']})")
        parts.append(idx["description"])
        parts.append("\n".join(f"- {f}" for f in _facts(idx, s.n_runs, s.seed_note)))
        if idx.get("protocol_note"):
            parts.append(f"Protocol note: {idx['protocol_note']}")
        notes = [*idx.get("notes", []), *s.summary.notes]
        if notes:
            parts.append("Notes:\n\n" + "\n".join(f"- {n}" for n in notes))
        if idx.get("missing"):
            parts.append("Not run (missing):\n\n" + "\n".join(f"- {m}" for m in idx["missing"]))
        parts += [t.markdown() for t in s.summary.tables]
        for f in s.summary.figures:
            rel = f.path.resolve().relative_to(out.resolve())
            parts.append(f"![{f.title}]({rel})\n\n*{f.title}.* {f.caption}")
    return "\n\n".join(parts) + "\n"


def _html(sections: list[Section], root: Path, stamp: str, out: Path) -> str:
    e = html.escape
    body = [
        "<h1>FedSCOPE experiments</h1>",
        f"<p>Generated {e(stamp)} from the stored runs under <code>{e(str(root))}</code> "
        "(nothing retrained). Values in %; a ± b is mean ± population std over seeds.</p>",
    ]
    for s in sections:
        idx = s.index
        body.append(f"<h2>{e(idx['title'])} ({e(idx['experiment'])}, {e(idx['mode'])})</h2>")
        body.append(f"<p>{e(idx['description'])}</p>")
        body.append(
            "<ul>"
            + "".join(f"<li>{inline_html(f)}</li>" for f in _facts(idx, s.n_runs, s.seed_note))
            + "</ul>"
        )
        notes = [*idx.get("notes", []), *s.summary.notes]
        if notes:
            body.append("<p>Notes:</p><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
        if idx.get("missing"):
            body.append(
                "<p>Not run (missing):</p><ul>"
                + "".join(f"<li>{e(m)}</li>" for m in idx["missing"])
                + "</ul>"
            )
        body += [t.html() for t in s.summary.tables]
        for f in s.summary.figures:
            rel = f.path.resolve().relative_to(out.resolve())
            body.append(
                f'<figure><img src="{e(str(rel))}" alt="{e(f.title)}" style="max-width:100%">'
                f"<figcaption>{e(f.title)}. {e(f.caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "td{text-align:right}td:first-child{text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>FedSCOPE experiments</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
