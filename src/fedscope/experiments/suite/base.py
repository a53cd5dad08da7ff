"""What an experiment of the suite is, and what the experiments share.

An experiment (one module per research question of the paper) says which runs it needs in a
mode (:class:`RunSpec`: a label, a run-directory name, config overrides and seeds) and how to
turn the stored runs into tables and figures (:meth:`Experiment.summarise`). Training, reuse
and the experiment index live in :mod:`fedscope.experiments.suite.execute`; turning indexes
into a document lives in :mod:`fedscope.experiments.suite.report`.

Modes:

* ``quick``: the embedded generated data set at a small size, starting from the ``demo``
  preset; every experiment finishes in minutes on 2 cores. It shows the machinery working; its
  numbers say nothing about the paper's claims.
* ``full``: the real Food-Kitchen data with ``configs/food-kitchen.toml`` and the paper's
  schedule (K=50, C=0.2, E=1, T=200) and five seeds.
* ``reduced``: the full setting cut down where the full grid takes far more than a few hours
  on 2 cores (fewer seeds, values or rounds); every experiment states its reductions, and they
  are stored in the experiment index.
"""

from __future__ import annotations

import html
import json
import math
import re
import statistics
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from fedscope.config import ExperimentConfig, load_config
from fedscope.experiments.presets import DEMO

Mode = Literal["quick", "reduced", "full"]
MODES: tuple[Mode, ...] = ("quick", "reduced", "full")

REPO = Path(__file__).resolve().parents[4]
FULL_CONFIG = REPO / "configs" / "food-kitchen.toml"
FULL_SEEDS = (0, 1, 2, 3, 4)  # the paper averages five seeds
REDUCED_SEEDS = (0, 1, 2)
QUICK_SEEDS = (0,)


# The demo preset on a smaller generated data set and a shorter schedule, so that a whole
# experiment (several federated runs) takes minutes on 2 busy cores; validation every other
# round gives the convergence curves a few points.
def merged_overrides(*layers: Sequence[str]) -> tuple[str, ...]:
    """``key=value`` lists merged so that each key appears once, with its last value."""
    merged: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            merged[item.split("=", 1)[0].strip()] = item
    return tuple(merged.values())


QUICK_OVERRIDES: tuple[str, ...] = merged_overrides(
    DEMO,
    (
        'data.options={"n_users": 2000, "n_items": 1000}',
        "federation.rounds=10",
        "eval.every=2",
        "eval.valid_subset=1000",
        # One torch thread per process. Federated runs already use one per simulated client;
        # local-only and centralised runs otherwise take torch's default, and on a busy
        # 2-core machine a quick local-only run took 874 s that way against 87 s with one.
        "train.threads=1",
    ),
)

METRICS_PAPER = ("NDCG@5", "NDCG@10", "HR@5", "HR@10", "MRR")  # Tables 4 and 5, in order
PROTOCOLS: tuple[str, ...] = ("sampled", "full")


def mode_config(mode: Mode) -> tuple[Path | None, tuple[str, ...]]:
    """The config file and the overrides every run of ``mode`` starts from.

    One base for all experiments of a mode, so that runs shared between experiments (for
    example RQ1's FedSCOPE run, which RQ5 and RQ7 also read) are the same run.
    """
    if mode == "quick":
        return None, QUICK_OVERRIDES
    return FULL_CONFIG, ()


def default_seeds(mode: Mode) -> tuple[int, ...]:
    return {"quick": QUICK_SEEDS, "reduced": REDUCED_SEEDS, "full": FULL_SEEDS}[mode]


@dataclass(frozen=True)
class RunSpec:
    """One configuration of an experiment, run once per seed.

    The run directory is ``<root>/<owner>/<mode>/<name>-s<seed>``; ``owner`` is the experiment
    whose folder holds it (another experiment's name when the run is shared, e.g. RQ5 reads
    RQ1's FedSCOPE run instead of training it again).
    """

    label: str
    name: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    owner: str | None = None
    tags: tuple[tuple[str, Any], ...] = ()  # experiment-specific facts, e.g. (("K", 20),)

    def tag(self, key: str, default: Any = None) -> Any:
        return dict(self.tags).get(key, default)

    def home(self, experiment: str) -> str:
        return self.owner or experiment


