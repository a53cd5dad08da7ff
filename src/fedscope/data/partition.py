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

A client holds, for each of its users, the per-domain sequences and the mixed
cross-domain sequence restricted to the domains it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, EvalSplit

Scheme = Literal["equal", "dirichlet", "powerlaw", "by-domain"]
SCHEMES: tuple[str, ...] = ("equal", "dirichlet", "powerlaw", "by-domain")


@dataclass(frozen=True)
class ClientPartition:
    client_id: int
    users: np.ndarray  # sorted user indices
    domains: tuple[int, ...]  # domains whose interactions this client holds


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
                    for c in self.clients
                ],
            }
        )

    @staticmethod
    def from_json(text: str) -> Partitioning:
        obj = json.loads(text)
        clients = tuple(
            ClientPartition(
                c["client_id"], np.array(c["users"], dtype=np.int64), tuple(c["domains"])
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
) -> Partitioning:
    """Assign users to ``n_clients`` clients with the given scheme, deterministically from ``seed``."""
    if n_clients < 1:
        raise ValueError(f"n_clients must be at least 1, got {n_clients}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
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
