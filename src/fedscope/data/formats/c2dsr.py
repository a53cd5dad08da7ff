"""The C2DSR release of Amazon Food-Kitchen and Movie-Book.

Files (see shared/data/README.md): ``Alist.txt``/``Blist.txt`` (item lists),
``userlist.txt``, ``validdata_new.txt``/``testdata_new.txt`` and, when
available, ``traindata_new.txt``: one window per line,
``user<TAB>line_id<TAB>item|unix_ts|date|<TAB>...``. Item ids are global:
``id < |A|`` is domain A, the rest domain B. Tokens are not in time order in
the files, so every window is stable-sorted by timestamp before its last item
is taken as the target, as the C2DSR loader does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain, EvalSplit
from fedscope.data.errors import ProblemLog
from fedscope.data.protocols import chronological, leave_one_out, pack_sequences
from fedscope.data.registry import DatasetSpec, register
from fedscope.data.textio import is_uint, iter_lines

WINDOW_FILES = ("traindata_new.txt", "validdata_new.txt", "testdata_new.txt")


@dataclass
class Window:
    user: int
    line_id: int
    items: np.ndarray
    times: np.ndarray
    source: str  # "file:line" for error messages about duplicates


def _read_indexed_keys(
    path: Path, log: ProblemLog, fields: tuple[str, ...], what: str
) -> list[str]:
    """Tab-separated lines whose second-to-last field is the key and last field the 0-based
    line number (C2DSR's item and user lists); bad lines keep their slot as ""."""
    keys: list[str] = []
    seen: dict[str, int] = {}
    for number, line in iter_lines(path, log=log):
        parts = line.split("\t")
        if len(parts) != len(fields):
            log.add(
                path,
                number,
                f"expected {len(fields)} tab-separated fields ({', '.join(fields)}), got {len(parts)}",
            )
            keys.append("")
            continue
        key, index = parts[-2], parts[-1]
        if not is_uint(index) or int(index) != number - 1:
            log.add(
                path,
                number,
                f"{what} index {index!r} should be {number - 1} (the 0-based line number)",
            )
        if key in seen:
            log.add(path, number, f"duplicate {what} {key!r} (first on line {seen[key]})")
        seen.setdefault(key, number)
        keys.append(key)
    return keys


def read_item_list(path: Path, log: ProblemLog) -> list[str]:
    """``orig_id<TAB>ASIN<TAB>index`` per line; index must equal the 0-based line number."""
    return _read_indexed_keys(path, log, ("orig_id", "ASIN", "index"), "item")


def read_user_list(path: Path, log: ProblemLog) -> list[str]:
    """``reviewerID<TAB>user_index`` per line; index must equal the 0-based line number."""
    return _read_indexed_keys(path, log, ("reviewerID", "user_index"), "user")


def read_item_text(path: Path, keys: list[str], log: ProblemLog) -> tuple[str, ...]:
    """``index<TAB>global_id<TAB>asin<TAB>title`` with a header; empty title = unknown."""
    titles = [""] * len(keys)
    for number, line in iter_lines(path, log=log, skip_header=True):
        parts = line.split("\t")
        if len(parts) != 4:
            log.add(
                path,
                number,
                f"expected 4 tab-separated fields (index, global_id, asin, title), got {len(parts)}",
            )
            continue
        index, _, asin, title = parts
        if not is_uint(index) or int(index) >= len(keys):
            log.add(path, number, f"item index {index!r} out of range [0, {len(keys)})")
            continue
        if keys[int(index)] and asin != keys[int(index)]:
            log.add(
                path, number, f"ASIN {asin!r} does not match the item list ({keys[int(index)]!r})"
            )
            continue
        titles[int(index)] = title.strip()
    return tuple(titles)


def read_windows(
    path: Path, n_items: int | None, n_users: int | None, log: ProblemLog
) -> list[Window]:
    """Parse a window file; every window comes back stable-sorted by timestamp."""
    windows: list[Window] = []
    for number, line in iter_lines(path, log=log):
        fields = line.rstrip("\t").split("\t")
        if len(fields) < 2 or not is_uint(fields[0]) or not is_uint(fields[1]):
            log.add(
                path, number, "malformed line: expected user_index<TAB>line_id<TAB>item|ts|date|..."
            )
            continue
        user, line_id = int(fields[0].strip()), int(fields[1].strip())
        if n_users is not None and user >= n_users:
            log.add(path, number, f"user index {user} out of range [0, {n_users})")
            continue
        tokens = [t for t in fields[2:] if t != ""]
        items = np.empty(len(tokens), dtype=np.int64)
        times = np.empty(len(tokens), dtype=np.int64)
        bad = False
        for j, token in enumerate(tokens):
            parts = token.split("|")
            if len(parts) < 2 or not is_uint(parts[0]) or not is_uint(parts[1].removeprefix("-")):
                log.add(
                    path, number, f"malformed token {j + 1} {token!r}: expected item|unix_ts|date|"
                )
                bad = True
                continue
            items[j], times[j] = int(parts[0]), int(parts[1])
            if n_items is not None and items[j] >= n_items:
                log.add(
                    path, number, f"item id {items[j]} (token {j + 1}) out of range [0, {n_items})"
                )
                bad = True
        if not tokens:
            log.add(path, number, "empty sequence: the window has no items")
            continue
        if len(tokens) == 1:
            log.add(path, number, "one-item sequence: a window needs a history and a target")
            continue
        if bad:
            continue
        items, times = chronological(items, times)
        windows.append(Window(user, line_id, items, times, f"{path.name}:{number}"))
    return windows


def check_one_window_per_user(
    windows: list[Window], path: Path, log: ProblemLog, seen: dict[int, str]
) -> None:
    for w in windows:
        if w.user in seen:
            line = int(w.source.rsplit(":", 1)[1])
            log.add(path, line, f"duplicate user {w.user} (already has a window at {seen[w.user]})")
        else:
            seen[w.user] = w.source


def build(folder: Path | None, log: ProblemLog, options: dict[str, Any]) -> CrossDomainDataset:
    assert folder is not None
    name, domain_names = options["name"], options["domains"]
    keys_a = read_item_list(folder / "Alist.txt", log)
    keys_b = read_item_list(folder / "Blist.txt", log)
    users = read_user_list(folder / "userlist.txt", log)
    n_items = len(keys_a) + len(keys_b)
    attrs: list[dict[str, tuple[str, ...]]] = [{}, {}]
    for i, (letter, keys) in enumerate((("A", keys_a), ("B", keys_b))):
        text = folder / f"item_text_{letter}.tsv"
        if text.is_file():
            attrs[i] = {"title": read_item_text(text, keys, log)}
    domains = [
        Domain(domain_names[0], 0, tuple(keys_a), attrs[0]),
        Domain(domain_names[1], len(keys_a), tuple(keys_b), attrs[1]),
    ]
    split_windows: dict[str, list[Window]] = {}
    seen: dict[int, str] = {}
    for fname in WINDOW_FILES:
        path = folder / fname
        if not path.is_file():
            continue
        ws = read_windows(path, n_items, len(users), log)
        if fname != "traindata_new.txt":  # train files hold several windows per user
            check_one_window_per_user(ws, path, log, seen)
        split_windows[fname] = ws
    if log:
        return _empty(name, domains, users)

    coverage = f"titles for {domains[0].text_coverage():.1%} of {domain_names[0]} and {domains[1].text_coverage():.1%} of {domain_names[1]} items"
    if "traindata_new.txt" in split_windows:
        return _given_split(name, domains, users, split_windows, [coverage])
    return _derived_loo(name, domains, users, split_windows, [coverage])


def _empty(name: str, domains: list[Domain], users: list[str]) -> CrossDomainDataset:
    z = np.zeros(0, dtype=np.int64)
    return CrossDomainDataset(
        name,
        "invalid",
        "",
        domains,
        users,
        z,
        np.zeros(1, np.int64),
        z,
        z,
        z,
        EvalSplit.empty(),
        EvalSplit.empty(),
    )


def _derived_loo(
    name: str,
    domains: list[Domain],
    users: list[str],
    split_windows: dict[str, list[Window]],
    notes: list[str],
) -> CrossDomainDataset:
    per_user: list[Window | None] = [None] * len(users)
    for fname in ("validdata_new.txt", "testdata_new.txt"):
        for w in split_windows.get(fname, []):
            per_user[w.user] = w
    missing = sum(1 for w in per_user if w is None)
    empty = np.zeros(0, dtype=np.int64)
    ds = leave_one_out(
        name=name,
        protocol="c2dsr-derived-loo",
        protocol_note=(
            "C2DSR traindata_new.txt is absent, so the split is derived: each user's last window "
            "(from validdata_new/testdata_new, stable-sorted by timestamp) gives the test target "
            "(last item), the validation target (second to last) and training data (the prefix). "
            "This is not the paper's split."
        ),
        domains=domains,
        user_keys=users,
        user_seqs=[w.items if w else empty for w in per_user],
        user_times=[w.times if w else empty for w in per_user],
        notes=notes,
    )
    if missing:
        ds.dropped["users in userlist.txt without any window (no interactions)"] = missing
    return ds


def _given_split(
    name: str,
    domains: list[Domain],
    users: list[str],
    split_windows: dict[str, list[Window]],
    notes: list[str],
) -> CrossDomainDataset:
    train = split_windows["traindata_new.txt"]
    valid = split_windows.get("validdata_new.txt", [])
    test = split_windows.get("testdata_new.txt", [])
    windows = [*train, *valid, *test]
    offsets, items, times = pack_sequences([w.items for w in windows], [w.times for w in windows])
    lengths = np.diff(offsets)
    train_len = np.concatenate(
        [lengths[: len(train)], np.zeros(len(valid) + len(test), dtype=np.int64)]
    )

    def split(start: int, count: int) -> EvalSplit:
        seq = np.arange(start, start + count, dtype=np.int64)
        cutoff = lengths[seq] - 1
        return EvalSplit(seq, cutoff, items[offsets[seq] + cutoff])

    return CrossDomainDataset(
        name=name,
        protocol="c2dsr-given",
        protocol_note="The C2DSR release's own train/valid/test windows (each window stable-sorted by timestamp).",
        domains=domains,
        user_keys=users,
        seq_user=np.array([w.user for w in windows], dtype=np.int64),
        seq_offsets=offsets,
        items=items,
        times=times,
        train_len=train_len,
        valid=split(len(train), len(valid)),
        test=split(len(train) + len(valid), len(test)),
        notes=notes,
    )


_REQUIRED = ("Alist.txt", "Blist.txt", "userlist.txt", "validdata_new.txt", "testdata_new.txt")
_OPTIONAL = ("traindata_new.txt", "item_text_A.tsv", "item_text_B.tsv")

register(
    DatasetSpec(
        name="food-kitchen",
        folder="amazon-food-kitchen",
        description="Amazon Food-Kitchen, C2DSR release (the paper's data set; train windows missing)",
        required_files=_REQUIRED,
        optional_files=_OPTIONAL,
        build=build,
        default_options={"name": "food-kitchen", "domains": ["Food", "Kitchen"]},
    )
)
register(
    DatasetSpec(
        name="movie-book",
        folder="amazon-movie-book",
        description="Amazon Movie-Book, C2DSR release (the paper's data set; train windows missing)",
        required_files=_REQUIRED,
        optional_files=_OPTIONAL,
        build=build,
        default_options={"name": "movie-book", "domains": ["Movie", "Book"]},
    )
)


def validate_file(path: Path, log: ProblemLog) -> bool:
    """Validate one C2DSR file on its own; False when the file is not of this format.

    Range checks use the item and user lists next to the file when they are there.
    """
    folder = path.parent
    name = path.name
    if name in ("Alist.txt", "Blist.txt"):
        read_item_list(path, log)
    elif name == "userlist.txt":
        read_user_list(path, log)
    elif name.startswith("item_text_") and name.endswith(".tsv"):
        letter = name[len("item_text_") : -4]
        lst = folder / f"{letter}list.txt"
        keys = read_item_list(lst, ProblemLog()) if lst.is_file() else []
        read_item_text(path, keys, log)
    elif name.endswith(".txt") and "data" in name:  # traindata_new.txt, validdata_new.txt, ...
        n_items = None
        if (folder / "Alist.txt").is_file() and (folder / "Blist.txt").is_file():
            n_items = len(read_item_list(folder / "Alist.txt", ProblemLog())) + len(
                read_item_list(folder / "Blist.txt", ProblemLog())
            )
        n_users = (
            len(read_user_list(folder / "userlist.txt", ProblemLog()))
            if (folder / "userlist.txt").is_file()
            else None
        )
        ws = read_windows(path, n_items, n_users, log)
        if "train" not in name:
            check_one_window_per_user(ws, path, log, {})
    else:
        return False
    return True
