"""Inter-domain user alignment of a prepared run by PSI (``fedscope align``).

Where a person's domains live on different clients (``partition.scheme=by-domain``, or
platforms that each hold some domains), the clients find the users they share with
pairwise PSI (:func:`fedscope.privacy.psi.align_clients`) instead of exchanging identifiers.
Identifiers are the clients' shared pseudonyms; here ``user-<index>`` stands in for them.

What the result feeds: a client's inter-domain contrastive term needs a user's
representations in two domains. A client holding both of a user's domains aligns them
directly (the paper's "same platform" case) and trains the term; users whose other domain is
on another client are counted here as aligned across clients, and their term stays off,
which is the paper's fallback, until cross-client exchange of representations exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedscope.data import load_dataset
from fedscope.data.partition import ClientData, ClientPartition, load_partitioning
from fedscope.privacy.psi import DEFAULT_FPR, align_clients

ALIGNMENT_FILE = "alignment.json"


def align_run(run_dir: Path, fpr: float = DEFAULT_FPR) -> dict[str, Any]:
    """Run PSI among the run's clients and write ``alignment.json``; returns its content."""
    from fedscope.experiments.runner import read_config
    from fedscope.training.task import PARTITION_FILE

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    dataset = load_dataset(config.data.name, config.data.data_dir, **config.data.options)
    partitioning = load_partitioning(run_dir / PARTITION_FILE)
    ids = {part.client_id: [f"user-{int(u)}" for u in part.users] for part in partitioning.clients}
    result = align_clients(ids, fpr)
    clients = []
    for part in partitioning.clients:
        k = part.client_id
        local_multi = _users_with_several_domains(dataset, part)
        clients.append(
            {
                "client": k,
                "n_users": len(part.users),
                "domains": [dataset.domains[d].name for d in part.domains],
                "users_aligned_locally": local_multi,
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


def _users_with_several_domains(dataset: Any, part: ClientPartition) -> int:
    """Users of this client with training interactions in at least two of its domains."""
    if len(part.domains) < 2:
        return 0
    domains_of_user: dict[int, set[int]] = {}
    for user, items in ClientData(dataset, part).train_sequences():
        domains_of_user.setdefault(user, set()).update(int(d) for d in dataset.domain_of(items))
    return sum(1 for seen in domains_of_user.values() if len(seen) >= 2)
