"""Your own data: interactions (and optionally item metadata) as CSV files.

A folder holding

``interactions.csv`` (required): UTF-8, comma-separated, a header row naming at least the
columns ``user``, ``item``, ``domain`` and ``timestamp`` (in any order). One row per
interaction. ``user`` is the person across domains: the same id in two domains is the same
user, which is what cross-domain training aligns on. ``item`` keys are per domain (the same
key in two domains names two items). ``timestamp`` is either integer Unix seconds or an ISO
8601 date or date-time (``2024-03-01``, ``2024-03-01T12:30:00``, with or without a UTC
offset; without one it is read as UTC), the same kind throughout the file. Other columns
(a rating, say) are ignored, and the data set's notes say which.

``items.csv`` (optional): a header with ``domain`` and ``item``, then any attribute columns;
``title``, ``year``, ``genres``, ``category`` and ``brand`` are what semantic augmentation
reads. An empty cell is unknown. Items listed here that nobody interacted with are part of
the catalogue (they are candidates at evaluation, as a platform's unsold items are).

Each user's interactions are stable-sorted by time (equal times keep file order) into one
mixed-domain sequence, and leave-one-out holds out the last two as the test and validation
targets (users with fewer than three interactions are training data only). Domains are
ordered by name, items within a domain by key, users by id, so the same files always give the
same data set. Every malformed row is reported with its file and line; nothing is skipped
silently. ``fedscope data export NAME --to DIR`` writes any loaded data set in this format.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.csvtable import complete_rows, read_table
from fedscope.data.dataset import UNKNOWN, CrossDomainDataset, Domain
from fedscope.data.errors import ProblemLog
from fedscope.data.protocols import leave_one_out, sequences_by_user
from fedscope.data.registry import DatasetSpec, register
from fedscope.data.textio import is_uint

NAME = "interactions"
INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
INTERACTION_COLUMNS = ("user", "item", "domain", "timestamp")
ITEM_KEY_COLUMNS = ("domain", "item")
PROTOCOL = "interactions-loo"


@dataclass
class Interactions:
    """The well-formed rows of ``interactions.csv``, in file order."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


@dataclass
class ItemTable:
    """``items.csv``: attribute name -> {(domain, item): value}, and every listed item."""

    keys: list[tuple[str, str]] = field(default_factory=list)
    attributes: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)
    present: bool = False  # the file exists (it may list no items)


def _parse_time(text: str) -> tuple[str, int] | None:
    """(kind, Unix seconds) of an integer or an ISO 8601 date/date-time; None otherwise."""
    t = text.strip()
    if is_uint(t) or (t.startswith("-") and is_uint(t[1:])):
        return "unix seconds", int(t)
    try:
        moment = datetime.fromisoformat(t)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return "ISO 8601", int(moment.timestamp())


def read_interactions(path: Path, log: ProblemLog) -> Interactions:
    out = Interactions()
    table = read_table(path, INTERACTION_COLUMNS, log)
    if table is None:
        return out
    parsed, col = table
    out.ignored_columns = [c for c in col if c not in INTERACTION_COLUMNS]
    kind: tuple[str, int] | None = None  # (kind, line) of the first timestamp
    for line, row in complete_rows(path, parsed, log):
        user, item, domain, stamp = (row[col[c]].strip() for c in INTERACTION_COLUMNS)
        values = (user, item, domain, stamp)
        empty = [c for c, v in zip(INTERACTION_COLUMNS, values, strict=True) if not v]
        if empty:
            log.add(path, line, f"empty {', '.join(empty)}")
            continue
        parsed_time = _parse_time(stamp)
        if parsed_time is None:
            log.add(
                path,
                line,
                f"timestamp {stamp!r} is neither integer Unix seconds nor an ISO 8601 date or "
                "date-time",
            )
            continue
        if kind is None:
            kind = (parsed_time[0], line)
        elif parsed_time[0] != kind[0]:
            log.add(
                path,
                line,
                f"timestamp {stamp!r} is {parsed_time[0]}, but line {kind[1]}'s is {kind[0]}: "
                "one kind throughout the file, or the order of events is a guess",
            )
            continue
        out.users.append(user)
        out.items.append(item)
        out.domains.append(domain)
        out.times.append(parsed_time[1])
    parsed.report_error(path, log)
    if not parsed.rows and parsed.error is None:
        log.add(path, None, "no interactions: the file has a header and nothing else")
    return out


