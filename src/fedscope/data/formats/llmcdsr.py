"""LLMCDSR's processing of Amazon Food-Kitchen: complete splits and a title for every item.

Files (see shared/data/README.md, section 3):

* ``num.txt``: the number of Food (A) and Kitchen (B) items, one per line.
* ``instance_num.txt``: the line counts of ``train_A.txt``, ``train_B.txt`` and
  ``train_overlap.txt``, one per line.
* ``items_A.tsv`` / ``items_B.tsv``: header ``item_id<TAB>asin<TAB>title``; ``item_id``
  is the *global* id (A: ``0..|A|-1``, B: ``|A| + local``), so row ``r`` of a domain
  holds global id ``offset + r``.
* ``train_A.txt``, ``train_B.txt``, ``train_overlap.txt``, ``valid.txt``, ``test.txt``:
  ``uid<TAB>id,id,...`` with 0-based global item ids in sequence order. ``uid`` is
  1-based and local to its file, so user keys are prefixed with the file's stem
  (``"train_A:1"``, ``"valid:3"``).

Protocol ``llmcdsr-given`` is LLMCDSR's own split. Every training sequence is training
data in full (``train_A``: Food-only users, ``train_B``: Kitchen-only users,
``train_overlap``: users with both). ``valid.txt`` and ``test.txt`` hold *held-out*
overlapping users: each line is one sequence that contributes no training data and one
evaluation instance, whose history is everything but the last id and whose target is the
last id. The source has no timestamps, so ``times`` is the position within the sequence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain, EvalSplit
from fedscope.data.errors import ProblemLog
from fedscope.data.protocols import pack_sequences
from fedscope.data.registry import DatasetSpec, register
from fedscope.data.textio import is_uint, iter_lines

NAME = "food-kitchen-llmcdsr"
FOLDER = "amazon-food-kitchen-llmcdsr"
DOMAIN_NAMES = ("Food", "Kitchen")
ITEM_FILES = ("items_A.tsv", "items_B.tsv")
ITEMS_HEADER = ["item_id", "asin", "title"]
# (file, which domain every item must belong to: 0 = A only, 1 = B only, None = either)
TRAIN_FILES: tuple[tuple[str, int | None], ...] = (
    ("train_A.txt", 0),
    ("train_B.txt", 1),
    ("train_overlap.txt", None),
)
EVAL_FILES = ("valid.txt", "test.txt")
SEQUENCE_FILES = (*(f for f, _ in TRAIN_FILES), *EVAL_FILES)
PROTOCOL = "llmcdsr-given"
PROTOCOL_NOTE = (
    "LLMCDSR's own split: every sequence of train_A/train_B/train_overlap is training data; "
    "valid.txt/test.txt are held-out overlapping users whose last item is the target and whose "
    "earlier items are visible history only (never trained on). No timestamps: times are "
    "positions within each sequence."
)
_SEQUENCE_LINE = re.compile(r"^\d+\t\d+(,\d+)*$")


@dataclass
class SequenceFile:
    """The well-formed lines of one sequence file."""

    uids: list[int] = field(default_factory=list)
    seqs: list[np.ndarray] = field(default_factory=list)
    n_lines: int = 0  # every line read, good or bad: what instance_num.txt counts


def read_counts(path: Path, expected: int, what: str, log: ProblemLog) -> list[int] | None:
    """A file of ``expected`` non-negative integers, one per line (num.txt, instance_num.txt)."""
    values: list[int] = []
    ok = True
    for number, line in iter_lines(path, log=log):
        text = line.strip()
        if not is_uint(text):
            log.add(path, number, f"expected a non-negative integer ({what}), got {line!r}")
            ok = False
            continue
        values.append(int(text))
    if ok and len(values) != expected:
        log.add(path, None, f"expected {expected} lines ({what}), got {len(values)}")
        ok = False
    return values if ok else None


def read_items(
    path: Path, offset: int | None, expected_count: int | None, log: ProblemLog
) -> tuple[list[str], list[str]]:
    """``item_id<TAB>asin<TAB>title`` rows; row ``r`` must carry global id ``offset + r``.

    With ``offset`` None (a file validated on its own) the first row's id is taken as
    the offset, so the check is that ids are consecutive.
    """
    keys: list[str] = []
    titles: list[str] = []
    seen: dict[str, int] = {}
    for number, line in iter_lines(path, log=log):
        parts = line.split("\t")
        if number == 1:
            if parts != ITEMS_HEADER:
                log.add(
                    path, 1, f"expected the header {'<TAB>'.join(ITEMS_HEADER)!r}, got {line!r}"
                )
            continue
        row = len(keys)
        if len(parts) != 3:
            log.add(
                path,
                number,
                f"expected 3 tab-separated fields (item_id, asin, title), got {len(parts)}",
            )
            keys.append("")
            titles.append("")
            continue
        item_id, asin, title = parts
        if not is_uint(item_id):
            log.add(path, number, f"item_id {item_id!r} is not a non-negative integer")
        else:
            if offset is None:
                offset = int(item_id) - row
            if int(item_id) != offset + row:
                log.add(
                    path,
                    number,
                    f"item_id {item_id} should be {offset + row} (the domain offset {offset} "
                    f"plus the 0-based row number {row})",
                )
        if not asin.strip():
            log.add(path, number, "empty ASIN")
        elif asin in seen:
            log.add(path, number, f"duplicate item {asin!r} (first on line {seen[asin]})")
        seen.setdefault(asin, number)
        keys.append(asin)
        titles.append(title.strip())
    if expected_count is not None and len(keys) != expected_count:
        log.add(path, None, f"has {len(keys)} items but num.txt says {expected_count}")
    return keys, titles


def read_sequences(
    path: Path,
    n_items: tuple[int, int] | None,
    only_domain: int | None,
    log: ProblemLog,
) -> SequenceFile:
    """Parse ``uid<TAB>id,id,...`` lines; every problem is logged with its line.

    ``n_items`` is (|A|, |B|) for range checks; ``only_domain`` restricts every id to
    one domain (train_A/train_B hold single-domain users).
    """
    out = SequenceFile()
    issues: list[tuple[int, str]] = []  # (line, message), logged in line order at the end
    first_line_of_uid: dict[int, int] = {}
    uids: list[int] = []
    lines: list[int] = []
    lengths: list[int] = []
    flat: list[int] = []
    for number, line in iter_lines(path, log=log):
        out.n_lines += 1
        parts = line.split("\t")
        if len(parts) != 2:
            issues.append(
                (
                    number,
                    "malformed line: expected uid<TAB>id,id,... (2 tab-separated fields), "
                    f"got {len(parts)} field(s)",
                )
            )
            continue
        uid_text, ids_text = parts
        if not is_uint(uid_text.strip()) or int(uid_text) < 1:
            issues.append(
                (number, f"uid {uid_text!r} is not a positive integer (uids are 1-based)")
            )
            continue
        uid = int(uid_text)
        if uid in first_line_of_uid:
            issues.append((number, f"duplicate uid {uid} (first on line {first_line_of_uid[uid]})"))
            continue
        first_line_of_uid[uid] = number
        if not ids_text.strip():
            issues.append((number, "empty sequence: the line has no item ids"))
            continue
        tokens = ids_text.split(",")
        # One C-level test for the common case; token by token only to explain a failure.
        if not is_uint(ids_text.replace(",", "")) or "" in tokens:
            issues.extend(
                (number, f"malformed item id {t!r} (position {j + 1})")
                for j, t in enumerate(tokens)
                if not is_uint(t)
            )
            continue
        if len(tokens) == 1:
            issues.append((number, "one-item sequence: a sequence needs a history and a target"))
            continue
        uids.append(uid)
        lines.append(number)
        lengths.append(len(tokens))
        flat.extend(map(int, tokens))

    items = np.array(flat, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    keep = np.ones(len(uids), dtype=bool)
    if n_items is not None and items.size:
        keep = _check_ranges(items, starts, lines, n_items, only_domain, path.name, issues)
    for number, message in sorted(issues, key=lambda issue: issue[0]):
        log.add(path, number, message)
    for k in np.nonzero(keep)[0]:
        out.uids.append(uids[k])
        out.seqs.append(items[starts[k] : starts[k + 1]])
    return out


def _check_ranges(
    items: np.ndarray,
    starts: np.ndarray,
    lines: list[int],
    n_items: tuple[int, int],
    only_domain: int | None,
    file_name: str,
    issues: list[tuple[int, str]],
) -> np.ndarray:
    """Which sequences have every id in range; the others are described in ``issues``."""
    n_a, n_b = n_items
    low, high = 0, n_a + n_b
    if only_domain == 0:
        high = n_a
    elif only_domain == 1:
        low = n_a
    bad = np.nonzero((items < low) | (items >= high))[0]
    keep = np.ones(len(lines), dtype=bool)
    for position in bad.tolist():
        k = int(np.searchsorted(starts, position, side="right")) - 1
        keep[k] = False
        item = int(items[position])
        j = position - int(starts[k]) + 1
        if 0 <= item < n_a + n_b:
            found = DOMAIN_NAMES[0] if item < n_a else DOMAIN_NAMES[1]
            wanted = DOMAIN_NAMES[only_domain or 0]
            message = (
                f"item id {item} (position {j}) is a {found} item, but {file_name} holds "
                f"{wanted}-only sequences (ids in [{low}, {high}))"
            )
        else:
            message = f"item id {item} (position {j}) out of range [0, {n_a + n_b}) (num.txt)"
        issues.append((lines[k], message))
    return keep


def check_instance_counts(
    path: Path, counts: list[int], train: dict[str, SequenceFile], log: ProblemLog
) -> None:
    for number, ((fname, _), count) in enumerate(zip(TRAIN_FILES, counts, strict=True), start=1):
        if fname in train and train[fname].n_lines != count:
            log.add(
                path,
                number,
                f"says {fname} has {count} lines, but it has {train[fname].n_lines}",
            )


def build(folder: Path | None, log: ProblemLog, options: dict[str, Any]) -> CrossDomainDataset:
    assert folder is not None
    num = read_counts(folder / "num.txt", 2, "item count of A and B", log)
    n_items = (num[0], num[1]) if num else None
    offsets = (0, n_items[0]) if n_items else (0, None)
    item_lists = [
        read_items(folder / fname, offsets[i], n_items[i] if n_items else None, log)
        for i, fname in enumerate(ITEM_FILES)
    ]
    domains = [
        Domain(DOMAIN_NAMES[0], 0, tuple(item_lists[0][0]), {"title": tuple(item_lists[0][1])}),
        Domain(
            DOMAIN_NAMES[1],
            len(item_lists[0][0]),
            tuple(item_lists[1][0]),
            {"title": tuple(item_lists[1][1])},
        ),
    ]
    train = {
        fname: read_sequences(folder / fname, n_items, only, log) for fname, only in TRAIN_FILES
    }
    held_out = {fname: read_sequences(folder / fname, n_items, None, log) for fname in EVAL_FILES}
    instance_num = folder / "instance_num.txt"
    if instance_num.is_file():
        counts = read_counts(instance_num, len(TRAIN_FILES), "line counts of the train files", log)
        if counts:
            check_instance_counts(instance_num, counts, train, log)
    if log:
        return _without_interactions(domains)
    return _assemble(domains, train, held_out)


def _without_interactions(domains: list[Domain]) -> CrossDomainDataset:
    z = np.zeros(0, dtype=np.int64)
    return CrossDomainDataset(
        NAME, "invalid", "", domains, [], z, np.zeros(1, np.int64), z, z, z,
        EvalSplit.empty(), EvalSplit.empty(),
    )  # fmt: skip


def _assemble(
    domains: list[Domain], train: dict[str, SequenceFile], held_out: dict[str, SequenceFile]
) -> CrossDomainDataset:
    files = {**train, **held_out}
    user_keys = [
        f"{fname.removesuffix('.txt')}:{uid}" for fname, sf in files.items() for uid in sf.uids
    ]
    seqs = [seq for sf in files.values() for seq in sf.seqs]
    offsets, items, times = pack_sequences(seqs, [np.arange(len(s)) for s in seqs])
    lengths = np.diff(offsets)
    n_train = sum(len(sf.seqs) for sf in train.values())
    train_len = np.where(np.arange(len(seqs)) < n_train, lengths, 0).astype(np.int64)

    splits: dict[str, EvalSplit] = {}
    start = n_train
    for fname in EVAL_FILES:
        seq = np.arange(start, start + len(held_out[fname].seqs), dtype=np.int64)
        cutoff = lengths[seq] - 1
        splits[fname] = EvalSplit(seq, cutoff, items[offsets[seq] + cutoff])
        start += seq.shape[0]

    n_a = domains[1].offset
    notes = [
        "user groups: "
        + ", ".join(
            f"{len(train[f].seqs):,} {label} (training, {f})"
            for f, label in zip(
                (f for f, _ in TRAIN_FILES),
                (f"{DOMAIN_NAMES[0]}-only", f"{DOMAIN_NAMES[1]}-only", "overlapping"),
                strict=True,
            )
        )
        + "; held-out overlapping users: "
        + ", ".join(f"{len(held_out[f].seqs):,} in {f}" for f in EVAL_FILES),
        "evaluation targets "
        + "; ".join(
            f"{Path(f).stem} {int((sp.target < n_a).sum()):,} {DOMAIN_NAMES[0]} / "
            f"{int((sp.target >= n_a).sum()):,} {DOMAIN_NAMES[1]}"
            for f, sp in splits.items()
        ),
        f"titles for {domains[0].text_coverage():.1%} of {DOMAIN_NAMES[0]} and "
        f"{domains[1].text_coverage():.1%} of {DOMAIN_NAMES[1]} items",
        "held-out users have no training interactions: a method must encode them from their "
        "visible history alone",
    ]
    return CrossDomainDataset(
        name=NAME,
        protocol=PROTOCOL,
        protocol_note=PROTOCOL_NOTE,
        domains=domains,
        user_keys=user_keys,
        seq_user=np.arange(len(seqs), dtype=np.int64),
        seq_offsets=offsets,
        items=items,
        times=times,
        train_len=train_len,
        valid=splits["valid.txt"],
        test=splits["test.txt"],
        notes=notes,
    )


register(
    DatasetSpec(
        name=NAME,
        folder=FOLDER,
        description="Amazon Food-Kitchen as processed by LLMCDSR (complete splits, 100% titles)",
        required_files=("num.txt", *ITEM_FILES, *SEQUENCE_FILES),
        optional_files=("instance_num.txt",),
        build=build,
    )
)


def _sibling_item_counts(folder: Path) -> tuple[int, int] | None:
    num = folder / "num.txt"
    if not num.is_file():
        return None
    counts = read_counts(num, 2, "item count of A and B", ProblemLog())
    return (counts[0], counts[1]) if counts else None


def _looks_like_sequence_file(path: Path) -> bool:
    if (path.parent / "num.txt").is_file():
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline().rstrip("\r\n")
    except OSError:
        return False
    return bool(_SEQUENCE_LINE.match(first))


def validate_file(path: Path, log: ProblemLog) -> bool:
    """Validate one LLMCDSR file on its own; False when the file is not of this format.

    Range checks use ``num.txt`` next to the file when it is there. ``valid.txt`` and
    ``test.txt`` are common names, so a sequence file is claimed only when ``num.txt``
    is beside it or its first line has the ``uid<TAB>id,id,...`` shape.
    """
    path = Path(path)
    name = path.name
    folder = path.parent
    if name == "num.txt":
        read_counts(path, 2, "item count of A and B", log)
    elif name == "instance_num.txt":
        counts = read_counts(path, len(TRAIN_FILES), "line counts of the train files", log)
        if counts:
            train = {
                f: read_sequences(folder / f, None, None, ProblemLog())
                for f, _ in TRAIN_FILES
                if (folder / f).is_file()
            }
            check_instance_counts(path, counts, train, log)
    elif name in ITEM_FILES:
        counts = _sibling_item_counts(folder)
        index = ITEM_FILES.index(name)
        offset = (0, counts[0])[index] if counts else (0 if index == 0 else None)
        read_items(path, offset, counts[index] if counts else None, log)
    elif name in SEQUENCE_FILES and _looks_like_sequence_file(path):
        only = dict(TRAIN_FILES).get(name)
        read_sequences(path, _sibling_item_counts(folder), only, log)
    else:
        return False
    return True
