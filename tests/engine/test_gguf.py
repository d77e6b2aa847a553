"""GGUF checkpoints through transformers: clear errors for what cannot be read, before the weights load.

Tiny GGUF files are written here with the gguf package (the `gguf` extra). The real model
(SmolLM2-135M-Instruct) is loaded in tests/real/.
"""

from __future__ import annotations

import pytest

from chunkqa.engine.loading import ModelSpec, load_model, resolve_model
from chunkqa.errors import ModelLoadError, UnsupportedModelError
from chunkqa.methods.spec import MethodSpec, resolve_method

gguf = pytest.importorskip("gguf")


def write_gguf(path, arch: str, quant=None) -> str:
    """A GGUF file with the metadata transformers reads for `arch`, one embedding and maybe one quantized
    tensor (`quant`): enough for its config, not a working model."""
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(128)
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c", "d"])
    writer.add_token_types([1, 1, 1, 1])
    writer.add_token_scores([0.0, 0.0, 0.0, 0.0])
    writer.add_token_merges([])
    writer.add_vocab_size(4)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    if quant is not None:
        block, size = gguf.GGML_QUANT_SIZES[quant]
        writer.add_tensor(
            "blk.0.attn_q.weight", np.zeros((32, 256 // block * size), np.uint8), raw_dtype=quant
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_the_context_length_is_p_and_an_architecture_dca_lacks_is_refused_early(tmp_path):
    info = resolve_model(ModelSpec(write_gguf(tmp_path / "small.gguf", "gpt2")))
    assert info.source.gguf_file == "small.gguf" and info.text_config.model_type == "gpt2"
    with pytest.raises(UnsupportedModelError, match="'gpt2' architecture"):
        resolve_method(MethodSpec("dca"), info.config)
    assert resolve_method(MethodSpec("none"), info.config) is None
    llama = resolve_model(ModelSpec(write_gguf(tmp_path / "llama.gguf", "llama")))
    assert llama.text_config.max_position_embeddings == 128  # P: the file's context length
    assert resolve_method(MethodSpec("dca"), llama.config).pretraining_length == 128


def test_an_architecture_transformers_cannot_read(tmp_path):
    with pytest.raises(ModelLoadError, match="architecture foobar is not supported"):
        resolve_model(ModelSpec(write_gguf(tmp_path / "odd.gguf", "foobar")))


def test_a_quantization_transformers_cannot_dequantize(tmp_path):
    info = resolve_model(
        ModelSpec(write_gguf(tmp_path / "q8k.gguf", "llama", gguf.GGMLQuantizationType.Q8_K))
    )
    with pytest.raises(ModelLoadError, match="Q8_K") as err:
        load_model(info)
    assert "llama-quantize" in err.value.hint and "safetensors" in err.value.hint
