"""The semantic store: f_A per item and per user, on disk, aligned to the data set.

Layout of a store folder::

    manifest.json              what made it: data set + fingerprint, backend, models, prompt
                               version, width, and per part its counts (valid / repaired / N/A);
                               while a job writes, the parts it has still to write ("pending")
    items.npz                  features float32 [n_items_total, d]   row = global item id
                               mask     bool    [n_items_total]      True: the row holds f_A
                               status   int8    [n_items_total]      schemas.Status
    users-all.npz              users of the whole data set as one party   row = user index
    users-client-0003.npz      users of client 3 only (other rows zero, mask False)

Items are described by public catalogue fields only, so one ``items.npz`` serves every client.
User profiles come from a client's own interaction history, so each client's job writes its own
``users-client-K.npz`` and a client loads only its own (``SemanticStore.load(path, client=K)``).

A row whose mask is False is all zeros: the entity had no text (the N/A path), or was not
processed (``--limit``, another client's user). Models read zeros there; the mask lets them
tell "no semantics" apart if they want to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset
from fedscope.files import atomic_write, atomic_write_text
from fedscope.semantics.schemas import Status

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ITEMS_FILE = "items.npz"
ALL_USERS = "all"


def users_file(scope: str) -> str:
    return f"users-{scope}.npz"


def client_scope(client_id: int | None) -> str:
    return ALL_USERS if client_id is None else f"client-{client_id:04d}"


class StoreError(ValueError):
    """A store that cannot be used as asked; the message names the file and the problem."""


@dataclass
class SidePart:
    """Features of one side (items, or one scope of users)."""

    features: np.ndarray  # float32 [n, d]
    mask: np.ndarray  # bool [n]
    status: np.ndarray  # int8 [n]

    def counts(self) -> dict[str, int]:
        s = self.status
        return {
            "total": int(s.shape[0]),
            "valid": int((s == Status.VALID).sum()),
            "repaired": int((s == Status.REPAIRED).sum()),
            "na": int((s == Status.NA).sum()),
            "pending": int((s == Status.PENDING).sum()),
            "with_features": int(self.mask.sum()),
        }


@dataclass
class SemanticFeatures:
    """What a model consumes: f_A for items and users, zero rows where there is none."""

    item_features: np.ndarray | None  # float32 [n_items_total, d], row = global item id
    item_mask: np.ndarray | None  # bool [n_items_total]
    user_features: np.ndarray | None  # float32 [n_users, d], row = user index
    user_mask: np.ndarray | None  # bool [n_users]
    dim: int
    manifest: dict[str, Any] = field(default_factory=dict)


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    # Compressed: a client's user part is n_users rows of which only its own ~1/K hold
    # features, and about half the item rows of a partly titled catalogue are N/A zeros.
    # Dense, a K=50 Food-Kitchen store took 1.3 GB; np.load reads both kinds, so stores
    # written uncompressed before stay readable.
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


class SemanticStore:
    """Writes and reads one store folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- writing -------------------------------------------------------------------------------
    def _manifest(self) -> dict[str, Any]:
        f = self.path / MANIFEST
        if not f.is_file():
            return {}
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{f}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc

    def begin(self, dataset: CrossDomainDataset, identity: dict[str, Any], dim: int) -> None:
        """Create the folder, or check that an existing store was made the same way.

        ``identity`` names the backend, the models and the prompt version; mixing parts made
        differently in one folder would give features from two different spaces.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self._manifest()
        head = {
            "format": FORMAT_VERSION,
            "dataset": dataset.name,
            "fingerprint": dataset.fingerprint,
            "n_items": dataset.n_items_total,
            "n_users": dataset.n_users,
            "dim": dim,
            **identity,
        }
        if manifest:
            differs = {k: (manifest.get(k), v) for k, v in head.items() if manifest.get(k) != v}
            if differs:
                detail = "; ".join(
                    f"{k}: store has {a!r}, this run {b!r}" for k, (a, b) in differs.items()
                )
                raise StoreError(
                    f"{self.path / MANIFEST}: the store was made differently ({detail}); "
                    "write to another --out folder"
                )
            return
        atomic_write_text(self.path / MANIFEST, json.dumps({**head, "parts": {}}, indent=2))

    def expect(self, names: list[str]) -> None:
        """Record the parts a job is about to write (``manifest["pending"]``, replacing the list
        an earlier, interrupted job left); each leaves the list when written. A manifest that
        still lists pending parts belongs to a store being written, or one whose job was
        interrupted: usable for the parts it has, but not the store a finished job describes
        (an archive must not take it for one)."""
        manifest = self._manifest()
        pending = sorted(set(names))
        if pending:
            manifest["pending"] = pending
        else:
            manifest.pop("pending", None)
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2))

    def write_part(self, name: str, part: SidePart, extra: dict[str, Any] | None = None) -> Path:
        """Save ``items`` or a user scope (``all``, ``client-0003``) and record it."""
        file = ITEMS_FILE if name == "items" else users_file(name)
        _atomic_save_npz(
            self.path / file,
            features=part.features.astype(np.float32),
            mask=part.mask.astype(bool),
            status=part.status.astype(np.int8),
        )
        manifest = self._manifest()
        manifest.setdefault("parts", {})[name] = {
            "file": file,
            "counts": part.counts(),
            **(extra or {}),
        }
        pending = [p for p in manifest.pop("pending", []) if p != name]
        if pending:
            manifest["pending"] = pending
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2))
        return self.path / file

    # --- reading -------------------------------------------------------------------------------
    def _read_part(self, file: str, rows: int, dim: int) -> SidePart:
        path = self.path / file
        if not path.is_file():
            raise StoreError(f"{path}: missing (listed in {self.path / MANIFEST})")
        with np.load(path) as z:
            part = SidePart(z["features"], z["mask"], z["status"])
        if part.features.shape != (rows, dim) or part.mask.shape != (rows,):
            raise StoreError(
                f"{path}: features have shape {part.features.shape}, expected {(rows, dim)}"
            )
        return part

    def _checked_manifest(self, dataset: CrossDomainDataset | None) -> dict[str, Any]:
        """The manifest of a store this fedscope reads, made from ``dataset`` when given."""
        manifest = self._manifest()
        if not manifest:
            raise StoreError(f"{self.path / MANIFEST}: not found; run `fedscope augment` first")
        if manifest.get("format") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path / MANIFEST}: format {manifest.get('format')!r}, "
                f"this fedscope reads {FORMAT_VERSION}"
            )
        if dataset is not None:
            expected = (dataset.name, dataset.fingerprint, dataset.n_items_total, dataset.n_users)
            found = tuple(manifest[k] for k in ("dataset", "fingerprint", "n_items", "n_users"))
            if expected != found:
                raise StoreError(
                    f"{self.path / MANIFEST}: made for data set {found[0]!r} "
                    f"(fingerprint {found[1][:12]}, {found[2]} items, {found[3]} users), not for "
                    f"{expected[0]!r} (fingerprint {expected[1][:12]}, {expected[2]} items, "
                    f"{expected[3]} users)"
                )
        return manifest

    @classmethod
    def check(cls, path: str | Path, dataset: CrossDomainDataset, items: bool, users: bool) -> None:
        """Refuse a store that :meth:`load` would refuse for ``dataset``, or that lacks a side
        asked for, from its manifest alone (nothing large is read)."""
        store = cls(path)
        parts = store._checked_manifest(dataset).get("parts", {})
        if items and "items" not in parts:
            raise StoreError(f"{path}: the store has no item features (semantics.items=true)")
        if users and not any(s == ALL_USERS or s.startswith("client-") for s in parts):
            raise StoreError(f"{path}: the store has no user features (semantics.users=true)")

    @classmethod
    def load(
        cls,
        path: str | Path,
        client: int | None = None,
        dataset: CrossDomainDataset | None = None,
    ) -> SemanticFeatures:
        """Item features, and the user features of ``client`` (its own file only) or, with
        ``client=None``, of the whole data set (``users-all``, else every client file merged).

        With ``dataset`` the store must have been made from the same data (fingerprint and
        sizes), so that rows line up with global item ids and user indices.
        """
        store = cls(path)
        manifest = store._checked_manifest(dataset)
        n_items, n_users, dim = manifest["n_items"], manifest["n_users"], manifest["dim"]
        parts = manifest.get("parts", {})
        item_features = item_mask = None
        if "items" in parts:
            items = store._read_part(parts["items"]["file"], n_items, dim)
            item_features, item_mask = items.features, items.mask
        user_features = user_mask = None
        if client is not None:
            scope = client_scope(client)
            if scope in parts:
                users = store._read_part(parts[scope]["file"], n_users, dim)
                user_features, user_mask = users.features, users.mask
        elif ALL_USERS in parts:
            users = store._read_part(parts[ALL_USERS]["file"], n_users, dim)
            user_features, user_mask = users.features, users.mask
        else:
            scopes = sorted(s for s in parts if s.startswith("client-"))
            if scopes:
                user_features = np.zeros((n_users, dim), dtype=np.float32)
                user_mask = np.zeros(n_users, dtype=bool)
                for scope in scopes:
                    users = store._read_part(parts[scope]["file"], n_users, dim)
                    user_features[users.mask] = users.features[users.mask]
                    user_mask |= users.mask
        return SemanticFeatures(item_features, item_mask, user_features, user_mask, dim, manifest)
