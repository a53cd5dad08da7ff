"""MovieLens 100K (original GroupLens files) split into two genre-family domains.

Files (see shared/data/README.md, section 4): ``u.data`` (``user<TAB>item<TAB>rating<TAB>
unix_ts``), ``u.item`` (``id|title (year)|release date|video release date|IMDb URL|`` then
19 genre flags, ISO-8859-1), ``u.user`` (``id|age|gender|occupation|zip``) and ``u.genre``
(``name|index``).

MovieLens is single-domain, so the two domains are derived from the genre flags:

* ``Thrill`` = {Action, Adventure, Crime, Film-Noir, Horror, Mystery, Sci-Fi, Thriller,
  War, Western}
* ``Heart`` = {Animation, Children's, Comedy, Documentary, Drama, Fantasy, Musical,
  Romance, unknown}

An item goes to the family that holds more of its genre flags. Ties go to ``Thrill``
(option ``tie_domain``; an item without any flag goes to ``Heart``). Why ties go to
Thrill: 198 items are tied, nearly all Action/Crime/Thriller paired with Comedy/Drama/
Romance. Sending them to Heart gives Thrill 447 items and 36.8% of the ratings. Sending
them to Thrill gives 645 / 1,037 items and 50.7% / 49.3% of the 100,000 ratings. With
balanced domains, both directions of cross-domain transfer have about as many training
interactions and evaluation targets.

Every rating (1-5) counts as an implicit interaction. Each user's ratings are
stable-sorted by timestamp (ties keep their ``u.data`` order) into one mixed sequence, and
leave-one-out takes the last rating as the test target and the second-to-last as the
validation target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import UNKNOWN, CrossDomainDataset, Domain
from fedscope.data.errors import ProblemLog
from fedscope.data.protocols import leave_one_out, sequences_by_user
from fedscope.data.registry import DatasetSpec, register
from fedscope.data.textio import is_uint, iter_lines

NAME = "movielens-100k"
FOLDER = "movielens-100k"
ENCODING = "latin-1"  # u.item is ISO-8859-1 (accented titles in the original release)
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
THRILL = "Thrill"
HEART = "Heart"
THRILL_GENRES = frozenset(
    {"Action", "Adventure", "Crime", "Film-Noir", "Horror", "Mystery", "Sci-Fi", "Thriller",
     "War", "Western"}
)  # fmt: skip
HEART_GENRES = frozenset(GENRES) - THRILL_GENRES
DOMAIN_NAMES = (THRILL, HEART)
ITEM_FIXED_FIELDS = 5  # id, title, release date, video release date, IMDb URL
USER_FIELDS = ("age", "gender", "occupation", "zip")
PROTOCOL = "movielens-genre-loo"


def domain_rule(tie_domain: str) -> str:
    """The genre-family rule in words, for notes and the protocol note."""
    families = (
        f"{name} = {{{', '.join(g for g in GENRES if g in members)}}}"
        for name, members in ((THRILL, THRILL_GENRES), (HEART, HEART_GENRES))
    )
    return (
        "domains by genre family: " + ", ".join(families) + "; an item goes to the family "
        f"holding more of its genre flags, ties to {tie_domain} (no flags: {HEART})"
    )


_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)(?P<suffix>(\s*\(V\))?)\s*$")


@dataclass(frozen=True)
class Movie:
    movie_id: int
    title: str
    year: str
    release_date: str
    genres: tuple[str, ...]


def split_title(raw: str) -> tuple[str, str]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", "1995")``; year ``""`` when there is none.

    A few video releases end in ``" (V)"`` after the year; that marker is kept in the
    title because it tells the video release apart from a cinema film of the same name.
    """
    raw = raw.strip()
    if raw == "unknown":  # item 267: the original release has no title for it
        return UNKNOWN, UNKNOWN
    match = _TITLE_YEAR.match(raw)
    if not match:
        return raw, UNKNOWN
    return match["title"] + match["suffix"], match["year"]


def read_genres(path: Path, log: ProblemLog) -> list[str]:
    """``name|index`` lines; the names must be the 19 MovieLens genres, in order."""
    names: list[str] = []
    for number, line in iter_lines(path, encoding=ENCODING, log=log):
        parts = line.split("|")
        if len(parts) != 2 or not is_uint(parts[1].strip()):
            log.add(path, number, f"expected name|index, got {line!r}")
            continue
        if int(parts[1]) != number - 1:
            log.add(path, number, f"genre index {parts[1]} should be {number - 1}")
        names.append(parts[0])
    if names and tuple(names) != GENRES:
        log.add(
            path,
            None,
            "genre list differs from the 19 MovieLens 100K genres the Thrill/Heart rule is "
            f"defined on: {names}",
        )
    return names