@dataclass
class Plan:
    """Everything an experiment will run in one mode, before anything is trained."""

    experiment: str
    mode: Mode
    config_file: Path | None
    base_overrides: tuple[str, ...]
    extra_sets: tuple[str, ...]
    runs: list[RunSpec]
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    root: Path | None = None  # replaces "{root}" in overrides (paths of shared artefacts)

    def overrides(self, spec: RunSpec, seed: int) -> list[str]:
        # The user's --set comes last so it wins, then the seed (the plan's own axis).
        items = [*self.base_overrides, *spec.overrides, *self.extra_sets, f"seed={seed}"]
        if self.root is not None:
            items = [o.replace("{root}", str(self.root.resolve())) for o in items]
        return items

    def config(self, spec: RunSpec, seed: int) -> ExperimentConfig:
        return load_config(self.config_file, self.overrides(spec, seed))

    def seeds(self) -> list[int]:
        seen: list[int] = []
        for spec in self.runs:
            seen += [s for s in spec.seeds if s not in seen]
        return sorted(seen)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""

    def markdown(self) -> str:
        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" + "---:|" * (len(self.columns) - 1),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        out = f"**{self.title}**\n\n" + "\n".join(lines)
        return out + (f"\n\n{self.caption}" if self.caption else "")

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        cap = f"<p>{html.escape(self.caption)}</p>" if self.caption else ""
        return (
            f"<h4>{html.escape(self.title)}</h4><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{cap}"
        )


def inline_html(text: str) -> str:
    """Text written for the Markdown report, for HTML: escaped, with ``**bold**`` spans kept."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


@dataclass
class Figure:
    title: str
    path: Path
    caption: str = ""


@dataclass
class Summary:
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class StoredRun:
    """A finished run as the index lists it, with its results.json."""

    spec: RunSpec
    seed: int
    run_dir: Path
    results: dict[str, Any]
    wall_s: float | None = None


@dataclass
class StoredExperiment:
    """An experiment's index (experiment.json) and its finished runs."""

    index: dict[str, Any]
    folder: Path  # <root>/<experiment>/<mode>: where the experiment may cache derived data
    runs: list[StoredRun]

    def by_label(self) -> dict[str, list[StoredRun]]:
        out: dict[str, list[StoredRun]] = {}
        for r in self.runs:
            out.setdefault(r.spec.label, []).append(r)
        return out

    def by_name(self) -> dict[str, list[StoredRun]]:
        out: dict[str, list[StoredRun]] = {}
        for r in self.runs:
            out.setdefault(r.spec.name, []).append(r)
        return out

    @property
    def mode(self) -> str:
        return self.index["mode"]

    def domains(self) -> list[str]:
        if not self.runs:
            return []
        return domains_of(self.runs[0].results)

    def common_seeds(self) -> tuple[StoredExperiment, str]:
        """The same experiment with only the seeds every row (label) finished, and a sentence
        saying what was left out.

        Means over different seed sets are not comparable (a row averaged over seeds 0-2 beside
        one over seed 0 alone mixes the seeds' spread into the difference). With no seed common
        to every row, every run is kept and the sentence says so.
        """
        groups = self.by_label()
        if not groups:
            return self, ""
        common = set.intersection(*({r.seed for r in runs} for runs in groups.values()))
        if not common:
            return self, "common seeds: none is finished by every row; each row keeps its own"
        kept = StoredExperiment(self.index, self.folder, [r for r in self.runs if r.seed in common])
        left = StoredExperiment(
            self.index, self.folder, [r for r in self.runs if r.seed not in common]
        )
        sentence = f"common seeds: means over seeds {sorted(common)} only (--common-seeds)"
        if left.runs:
            sentence += "; left out: " + "; ".join(
                f"{label} seed{'s' if len(runs) > 1 else ''} "
                + ", ".join(str(s) for s in sorted(r.seed for r in runs))
                for label, runs in left.by_label().items()
            )
        return kept, sentence


