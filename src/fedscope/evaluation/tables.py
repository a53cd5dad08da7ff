"""Result tables for the terminal.

Every table states the data set, the split protocol and the ranking protocol,
because numbers without them cannot be compared.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table

from fedscope.evaluation.evaluator import EvalResult

DEFAULT_METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")


def _groups(results: Sequence[EvalResult], groups: Sequence[str] | None) -> list[str]:
    if groups is not None:
        return list(groups)
    first = results[0]
    return [g for g in first.metrics if "|" not in g]


def caption(results: Sequence[EvalResult]) -> str:
    r = results[0]
    return (
        f"{r.dataset} · {r.split} split · {r.protocol} · {r.mode_label} · values in %, "
        "± one standard error over the instances"
    )


def terminal_table(title: str) -> Table:
    """The style of every result table in the terminal: light rules and no outer padding, so
    that nine columns fit 80; add text columns with ``overflow="fold"`` so that long names wrap
    (never cut to an ellipsis, which could hide which row is the floor)."""
    return Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )


def rich_table(
    results: Sequence[EvalResult],
    groups: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    title: str | None = None,
    error_of: str = "HR@10",
) -> Table:
    """One row per (group, method), one column per metric, then the standard error of
    ``error_of`` over the group's instances (its sampling error on this test set) and the
    number of instances: fits a terminal of 80 columns."""
    table = terminal_table(title or caption(results))
    table.add_column("group", overflow="fold")
    table.add_column("method", overflow="fold")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column(f"±{error_of}", justify="right")
    table.add_column("n", justify="right")
    cols = _groups(results, groups)
    for gi, g in enumerate(cols):
        for ri, r in enumerate(results):
            vals = r.metrics.get(g, {})
            error = r.standard_errors.get(g, {}).get(error_of)
            table.add_row(
                g if ri == 0 else "",
                r.scorer,
                *(f"{100 * vals[m]:.2f}" if m in vals else "–" for m in metrics),
                "–" if error is None else f"{100 * error:.2f}",
                str(r.counts.get(g, 0)),
                end_section=ri == len(results) - 1 and gi < len(cols) - 1,
            )
    return table
