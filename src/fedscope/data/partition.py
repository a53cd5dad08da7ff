"""Partitioning a data set into K clients (platforms).

Schemes:

* ``equal``: users shuffled and split into K chunks of (nearly) equal size.
* ``dirichlet``: client shares drawn from Dirichlet(alpha * 1_K): small alpha
  gives strongly size-skewed clients. Every client keeps at least
  ``min_users`` users.
* ``powerlaw``: client k gets a share proportional to (k+1)^-exponent, then the
  client order is shuffled.
* ``by-domain``: every client holds a single domain (client k holds domain
  k mod D); each domain's users are split equally over its clients. A user
  active in two domains therefore lives on two clients that must find each
  other (PSI) to use the inter-domain objective.
* ``file``: the clients a CSV file names (:func:`partition_from_file`): the real split when
  the platforms already hold their users, with their real sizes.

A client holds, for each of its users, the per-domain sequences and the mixed
cross-domain sequence restricted to the domains it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fedscope.data.csvtable import complete_rows, read_table
from fedscope.data.dataset import CrossDomainDataset, EvalSplit
from fedscope.data.errors import ProblemLog
from fedscope.data.textio import is_uint

Scheme = Literal["equal", "dirichlet", "powerlaw", "by-domain", "file"]
SCHEMES: tuple[str, ...] = ("equal", "dirichlet", "powerlaw", "by-domain", "file")
ASSIGNMENT_COLUMNS = ("user", "client")
PARTITION_FILE = "partition.json"  # a run directory's partitioning


@dataclass(frozen=True)
class ClientPartition:
    client_id: int
    users: np.ndarray  # sorted user indices
    domains: tuple[int, ...]  # domains whose interactions this client holds
    name: str | None = None  # the client's name in an assignment file (scheme "file")


@dataclass(frozen=True)
class Partitioning:
    scheme: str
    seed: int
    clients: tuple[ClientPartition, ...]

    @property
    def n_clients(self) -> int:
        return len(self.clients)

    def sizes(self) -> np.ndarray:
        """|U_k| per client: the weights of size-weighted federated averaging."""
        return np.array([c.users.shape[0] for c in self.clients], dtype=np.int64)

    def to_json(self) -> str:
        return json.dumps(
            {
                "scheme": self.scheme,
                "seed": self.seed,
                "clients": [
                    {
                        "client_id": c.client_id,
                        "domains": list(c.domains),
                        "users": c.users.tolist(),
                    }
                    | ({} if c.name is None else {"name": c.name})
                    for c in self.clients
                ],
            }
        )

    @staticmethod
    def from_json(text: str) -> Partitioning:
        obj = json.loads(text)
        clients = tuple(
            ClientPartition(
                c["client_id"],
                np.array(c["users"], dtype=np.int64),
                tuple(c["domains"]),
                c.get("name"),
            )
            for c in obj["clients"]
        )
        return Partitioning(obj["scheme"], obj["seed"], clients)


def _split_by_shares(users: np.ndarray, shares: np.ndarray, min_users: int) -> list[np.ndarray]:
    k = shares.shape[0]
    n = users.shape[0]
    if n < k * min_users:
        raise ValueError(
            f"cannot give {k} clients at least {min_users} user(s) each: only {n} users"
        )
    # Everyone gets the minimum first; the rest is divided by the shares (largest remainders).
    extra = (n - k * min_users) * shares / shares.sum()
    counts = np.floor(extra).astype(np.int64)
    remainder = n - k * min_users - counts.sum()
    counts[np.argsort(-(extra - counts), kind="stable")[:remainder]] += 1
    counts += min_users
    return np.split(users, np.cumsum(counts)[:-1])


def partition(
    dataset: CrossDomainDataset,
    n_clients: int,
    scheme: Scheme = "equal",
    seed: int = 0,
    alpha: float = 0.5,
    exponent: float = 1.0,
    min_users: int = 1,
    file: str | Path | None = None,
) -> Partitioning:
    """Assign users to ``n_clients`` clients with the given scheme, deterministically from
    ``seed`` (scheme ``file``: as the CSV ``file`` says; see :func:`partition_from_file`)."""
    if n_clients < 1:
        raise ValueError(f"n_clients must be at least 1, got {n_clients}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "file":
        if file is None:
            raise ValueError("partition scheme 'file' needs the assignment file (partition.file)")
        return partition_from_file(dataset, file, n_clients, seed)
    rng = np.random.default_rng(seed)
    all_domains = tuple(range(dataset.n_domains))
    users = rng.permutation(dataset.n_users).astype(np.int64)

    if scheme == "by-domain":
        if n_clients < dataset.n_domains:
            raise ValueError(
                f"by-domain partitioning needs at least one client per domain: "
                f"{n_clients} clients for {dataset.n_domains} domains"
            )
        active = _users_per_domain(dataset)
        clients: list[ClientPartition] = []
        for d in all_domains:
            owners = [k for k in range(n_clients) if k % dataset.n_domains == d]
            dom_users = users[np.isin(users, active[d])]
            chunks = _split_by_shares(dom_users, np.ones(len(owners)), min_users)
            clients += [
                ClientPartition(k, np.sort(c), (d,)) for k, c in zip(owners, chunks, strict=True)
            ]
        return Partitioning(scheme, seed, tuple(sorted(clients, key=lambda c: c.client_id)))

    if scheme == "equal":
        shares = np.ones(n_clients)
    elif scheme == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"dirichlet alpha must be positive, got {alpha}")
        shares = rng.dirichlet(np.full(n_clients, alpha))
    else:  # powerlaw
        shares = rng.permutation((np.arange(n_clients) + 1.0) ** -exponent)
    chunks = _split_by_shares(users, shares, min_users)
    return Partitioning(
        scheme,
        seed,
        tuple(ClientPartition(k, np.sort(c), all_domains) for k, c in enumerate(chunks)),
    )


def _users_per_domain(dataset: CrossDomainDataset) -> list[np.ndarray]:
    dom = dataset.domain_of(dataset.items)
    owner = np.repeat(dataset.seq_user, dataset.sequence_lengths())
    return [np.unique(owner[dom == d]) for d in range(dataset.n_domains)]


@dataclass
class ClientData:
    """One client's view of the data: only its users, only its domains."""

    dataset: CrossDomainDataset
    partition: ClientPartition

    @property
    def client_id(self) -> int:
        return self.partition.client_id

    @property
    def users(self) -> np.ndarray:
        return self.partition.users

    def _sequences(self) -> np.ndarray:
        return np.nonzero(np.isin(self.dataset.seq_user, self.users))[0]

    def train_sequences(self, domain: int | None = None) -> list[tuple[int, np.ndarray]]:
        """(user, training items) for each of the client's sequences.

        ``domain=None`` gives the mixed cross-domain sequence over the client's
        domains; a domain index gives that domain's sequence. Empty sequences
        are left out.
        """
        keep = self.partition.domains if domain is None else (domain,)
        if domain is not None and domain not in self.partition.domains:
            raise ValueError(f"client {self.client_id} holds no data of domain {domain}")
        out = []
        for s in self._sequences():
            items = self.dataset.sequence(int(s))[: self.dataset.train_len[s]]
            items = items[np.isin(self.dataset.domain_of(items), keep)]
            if items.shape[0]:
                out.append((int(self.dataset.seq_user[s]), items))
        return out

    def eval_indices(self, split: str) -> np.ndarray:
        """Indices of the split's instances that belong to this client."""
        sp: EvalSplit = self.dataset.eval_split(split)
        mine = np.isin(self.dataset.seq_user[sp.seq], self.users)
        mine &= np.isin(self.dataset.domain_of(sp.target), self.partition.domains)
        return np.nonzero(mine)[0]