def read_movies(path: Path, log: ProblemLog) -> list[Movie]:
    movies: list[Movie] = []
    first_line: dict[int, int] = {}
    n_fields = ITEM_FIXED_FIELDS + len(GENRES)
    for number, line in iter_lines(path, encoding=ENCODING, log=log):
        parts = line.split("|")
        if len(parts) != n_fields:
            log.add(
                path,
                number,
                f"expected {n_fields} |-separated fields (id, title, release date, video release "
                f"date, IMDb URL, {len(GENRES)} genre flags), got {len(parts)}",
            )
            continue
        if not is_uint(parts[0].strip()):
            log.add(path, number, f"movie id {parts[0]!r} is not a non-negative integer")
            continue
        movie_id = int(parts[0])
        if movie_id in first_line:
            log.add(
                path,
                number,
                f"duplicate movie id {movie_id} (first on line {first_line[movie_id]})",
            )
            continue
        first_line[movie_id] = number
        flags = parts[ITEM_FIXED_FIELDS:]
        bad = [(GENRES[k], f) for k, f in enumerate(flags) if f not in ("0", "1")]
        if bad:
            log.add(path, number, f"genre flags must be 0 or 1, got {bad}")
            continue
        title, year = split_title(parts[1])
        genres = tuple(g for g, f in zip(GENRES, flags, strict=True) if f == "1")
        movies.append(Movie(movie_id, title, year, parts[2].strip(), genres))
    return movies


def read_users(path: Path, log: ProblemLog) -> dict[int, tuple[str, ...]]:
    """``id|age|gender|occupation|zip`` -> {user id: (age, gender, occupation, zip)}."""
    users: dict[int, tuple[str, ...]] = {}
    first_line: dict[int, int] = {}
    for number, line in iter_lines(path, encoding=ENCODING, log=log):
        parts = line.split("|")
        if len(parts) != 1 + len(USER_FIELDS):
            log.add(
                path,
                number,
                f"expected {1 + len(USER_FIELDS)} |-separated fields (id, age, gender, "
                f"occupation, zip), got {len(parts)}",
            )
            continue
        if not is_uint(parts[0].strip()):
            log.add(path, number, f"user id {parts[0]!r} is not a non-negative integer")
            continue
        if not is_uint(parts[1].strip()):
            log.add(path, number, f"age {parts[1]!r} is not a non-negative integer")
            continue
        user_id = int(parts[0])
        if user_id in first_line:
            log.add(path, number, f"duplicate user {user_id} (first on line {first_line[user_id]})")
            continue
        first_line[user_id] = number
        users[user_id] = tuple(p.strip() for p in parts[1:])
    return users


