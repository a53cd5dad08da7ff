"""Exchange of user representations between PSI-aligned clients, relayed by the server.

The inter-domain term of IIDCL needs the same user's representation in two domains. When a
user's domains live on different clients (a by-domain split), no client holds both, so the
clients that share the user (found by PSI, :mod:`fedscope.privacy.alignment`) send each other
those users' representations:

* a sampled client, after its local training, packs an **outbox**: for every partner j, the
  unit-norm representations (one per domain the client holds) of the users it shares with j,
  in the pair's intersection order, optionally with Gaussian noise
  (``federation.exchange_noise``). Rows are keyed by position only: neither identifiers nor
  the client's user indices leave it;
* the server's :class:`RepresentationRelay` keeps the latest block each client sent to each
  partner and hands a client its **inbox** (every block addressed to it) when the client is
  sampled next; it never learns who the rows are;
* the client maps positions back to its own users and uses the partners' representations as
  fixed (no-gradient) positives and negatives of its inter-domain term
  (:class:`PartnerRepresentations`).

Representations are therefore one or more rounds stale, like FedDCSR's or FedCT's exchanged
user states. The relay is part of the server's checkpoint, so a resumed run repeats an
uninterrupted one. Hand-written because no federated-learning library offers a
pairwise-addressed side channel; the transport is Flower's fit messages (bytes in the
FitIns config and FitRes metrics).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedscope.privacy.alignment import ClientAlignment

INBOX_KEY = "fedscope.inbox"  # FitIns config: the blocks addressed to this client
OUTBOX_KEY = "fedscope.outbox"  # FitRes metrics: the blocks this client sends

_SEP = "|"


@dataclass(frozen=True)
class PartnerRepresentations:
    """Partners' representations of this client's shared users.

    ``users[p]`` is one of the client's users (its index in the client's data set);
    ``reps[d, p]`` that user's representation in domain ``d`` as a partner computed it,
    valid where ``present[d, p]``. A user shared with several partners appears once per
    partner.
    """

    users: np.ndarray  # [P] int64
    reps: np.ndarray  # [D, P, dim] float32
    present: np.ndarray  # [D, P] bool

    @property
    def size(self) -> int:
        return int(self.users.shape[0])


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npz_arrays(payload: bytes, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{what}: not a representation block ({exc})") from exc


def pack_outbox(
    alignment: ClientAlignment,
    reps_by_row: np.ndarray,
    present_by_row: np.ndarray,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> bytes | None:
    """This client's blocks for its partners: ``to-<j>`` ``[D, n_jk, dim]`` float32 and
    ``present-<j>`` ``[D, n_jk]``, rows in the pair's intersection order.

    ``reps_by_row`` ``[D, R, dim]`` and ``present_by_row`` ``[D, R]`` are indexed by the
    client's partition rows (only the shared ones are read). Rows are normalised to unit length, then
    noised with N(0, noise_std^2) per coordinate if asked. None when there is no partner.
    """
    if not alignment:
        return None
    arrays: dict[str, np.ndarray] = {}
    for partner, rows in sorted(alignment.items()):
        block = np.asarray(reps_by_row[:, rows, :], dtype=np.float32)
        norms = np.linalg.norm(block, axis=2, keepdims=True)
        block = block / np.maximum(norms, 1e-12)
        if noise_std > 0:
            if rng is None:
                raise ValueError("exchange noise needs a random generator")
            block = block + rng.normal(0.0, noise_std, size=block.shape).astype(np.float32)
        present = np.asarray(present_by_row[:, rows], dtype=bool)
        block[~present] = 0.0  # absent domains carry nothing, not a stale or random vector
        arrays[f"to-{partner}"] = block
        arrays[f"present-{partner}"] = present
    return _npz_bytes(arrays)


def unpack_inbox(
    payload: bytes | None,
    alignment: ClientAlignment,
    partition_users: np.ndarray,
    n_domains: int,
    client_id: int,
) -> PartnerRepresentations | None:
    """The blocks addressed to this client, mapped to its users (None if empty).
    ``partition_users`` maps the alignment's partition rows to user indices."""
    if not payload:
        return None
    arrays = _npz_arrays(payload, f"client {client_id}'s inbox")
    rows, reps, present = [], [], []
    for name in sorted(arrays):
        if not name.startswith("from-"):
            continue
        partner = int(name.removeprefix("from-"))
        block, mask = arrays[name], arrays[f"mask-{partner}"]
        if partner not in alignment:
            raise ValueError(
                f"client {client_id}: inbox holds a block from {partner}, not a partner"
            )
        mine = alignment[partner]
        if block.ndim != 3 or block.shape[:2] != (n_domains, mine.shape[0]):
            raise ValueError(
                f"client {client_id}: block from partner {partner} has shape {block.shape}, "
                f"expected ({n_domains}, {mine.shape[0]}, dim)"
            )
        rows.append(np.asarray(partition_users, dtype=np.int64)[mine])
        reps.append(block.astype(np.float32, copy=False))
        present.append(mask.astype(bool, copy=False))
    if not rows:
        return None
    return PartnerRepresentations(
        np.concatenate(rows), np.concatenate(reps, axis=1), np.concatenate(present, axis=1)
    )


class RepresentationRelay:
    """The server's mailbox: the latest block each client sent to each partner.

    The server handles blocks as opaque arrays addressed by client pair; it cannot tell whose
    representations they are. ``state`` is saved with every round's checkpoint.
    """

    def __init__(self) -> None:
        self._blocks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (from, to)

    def absorb(self, sender: int, outbox: bytes | None) -> int:
        """Store ``sender``'s blocks; returns how many partners it wrote to."""
        if not outbox:
            return 0
        arrays = _npz_arrays(outbox, f"client {sender}'s outbox")
        count = 0
        for name, block in arrays.items():
            if not name.startswith("to-"):
                continue
            partner = int(name.removeprefix("to-"))
            self._blocks[(sender, partner)] = (block, arrays[f"present-{partner}"])
            count += 1
        return count

    def inbox_for(self, client: int) -> bytes | None:
        arrays: dict[str, np.ndarray] = {}
        for (sender, to), (block, present) in sorted(self._blocks.items()):
            if to == client:
                arrays[f"from-{sender}"] = block
                arrays[f"mask-{sender}"] = present
        return _npz_bytes(arrays) if arrays else None

    @property
    def n_blocks(self) -> int:
        return len(self._blocks)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for (sender, to), (block, present) in self._blocks.items():
            arrays[f"block{_SEP}{sender}{_SEP}{to}"] = block
            arrays[f"present{_SEP}{sender}{_SEP}{to}"] = present
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_npz_bytes(arrays))
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> RepresentationRelay:
        relay = RepresentationRelay()
        arrays = _npz_arrays(path.read_bytes(), str(path))
        for name, block in arrays.items():
            kind, sender, to = name.split(_SEP)
            if kind == "block":
                present = arrays[f"present{_SEP}{sender}{_SEP}{to}"]
                relay._blocks[(int(sender), int(to))] = (block, present)
        return relay


def relay_path(run_dir: Path, server_round: int) -> Path:
    return Path(run_dir) / "relay" / f"round-{server_round:05d}.npz"
