"""XMarket Electronics (FOREC release): one domain per market, one shared product space.

Files (see shared/data/README.md, section 6): ``{m}_5core.txt`` for the markets
ca/de/fr/in/jp/mx/uk (``us`` is missing from this copy and used when present),
space-separated with the header ``userId itemId rate date``; ``itemId`` is an Amazon
ASIN and ``date`` is ``YYYY-MM-DD``.

Each market is a domain whose items are the ASINs rated in that market, in sorted ASIN
order. Item keys are ASINs, so one product sold in two markets has one key in both
domains; :func:`shared_item_index` maps every global id to that shared product space.
Users are keyed by reviewer id across markets (only 2 ids occur in two markets). Each
user's ratings are stable-sorted by date (ties keep market-then-file order) into one
sequence, and leave-one-out holds out the last two. Repeated (user, item) lines are
repeat purchases and are kept.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain
from fedscope.data.errors import ProblemLog
from fedscope.data.protocols import leave_one_out, sequences_by_user
from fedscope.data.registry import DatasetSpec, register
from fedscope.data.textio import iter_lines

NAME = "xmarket-electronics"
FOLDER = "xmarket-electronics-forec"
MARKETS = ("ca", "de", "fr", "in", "jp", "mx", "uk", "us")
REQUIRED_MARKET = "ca"
HEADER = ["userId", "itemId", "rate", "date"]
PROTOCOL = "xmarket-loo"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH = date(1970, 1, 1)


def market_file(market: str) -> str:
    return f"{market}_5core.txt"


@dataclass
class MarketRatings:
    """The well-formed lines of one market file, in file order."""

    market: str
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)  # unix seconds of the date, UTC midnight


def _day_seconds(text: str, cache: dict[str, int | None]) -> int | None:
    """Unix seconds of a ``YYYY-MM-DD`` date, None when it is not one."""
    if text not in cache:
        seconds: int | None = None
        if _DATE.match(text):
            try:
                seconds = (date.fromisoformat(text) - _EPOCH).days * 86_400
            except ValueError:
                seconds = None
        cache[text] = seconds
    return cache[text]


def read_market(path: Path, market: str, log: ProblemLog) -> MarketRatings:
    out = MarketRatings(market)
    days: dict[str, int | None] = {}
    for number, line in iter_lines(path, log=log):
        parts = line.split()
        if number == 1:
            if parts == HEADER:
                continue
            log.add(path, 1, f"expected the header {' '.join(HEADER)!r}, got {line!r}")
            if len(parts) != len(HEADER):
                continue  # not a data line either
        if len(parts) != 4:
            log.add(
                path,
                number,
                f"expected 4 space-separated fields (userId itemId rate date), got {len(parts)}",
            )
            continue
        user, item, rate, day = parts
        seconds = _day_seconds(day, days)
        if seconds is None:
            log.add(path, number, f"date {day!r} is not a valid YYYY-MM-DD date")
            continue
        try:
            rating = float(rate)
        except ValueError:
            log.add(path, number, f"rating {rate!r} is not a number")
            continue
        if not 1.0 <= rating <= 5.0:  # also rejects nan
            log.add(path, number, f"rating {rate} outside 1..5")
            continue
        out.users.append(user)
        out.items.append(item)
        out.times.append(seconds)
    return out


def shared_item_index(dataset: CrossDomainDataset) -> np.ndarray:
    """Canonical product index of every global id: its position among all ASINs, sorted.

    Domains keep their own item sets; this is the one shared item space, so a product
    sold in two markets gets the same index from both of its global ids.
    """
    offsets = [d.offset for d in dataset.domains]
    expected = np.cumsum([0] + [d.n_items for d in dataset.domains[:-1]]).tolist()
    if offsets != expected:
        raise ValueError("domains must be contiguous and in global-id order")
    keys = np.array([k for d in dataset.domains for k in d.item_keys], dtype=str)
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, index = np.unique(keys, return_inverse=True)
    return index.astype(np.int64)


def build(folder: Path | None, log: ProblemLog, options: dict[str, Any]) -> CrossDomainDataset:
    assert folder is not None
    markets = [
        read_market(folder / market_file(m), m, log)
        for m in MARKETS
        if (folder / market_file(m)).is_file()
    ]
    domains: list[Domain] = []
    global_of: list[dict[str, int]] = []
    offset = 0
    for mr in markets:
        asins = sorted(set(mr.items))
        domains.append(Domain(mr.market, offset, tuple(asins)))
        global_of.append({a: offset + k for k, a in enumerate(asins)})
        offset += len(asins)

    # One row per rating, markets in MARKETS order and each in file order: the stable
    # sorts below make that the tie order within a day.
    user_names = [u for mr in markets for u in mr.users]
    items = np.array(
        [g[a] for mr, g in zip(markets, global_of, strict=True) for a in mr.items], dtype=np.int64
    )
    times = np.array([t for mr in markets for t in mr.times], dtype=np.int64)
    user_keys = sorted(set(user_names))
    index_of_user = {u: k for k, u in enumerate(user_keys)}
    user_index = np.array([index_of_user[u] for u in user_names], dtype=np.int64)
    user_seqs, user_times = sequences_by_user(user_index, len(user_keys), items, times)

    markets_of_user: dict[str, list[str]] = {}
    for mr in markets:
        for u in dict.fromkeys(mr.users):
            markets_of_user.setdefault(u, []).append(mr.market)
    ds = leave_one_out(
        name=NAME,
        protocol=PROTOCOL,
        protocol_note=(
            "Leave-one-out over each reviewer's ratings across markets, stable-sorted by date "
            "(day resolution; ties keep file order): last = test, second-to-last = validation. "
            "Domains are markets; repeat purchases are kept."
        ),
        domains=domains,
        user_keys=user_keys,
        user_seqs=user_seqs,
        user_times=user_times,
        user_attributes={"markets": [";".join(markets_of_user[u]) for u in user_keys]},
        notes=_notes(markets, domains, markets_of_user),
    )
    return ds


def _notes(
    markets: list[MarketRatings],
    domains: list[Domain],
    markets_of_user: dict[str, list[str]],
) -> list[str]:
    present = [mr.market for mr in markets]
    absent = [m for m in MARKETS if m not in present]
    repeats = {
        mr.market: len(mr.users) - len(set(zip(mr.users, mr.items, strict=True))) for mr in markets
    }
    markets_per_asin = Counter(a for d in domains for a in d.item_keys)
    notes = [
        f"markets loaded: {', '.join(present)}"
        + (f"; not in this copy: {', '.join(market_file(m) for m in absent)}" if absent else ""),
        "repeated (user, item) lines kept as repeat purchases: "
        + ", ".join(f"{m} {n:,}" for m, n in repeats.items()),
        f"shared item space: {len(markets_per_asin):,} distinct ASINs, "
        f"{sum(1 for n in markets_per_asin.values() if n >= 2):,} sold in 2+ markets, "
        f"{sum(1 for n in markets_per_asin.values() if n == len(markets)):,} in all "
        f"{len(markets)}; use xmarket.shared_item_index to map global ids onto it",
        f"{sum(1 for ms in markets_of_user.values() if len(ms) > 1):,} of "
        f"{len(markets_of_user):,} reviewers rated in more than one market",
        "no item titles or categories are available (all items are Electronics)",
    ]
    if markets:
        first = min(min(mr.times, default=0) for mr in markets)
        last = max(max(mr.times, default=0) for mr in markets)
        notes.append(
            "dates from "
            f"{datetime.fromtimestamp(first, UTC):%Y-%m-%d} to "
            f"{datetime.fromtimestamp(last, UTC):%Y-%m-%d}"
        )
    return notes


register(
    DatasetSpec(
        name=NAME,
        folder=FOLDER,
        description="XMarket Electronics, FOREC release: 7 markets as domains (us missing)",
        required_files=(market_file(REQUIRED_MARKET),),
        optional_files=tuple(market_file(m) for m in MARKETS if m != REQUIRED_MARKET),
        build=build,
    )
)


def validate_file(path: Path, log: ProblemLog) -> bool:
    """Validate one market file; False when the file is not of this format."""
    path = Path(path)
    market = path.name.removesuffix("_5core.txt")
    if not path.name.endswith("_5core.txt") or not market:
        return False
    read_market(path, market, log)
    return True
