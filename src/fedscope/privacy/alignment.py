"""Inter-domain user alignment of a prepared run by PSI (``fedscope align``).

Where a person's domains live on different clients (``partition.scheme=by-domain``, or
platforms that each hold some domains), the clients find the users they share with
pairwise PSI (:func:`fedscope.privacy.psi.align_clients`) instead of exchanging identifiers.
The identifiers are the data set's user keys, standing in for the pseudonyms platforms
share (a hashed e-mail address, say).

What the result feeds: a client's inter-domain contrastive term needs a user's
representations in two domains. A client holding both of a user's domains aligns them
directly (the paper's "same platform" case). For users whose other domain is on another
client, ``alignment/client-<k>.json`` lists, per partner, the client's users in the pair's
*intersection order* (the shared identifiers sorted, which both sides can compute without
telling anyone else); with ``federation.exchange_representations`` the clients send those
users' representations keyed by that position only (:mod:`fedscope.federation.exchange`).
Positions count rows of the client's own partition (``partition.json``), so the same file
serves the run directory and the client's deployment bundle, where users are re-indexed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data import load_dataset
from fedscope.data.errors import DataError, Problem
from fedscope.data.partition import ClientData, ClientPartition, Partitioning, load_partitioning
from fedscope.privacy.psi import DEFAULT_FPR, AlignmentResult, align_clients

ALIGNMENT_FILE = "alignment.json"
CLIENT_ALIGNMENT_DIR = "alignment"

# partner client id -> this client's partition rows of the users shared with it, in the
# pair's intersection order
ClientAlignment = dict[int, np.ndarray]


def client_alignment_path(root: Path, client_id: int) -> Path:
    return Path(root) / CLIENT_ALIGNMENT_DIR / f"client-{client_id:04d}.json"


def align_run(run_dir: Path, fpr: float = DEFAULT_FPR) -> dict[str, Any]:
    """Run PSI among the run's clients, write ``alignment.json`` (the summary) and
    ``alignment/client-<k>.json`` (each client's own view); returns the summary."""
    from fedscope.experiments.runner import read_config
    from fedscope.training.task import PARTITION_FILE

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    dataset = load_dataset(config.data.name, config.data.data_dir, **config.data.options)
    partitioning = load_partitioning(run_dir / PARTITION_FILE)
    keys = {part.client_id: _keys(dataset, part) for part in partitioning.clients}
    result = align_clients(keys, fpr, skip_pair=_same_single_domain(partitioning))
    write_client_alignments(run_dir, partitioning, keys, result)
    clients = []
    for part in partitioning.clients:
        k = part.client_id
        clients.append(
            {
                "client": k,
                "n_users": len(part.users),
                "domains": [dataset.domains[d].name for d in part.domains],
                "users_aligned_locally": _users_with_several_domains(dataset, part),
                "users_shared_with_other_clients": len(result.overlapping_users[k]),
                "partners": {str(j): len(v) for j, v in sorted(result.shared_with[k].items())},
            }
        )
    out = {
        "fpr": fpr,
        "pairs": result.n_pairs,
        "bytes": result.total_bytes,
        "seconds": result.total_seconds,
        "false_positives_dropped": result.false_positives_dropped,
        "users_aligned_locally": sum(c["users_aligned_locally"] for c in clients),
        "users_shared_across_clients": sum(c["users_shared_with_other_clients"] for c in clients),
        "clients": clients,
    }
    (run_dir / ALIGNMENT_FILE).write_text(json.dumps(out, indent=1))
    return out


def write_client_alignments(
    root: Path,
    partitioning: Partitioning,
    keys: dict[int, list[str]],
    result: AlignmentResult,
) -> None:
    """One file per client: what that client itself learned from its PSI runs."""
    folder = Path(root) / CLIENT_ALIGNMENT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for part in partitioning.clients:
        k = part.client_id
        row_of = {key: row for row, key in enumerate(keys[k])}
        partners = {
            str(j): [row_of[key] for key in sorted(shared)]
            for j, shared in sorted(result.shared_with[k].items())
        }
        client_alignment_path(root, k).write_text(
            json.dumps({"client": k, "n_users": len(keys[k]), "partners": partners})
        )


def load_client_alignment(root: Path, client_id: int, n_users: int) -> ClientAlignment:
    """Client ``client_id``'s alignment under ``root`` (a run directory or a node bundle)."""
    path = client_alignment_path(root, client_id)
    if not path.is_file():
        raise DataError(
            [
                Problem(
                    path,
                    None,
                    "no alignment for this client: federation.exchange_representations needs "
                    "the PSI alignment that 'fedscope train' writes when it prepares the run "
                    "(or 'fedscope align RUN_DIR')",
                )
            ]
        )
    try:
        obj = json.loads(path.read_text())
        partners = {int(j): np.asarray(rows, dtype=np.int64) for j, rows in obj["partners"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError([Problem(path, None, f"not a client alignment file: {exc}")]) from exc
    for j, rows in partners.items():
        if rows.size and (rows.min() < 0 or rows.max() >= n_users):
            raise DataError(
                [Problem(path, None, f"partner {j}: rows outside the client's {n_users} users")]
            )
    return partners


def _keys(dataset: Any, part: ClientPartition) -> list[str]:
    return [str(dataset.user_keys[int(u)]) for u in part.users]


def _same_single_domain(partitioning: Partitioning) -> Any:
    domains = {part.client_id: tuple(part.domains) for part in partitioning.clients}

    def skip(low: int, high: int) -> bool:
        # Two clients of the same single domain share nobody under a by-domain split and,
        # if they did, could not pair two domains of that user anyway.
        return domains[low] == domains[high] and len(domains[low]) == 1

    return skip


def _users_with_several_domains(dataset: Any, part: ClientPartition) -> int:
    """Users of this client with training interactions in at least two of its domains."""
    if len(part.domains) < 2:
        return 0
    domains_of_user: dict[int, set[int]] = {}
    for user, items in ClientData(dataset, part).train_sequences():
        domains_of_user.setdefault(user, set()).update(int(d) for d in dataset.domain_of(items))
    return sum(1 for seen in domains_of_user.values() if len(seen) >= 2)
