"""Copy the light files of finished runs into the repository, so tables outlive the machine.

Run directories (checkpoints included) live under ignored folders such as bench/runs/ and are
lost with the machine that trained them. This keeps what the tables and convergence plots
are made from: ``config.json``, ``run.json``, ``results.json`` and ``metrics.jsonl`` (plus
``privacy_report.json``, ``privacy_plan.json``, ``alignment.json`` and the per-instance
``ranks.npz`` and the training time an experiment command recorded, ``train_wall.json``,
where present); checkpoints are left out. An experiment folder's index
(``experiment.json``; a ``fedscope tune`` grid's ``tune.json`` too), its ``derived/`` caches
(t-SNE embeddings, per-client evaluations: small, and not recomputable without the
checkpoints) and the manifests of its semantic stores (``<store>/manifest.json``: what each
backend answered) come along; the store's feature arrays do not, nor the manifest of a store
still being written (one that lists pending parts).

    python bench/archive_runs.py bench/runs/fk-v2 bench/results/runs/fk-v2

``bench/compare_methods.py --report-only --root bench/results/runs/fk-v2`` then prints the
table from the archive.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

LIGHT_FILES = (
    "config.json",
    "run.json",
    "results.json",
    "metrics.jsonl",
    "privacy_report.json",
    "privacy_plan.json",
    "alignment.json",
    "ranks.npz",
    "train_wall.json",
)


def archive(source: Path, target: Path) -> list[str]:
    """Copy every finished run (one with results.json) directly under ``source``."""
    copied = []
    for run in sorted(p for p in source.iterdir() if (p / "results.json").is_file()):
        dest = target / run.name
        if dest.exists() and dest.resolve() == run.resolve():
            continue  # a run linked in from the archive: it is already there
        dest.mkdir(parents=True, exist_ok=True)
        for name in LIGHT_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, dest / name)
        copied.append(run.name)
    # An experiment's index, and a `fedscope tune` grid's ranking beside it.
    for index in ("experiment.json", "tune.json"):
        if (source / index).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / index, target / index)
    # What a report derived from the runs' models (t-SNE embeddings, per-client evaluations,
    # validation floors), so that the archived report keeps figures the archive cannot redo.
    if (source / "derived").is_dir():
        shutil.copytree(source / "derived", target / "derived", dirs_exist_ok=True)
    for manifest in sorted(source.glob("*/manifest.json")):
        try:
            pending = json.loads(manifest.read_text()).get("pending")
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{manifest}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
        if pending:
            # being written, or its job was interrupted: archiving it now would record a
            # store that never existed as its runs read it
            print(
                f"{manifest}: not archived, {len(pending)} parts still to write "
                f"({', '.join(pending[:3])}{', ...' if len(pending) > 3 else ''}); "
                "archive again once the store is written"
            )
            continue
        (target / manifest.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(manifest, target / manifest.parent.name / "manifest.json")
    return copied


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a folder of run directories")
    ap.add_argument("target", type=Path, help="where the light copies go")
    args = ap.parse_args()
    if not args.source.is_dir():
        raise SystemExit(f"{args.source}: not a folder of run directories")
    copied = archive(args.source, args.target)
    print(f"archived {len(copied)} finished runs into {args.target}: {', '.join(copied)}")


if __name__ == "__main__":
    main()
