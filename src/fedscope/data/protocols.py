"""Split protocols: how evaluation instances are cut out of interaction sequences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain, EvalSplit

LOO_MIN_LENGTH = 3  # one training item at least, then the validation and the test target


def pack_sequences(
    seqs: Sequence[np.ndarray], times: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR-pack a list of sequences: (offsets, items, times)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.concatenate(seqs).astype(np.int64) if seqs else np.zeros(0, np.int64)
    ts = np.concatenate(times).astype(np.int64) if times else np.zeros(0, np.int64)
    return offsets, items, ts


def leave_one_out(
    *,
    name: str,
    protocol: str,
    protocol_note: str,
    domains: list[Domain],
    user_keys: list[str],
    user_seqs: Sequence[np.ndarray],
    user_times: Sequence[np.ndarray],
    user_attributes: dict[str, list[str]] | None = None,
    notes: list[str] | None = None,
) -> CrossDomainDataset:
    """Leave-one-out over each user's mixed chronological sequence.

    The last item is the test target, the second-to-last the validation target,
    the prefix before both is training data. Users with fewer than
    ``LOO_MIN_LENGTH`` interactions cannot be split: they are not evaluated, but
    their interactions stay in the data as training sequences, and their number
    is reported in ``dropped``.
    """
    if len(user_seqs) != len(user_keys) or len(user_times) != len(user_keys):
        raise ValueError("one sequence and one time array per user expected")
    offsets, items, times = pack_sequences(user_seqs, user_times)
    lengths = np.diff(offsets)
    splittable = lengths >= LOO_MIN_LENGTH
    seq_ids = np.nonzero(splittable)[0].astype(np.int64)
    train_len = np.where(splittable, lengths - 2, lengths).astype(np.int64)
    valid = EvalSplit(seq_ids, lengths[seq_ids] - 2, items[offsets[seq_ids] + lengths[seq_ids] - 2])
    test = EvalSplit(
        seq_ids.copy(), lengths[seq_ids] - 1, items[offsets[seq_ids] + lengths[seq_ids] - 1]
    )
    dropped: dict[str, int] = {}
    n_short = int((~splittable).sum())
    if n_short:
        dropped[
            f"users with fewer than {LOO_MIN_LENGTH} interactions (not evaluated, kept for training)"
        ] = n_short
    return CrossDomainDataset(
        name=name,
        protocol=protocol,
        protocol_note=protocol_note,
        domains=domains,
        user_keys=list(user_keys),
        seq_user=np.arange(len(user_keys), dtype=np.int64),
        seq_offsets=offsets,
        items=items,
        times=times,
        train_len=train_len,
        valid=valid,
        test=test,
        user_attributes=user_attributes or {},
        dropped=dropped,
        notes=notes or [],
    )


def sequences_by_user(
    user_index: np.ndarray, n_users: int, items: np.ndarray, times: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each user's items and times, in time order (equal times keep input order).

    ``user_index[r]`` is the user (0..n_users-1) of row ``r``. Stable by time, then stable by
    user, so ties within a user keep the rows' order (file order for the loaders).
    """
    if n_users == 0:  # np.split of an empty array still yields one piece: a user too many
        return [], []
    order = np.argsort(times, kind="stable")
    order = order[np.argsort(user_index[order], kind="stable")]
    bounds = np.cumsum(np.bincount(user_index, minlength=n_users))[:-1]
    return np.split(items[order], bounds), np.split(times[order], bounds)


def chronological(items: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort by time: ties keep their order in the source."""
    order = np.argsort(times, kind="stable")
    return items[order], times[order]