def read_ratings(
    path: Path,
    known_movies: set[int] | None,
    known_users: set[int] | None,
    log: ProblemLog,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``user<TAB>item<TAB>rating<TAB>unix_ts`` -> (users, items, times) of the valid lines."""
    users: list[int] = []
    items: list[int] = []
    times: list[int] = []
    first_line: dict[tuple[int, int], int] = {}
    unknown_users_reported: set[int] = set()
    for number, line in iter_lines(path, log=log):
        parts = line.split("\t")
        if len(parts) != 4:
            log.add(
                path,
                number,
                "expected 4 tab-separated fields (user, item, rating, timestamp), "
                f"got {len(parts)}",
            )
            continue
        try:
            user, item, rating, ts = (int(p) for p in parts)
        except ValueError:
            log.add(path, number, f"non-integer field in {line!r} (user, item, rating, timestamp)")
            continue
        if known_movies is not None and item not in known_movies:
            log.add(path, number, f"item {item} is not in u.item")
            continue
        if known_users is not None and user not in known_users:
            if user not in unknown_users_reported:
                log.add(path, number, f"user {user} is not in u.user")
                unknown_users_reported.add(user)
            continue
        if not 1 <= rating <= 5:
            log.add(path, number, f"rating {rating} outside 1..5")
            continue
        if (user, item) in first_line:
            log.add(
                path,
                number,
                f"duplicate rating of item {item} by user {user} "
                f"(first on line {first_line[user, item]})",
            )
            continue
        first_line[user, item] = number
        users.append(user)
        items.append(item)
        times.append(ts)
    return (
        np.array(users, dtype=np.int64),
        np.array(items, dtype=np.int64),
        np.array(times, dtype=np.int64),
    )


def genre_domain(genres: tuple[str, ...], tie_domain: str) -> str:
    """The domain of a movie: the family holding more of its genres, ties to ``tie_domain``."""
    thrill = sum(1 for g in genres if g in THRILL_GENRES)
    heart = len(genres) - thrill
    if thrill > heart:
        return THRILL
    if thrill < heart or thrill == 0:
        return HEART
    return tie_domain


def build(folder: Path | None, log: ProblemLog, options: dict[str, Any]) -> CrossDomainDataset:
    assert folder is not None
    tie_domain = options.get("tie_domain", THRILL)
    if tie_domain not in DOMAIN_NAMES:
        raise ValueError(f"tie_domain must be one of {DOMAIN_NAMES}, got {tie_domain!r}")
    if (folder / "u.genre").is_file():
        read_genres(folder / "u.genre", log)
    movies = read_movies(folder / "u.item", log)
    user_table = read_users(folder / "u.user", log) if (folder / "u.user").is_file() else None
    users, movie_ids, times = read_ratings(
        folder / "u.data",
        {m.movie_id for m in movies},
        set(user_table) if user_table is not None else None,
        log,
    )

    by_domain: dict[str, list[Movie]] = {d: [] for d in DOMAIN_NAMES}
    for movie in sorted(movies, key=lambda m: m.movie_id):
        by_domain[genre_domain(movie.genres, tie_domain)].append(movie)
    domains: list[Domain] = []
    global_of_movie: dict[int, int] = {}
    offset = 0
    for name in DOMAIN_NAMES:
        members = by_domain[name]
        for local, movie in enumerate(members):
            global_of_movie[movie.movie_id] = offset + local
        domains.append(
            Domain(
                name,
                offset,
                tuple(str(m.movie_id) for m in members),
                {
                    "title": tuple(m.title for m in members),
                    "year": tuple(m.year for m in members),
                    "genres": tuple(";".join(m.genres) for m in members),
                    "release_date": tuple(m.release_date for m in members),
                },
            )
        )
        offset += len(members)

    user_ids = np.unique(users)
    user_index = np.searchsorted(user_ids, users)
    items = np.array([global_of_movie[m] for m in movie_ids.tolist()], dtype=np.int64)
    # each user's ratings in time order, ties in file order
    user_seqs, user_times = sequences_by_user(user_index, len(user_ids), items, times)
    user_keys = [str(u) for u in user_ids.tolist()]
    user_attributes: dict[str, list[str]] = {}
    if user_table is not None:
        rows = [user_table.get(u, (UNKNOWN,) * len(USER_FIELDS)) for u in user_ids.tolist()]
        user_attributes = {f: [r[k] for r in rows] for k, f in enumerate(USER_FIELDS)}

    rule = domain_rule(tie_domain)
    in_thrill = items < domains[1].offset
    n_both = sum(1 for s in user_seqs if 0 < int((s < domains[1].offset).sum()) < len(s))
    notes = [
        rule,
        f"items per domain: {THRILL} {domains[0].n_items:,}, {HEART} {domains[1].n_items:,}; "
        f"ratings per domain: {THRILL} {int(in_thrill.sum()):,}, "
        f"{HEART} {int((~in_thrill).sum()):,}; "
        f"{n_both:,} of {len(user_keys):,} users rated items of both domains",
        "every rating 1-5 is an implicit interaction; sequences are stable-sorted by timestamp",
        "titles for "
        + ", ".join(f"{d.text_coverage():.1%} of {d.name}" for d in domains)
        + f" items; year parsed for {sum(1 for m in movies if m.year):,} of {len(movies):,} movies",
    ]
    ds = leave_one_out(
        name=NAME,
        protocol=PROTOCOL,
        protocol_note=(
            "Leave-one-out over each user's ratings sorted by timestamp (last = test, "
            "second-to-last = validation); " + rule + "."
        ),
        domains=domains,
        user_keys=user_keys,
        user_seqs=user_seqs,
        user_times=user_times,
        user_attributes=user_attributes,
        notes=notes,
    )
    if user_table is not None:
        unrated = len(set(user_table) - set(user_ids.tolist()))
        if unrated:
            ds.dropped["users in u.user without any rating"] = unrated
    return ds


register(
    DatasetSpec(
        name=NAME,
        folder=FOLDER,
        description="MovieLens 100K split into Thrill/Heart genre-family domains (derived)",
        required_files=("u.data", "u.item"),
        optional_files=("u.user", "u.genre"),
        build=build,
        default_options={"tie_domain": THRILL},
    )
)


def validate_file(path: Path, log: ProblemLog) -> bool:
    """Validate one MovieLens 100K file on its own; False when the file is not of this format.

    ``u.data`` is checked against ``u.item`` / ``u.user`` next to it when they are there.
    """
    path = Path(path)
    folder = path.parent
    if path.name == "u.genre":
        read_genres(path, log)
    elif path.name == "u.item":
        read_movies(path, log)
    elif path.name == "u.user":
        read_users(path, log)
    elif path.name == "u.data":
        movies = (
            {m.movie_id for m in read_movies(folder / "u.item", ProblemLog())}
            if (folder / "u.item").is_file()
            else None
        )
        users = (
            set(read_users(folder / "u.user", ProblemLog()))
            if (folder / "u.user").is_file()
            else None
        )
        read_ratings(path, movies, users, log)
    else:
        return False
    return True
