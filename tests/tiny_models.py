"""Tiny random models of every supported family, built from a config, saved, and loaded back.

Loading goes through the real `from_pretrained` path, as a user's checkpoint would. P = 64 for all
(so DCA defaults are c = 48, w = 8, s = 40), which lets a few hundred tokens span several chunks.
"""

from __future__ import annotations

from pathlib import Path

import torch

P = 64
VOCAB = 97
_COMMON = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": P,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
_MOE = {"moe_intermediate_size": 32, "num_experts_per_tok": 2}


def family_configs() -> dict[str, object]:
    """One config per supported family, plus Llama with each RoPE scaling type."""
    from transformers import (
        LlamaConfig,
        MistralConfig,
        MixtralConfig,
        Qwen2Config,
        Qwen2MoeConfig,
        Qwen3Config,
        Qwen3MoeConfig,
    )

    llama3 = {
        "rope_type": "llama3",
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
        "rope_theta": 500000.0,
    }
    return {
        "llama": LlamaConfig(**_COMMON),
        "llama-mha-d32": LlamaConfig(**{**_COMMON, "num_key_value_heads": 4, "hidden_size": 128}),
        "llama3-rope": LlamaConfig(**_COMMON, rope_parameters=llama3),
        "llama-linear": LlamaConfig(**_COMMON, rope_parameters={"rope_type": "linear", "factor": 2.0}),
        "llama-dynamic": LlamaConfig(**_COMMON, rope_parameters={"rope_type": "dynamic", "factor": 2.0}),
        "llama-yarn": LlamaConfig(
            **_COMMON,
            rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        ),
        "mistral": MistralConfig(**_COMMON, sliding_window=16),
        "mixtral": MixtralConfig(**_COMMON, num_local_experts=4, num_experts_per_tok=2),
        "qwen2": Qwen2Config(**_COMMON),
        "qwen2_moe": Qwen2MoeConfig(**_COMMON, **_MOE, num_experts=4, shared_expert_intermediate_size=32),
        "qwen3": Qwen3Config(**{**_COMMON, "num_key_value_heads": 1}, head_dim=32),
        "qwen3_moe": Qwen3MoeConfig(**_COMMON, **_MOE, num_experts=4, head_dim=16),
    }


def save_tiny(name: str, directory: Path, seed: int = 0) -> Path:
    """Build the named tiny model with random weights and save it (safetensors) to directory/name."""
    from transformers import AutoModelForCausalLM

    config = family_configs()[name]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random weights large enough that attention is not uniform
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.08)
    path = directory / name
    model.save_pretrained(path)
    return path


def load_tiny(path: Path, dtype: torch.dtype = torch.float64):
    """Load a saved tiny model through from_pretrained."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, experts_implementation="eager").eval()


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOKENIZER_TEXT = (
    "The pass key is 12345. Remember it. What is the main result of the paper? Question: Answer: "
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness. Document page summary open questions results method data model attention chunk. "
) * 4


def save_tokenizer(path: Path, chat: bool, vocab_size: int = 320) -> int:
    """A small byte-level BPE tokenizer; chat=True gives it a ChatML template. Returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([TOKENIZER_TEXT], trainer)
    if not chat:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>" if chat else "</s>", pad_token="</s>"
    )
    if chat:
        fast.chat_template = CHATML
    fast.save_pretrained(path)
    return tok.get_vocab_size()


def save_cli_model(kind: str, directory: Path, seed: int = 0) -> Path:
    """A tiny random 'llama' (base, plain prompt) or 'qwen2' (ChatML instruct) with a tokenizer, P = 64."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    path = directory / f"cli-{kind}"
    chat = kind == "qwen2"
    vocab = save_tokenizer(path, chat)
    common = {**_COMMON, "vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 3 if chat else 1}
    config = Qwen2Config(**common) if chat else LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    return path


FAMILIES = list(family_configs())
# DCA never moves a position past c <= P, where dynamic NTK leaves RoPE as it is: on "llama-dynamic" a DCA
# test would equal the default-RoPE one and could not fail (chunkqa refuses dca with `rope` dynamic).
# SelfExtend's neighbor positions do pass P, so its tests keep it.
DCA_FAMILIES = [name for name in FAMILIES if name != "llama-dynamic"]


def tokens(length: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Random token ids [batch, length] (no special ids), reproducible by seed."""
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def load_with_method(path, method: str = "dca", **settings):
    """A chunkqa LoadedModel of a saved tiny model, with a method (and its settings) applied."""
    from chunkqa.engine.loading import ModelSpec, load_model, resolve_model
    from chunkqa.methods.spec import MethodSpec, resolve_method

    info = resolve_model(ModelSpec(str(path)))
    return load_model(info, method=resolve_method(MethodSpec(method, **settings), info.config))
