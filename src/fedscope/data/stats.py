"""Descriptive statistics of a loaded data set (``fedscope data stats``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset

PERCENTILES = (10, 25, 50, 75, 90)


def _distribution(values: np.ndarray) -> dict[str, float]:
    if values.shape[0] == 0:
        return {"count": 0}
    out: dict[str, float] = {
        "count": int(values.shape[0]),
        "min": int(values.min()),
        "mean": round(float(values.mean()), 3),
        "max": int(values.max()),
    }
    for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    return out


def dataset_stats(ds: CrossDomainDataset) -> dict[str, Any]:
    item_domain = ds.domain_of(ds.items)
    owner = np.repeat(ds.seq_user, ds.sequence_lengths())
    # per-user interaction counts per domain, over all of a user's sequences
    per_user_dom = np.zeros((ds.n_users, ds.n_domains), dtype=np.int64)
    np.add.at(per_user_dom, (owner, item_domain), 1)
    per_user = per_user_dom.sum(axis=1)
    active = per_user > 0
    n_dom_active = (per_user_dom > 0).sum(axis=1)

    domains = []
    for d, dom in enumerate(ds.domains):
        in_d = item_domain == d
        attrs = {
            name: round(sum(1 for v in values if v) / max(dom.n_items, 1), 4)
            for name, values in dom.item_attributes.items()
        }
        domains.append(
            {
                "name": dom.name,
                "items": dom.n_items,
                "interactions": int(in_d.sum()),
                "distinct_items_interacted": int(np.unique(ds.items[in_d]).shape[0]),
                "users_active": int((per_user_dom[:, d] > 0).sum()),
                "valid_targets": int((ds.target_domains(ds.valid) == d).sum()),
                "test_targets": int((ds.target_domains(ds.test) == d).sum()),
                "text_coverage": attrs,  # share of items with a non-empty value, per attribute
                "user_sequence_length": _distribution(
                    per_user_dom[active, d][per_user_dom[active, d] > 0]
                ),
            }
        )
    return {
        "name": ds.name,
        "protocol": ds.protocol,
        "protocol_note": ds.protocol_note,
        "users": ds.n_users,
        "users_with_interactions": int(active.sum()),
        "users_in_two_or_more_domains": int((n_dom_active >= 2).sum()),
        "sequences": ds.n_sequences,
        "interactions": int(ds.items.shape[0]),
        "items_total": ds.n_items_total,
        "domains": domains,
        "splits": {
            "train_interactions": ds.n_train_interactions(),
            "train_sequences": int((ds.train_len > 0).sum()),
            "valid_instances": len(ds.valid),
            "test_instances": len(ds.test),
        },
        "user_sequence_length": _distribution(per_user[active]),
        "user_attributes": sorted(ds.user_attributes),
        "dropped": ds.dropped,
        "notes": ds.notes,
        "fingerprint": ds.fingerprint,
    }
