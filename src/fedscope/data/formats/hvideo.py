"""HVIDEO (Entertainment-Education): item lists only.

Files (see shared/data/README.md, section 5): ``items_x.txt`` (domain ``E``) and
``items_y.txt`` (domain ``V``), one item per line as ``index<TAB>E123<TAB>index``. The
index is the *global* id: ``items_x`` runs from 0, ``items_y`` continues where
``items_x`` ends. The interaction files were only in an archive that is absent from
this copy, so the data set has the two domains and no users, sequences or evaluation
instances: enough for ``fedscope data stats hvideo`` to show the item counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain, EvalSplit
from fedscope.data.errors import ProblemLog
from fedscope.data.registry import DatasetSpec, register
from fedscope.data.textio import is_uint, iter_lines

NAME = "hvideo"
FOLDER = "hvideo-entertainment-education"
# (file, domain name = the prefix every item key carries)
ITEM_FILES = (("items_x.txt", "E"), ("items_y.txt", "V"))
PROTOCOL = "none"
PROTOCOL_NOTE = (
    "No split: HVIDEO's interactions are not available in this copy (only the item lists "
    "items_x.txt/items_y.txt), so there are no users, sequences or evaluation instances."
)


def read_items(path: Path, prefix: str, offset: int | None, log: ProblemLog) -> list[str]:
    """``index<TAB>key<TAB>index`` lines; line ``r`` (0-based) must carry ``offset + r``.

    With ``offset`` None (a file validated on its own) the first line's index is taken
    as the offset, so the check is that indices are consecutive.
    """
    keys: list[str] = []
    seen: dict[str, int] = {}
    for number, line in iter_lines(path, log=log):
        parts = line.split("\t")
        row = number - 1
        if len(parts) != 3:
            log.add(
                path,
                number,
                f"expected 3 tab-separated fields (index, {prefix}<id>, index), got {len(parts)}",
            )
            keys.append("")
            continue
        first, key, last = (p.strip() for p in parts)
        if not is_uint(first) or not is_uint(last):
            log.add(path, number, f"indices {first!r} and {last!r} must be non-negative integers")
        else:
            if offset is None:
                offset = int(first) - row
            if int(first) != int(last):
                log.add(path, number, f"the two indices differ ({first} and {last})")
            if int(first) != offset + row:
                log.add(
                    path,
                    number,
                    f"index {first} should be {offset + row} (the domain offset {offset} plus "
                    f"the 0-based line number {row})",
                )
        if not (key.startswith(prefix) and is_uint(key[len(prefix) :])):
            log.add(path, number, f"item {key!r} should be {prefix!r} followed by digits")
        if key in seen:
            log.add(path, number, f"duplicate item {key!r} (first on line {seen[key]})")
        seen.setdefault(key, number)
        keys.append(key)
    return keys


def items_only_dataset(domains: list[Domain], notes: list[str]) -> CrossDomainDataset:
    """A data set with domains and items but no users, sequences or evaluation instances."""
    z = np.zeros(0, dtype=np.int64)
    return CrossDomainDataset(
        name=NAME,
        protocol=PROTOCOL,
        protocol_note=PROTOCOL_NOTE,
        domains=domains,
        user_keys=[],
        seq_user=z,
        seq_offsets=np.zeros(1, dtype=np.int64),
        items=z.copy(),
        times=z.copy(),
        train_len=z.copy(),
        valid=EvalSplit.empty(),
        test=EvalSplit.empty(),
        notes=notes,
    )


def build(folder: Path | None, log: ProblemLog, options: dict[str, Any]) -> CrossDomainDataset:
    assert folder is not None
    domains: list[Domain] = []
    offset = 0
    for fname, prefix in ITEM_FILES:
        keys = read_items(folder / fname, prefix, offset, log)
        domains.append(Domain(prefix, offset, tuple(keys)))
        offset += len(keys)
    notes = [
        "items per domain: " + ", ".join(f"{d.name} {d.n_items:,}" for d in domains),
        "interactions are not available in this copy (Entertainment-Education.zip is absent); "
        "HVIDEO has no item text",
    ]
    return items_only_dataset(domains, notes)


register(
    DatasetSpec(
        name=NAME,
        folder=FOLDER,
        description="HVIDEO Entertainment-Education: item lists only (no interactions)",
        required_files=tuple(f for f, _ in ITEM_FILES),
        optional_files=(),
        build=build,
    )
)


def validate_file(path: Path, log: ProblemLog) -> bool:
    """Validate one HVIDEO item list; False when the file is not of this format.

    ``items_y.txt`` continues the global ids of ``items_x.txt``: the offset is taken from
    ``items_x.txt`` next to it when it is there.
    """
    path = Path(path)
    names = [f for f, _ in ITEM_FILES]
    if path.name not in names:
        return False
    k = names.index(path.name)
    offset: int | None = 0
    if k == 1:
        x = path.parent / ITEM_FILES[0][0]
        offset = len(read_items(x, ITEM_FILES[0][1], 0, ProblemLog())) if x.is_file() else None
    read_items(path, ITEM_FILES[k][1], offset, log)
    return True
