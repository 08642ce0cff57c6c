"""Tiny models with random weights, built locally for tests and benchmarks (no download).

* :func:`build_tiny_transformers`: a 2-layer Llama-architecture model and a byte-level BPE
  tokenizer trained here with ``tokenizers``, saved with ``save_pretrained``;
* :func:`build_tiny_gguf`: a 2-layer llama GGUF written with the ``gguf`` package, reusing
  the tokenizer metadata of the embedded SmolLM2 GGUF (so llama.cpp's own loader runs).

Both are idempotent: a folder or file already built is reused.

The same builders make a model of realistic *shape* (:data:`MISTRAL_7B`, the shape of the
design's BioMistral-7B) for the GPU benchmark: random weights are enough to time decoding,
and nothing has to be downloaded (:func:`build_random_transformers`, :func:`build_random_gguf`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class LlamaShape:
    """The sizes that decide a Llama-architecture model's cost (vocabulary aside)."""

    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int


TINY_GGUF = LlamaShape(hidden=64, ffn=128, layers=2, heads=4, kv_heads=4)
MISTRAL_7B = LlamaShape(hidden=4096, ffn=14336, layers=32, heads=32, kv_heads=8)
"""Mistral-7B-v0.1's sizes (BioMistral-7B's base model): 32 layers, 4096 wide, GQA 32/8."""
SHAPES = {"tiny": TINY_GGUF, "7b": MISTRAL_7B}

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Le patient prend du ramipril 5 mg le matin et de l'ibuprofène 400 mg.",
    "Association déconseillée : parlez-en à votre médecin avant tout changement.",
    '{"texte": "Synthèse du bilan", "points": [], "medicaments": ["ramipril"]}',
    "Créatinine 120 µmol/L, potassium 5,1 mmol/L, clairance 45 mL/min.",
    "Bonjour, voici vos conseils pour bien prendre votre traitement.",
]


def build_tiny_transformers(folder: Path, *, seed: int = 0) -> Path:
    if (folder / "config.json").exists():
        return folder
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))  # noqa: S106 - a vocabulary token
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    special_tokens = {
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
        "pad_token": "</s>",
    }
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, **special_tokens
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    fast.save_pretrained(partial)
    partial.replace(folder)
    return folder


def build_random_transformers(
    folder: Path,
    tokenizer_source: Path,
    shape: LlamaShape,
    *,
    precision: Literal["float32", "float16"] = "float16",
    seed: int = 0,
) -> Path:
    """A Llama model of ``shape`` with random weights, saved with ``save_pretrained``.

    The tokenizer is read from ``tokenizer_source`` (a GGUF such as the embedded SmolLM2,
    through transformers' GGUF reader), so this model and :func:`build_random_gguf`'s share
    one realistic vocabulary. Weights are created directly in ``precision`` on the GPU when
    there is one: a 7B shape in float32 on a CPU would need 30 GB of RAM just to start.
    """
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(
        str(tokenizer_source.parent), gguf_file=tokenizer_source.name
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    dtype = torch.float16 if precision == "float16" else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    del model
    partial.replace(folder)
    return folder


def _field_value(reader: Any, name: str) -> Any:
    from gguf import GGUFValueType

    field = reader.fields[name]
    kind = field.types[0]
    if kind == GGUFValueType.ARRAY:
        item = field.types[-1]
        parts = [field.parts[i] for i in field.data]
        if item == GGUFValueType.STRING:
            return [bytes(p).decode("utf-8") for p in parts], item
        return [p.tolist()[0] for p in parts], item
    if kind == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8"), kind
    return field.parts[field.data[0]].tolist()[0], kind


def build_tiny_gguf(target: Path, tokenizer_source: Path, *, seed: int = 0) -> Path:
    """A 2-layer, 64-wide llama GGUF (f32, random weights) using ``tokenizer_source``'s
    tokenizer (any llama.cpp GGUF with a ``gpt2`` tokenizer, e.g. the embedded SmolLM2)."""
    return build_random_gguf(target, tokenizer_source, TINY_GGUF, seed=seed)


def build_random_gguf(
    target: Path,
    tokenizer_source: Path,
    shape: LlamaShape,
    *,
    precision: Literal["f32", "f16"] = "f32",
    seed: int = 0,
) -> Path:
    """A llama GGUF of ``shape`` with random weights and ``tokenizer_source``'s tokenizer.

    ``f16`` halves the file (a 7B shape is about 14 GB) and is what llama.cpp's CUDA kernels
    are timed on; the norms stay f32 as in converted models.
    """
    if target.exists():
        return target
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(tokenizer_source))
    tokens, _ = _field_value(reader, "tokenizer.ggml.tokens")
    vocab = len(tokens)
    n_embd, n_ff, n_layer, n_head = shape.hidden, shape.ffn, shape.layers, shape.heads
    n_kv = shape.kv_heads * (n_embd // n_head)
    dtype = np.float16 if precision == "f16" else np.float32
    partial = target.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name("hygie-tiny-llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_F16 if precision == "f16" else gguf.LlamaFileType.ALL_F32
    )
    writer.add_tokenizer_model(_field_value(reader, "tokenizer.ggml.model")[0])
    pre = "tokenizer.ggml.pre"
    if pre in reader.fields:
        writer.add_tokenizer_pre(_field_value(reader, pre)[0])
    writer.add_token_list(tokens)
    writer.add_token_types(_field_value(reader, "tokenizer.ggml.token_type")[0])
    writer.add_token_merges(_field_value(reader, "tokenizer.ggml.merges")[0])
    for key, add in (
        ("tokenizer.ggml.bos_token_id", writer.add_bos_token_id),
        ("tokenizer.ggml.eos_token_id", writer.add_eos_token_id),
        ("tokenizer.ggml.padding_token_id", writer.add_pad_token_id),
        ("tokenizer.ggml.unknown_token_id", writer.add_unk_token_id),
    ):
        if key in reader.fields:
            add(int(_field_value(reader, key)[0]))
    if "tokenizer.chat_template" in reader.fields:
        writer.add_chat_template(_field_value(reader, "tokenizer.chat_template")[0])
    rng = np.random.default_rng(seed)

    def weights(*dims: int) -> Any:
        return (rng.standard_normal(dims) * 0.02).astype(dtype)

    writer.add_tensor("token_embd.weight", weights(vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weights(n_kv, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weights(n_kv, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(n_embd, n_ff))
    target.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(target)
    return target
