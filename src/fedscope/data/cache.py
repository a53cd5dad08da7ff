"""On-disk cache of processed data sets, keyed by the content of their source files.

Parsing is cheap for our data sets (about a second for Food-Kitchen) but every
experiment loads data many times; the cache makes a load a few file reads. The
key covers the loader's name and version, its options and the SHA-256 of every
source file, so editing a source file or changing the loader can never serve a
stale copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain, EvalSplit

FORMAT_VERSION = 1


def cache_dir() -> Path:
    env = os.environ.get("FEDSCOPE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedscope"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_key(loader: str, version: int, files: Iterable[Path], options: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([loader, version, FORMAT_VERSION, options], sort_keys=True).encode())
    for f in sorted(Path(p) for p in files):
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()[:32]


_ARRAYS = ("seq_user", "seq_offsets", "items", "times", "train_len")


def save(ds: CrossDomainDataset, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(ds, k) for k in _ARRAYS}
    for split in ("valid", "test"):
        sp: EvalSplit = getattr(ds, split)
        arrays[f"{split}_seq"] = sp.seq
        arrays[f"{split}_cutoff"] = sp.cutoff
        arrays[f"{split}_target"] = sp.target
    meta = {
        "name": ds.name,
        "protocol": ds.protocol,
        "protocol_note": ds.protocol_note,
        "domains": [
            {
                "name": d.name,
                "offset": d.offset,
                "item_keys": list(d.item_keys),
                "item_attributes": {k: list(v) for k, v in d.item_attributes.items()},
            }
            for d in ds.domains
        ],
        "user_keys": ds.user_keys,
        "user_attributes": ds.user_attributes,
        "dropped": ds.dropped,
        "notes": ds.notes,
        "fingerprint": ds.fingerprint,
    }
    # Write to temporary names and rename, so an interrupted write never leaves a
    # half cache entry that a later load would trust.
    with tempfile.NamedTemporaryFile(dir=path, suffix=".npz", delete=False) as fh:
        np.savez(fh, **arrays)
        tmp_npz = fh.name
    with tempfile.NamedTemporaryFile("w", dir=path, suffix=".json", delete=False) as fh:
        json.dump(meta, fh)
        tmp_json = fh.name
    os.replace(tmp_npz, path / "arrays.npz")
    os.replace(tmp_json, path / "meta.json")


def load(path: Path) -> CrossDomainDataset:
    with open(path / "meta.json") as fh:
        meta = json.load(fh)
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        arr = {k: z[k] for k in z.files}
    domains = [
        Domain(
            name=d["name"],
            offset=d["offset"],
            item_keys=tuple(d["item_keys"]),
            item_attributes={k: tuple(v) for k, v in d["item_attributes"].items()},
        )
        for d in meta["domains"]
    ]
    splits = {
        s: EvalSplit(arr[f"{s}_seq"], arr[f"{s}_cutoff"], arr[f"{s}_target"])
        for s in ("valid", "test")
    }
    return CrossDomainDataset(
        name=meta["name"],
        protocol=meta["protocol"],
        protocol_note=meta["protocol_note"],
        domains=domains,
        user_keys=meta["user_keys"],
        valid=splits["valid"],
        test=splits["test"],
        user_attributes=meta["user_attributes"],
        dropped=meta["dropped"],
        notes=meta["notes"],
        fingerprint=meta["fingerprint"],
        **{k: arr[k] for k in _ARRAYS},
    )


def cached(
    key: str, build: Callable[[], CrossDomainDataset], use_cache: bool = True
) -> CrossDomainDataset:
    """Return the cached data set for ``key``, building and storing it on a miss."""
    entry = cache_dir() / key
    if use_cache and (entry / "meta.json").is_file() and (entry / "arrays.npz").is_file():
        try:
            return load(entry)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged entry is rebuilt below
    ds = build()
    ds.fingerprint = key
    if use_cache:
        with contextlib.suppress(OSError):  # a read-only cache location must not stop a load
            save(ds, entry)
    return ds