class Experiment(ABC):
    """One table or figure group of the paper, as runs and a summary."""

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]  # where in the paper, e.g. "RQ1, Tables 4-5"
    description: ClassVar[str]

    @abstractmethod
    def runs(self, mode: Mode) -> list[RunSpec]:
        """The runs of ``mode`` with their default seeds."""

    def notes(self, mode: Mode) -> list[str]:
        """What the mode leaves out or reduces, said in the output and stored in the index."""
        return []

    def missing(self, mode: Mode) -> list[str]:
        """Parts of the paper's experiment this implementation cannot run yet."""
        return []

    def prepare(self, plan: Plan, root: Path, echo: Any) -> None:  # noqa: B027
        """Work needed before training (e.g. semantic stores); default: none."""

    @abstractmethod
    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        """Tables and figures (PNGs written under ``figures``) from stored runs only."""

    def plan(
        self,
        mode: Mode,
        seeds: Sequence[int] | None = None,
        sets: Sequence[str] = (),
        root: Path | None = None,
    ) -> Plan:
        config_file, base = mode_config(mode)
        specs = self.runs(mode)
        mode_seeds = _seeds_of(specs)
        seed_note = f"seeds {mode_seeds}"
        if seeds:
            specs = [_with_seeds(s, tuple(seeds)) for s in specs]
            if _seeds_of(specs) != mode_seeds:
                seed_note = f"seeds {_seeds_of(specs)} (--seeds; the mode's are {mode_seeds})"
        return Plan(
            experiment=self.name,
            mode=mode,
            config_file=config_file,
            base_overrides=base,
            extra_sets=tuple(sets),
            runs=specs,
            notes=[seed_note, *self.notes(mode)],
            missing=self.missing(mode),
            root=None if root is None else Path(root),
        )


def _seeds_of(specs: Sequence[RunSpec]) -> list[int]:
    return sorted({s for spec in specs for s in spec.seeds})


def _with_seeds(spec: RunSpec, seeds: tuple[int, ...]) -> RunSpec:
    return RunSpec(spec.label, spec.name, spec.overrides, seeds, spec.owner, spec.tags)


# --- reading results ---------------------------------------------------------------------------


def domains_of(results: dict[str, Any]) -> list[str]:
    metrics = results["test"]["sampled"][0]["metrics"]
    return [g for g in metrics if "|" not in g and g != "overall"]


def metric_of(
    results: dict[str, Any],
    group: str,
    metric: str,
    protocol: str = "sampled",
    split: str = "test",
    floor: bool = False,
) -> float | None:
    """One number of a run's results.json (fractions); None when the group is empty."""
    entry = results[split][protocol][1 if floor else 0]
    return entry["metrics"].get(group, {}).get(metric)