def save_partitioning(p: Partitioning, path: Path) -> None:
    path.write_text(p.to_json())


def load_partitioning(path: Path) -> Partitioning:
    return Partitioning.from_json(path.read_text())


def _client_order(names: set[str]) -> list[str]:
    """Numeric names in numeric order (client 2 before client 10), others alphabetically."""
    if all(is_uint(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def partition_from_file(
    dataset: CrossDomainDataset, path: str | Path, n_clients: int, seed: int = 0
) -> Partitioning:
    """Clients as a CSV file assigns them: a header ``user,client``, then one row per user.

    ``user`` is the data set's own user id (as in ``interactions.csv``), ``client`` any name.
    Every user of the data set is assigned exactly once, and a client holds all of its users'
    domains; clients are numbered in name order (numerically when every name is a number),
    and the names are kept in ``partition.json``. The file must name exactly ``n_clients``
    clients, so that K has one home (the configuration) and a typo cannot change it silently.
    Every problem is reported with the file and line (:class:`DataError`); nothing is left out.
    """
    path = Path(path)
    log = ProblemLog()
    table = read_table(path, ASSIGNMENT_COLUMNS, log)
    if table is None:
        log.raise_if_any()
        raise AssertionError("unreachable: an unusable header is always reported")
    parsed, col = table
    others = [c for c in col if c not in ASSIGNMENT_COLUMNS]
    if others:
        why = (
            "; a user's whole history lives on one client here (to put a user's domains on "
            "different clients, use partition.scheme=by-domain)"
            if "domain" in others
            else ""
        )
        log.add(path, 1, f"unexpected column(s) {', '.join(others)}: only user,client{why}")
    index = {key: u for u, key in enumerate(dataset.user_keys)}
    owner: dict[int, tuple[str, int]] = {}  # user -> (client name, line)
    for line, row in complete_rows(path, parsed, log):
        user, client = row[col["user"]].strip(), row[col["client"]].strip()
        if not user or not client:
            log.add(path, line, f"empty {'user' if not user else 'client'}")
            continue
        u = index.get(user)
        if u is None:
            log.add(path, line, f"user {user!r} is not a user of the data set {dataset.name}")
            continue
        if u in owner:
            first_client, first_line = owner[u]
            log.add(
                path,
                line,
                f"user {user!r} is assigned a second time (line {first_line} gives it client "
                f"{first_client!r}): a user lives on one client",
            )
            continue
        owner[u] = (client, line)
    parsed.report_error(path, log)
    if not log:
        missing = [key for u, key in enumerate(dataset.user_keys) if u not in owner]
        if missing:
            log.add(
                path,
                None,
                f"{len(missing):,} of the data set's {dataset.n_users:,} users have no client "
                f"(e.g. {', '.join(repr(k) for k in missing[:5])}): assign every user, or "
                "their data would silently be left out",
            )
        names = _client_order({c for c, _ in owner.values()})
        if names and len(names) != n_clients:
            log.add(
                path,
                None,
                f"the file names {len(names)} client(s) but partition.n_clients is {n_clients}: "
                f"set partition.n_clients={len(names)}",
            )
    log.raise_if_any()
    number = {name: k for k, name in enumerate(names)}
    members: list[list[int]] = [[] for _ in names]
    for u, (client, _) in owner.items():
        members[number[client]].append(u)
    all_domains = tuple(range(dataset.n_domains))
    return Partitioning(
        "file",
        seed,
        tuple(
            ClientPartition(k, np.array(sorted(m), dtype=np.int64), all_domains, name)
            for k, (name, m) in enumerate(zip(names, members, strict=True))
        ),
    )
