"""Loading local models (llama.cpp, transformers) and an LRU cache of loaded models.

Both backends expose the same small interface: ``generate`` (whole answer, with token counts
and time to first token) and ``stream`` (text pieces as they come). llama.cpp constrains the
answer with a JSON schema (its grammar); transformers cannot, so the orchestrator validates
and retries. On a GPU, llama.cpp offloads every layer and transformers loads float16 weights
with ``device_map="auto"``; on CPU, transformers runs float32.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from models.registry import ModelManifest

Message = dict[str, str]


class GenerationParams(msgspec.Struct, frozen=True, kw_only=True):
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


class RawGeneration(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    prompt_tokens: int
    completion_tokens: int
    first_token_s: float
    total_s: float


class TextBackend(Protocol):
    name: str
    sha256: str

    def generate(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        schema: dict[str, Any] | None,
        on_piece: Callable[[str], None] | None = None,
    ) -> RawGeneration: ...

    def stream(
        self, messages: Sequence[Message], params: GenerationParams, schema: dict[str, Any] | None
    ) -> Iterator[str]: ...

    def close(self) -> None: ...


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is part of the llm extra
        return False
    return bool(torch.cuda.is_available())


class LlamaCppBackend:
    """A GGUF model through llama-cpp-python; JSON answers constrained by a grammar."""

    def __init__(self, manifest: ModelManifest, *, gpu: bool | None = None, threads: int = 0):
        import llama_cpp

        self.name = manifest.name
        self.sha256 = manifest.sha256
        self._lock = threading.Lock()
        gpu = gpu_available() if gpu is None else gpu
        kwargs: dict[str, Any] = {}
        if manifest.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            kwargs["chat_handler"] = Jinja2ChatFormatter(
                template=manifest.chat_template,
                eos_token="</s>",  # noqa: S106 - a token of the vocabulary, not a secret
                bos_token="<s>",  # noqa: S106
            ).to_chat_handler()
        self._llm = llama_cpp.Llama(
            model_path=manifest.path,
            n_ctx=manifest.context_length,
            n_gpu_layers=-1 if gpu else 0,
            n_threads=threads or default_threads(),
            verbose=False,
            **kwargs,
        )

    def _chunks(
        self, messages: Sequence[Message], params: GenerationParams, schema: dict[str, Any] | None
    ) -> Iterator[dict[str, Any]]:
        response_format = {"type": "json_object", "schema": schema} if schema else None
        self._llm.set_seed(params.seed)
        chunks: Any = self._llm.create_chat_completion(
            messages=list(messages),  # type: ignore[arg-type]
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            response_format=response_format,  # type: ignore[arg-type]
            stream=True,
        )
        return iter(chunks)

    def generate(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        schema: dict[str, Any] | None,
        on_piece: Callable[[str], None] | None = None,
    ) -> RawGeneration:
        """The whole answer; ``on_piece`` sees each piece as it is sampled (a preview for
        a user waiting on a job: the answer is validated only once complete)."""
        with self._lock:
            start = time.perf_counter()
            first = 0.0
            pieces: list[str] = []
            completion_tokens = 0
            for chunk in self._chunks(messages, params, schema):
                choice = chunk["choices"][0]
                if "content" in choice["delta"]:
                    completion_tokens += 1  # one streamed chunk per sampled token
                piece = choice["delta"].get("content") or ""
                if piece and not pieces:
                    first = time.perf_counter() - start
                if piece:
                    pieces.append(piece)
                    if on_piece is not None:
                        on_piece(piece)
            total = time.perf_counter() - start
            text = "".join(pieces)
            prompt_tokens = self._prompt_tokens(messages)
        return RawGeneration(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            first_token_s=first or total,
            total_s=total,
        )

    def _prompt_tokens(self, messages: Sequence[Message]) -> int:
        joined = "\n".join(m["content"] for m in messages)
        return len(self._llm.tokenize(joined.encode(), add_bos=True))

    def stream(
        self, messages: Sequence[Message], params: GenerationParams, schema: dict[str, Any] | None
    ) -> Iterator[str]:
        with self._lock:
            for chunk in self._chunks(messages, params, schema):
                piece = chunk["choices"][0]["delta"].get("content") or ""
                if piece:
                    yield piece

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            del self._llm


class TransformersBackend:
    """A ``save_pretrained`` folder through transformers (float16 on GPU, float32 on CPU)."""

    def __init__(self, manifest: ModelManifest, *, gpu: bool | None = None, threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = manifest.name
        self.sha256 = manifest.sha256
        self._lock = threading.Lock()
        self._gpu = gpu_available() if gpu is None else gpu
        if not self._gpu:
            torch.set_num_threads(threads or default_threads())
        self._tokenizer = AutoTokenizer.from_pretrained(manifest.path)
        if manifest.chat_template:
            self._tokenizer.chat_template = manifest.chat_template
        kwargs: dict[str, Any] = {"dtype": torch.float16 if self._gpu else torch.float32}
        if self._gpu:
            kwargs["device_map"] = "auto"
        self._model = AutoModelForCausalLM.from_pretrained(manifest.path, **kwargs)
        self._model.eval()  # type: ignore[no-untyped-call]

    def _inputs(self, messages: Sequence[Message]) -> Any:
        ids: Any = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return ids.to(self._model.device)

    def _run(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> tuple[Iterator[str], threading.Thread, int]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        torch.manual_seed(params.seed)
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": params.max_tokens,
            "do_sample": sample,
            "streamer": streamer,
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)

        def work() -> None:
            with torch.inference_mode():
                self._model.generate(**kwargs)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return iter(streamer), thread, int(inputs["input_ids"].shape[-1])

    def generate(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        schema: dict[str, Any] | None,
        on_piece: Callable[[str], None] | None = None,
    ) -> RawGeneration:
        with self._lock:
            start = time.perf_counter()
            first = 0.0
            pieces, thread, prompt_tokens = self._run(messages, params)
            text_parts: list[str] = []
            for piece in pieces:
                if piece and not text_parts:
                    first = time.perf_counter() - start
                text_parts.append(piece)
                if piece and on_piece is not None:
                    on_piece(piece)
            thread.join()
            total = time.perf_counter() - start
        text = "".join(text_parts)
        completion = len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return RawGeneration(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            first_token_s=first or total,
            total_s=total,
        )

    def stream(
        self, messages: Sequence[Message], params: GenerationParams, schema: dict[str, Any] | None
    ) -> Iterator[str]:
        with self._lock:
            pieces, thread, _ = self._run(messages, params)
            for piece in pieces:
                if piece:
                    yield piece
            thread.join()

    def close(self) -> None:
        if getattr(self, "_model", None) is not None:
            del self._model
            gc.collect()
            if self._gpu:
                import torch

                torch.cuda.empty_cache()


def default_threads() -> int:
    """Half the cores, at least one: the web app and the worker need the rest."""
    return max(1, (os.cpu_count() or 2) // 2)


def load_backend(
    manifest: ModelManifest, *, gpu: bool | None = None, threads: int = 0
) -> TextBackend:
    if not Path(manifest.path).exists():
        raise FileNotFoundError(f"weights of {manifest.name} are missing: {manifest.path}")
    threads = threads or default_threads()
    if manifest.backend == "llama_cpp":
        return LlamaCppBackend(manifest, gpu=gpu, threads=threads)
    return TransformersBackend(manifest, gpu=gpu, threads=threads)


def estimated_bytes(manifest: ModelManifest) -> int:
    """Memory a loaded model takes, from its weights on disk (plus runtime overhead)."""
    size = manifest.size_bytes or 0
    return int(size * 1.2) + 64 * 1024 * 1024


def plan_evictions(
    loaded: Sequence[tuple[str, int]], incoming: int, *, capacity: int, budget_bytes: int
) -> list[str]:
    """Names to unload, least recently used first, so ``incoming`` bytes fit.

    ``loaded`` lists (name, bytes) from least to most recently used. The result keeps at most
    ``capacity - 1`` models and at most ``budget_bytes - incoming`` bytes; a model larger than
    the whole budget still loads alone (everything else is evicted).
    """
    evict: list[str] = []
    count = len(loaded)
    used = sum(size for _, size in loaded)
    for name, size in loaded:
        if count < capacity and used + incoming <= budget_bytes:
            break
        evict.append(name)
        count -= 1
        used -= size
    return evict


class ModelCache:
    """Loaded backends by model name, LRU, bounded by count and by a memory budget."""

    def __init__(
        self,
        *,
        capacity: int = 3,
        budget_bytes: int = 8 * 1024**3,
        loader: Callable[[ModelManifest], TextBackend] | None = None,
        threads: int = 0,
        size_of: Callable[[ModelManifest], int] = estimated_bytes,
    ) -> None:
        self.capacity = capacity
        self.budget_bytes = budget_bytes
        self._loader = loader or functools.partial(load_backend, threads=threads)
        self._size_of = size_of
        self._loaded: OrderedDict[str, tuple[TextBackend, int, str]] = OrderedDict()
        self._lock = threading.RLock()
        self.evictions: list[str] = []

    def get(self, manifest: ModelManifest) -> TextBackend:
        with self._lock:
            entry = self._loaded.get(manifest.name)
            if entry is not None and entry[2] == manifest.sha256:
                self._loaded.move_to_end(manifest.name)
                return entry[0]
            if entry is not None:
                self.unload(manifest.name)
            size = self._size_of(manifest)
            order = [(name, item[1]) for name, item in self._loaded.items()]
            for name in plan_evictions(
                order, size, capacity=self.capacity, budget_bytes=self.budget_bytes
            ):
                self.unload(name)
                self.evictions.append(name)
            backend = self._loader(manifest)
            self._loaded[manifest.name] = (backend, size, manifest.sha256)
            return backend

    def unload(self, name: str) -> bool:
        with self._lock:
            entry = self._loaded.pop(name, None)
        if entry is None:
            return False
        entry[0].close()
        gc.collect()
        return True

    def loaded(self) -> list[str]:
        """Names from least to most recently used."""
        with self._lock:
            return list(self._loaded)

    def clear(self) -> None:
        for name in self.loaded():
            self.unload(name)
