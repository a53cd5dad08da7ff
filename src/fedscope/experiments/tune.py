"""Grid search on validation (``fedscope tune``).

Every point of a Cartesian grid of configuration values is trained, or reused, with the
machinery of the paper's experiments (resumable runs, ``--jobs``, progress lines, an index
that a second command can share), and the points are ranked by a validation metric of each
run's selected model on the whole validation split, averaged over seeds. Only the best point's
test numbers are shown: a choice made by looking at test numbers makes them optimistic, which is
the mistake this command exists to make hard.

Runs live in ``<root>/<name>/grid/<point>-s<seed>``; the ranking is written next to them as
``tune.json``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedscope.config import ConfigError
from fedscope.experiments.suite.base import (
    Experiment,
    Mode,
    Plan,
    RunSpec,
    StoredExperiment,
    Summary,
    Table,
    ValidationScore,
    domains_of,
    mean_std,
    metric_of,
    rank_on_validation,
)
from fedscope.experiments.suite.execute import experiment_folder

GRID_MODE = "grid"  # the folder level that experiments use for their mode
RESULT_FILE = "tune.json"
_NAME_OK = re.compile(r"[^A-Za-z0-9.+_-]+")


@dataclass(frozen=True)
class Axis:
    """One ``--grid key=v1,v2,...``: a configuration key and the values (as typed) it takes."""

    key: str
    values: tuple[str, ...]

    @property
    def short(self) -> str:
        return self.key.rsplit(".", 1)[-1].replace("_", "-")


def parse_axis(text: str) -> Axis:
    """``train.lr=0.001,0.005`` or, for values that hold commas, a JSON list:
    ``model.dim=[32,64]``, ``data.options=[{"seed":1},{"seed":2}]``."""
    key, sep, rest = text.partition("=")
    key, rest = key.strip(), rest.strip()
    if not sep or not key or not rest:
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. train.lr=0.001,0.005")
    if rest.startswith("["):
        try:
            items = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--grid {text!r}: not a valid JSON list ({exc})") from exc
        values = [v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in items]
    else:
        values = [v.strip() for v in rest.split(",")]
    if not values or any(v == "" for v in values):
        raise ConfigError(f"--grid {text!r}: an empty value")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"--grid {text!r}: {', '.join(repeated)} given twice")
    return Axis(key, tuple(values))


def check_axes(axes: Sequence[Axis], sets: Sequence[str]) -> None:
    if not axes:
        raise ConfigError("no --grid given: name at least one KEY=V1,V2,... to search over")
    keys = [a.key for a in axes]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"--grid names {', '.join(twice)} twice: give each key's values once")
    fixed = {s.split("=", 1)[0].strip() for s in sets}
    both = sorted(fixed & set(keys))
    if both:
        raise ConfigError(f"{', '.join(both)}: both --set and --grid; a key is fixed or searched")
    if "seed" in keys:
        raise ConfigError("seed is not a grid axis: use --seeds, which averages over them")


def point_name(axes: Sequence[Axis], values: Sequence[str]) -> str:
    """``lr0.005-alpha0.1``: each axis's last key part and value (the whole key where two axes
    share a last part), made safe for a folder name."""
    shorts = [a.short for a in axes]
    parts = []
    for axis, value in zip(axes, values, strict=True):
        label = axis.short if shorts.count(axis.short) == 1 else axis.key.replace("_", "-")
        parts.append(_NAME_OK.sub("_", f"{label}{value}"))
    return "-".join(parts)


class GridSearch(Experiment):
    """The grid as an experiment of one mode, so that :func:`execute` trains and indexes it."""

    name = "tune"
    title = "Grid search on validation"
    paper = "not in the paper (fedscope tune)"
    description = "Every point of a grid of configuration values, ranked by validation."

    def __init__(self, name: str, axes: Sequence[Axis]):
        if not name or _NAME_OK.search(name):
            raise ConfigError(
                f"tune name {name!r}: use letters, digits and . + _ - only (it names a folder)"
            )
        self.name = name  # type: ignore[misc]  # each grid is its own folder
        self.axes = tuple(axes)

    def runs(self, mode: Mode) -> list[RunSpec]:
        specs = []
        for values in itertools.product(*(a.values for a in self.axes)):
            overrides = tuple(f"{a.key}={v}" for a, v in zip(self.axes, values, strict=True))
            specs.append(
                RunSpec(
                    " ".join(overrides),
                    point_name(self.axes, values),
                    overrides,
                    (0,),
                    None,
                    tuple((a.key, v) for a, v in zip(self.axes, values, strict=True)),
                )
            )
        names = [s.name for s in specs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ConfigError(f"two grid points would share the folder {clash[0]!r}")
        return specs

    def plan_grid(
        self,
        config_file: Path | None,
        sets: Sequence[str],
        seeds: Sequence[int],
        root: Path,
    ) -> Plan:
        check_axes(self.axes, sets)
        specs = [
            RunSpec(s.label, s.name, s.overrides, tuple(seeds), s.owner, s.tags)
            for s in self.runs("full")
        ]
        plan = Plan(
            experiment=self.name,
            mode=GRID_MODE,  # type: ignore[arg-type]  # a grid's only mode
            config_file=config_file,
            base_overrides=tuple(sets),
            extra_sets=(),
            runs=specs,
            notes=[
                f"{len(specs)} point(s) × {len(seeds)} seed(s) {list(seeds)}: "
                + " × ".join(f"{a.key} {{{', '.join(a.values)}}}" for a in self.axes)
            ],
            root=Path(root),
        )
        for spec in specs:  # every point's configuration is valid before anything trains
            for seed in spec.seeds:
                plan.config(spec, seed)
        return plan

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        """The ranking by the metric the last ``fedscope tune`` used, and the best point's test
        numbers (what ``fedscope report`` shows for a grid under its root)."""
        saved = stored.folder / RESULT_FILE
        last = json.loads(saved.read_text()) if saved.is_file() else {}
        metric, protocol = last.get("metric", "MRR"), last.get("protocol", "sampled")
        ranking = rank_on_validation(stored, metric, protocol)
        tables = [ranking_table(ranking, metric, protocol)]
        if ranking:
            tables.append(best_test(ranking[0], stored))
        return Summary(tables=tables)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def ranking_table(ranking: list[ValidationScore], metric: str, protocol: str) -> Table:
    rows = []
    for i, p in enumerate(ranking, 1):
        spread = f" ± {_pct(p.std)}" if len(p.values) > 1 else ""
        rows.append(
            [
                str(i),
                " ".join(p.overrides),
                _pct(p.mean) + spread,
                ", ".join(str(s) for s in p.seeds),
                ", ".join(str(r) for r in p.rounds),
            ]
        )
    return Table(
        f"Validation {metric} ({protocol}, %, mean ± std over seeds), best first",
        ["rank", "point", f"valid {metric}", "seeds", "selected round"],
        rows,
    )


def best_test(best: ValidationScore, stored: StoredExperiment) -> Table:
    """The test numbers of the chosen point only, per domain, both protocols."""
    runs = [r for r in stored.runs if r.spec.name == best.name]
    domains = domains_of(runs[0].results)
    columns = ["domain"] + [
        f"{m} {proto}" for proto in ("sampled", "full") for m in ("HR@10", "NDCG@10", "MRR")
    ]
    rows = []
    for group in [*domains, "overall"]:
        row = [group]
        for proto in ("sampled", "full"):
            for m in ("HR@10", "NDCG@10", "MRR"):
                mean, std, n = mean_std(metric_of(r.results, group, m, proto) for r in runs)
                row.append("–" if n == 0 else _pct(mean) + (f" ± {_pct(std)}" if n > 1 else ""))
        rows.append(row)
    floor = ["popularity (overall)"]
    for proto in ("sampled", "full"):
        for m in ("HR@10", "NDCG@10", "MRR"):
            value = metric_of(runs[0].results, "overall", m, proto, floor=True)
            floor.append("–" if value is None else _pct(value))
    rows.append(floor)
    return Table(
        f"Test of the chosen point ({' '.join(best.overrides)}), %, mean ± std over seeds",
        columns,
        rows,
        "Only the chosen point's test numbers are shown; the others' are in their run "
        "directories, and choosing by them would be selecting on test.",
    )


def write_result(
    stored: StoredExperiment, ranking: list[ValidationScore], metric: str, protocol: str
) -> Path:
    folder = stored.folder
    root = folder.parents[1]
    best = ranking[0] if ranking else None
    unfinished = [
        {"run_dir": r["run_dir"], "status": r.get("status"), "note": r.get("note")}
        for r in stored.index["runs"]
        if r.get("status") != "done"
    ]
    out = {
        "metric": metric,
        "protocol": protocol,
        "split": "valid",
        "points": [
            {
                "name": p.name,
                "overrides": list(p.overrides),
                "valid": p.values,
                "mean": p.mean,
                "std": p.std,
                "seeds": p.seeds,
                "selected_rounds": p.rounds,
                "run_dirs": [str(d.relative_to(root)) for d in p.run_dirs],
            }
            for p in ranking
        ],
        "unfinished": unfinished,
        "best": None if best is None else {"name": best.name, "overrides": list(best.overrides)},
    }
    path = folder / RESULT_FILE
    path.write_text(json.dumps(out, indent=2))
    return path


def tune_folder(root: Path, name: str) -> Path:
    return experiment_folder(Path(root), name, GRID_MODE)


def best_point_line(ranking: list[ValidationScore]) -> str:
    """The ``--set`` line of the best point, or that none finished."""
    if not ranking:
        return "no point finished"
    return "best: " + " ".join(f"--set {o}" for o in ranking[0].overrides)
