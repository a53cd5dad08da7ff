"""What a set of runs chose on validation: the table behind a hyperparameter probe.

A probe trains one method at several values of one setting (``fedscope train ... --set
train.lr=<value>``) and keeps the value whose run reached the best validation score; test is
not read. This prints, per run: the value of the probed setting (read from the run's own
``config.json``, so a table cannot mislabel a run), the round the run selected, its
validation MRR (the selection metric) and HR@10 at that round, HR@10 at the last round (is it
still rising?), the seconds its rounds took and its code version.

    python bench/validation_table.py --key train.lr RUN_DIR [RUN_DIR ...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedscope.cli.errors import run_reporting_errors
from fedscope.federation.run_dir import metrics_path, read_metrics


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: missing (is {path.parent} a finished run directory?)") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _setting(config: dict[str, Any], key: str, source: Path) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SystemExit(f"{source}: has no setting {key!r}")
        node = node[part]
    return node


def probe_row(run_dir: Path, key: str) -> dict[str, Any]:
    config = _read_json(run_dir / "config.json")
    run = _read_json(run_dir / "run.json")
    results = _read_json(run_dir / "results.json")
    metrics = metrics_path(run_dir)
    rows = read_metrics(run_dir)
    validated = {r["round"]: r["validation"] for r in rows if r.get("validation")}
    if not validated:
        raise SystemExit(f"{metrics}: no validated round")
    selected = results["selected_round"]
    if selected not in validated:
        raise SystemExit(f"{metrics}: the selected round {selected} has no validation row")
    last = max(validated)
    return {
        "run": str(run_dir),
        "key": key,
        "value": _setting(config, key, run_dir / "config.json"),
        "selected_round": selected,
        "valid_mrr": 100 * validated[selected]["MRR"],
        "valid_hr10": 100 * validated[selected]["HR@10"],
        "last_round": last,
        "valid_hr10_last": 100 * validated[last]["HR@10"],
        "round_seconds": sum(r.get("round_s") or 0.0 for r in rows),
        "code_version": run.get("code_version"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True, help="the probed setting, e.g. train.lr")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [probe_row(run, args.key) for run in args.runs]
    best = max(rows, key=lambda r: r["valid_mrr"])
    print(
        f"| {args.key} | selected round | validation MRR | validation HR@10 there "
        "| validation HR@10, last round | seconds of rounds | code |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        mark = "**" if r is best else ""
        print(
            f"| {mark}{r['value']}{mark} | {r['selected_round']} | {mark}{r['valid_mrr']:.2f}{mark} "
            f"| {r['valid_hr10']:.2f} | {r['valid_hr10_last']:.2f} (round {r['last_round']}) "
            f"| {r['round_seconds']:,.0f} | {r['code_version']} |"
        )
    print(f"best on validation MRR: {args.key}={best['value']} ({best['run']})")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