def read_items(path: Path, log: ProblemLog) -> ItemTable:
    table = ItemTable(present=True)
    read = read_table(path, ITEM_KEY_COLUMNS, log)
    if read is None:
        return table
    parsed, col = read
    names = [c for c in col if c not in ITEM_KEY_COLUMNS]
    table.attributes = {n: {} for n in names}
    first_line: dict[tuple[str, str], int] = {}
    for line, row in complete_rows(path, parsed, log):
        key = (row[col["domain"]].strip(), row[col["item"]].strip())
        if not all(key):
            log.add(path, line, "empty domain or item")
            continue
        if key in first_line:
            log.add(
                path,
                line,
                f"item {key[1]!r} of domain {key[0]!r} is listed again (first on line "
                f"{first_line[key]})",
            )
            continue
        first_line[key] = line
        table.keys.append(key)
        for n in names:
            table.attributes[n][key] = row[col[n]].strip()
    parsed.report_error(path, log)
    return table


def build(folder: Path | None, log: ProblemLog, options: dict[str, Any]) -> CrossDomainDataset:
    assert folder is not None
    if options:
        log.add(folder, None, f"the interactions format takes no options (got {sorted(options)})")
    inter = read_interactions(folder / INTERACTIONS_FILE, log)
    items_path = folder / ITEMS_FILE
    table = read_items(items_path, log) if items_path.is_file() else ItemTable()
    if log:
        # Building from a partial read would hide the problems behind follow-on ones.
        return _empty()

    listed = set(table.keys)
    used = set(zip(inter.domains, inter.items, strict=True))
    unknown_domains = sorted({d for d, _ in listed} - set(inter.domains))
    for d in unknown_domains:
        log.add(items_path, None, f"domain {d!r} has items but no interactions")
    if log:
        return _empty()

    domains: list[Domain] = []
    global_of: dict[tuple[str, str], int] = {}
    offset = 0
    for name in sorted(set(inter.domains)):
        keys = sorted({i for d, i in used | listed if d == name})
        attributes = {
            attr: tuple(values.get((name, k), UNKNOWN) for k in keys)
            for attr, values in table.attributes.items()
        }
        domains.append(Domain(name, offset, tuple(keys), attributes))
        global_of.update({(name, k): offset + j for j, k in enumerate(keys)})
        offset += len(keys)

    user_keys = sorted(set(inter.users))
    index_of_user = {u: k for k, u in enumerate(user_keys)}
    user_index = np.array([index_of_user[u] for u in inter.users], dtype=np.int64)
    items = np.array(
        [global_of[k] for k in zip(inter.domains, inter.items, strict=True)], dtype=np.int64
    )
    times = np.array(inter.times, dtype=np.int64)
    user_seqs, user_times = sequences_by_user(user_index, len(user_keys), items, times)
    return leave_one_out(
        name=NAME,
        protocol=PROTOCOL,
        protocol_note=(
            "Leave-one-out over each user's interactions across domains, stable-sorted by "
            "timestamp (ties keep file order): last = test, second-to-last = validation; users "
            "with fewer than 3 interactions are training-only."
        ),
        domains=domains,
        user_keys=user_keys,
        user_seqs=user_seqs,
        user_times=user_times,
        notes=_notes(inter, table, domains, used, listed),
    )


def _empty() -> CrossDomainDataset:
    """Stands in for the data set when the files had problems (the caller raises them)."""
    return leave_one_out(
        name=NAME, protocol=PROTOCOL, protocol_note="", domains=[], user_keys=[], user_seqs=[],
        user_times=[],
    )  # fmt: skip


