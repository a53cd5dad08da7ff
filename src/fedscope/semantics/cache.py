"""Content-addressed on-disk cache of generated answers and sentence vectors.

Keys are the SHA-256 of everything that determines a result: for an answer the generator's
model id, the prompt version, the schema, the generation settings and the full prompt; for a
vector the encoder's model id and the exact text. The same input on any client, in any run,
hits the same entry, and a change to any part of it is a miss, never a stale hit.

Storage is one SQLite file. Every answer is committed as soon as it is produced (vectors per
encoded batch), so a run that is interrupted (Ctrl-C, a crash, ``--limit``) loses at most the
batch in flight and the next run resumes where it stopped. SQLite's locking lets several
clients' jobs share one file; a deployment can give each client its own with ``--cache``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.cache import cache_dir

CACHE_FILE = "semantics.sqlite"


def default_cache_path() -> Path:
    return cache_dir() / "semantics" / CACHE_FILE


def content_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    raw: str | None  # the model's last answer, as text
    values: dict[str, Any]  # validated, repaired values
    status: int  # schemas.Status
    attempts: int


class SemanticCache:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS answers (
                key TEXT PRIMARY KEY, model TEXT, prompt_version TEXT, raw TEXT,
                answer TEXT, status INTEGER, attempts INTEGER, created REAL);
            CREATE TABLE IF NOT EXISTS vectors (
                key TEXT PRIMARY KEY, encoder TEXT, dim INTEGER, vec BLOB, created REAL);
            """
        )
        self.hits = 0
        self.misses = 0

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- answers -------------------------------------------------------------------------------
    def get_answer(self, key: str) -> CachedAnswer | None:
        row = self._db.execute(
            "SELECT raw, answer, status, attempts FROM answers WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return CachedAnswer(row[0], json.loads(row[1]), int(row[2]), int(row[3]))

    def put_answer(self, key: str, model: str, prompt_version: str, answer: CachedAnswer) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    prompt_version,
                    answer.raw,
                    json.dumps(answer.values),
                    answer.status,
                    answer.attempts,
                    time.time(),
                ),
            )

    # --- vectors -------------------------------------------------------------------------------
    def get_vectors(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys`` (a key that is absent is simply not returned)."""
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, blob in rows:
                out[key] = np.frombuffer(blob, dtype=np.float32)
        self.hits += len(out)
        self.misses += len(set(keys) - set(out))
        return out

    def put_vectors(self, encoder: str, items: dict[str, np.ndarray]) -> None:
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)",
                [
                    (k, encoder, int(v.shape[0]), np.asarray(v, np.float32).tobytes(), now)
                    for k, v in items.items()
                ],
            )

    def counts(self) -> dict[str, int]:
        n_answers = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        n_vectors = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return {"answers": int(n_answers), "vectors": int(n_vectors)}