def fmt_mean_std(values: Iterable[float | None], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` over seeds (population std), the mean alone for one seed; "–" for none."""
    xs = [scale * v for v in values if v is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.pstdev(xs):.{digits}f}"


def fmt_rounds(values: Iterable[float | None]) -> str:
    """Round numbers: whole for one seed, one decimal for a mean over seeds."""
    xs = [v for v in values if v is not None]
    return fmt_mean_std(xs, scale=1, digits=0 if len(xs) == 1 else 1)


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    xs = [v for v in values if v is not None]
    if not xs:
        return math.nan, math.nan, 0
    return statistics.fmean(xs), (statistics.pstdev(xs) if len(xs) > 1 else 0.0), len(xs)


def metric_table(
    title: str,
    groups: dict[str, list[StoredRun]],
    protocol: str,
    domains: Sequence[str],
    metrics: Sequence[str] = METRICS_PAPER,
    subset: str | None = None,
    caption: str = "",
) -> Table:
    """Rows: one per label (mean ± std over seeds) and the popularity floor; columns: every
    (domain, metric). ``subset`` reads the "<domain>|<subset>" groups (e.g. cold-start users)."""
    columns = ["method"] + [f"{d} {m}" for d in domains for m in metrics]
    rows: list[list[str]] = []
    floor_source: dict[str, Any] | None = None
    row_hr10: dict[str, list[float]] = {}
    for label, runs in groups.items():
        if not runs:
            continue
        floor_source = floor_source or runs[0].results
        cells = []
        for d in domains:
            g = d if subset is None else f"{d}|{subset}"
            for m in metrics:
                cells.append(fmt_mean_std(metric_of(r.results, g, m, protocol) for r in runs))
            hr10 = mean_std(metric_of(r.results, g, "HR@10", protocol) for r in runs)[0]
            if not math.isnan(hr10):
                row_hr10.setdefault(g, []).append(hr10)
        rows.append([f"{label} (n={len(runs)})", *cells])
    if floor_source is not None:
        if not caption:
            notes = floor_source["test"][protocol][0].get("notes", [])
            caption = " ".join(n if n.endswith(".") else f"{n}." for n in notes)
        counts = floor_source["test"][protocol][0]["counts"]
        errors = sampling_error_note(row_hr10, counts)
        caption = f"{caption} {errors}".strip() if errors else caption
        cells = []
        for d in domains:
            g = d if subset is None else f"{d}|{subset}"
            for m in metrics:
                cells.append(fmt_mean_std([metric_of(floor_source, g, m, protocol, floor=True)]))
        rows.append(["popularity (floor)", *cells])
    return Table(title, columns, rows, caption)


def paired_table(
    reference: str,
    groups: dict[str, list[StoredRun]],
    domains: Sequence[str],
    metric: str = "HR@10",
) -> Table | None:
    """``reference`` (A) against every other row and the popularity floor (B), seed by seed,
    paired on the test instances: A − B ± the standard error of the per-instance difference,
    bold where the 95% interval excludes zero. Only seeds whose runs stored per-instance
    ranks appear; None when there are none."""
    from functools import cache

    from fedscope.evaluation.paired import (
        MismatchedEvaluationError,
        load_ranks,
        paired_differences,
    )
    from fedscope.experiments.runner import RANKS_FILE

    @cache  # the reference's ranks serve every row
    def ranks(run_dir: Path, protocol: str, role: str) -> Any:
        path = run_dir / RANKS_FILE
        return load_ranks(path, f"test.{protocol}.{role}") if path.is_file() else None

    references = {r.seed: r for r in groups.get(reference, [])}
    # (row label, A's run, B's run dir, B's role): each other run against the same seed's A
    pairs = [
        (f"{label} (seed {run.seed})", references[run.seed], run.run_dir, "model")
        for label, runs in groups.items()
        if label != reference
        for run in runs
        if run.seed in references
    ]
    pairs += [
        (f"popularity (floor) (seed {seed})", ref, ref.run_dir, "popularity")
        for seed, ref in sorted(references.items())
    ]
    rows = []
    for label, ref, other_dir, role in pairs:
        cells = []
        for protocol in PROTOCOLS:
            a, b = ranks(ref.run_dir, protocol, "model"), ranks(other_dir, protocol, role)
            try:
                found = [] if a is None or b is None else paired_differences(a, b, (metric,))
            except MismatchedEvaluationError:
                found = []
            by_group = {d.group: d for d in found}
            for domain in domains:
                d = by_group.get(domain)
                if d is None:
                    cells.append("–")
                    continue
                cell = f"{100 * d.difference:+.2f} ± {100 * d.standard_error:.2f}"
                cells.append(cell if d.reading == "not shown" else f"**{cell}**")
        if any(c != "–" for c in cells):
            rows.append([label, *cells])
    if not rows:
        return None
    columns = ["B"] + [f"{protocol} {domain}" for protocol in PROTOCOLS for domain in domains]
    return Table(
        f"Paired test on the test instances: {reference} (A) minus each row (B), {metric} (%)",
        columns,
        rows,
        "A − B on the same instances and candidates, ± the standard error of the per-instance "
        "difference; bold where the 95% interval excludes zero. One row per seed whose runs "
        "stored per-instance ranks (ranks.npz); the test set's sampling error only.",
    )


@dataclass
class ValidationScore:
    """One configuration's validation metric over the seeds it finished."""

    name: str
    label: str
    overrides: tuple[str, ...]
    values: list[float]  # the validation metric of each finished seed
    seeds: list[int]
    rounds: list[int]  # each seed's selected round
    run_dirs: list[Path]

    @property
    def mean(self) -> float:
        return mean_std(self.values)[0]

    @property
    def std(self) -> float:
        return mean_std(self.values)[1]


def rank_on_validation(
    stored: StoredExperiment, metric: str, protocol: str
) -> list[ValidationScore]:
    """Finished configurations (by run name), best validation ``metric`` (overall, mean over
    seeds) first; ties keep the plan's order. A non-finite validation number is an error, never a rank."""
    points: dict[str, ValidationScore] = {}
    for run in stored.runs:
        value = metric_of(run.results, "overall", metric, protocol, split="valid")
        if value is None or not math.isfinite(value):
            raise ValueError(f"{run.run_dir}: validation {metric} is {value!r}, not a number")
        p = points.setdefault(
            run.spec.name,
            ValidationScore(run.spec.name, run.spec.label, run.spec.overrides, [], [], [], []),
        )
        p.values.append(value)
        p.seeds.append(run.seed)
        p.rounds.append(int(run.results["selected_round"]))
        p.run_dirs.append(run.run_dir)
    order = list(points)
    return sorted(points.values(), key=lambda p: (-p.mean, order.index(p.name)))


def hit_rate_standard_error(hit_rate: float, n: int) -> float:
    """Standard error of a hit rate's mean over ``n`` instances whose hits are 0 or 1 (exact
    when no target is tied with a competitor; ties make the per-instance value fractional and
    the error smaller)."""
    if n < 2:
        return math.nan
    return math.sqrt(hit_rate * (1.0 - hit_rate) / (n - 1))


def sampling_error_note(row_hr10: dict[str, list[float]], counts: dict[str, int]) -> str:
    """One sentence: the test set's sampling error of HR@10 per group, the largest over the
    table's rows (their mean HR@10), so that it bounds every row's."""
    parts = [
        f"{g} ±{100 * max(hit_rate_standard_error(p, counts[g]) for p in ps):.2f} (n={counts[g]})"
        for g, ps in row_hr10.items()
        if counts.get(g, 0) >= 2
    ]
    if not parts:
        return ""
    return (
        "Sampling error: one standard error of HR@10 over the test instances is at most "
        f"{', '.join(parts)}; the spread over seeds does not include it."
    )


def protocol_label(results: dict[str, Any], protocol: str) -> str:
    if protocol == "full":
        return "full ranking"
    return f"sampled ({results['test']['sampled'][0]['n_negatives']} negatives)"


def protocol_tables(
    stored: StoredExperiment,
    title: str,
    metrics: Sequence[str] = METRICS_PAPER,
    groups: dict[str, list[StoredRun]] | None = None,
    subset: str | None = None,
    caption: str = "",
) -> list[Table]:
    """One :func:`metric_table` per protocol (sampled, full), titled "<title>, <protocol>";
    rows are ``groups`` (default: the stored runs by label). None when nothing is stored."""
    if not stored.runs:
        return []
    first = stored.runs[0].results
    groups = stored.by_label() if groups is None else groups
    return [
        metric_table(
            f"{title}, {protocol_label(first, protocol)}",
            groups,
            protocol,
            stored.domains(),
            metrics,
            subset=subset,
            caption=caption,
        )
        for protocol in PROTOCOLS
    ]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# --- figures -----------------------------------------------------------------------------------


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, bottom: float = 0.0) -> Path:
    """Write ``fig``; ``bottom`` keeps that share of the height free for a figure legend."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def validation_curve(run: StoredRun, metric: str = "HR@10") -> tuple[list[int], list[float]]:
    """Validation ``metric`` against round from a run's metrics.jsonl (rows with validation)."""
    from fedscope.federation import run_dir as layout

    xs, ys = [], []
    for row in layout.read_metrics(run.run_dir):
        value = (row.get("validation") or {}).get(metric)
        if value is not None:
            xs.append(int(row["round"]))
            ys.append(float(value))
    return xs, ys


def validation_floor(run: StoredRun, cache_dir: Path) -> dict[str, float]:
    """The popularity floor on the validation instances and candidates the curves of
    ``run`` were measured on (eval.valid_subset), keyed like metrics.jsonl's validation rows
    ("HR@10", "Food/HR@10", ...); cached under ``cache_dir``.

    Built from the run's config alone (data set and eval settings), so it also works for
    archived runs that kept only their light files. Cached per data set fingerprint (which
    covers generator options) and eval settings.
    """
    from fedscope.data import load_dataset
    from fedscope.evaluation.floors import PopularityScorer
    from fedscope.experiments import runner
    from fedscope.training.task import validation_evaluator, validation_metrics

    cfg = runner.read_config(run.run_dir)
    ev_cfg = cfg.eval
    key = (
        f"{run.results['run']['dataset_fingerprint']}|{ev_cfg.n_negatives}|"
        f"{ev_cfg.candidate_seed}|{ev_cfg.valid_subset}"
    )
    cache = cache_dir / "validation-floor.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in cached:
        dataset = load_dataset(cfg.data.name, cfg.data.data_dir, **cfg.data.options)
        ev = validation_evaluator(dataset, ev_cfg)
        cached[key] = validation_metrics(ev.evaluate(PopularityScorer(dataset)).metrics)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(cached, indent=1))
    return cached[key]


def draw_floor(ax: Any, value: float) -> None:
    """The popularity floor (a fraction) as a dashed line labelled for the legend."""
    ax.axhline(100 * value, color="0.3", linestyle="--", linewidth=1, label="popularity (floor)")


def draw_test_floors(
    ax: Any,
    run: StoredRun,
    domains: Sequence[str],
    styles: Sequence[str],
    label: str | None,
) -> None:
    """Each domain's test popularity floor (HR@10, sampled) as a grey line, for figures whose
    points are all scored on the same test instances and candidates, so that a point at or
    under its line reads as no better than popularity. ``label`` (``{d}``: the domain) names
    the lines in the legend; None leaves them out of it (every panel but the first)."""
    for d, style in zip(domains, styles, strict=False):
        floor = metric_of(run.results, d, "HR@10", floor=True)
        if floor is not None:
            ax.axhline(
                100 * floor,
                color="0.3",
                linestyle=style,
                linewidth=1,
                label=None if label is None else label.format(d=d),
            )


def floor_cells(run: StoredRun, domains: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """The popularity floor's test cells (sampled protocol), domain by domain, metric by metric."""
    return [
        fmt_mean_std([metric_of(run.results, d, m, floor=True)]) for d in domains for m in metrics
    ]


def legend_below(fig: Any, ax: Any, ncol: int = 3) -> float:
    """One legend for the whole figure under its panels; returns the height share it needs."""
    handles, labels = ax.get_legend_handles_labels()
    rows = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    return min(0.35, 0.06 * rows + 0.02)


def plot_curves(
    ax: Any,
    groups: dict[str, list[StoredRun]],
    metric: str = "HR@10",
) -> None:
    """One line per label: the mean over seeds of validation ``metric`` (%), with a band of
    ± one std where there are several seeds."""
    import numpy as np

    for label, runs in groups.items():
        curves = [validation_curve(r, metric) for r in runs]
        curves = [c for c in curves if c[0]]
        if not curves:
            continue
        rounds = sorted(set.intersection(*(set(c[0]) for c in curves)))
        values = np.array([[dict(zip(*c, strict=True))[x] for x in rounds] for c in curves])
        mean = 100 * values.mean(axis=0)
        (line,) = ax.plot(rounds, mean, marker="o", markersize=3, label=f"{label} (n={len(runs)})")
        if len(curves) > 1:
            std = 100 * values.std(axis=0)
            ax.fill_between(rounds, mean - std, mean + std, color=line.get_color(), alpha=0.2)