def _notes(
    inter: Interactions,
    table: ItemTable,
    domains: list[Domain],
    used: set[tuple[str, str]],
    listed: set[tuple[str, str]],
) -> list[str]:
    repeats = len(inter.users) - len(set(zip(inter.users, inter.domains, inter.items, strict=True)))
    user_domains = set(zip(inter.users, inter.domains, strict=True))
    users_per_domain = Counter(d for _, d in user_domains)
    domains_per_user = Counter(u for u, _ in user_domains)
    notes = [
        f"{len(inter.users):,} interactions of {len(domains_per_user):,} users in "
        f"{len(domains)} domain(s): "
        + ", ".join(f"{d.name} ({users_per_domain[d.name]:,} users)" for d in domains),
        f"{sum(1 for n in domains_per_user.values() if n > 1):,} users interacted in more than "
        "one domain",
        f"repeated (user, domain, item) rows kept as repeat interactions: {repeats:,}",
    ]
    if inter.ignored_columns:
        notes.append(f"columns ignored in {INTERACTIONS_FILE}: {', '.join(inter.ignored_columns)}")
    if table.present:
        notes.append(
            f"{ITEMS_FILE}: {len(listed):,} items with attributes "
            f"({', '.join(table.attributes) or 'none'}); {len(listed - used):,} of them without "
            f"interactions (catalogue only); {len(used - listed):,} interacted items not listed "
            "(attributes unknown)"
        )
    else:
        notes.append(f"no {ITEMS_FILE}: items have no titles or other attributes")
    return notes


register(
    DatasetSpec(
        name=NAME,
        folder=".",  # the data root is the folder: --data-dir / data.data_dir points at it
        description=(
            "Your own data: interactions.csv (user,item,domain,timestamp) and optional "
            "items.csv (domain,item,title,...) in the folder given by --data-dir"
        ),
        required_files=(INTERACTIONS_FILE,),
        optional_files=(ITEMS_FILE,),
        build=build,
    )
)


def write(dataset: CrossDomainDataset, folder: Path) -> tuple[Path, Path]:
    """Write ``dataset`` as ``interactions.csv`` and ``items.csv`` under ``folder``.

    Only a data set with one sequence per user (and every user's sequence) can be written:
    formats that hold several windows per user, or held-out users with their own sequences,
    have no single interaction list to write, and are refused with the reason.
    """
    seq_users = dataset.seq_user.tolist()
    if sorted(seq_users) != list(range(dataset.n_users)):
        raise ValueError(
            f"data set {dataset.name!r} does not hold exactly one sequence per user "
            f"({dataset.n_sequences:,} sequences of {dataset.n_users:,} users; protocol "
            f"{dataset.protocol}): it has no single interaction list to export"
        )
    folder.mkdir(parents=True, exist_ok=True)
    interactions = folder / INTERACTIONS_FILE
    items = folder / ITEMS_FILE
    with interactions.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(INTERACTION_COLUMNS)
        doms = dataset.domain_of(dataset.items).tolist()
        local = dataset.to_local(dataset.items).tolist()
        times = dataset.times.tolist()
        for s, user in enumerate(seq_users):
            for r in range(int(dataset.seq_offsets[s]), int(dataset.seq_offsets[s + 1])):
                dom = dataset.domains[doms[r]]
                out.writerow((dataset.user_keys[user], dom.item_keys[local[r]], dom.name, times[r]))
    attrs = sorted({a for d in dataset.domains for a in d.item_attributes})
    with items.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow((*ITEM_KEY_COLUMNS, *attrs))
        for dom in dataset.domains:
            values = [dom.item_attributes.get(a, (UNKNOWN,) * dom.n_items) for a in attrs]
            for i, key in enumerate(dom.item_keys):
                out.writerow((dom.name, key, *(v[i] for v in values)))
    return interactions, items


def validate_file(path: Path, log: ProblemLog) -> bool:
    """Validate one file of this format (by its name); False when it is not one."""
    path = Path(path)
    if path.name == INTERACTIONS_FILE:
        read_interactions(path, log)
        return True
    if path.name == ITEMS_FILE:
        read_items(path, log)
        return True
    return False
